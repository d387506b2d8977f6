// src/cuda/decode/mma_decode_kernel.cuh — tensor-core split-KV paged decode (mma.sync m16n8k16),
// the GQA group's query rows on the MMA's N dimension and KV tokens on M ("swap AB").
//
// What: for sequence b with q_len query rows (1 for decode; up to 16 / group for multi-token
// decode) at positions kv_len - q_len + i, out = softmax over the visible keys of
// <q, k_j> * softmax_scale, times v_j; lse optional. Causal within the chunk, windows as
// the contract says.
//
// Multi-token decode (cu_q_lens given: a paged_prefill plan with PrefillKernel::kMmaDecode) follows
// docs/api.md "Hostile metadata" as the prefill kernels do: a sequence at or after the first
// malformed cu_q_lens entry (decreasing, negative, past total_rows) is skipped, its rows (and those
// before cu_q_lens[0]) left as they were; a q_len past max_q_len (device lengths beyond the plan's)
// computes and writes only its first max_q_len rows, at the positions of the true q_len; q_len 0
// writes nothing. The merge kernel writes exactly the rows the main kernel computed.
//
// Mapping. grid.x = batch * num_splits (split fastest), grid.y = num_kv_heads; 4 warps. A CTA
// serves every query row of one (sequence, kv head): rows r = i * group + gi (q token i, head gi of
// the group), padded to N = 8 * kNT. Split s covers keys [s * chunk, (s + 1) * chunk), chunk a
// multiple of 64; warp w takes the 16-key steps w, w + 4, ... of it. Each K/V byte is read from
// memory once per CTA, i.e. once per GQA group.
//
// Per 16-key step a warp computes S^T[16 keys x N rows] = K[16 x D] * Q^T (A = K from shared
// memory, B = Q held in registers for the whole loop), the online softmax over its columns, and
// O^T[D x N] += V^T[D x 16] * P^T[16 x N] (A = V^T, B = P^T: the S^T accumulator fragment turned
// into the B operand by one movmatrix.trans per 8 keys).
//
// Layout trick (no transposes, no ldmatrix, no bank conflicts): the dot product over d and the
// sum over keys do not depend on the order of their terms, so each thread loads whole contiguous
// 16-byte pieces of K and V rows and the fragments are defined over a permuted d:
//   K: thread (g = lane / 4, t = lane % 4) reads rows g and g + 8 of the step, the 16-byte pieces
//      t, t + 4, t + 8, ... of each (D/4 elements), from a K tile the whole warp copied with whole
//      128-byte lines per instruction (chunks XOR-swizzled by row: no bank conflict);
//      k-step s takes elements 4s..4s+3 of that sequence, which play the fragment's logical
//      columns (2t, 2t+1, 2t+8, 2t+9). Q's B fragment uses the same map (k_dim_of).
//   V: thread (g, t) reads rows 2t, 2t+1, 2t+8, 2t+9 (its B-fragment keys), elements
//      [g * D/8, (g + 1) * D/8); m-tile i takes elements 2i, 2i+1 as the fragment rows g, g+8.
//      The output fragment is un-permuted when it is written.
// V pieces and per-token scales are copied with cp.async by the thread that reads them, into a
// thread-private part of a kStages-deep ring slot; the K tile of the slot is copied by the warp,
// so the loop has two __syncwarp()s and no CTA barrier.
//
// Numerics. int8 K/V are converted exactly to fp16 (PRMT into 0x64xx, one HSUB2: 1024 + u - 1152);
// the MMA runs in fp16 with fp32 accumulation for int8 and fp16 caches (bf16 for a bf16 cache).
// Q (fp32, with the per-channel K scale folded in) is scaled per row by a power of two 2^e so its
// largest element lies in [2^13, 2^14) and rounded to fp16: 11 significant bits, more than bf16's
// 8; the score column is multiplied back by softmax_scale * log2(e) * 2^-e (exp2 throughout).
// P (<= 2^8, see below) is rounded to fp16 for P·V. Per-token K scales multiply the score rows,
// per-token V scales multiply p, factored by a running reference (the largest V scale seen, moved
// when a step's largest scale differs by more than 16x) so p * s_v never underflows fp16;
// per-channel V scales multiply O at the end.
// Online softmax with lazy rescaling: a column's reference max moves only when a new score
// exceeds it by more than 8 (log2 units), so p <= 2^8 and the O rescale runs rarely.
// Non-finite values (docs/design.md §1 "Non-finite values", the CPU backend's rule): each thread
// records whether it met a visible key of each of its columns; one that did not sets its l to -0
// before the sums over lanes and warps, which keep -0 only where nobody met one (an empty row: zeros,
// lse -inf). A visible -inf score adds exp2(-inf) = +0, so l == +0 at the end means visible keys
// whose scores were all -inf (a NaN row); a NaN or +inf score makes l NaN (a NaN row). NaN/Inf in
// values reach the output dims through P·V. A split partial carries the three cases in its lse:
// -inf (no visible key), +inf (visible keys, all -inf; a real lse is never +inf) and NaN.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "src/cuda/common/convert.cuh"
#include "src/cuda/common/cp_async.cuh"
#include "src/cuda/common/mma_int8.cuh"
#include "src/cuda/common/paged.cuh"
#include "src/cuda/common/wgmma.cuh"
#include "src/cuda/decode/mma_decode.h"

#include <cuda.h>  // CUtensorMap (the type only; maps are encoded by the host, mma_decode.cu)

namespace kvq::cuda {

struct MmaDecodeParams {
  const void* q = nullptr;               // [T, Hq, D] (decode: T = batch) bf16 or fp16
  bool q_bf16 = true;                    // q (and out) dtype: bf16, else fp16
  PagedCacheParams cache;
  const int32_t* block_tables = nullptr; // [batch, max_blocks_per_seq]
  int64_t bt_stride = 0;
  int32_t max_blocks_per_seq = 0;
  const int32_t* kv_lens = nullptr;      // [batch]
  const int32_t* cu_q_lens = nullptr;    // [batch + 1], or null: one row per sequence (row b)
  void* out = nullptr;                   // like q
  float* lse = nullptr;                  // [T, Hq] or null
  float* partial_o = nullptr;            // [T, Hq, num_splits, D] fp32 (num_splits > 1)
  float* partial_lse = nullptr;          // [T, Hq, num_splits] fp32
  int64_t q_stride_t = 0, q_stride_h = 0;
  int64_t o_stride_t = 0, o_stride_h = 0;
  int64_t lse_stride_t = 0, lse_stride_h = 0;
  int32_t batch_size = 0;
  int32_t num_qo_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t group_size = 1;
  int32_t max_q_len = 1;                 // rows served per sequence: max_q_len * group_size <= 8 * kNT
  int32_t total_rows = 0;                // rows of q / out / lse (and of the partials)
  int32_t num_splits = 1;
  float scale_log2 = 1.f;                // softmax_scale * log2(e)
  int32_t local_window = -1;
  int32_t global_window = 0;
  bool gqa_interleaved = false;
  bool page_aligned = false;             // page_size % 16 == 0: one table lookup per 16-key step
  // Byte strides of K/V (block, kv head, in-page position) and the per-token scales' element
  // strides, all < 2^31 (the planner checks), so per-key addressing is 32-bit but for the block.
  uint32_t k_blk_bytes = 0, k_head_bytes = 0, k_pos_bytes = 0;
  uint32_t v_blk_bytes = 0, v_head_bytes = 0, v_pos_bytes = 0;
  // Bulk-copy variant (MmaDecodeTraits<..., true>): TMA tensor maps over the K and V caches, dims
  // (innermost first) head dim, then kv head and in-page position in the order given by
  // tma_pos_first (position is dim 1 when true), then block; box = 128 bytes of the head dim x 1
  // head x 16 positions x 1 block, 128-byte swizzle.
  CUtensorMap tma_k;
  CUtensorMap tma_v;
  bool tma_pos_first = false;
};

// kBulk_: the K and V tiles of a 16-key step arrive by TMA (one instruction per 128 bytes of head dim
// for all 16 keys, issued by lane 0 of the warp, completing on the slot's mbarrier) in the 128-byte
// swizzled layout (16-byte chunk c of row r at chunk c ^ (r % 8) of the row, 16-row boxes of 2 KB),
// instead of 16-byte cp.async per thread; sm_90, rows of >= 128 bytes, page_size % 16 == 0.
// Per-token scales still come by cp.async. Element maps of the bulk layout (bank-conflict-free reads):
// K: thread t reads the 16-byte pieces 2t + (u & 1) + 8 (u >> 1) of rows g and g + 8; V: thread g
// reads the pieces g + 8u of its four key rows.
// kS8_ (int8 caches, bulk variant): Q·Kᵀ on the int8 tensor cores (mma m16n8k32 s8, exact s32 sums)
// with K straight from shared memory (no conversion) and q split into two int8 parts per row:
// q' = s (h + l / 128), s = max|q'| / 127, h = rint(q' / s), l = rint(128 (q' - s h) / s), |l| <= 64, so
// q' is carried to s / 256 = max|q'| / 32512 (fp16 q: |q'| / 2048); score = s / 128 (128 S_h + S_l).
// A row whose q' holds a NaN or an infinity scores NaN (its row is NaN, as through fp16 MMAs).
template <typename DTypeKV_, int kD_, int kNT_, bool kBulk_ = false, bool kS8_ = false>
struct MmaDecodeTraits {
  static constexpr bool kBulk = kBulk_;
  static constexpr bool kS8 = kS8_;
  using DTypeKV = DTypeKV_;
  using T = std::conditional_t<std::is_same_v<DTypeKV_, __nv_bfloat16>, __nv_bfloat16, __half>;  // MMA dtype
  static constexpr bool kInt8 = std::is_same_v<DTypeKV_, int8_t>;
  static constexpr int kD = kD_;
  static constexpr int kNT = kNT_;                 // n-tiles of 8 query rows
  static constexpr int kRows = 8 * kNT;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kSteps = kD / 16;           // k-steps of Q·K^T = m-tiles of P·V
  static constexpr int kEB = sizeof(DTypeKV_);
  static constexpr int kKBytes = kD * kEB / 4;     // per thread per K row
  static constexpr int kKVec = kKBytes / 16;
  // K is copied by the whole warp, row-major [16 keys][kCR 16-byte chunks] with the chunk index
  // XOR-swizzled by the row (kCR >= 8), so one cp.async instruction moves kRowsPerCopy whole rows
  // (full 128-byte lines) and the fragment reads hit 8 distinct chunks per quarter-warp.
  static constexpr int kCR = kD_ * kEB / 16;
  static constexpr int kRowsPerCopy = 32 / kCR;
  static constexpr int kKCopies = 16 / kRowsPerCopy;
  static constexpr int kVBytes = kD * kEB / 8;     // per thread per V row (8, 16, 32, 64)
  static constexpr int kVUnits = kVBytes >= 16 ? 4 * (kVBytes / 16) : 2;
  static constexpr int kUnits = 2 * kKVec + kVUnits + 1;  // 16-byte units per thread per step (+1: scales)
  // Bulk variant: per (slot, warp) a K tile and a V tile of 16 rows x kRowBytes (kBoxes boxes of 2 KB)
  // in the ring, the thread-private scale unit in a second region, the mbarriers after it.
  static constexpr int kRowBytes = kD_ * kEB;
  static constexpr int kBoxes = kRowBytes / 128;
  static constexpr int kTileBytes = 16 * kRowBytes;
  static constexpr int kStageBytes = kBulk_ ? (2 * kTileBytes + 512) * kWarps : kUnits * 16 * 32 * kWarps;
  static constexpr int kStages = (57344 / kStageBytes) < 2 ? 2 : ((57344 / kStageBytes) > 4 ? 4 : (57344 / kStageBytes));
  static constexpr int kScaleOff = kStages * kWarps * 2 * kTileBytes;  // bulk: scale units [kStages][kWarps][32] x 16 B
  static constexpr int kBarOff = kScaleOff + kStages * kWarps * 512;  // bulk: uint64 [kStages][kWarps]
  static constexpr int kRingBytes = kBulk_ ? kBarOff + kStages * kWarps * 8 : kStages * kStageBytes;
  static constexpr int kMergeBytes = (2 * kWarps * kRows + kWarps * kRows * kD) * 4;
  static constexpr int kSmemBytes = kRingBytes > kMergeBytes ? kRingBytes : kMergeBytes;
  static_assert(!kBulk_ || (kRowBytes % 128 == 0), "bulk tiles are whole 128-byte boxes");
  static_assert(!kBulk_ || kMergeBytes <= kBarOff, "the merge area does not overlap the mbarriers");
  static_assert(!kS8_ || (kBulk_ && kInt8), "int8 Q·Kᵀ is a variant of the bulk kernel over int8 caches");
  static_assert(kD % 64 == 0, "head dims 64, 128, 256");
  static_assert(kKBytes % 16 == 0, "whole 16-byte K pieces");
};

namespace mma_decode_detail {

__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(x));
  return r;
}


// 4 int8 (bytes of w) -> fp16 pairs (b0, b1), (b2, b3) of the values b + 1152, exact: 0x64uu is
// 1024 + u with u = b + 128. The caller removes the constant 1152 (K: per score column).
__device__ __forceinline__ void int8x4_to_biased_f16(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;
  lo = __byte_perm(u, 0x64646464u, 0x5140);
  hi = __byte_perm(u, 0x64646464u, 0x5342);
}

// cu_q_lens well formed up to sequence b: 0 <= cu[0] <= ... <= cu[b + 1] <= total_rows. A CTA-wide
// vote: every thread of the CTA must call it (before any early return that is not CTA-uniform).
__device__ __forceinline__ bool cu_prefix_ok(const MmaDecodeParams& prm, int b) {
  bool bad = false;
  for (int i = threadIdx.x; i <= b; i += blockDim.x) {
    const int32_t lo = prm.cu_q_lens[i], hi = prm.cu_q_lens[i + 1];
    bad = bad || hi < lo || lo < 0 || hi > prm.total_rows;
  }
  return !__syncthreads_or(bad);
}

// 2^x (MUFU.EX2; results below 2^-126 flush to zero, which no softmax weight here needs).
__device__ __forceinline__ float fast_exp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
}

}  // namespace mma_decode_detail

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 2) mma_decode_kernel(const __grid_constant__ MmaDecodeParams prm) {
  using namespace mma_decode_detail;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The merge (launched as a programmatic dependent, mma_decode.cu) may start its CTAs once every
  // CTA here has started; they wait for this grid's completion and memory before reading anything
  // (cudaGridDependencySynchronize there). Without a dependent launch this does nothing.
  cudaTriggerProgrammaticLaunchCompletion();
#endif
  using KV = typename Traits::DTypeKV;
  using T = typename Traits::T;
  constexpr bool kInt8 = Traits::kInt8;
  constexpr int kD = Traits::kD;
  constexpr int kNT = Traits::kNT;
  constexpr int kSteps = Traits::kSteps;
  constexpr int kKVec = Traits::kKVec;
  constexpr int kVBytes = Traits::kVBytes;
  constexpr int kUnits = Traits::kUnits;
  constexpr int kS = Traits::kStages;
  constexpr int kW = Traits::kWarps;
  constexpr int kRows = Traits::kRows;
  constexpr uint32_t kFull = 0xffffffffu;
  extern __shared__ __align__(16) uint4 smem_u4[];

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int split = blockIdx.x % prm.num_splits;
  const int b = blockIdx.x / prm.num_splits;
  const int kvh = blockIdx.y;
  const PagedCacheParams& c = prm.cache;
  const int group = prm.group_size;

  // q_len: the sequence's query tokens (positions kv_len - q_len + i); q_rows <= max_q_len of them
  // are served (CTA-uniform early returns).
  int q_start = b, q_len = 1, q_rows = 1;
  if (prm.cu_q_lens != nullptr) {
    if (!cu_prefix_ok(prm, b)) return;  // at or after a malformed entry: skipped
    q_start = prm.cu_q_lens[b];
    q_len = prm.cu_q_lens[b + 1] - q_start;
    if (q_len <= 0) return;  // no query token: nothing to write
    q_rows = q_len < prm.max_q_len ? q_len : prm.max_q_len;
  }
  const int rows = q_rows * group;  // <= kRows (planner)

  const int64_t table_cap = static_cast<int64_t>(prm.max_blocks_per_seq) * c.page_size;
  int64_t kv_len = prm.kv_lens[b];
  kv_len = kv_len < 0 ? 0 : (kv_len < table_cap ? kv_len : table_cap);
  int64_t chunk = (kv_len + prm.num_splits - 1) / prm.num_splits;
  chunk = (chunk + 63) / 64 * 64;
  const int j0 = static_cast<int>(split * chunk);  // key indices fit int32 (kv_lens is int32)
  const int j1 = static_cast<int>(j0 + chunk < kv_len ? j0 + chunk : kv_len);
  const int n_steps = j1 > j0 ? (j1 - j0 + 15) / 16 : 0;
  const int n_w = n_steps > warp ? static_cast<int>((n_steps - warp + kW - 1) / kW) : 0;

  // The d of element e of thread t's K piece sequence: 16-byte pieces t, t + 4, t + 8, ... of the
  // row, so that one cp.async instruction of the warp covers whole 64-byte runs of 8 rows.
  auto k_dim_of = [](int tt, int e) {
    constexpr int kPiece = 16 / Traits::kEB;  // elements per 16-byte piece
    const int u = e / kPiece;
    if constexpr (Traits::kBulk) return kPiece * (2 * tt + (u & 1) + 8 * (u >> 1)) + e % kPiece;
    return kPiece * (tt + 4 * u) + e % kPiece;
  };
  // The d of element e (0 <= e < kD / 8) of thread g's V pieces.
  auto v_dim_of = [](int gg, int e) {
    if constexpr (Traits::kBulk) {
      constexpr int kPiece = 16 / Traits::kEB;
      return kPiece * (gg + 8 * (e / kPiece)) + e % kPiece;
    }
    return gg * (kD / 8) + e;
  };
  auto row_head = [&](int r) {
    const int gi = r % group;
    return prm.gqa_interleaved ? gi * prm.num_kv_heads + kvh : kvh * group + gi;
  };

  // ---- Q: B fragments (fp16 / bf16 pairs) of every k-step, power-of-two row scaling ----
  uint32_t qb[kNT][kSteps][2];
  float col_shift[kNT][2];  // score offset of the column (int8: -1152 * sum(q) * col_scale)
  float col_scale[kNT][2];  // score multiplier of this thread's two columns (rows nt*8 + 2t + {0,1})
  int col_pos[kNT][2];      // absolute position of the column's query token; -1: padding row
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    const int r = nt * 8 + g;
    float qf[kD / 4];
    float amax = 0.f;
    if (r < rows) {
      const int64_t row_off = static_cast<int64_t>(q_start + r / group) * prm.q_stride_t + row_head(r) * prm.q_stride_h;
      // Each thread's d's come in runs of 16 / kEB consecutive elements: load q two at a time.
      if (prm.q_bf16) {
        const __nv_bfloat162* q2 = reinterpret_cast<const __nv_bfloat162*>(static_cast<const __nv_bfloat16*>(prm.q) + row_off);
#pragma unroll
        for (int e = 0; e < kD / 4; e += 2) {
          const float2 f = __bfloat1622float2(q2[k_dim_of(t, e) / 2]);
          qf[e] = f.x;
          qf[e + 1] = f.y;
        }
      } else {
        const __half2* q2 = reinterpret_cast<const __half2*>(static_cast<const __half*>(prm.q) + row_off);
#pragma unroll
        for (int e = 0; e < kD / 4; e += 2) {
          const float2 f = __half22float2(q2[k_dim_of(t, e) / 2]);
          qf[e] = f.x;
          qf[e + 1] = f.y;
        }
      }
      if (kInt8 && c.k_mode == ScaleMode::kPerChannel) {
        const int64_t base = kvh * c.k_scale_stride_a;
        if (c.k_scale_dtype == DType::kFloat32) {
#pragma unroll
          for (int e = 0; e < kD / 4; ++e) qf[e] *= static_cast<const float*>(c.k_scale)[base + k_dim_of(t, e) * c.k_scale_stride_b];
        } else {
#pragma unroll
          for (int e = 0; e < kD / 4; ++e) qf[e] *= load_scale(c.k_scale, base + k_dim_of(t, e) * c.k_scale_stride_b, c.k_scale_dtype);
        }
      }
#pragma unroll
      for (int e = 0; e < kD / 4; ++e) amax = fmaxf(amax, fabsf(qf[e]));
    } else {
#pragma unroll
      for (int e = 0; e < kD / 4; ++e) qf[e] = 0.f;
    }
    amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, 2));
    if constexpr (Traits::kS8) {
      // Non-finite q' anywhere in the row (fmaxf skips NaN: test each element).
      bool bad = false;
#pragma unroll
      for (int e = 0; e < kD / 4; ++e) bad = bad || !(fabsf(qf[e]) <= 3.402823466e38f);
      bad = __shfl_xor_sync(kFull, bad ? 1 : 0, 1) != 0 || bad;
      bad = __shfl_xor_sync(kFull, bad ? 1 : 0, 2) != 0 || bad;
      const float s_hi = (amax > 0.f && amax <= 3.402823466e38f) ? amax * (1.f / 127.f) : 1.f;
      const float inv = 1.f / s_hi;
      auto q8 = [](float x) { return static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(__float2int_rn(fminf(fmaxf(x, -127.f), 127.f))))); };
#pragma unroll
      for (int st = 0; st < kD / 32; ++st)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          uint32_t wh = 0, wl = 0;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float x = qf[8 * st + 4 * hf + k];
            const float h = rintf(fminf(fmaxf(x * inv, -127.f), 127.f));
            const float l = (x - h * s_hi) * (128.f * inv);
            wh |= q8(h) << (8 * k);
            wl |= q8(l) << (8 * k);
          }
          qb[nt][st][hf] = wh;
          qb[nt][kD / 32 + st][hf] = wl;
        }
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int src = (2 * t + k) * 4;
        const float s_col = __shfl_sync(kFull, s_hi, src);
        const bool bad_col = __shfl_sync(kFull, bad ? 1 : 0, src) != 0;
        const int rc = nt * 8 + 2 * t + k;
        col_scale[nt][k] = bad_col ? __int_as_float(0x7fc00000) : prm.scale_log2 * s_col * (1.f / 128.f);
        col_shift[nt][k] = 0.f;
        col_pos[nt][k] = rc < rows ? static_cast<int>(kv_len - q_len + rc / group) : -1;
      }
      continue;
    }
    float sc = 1.f;
    if (std::is_same_v<T, __half> && amax > 0.f && amax <= 3.0e38f) {
      int ex;
      frexpf(amax, &ex);  // amax = m * 2^ex, m in [0.5, 1)
      sc = ldexpf(1.f, 14 - ex);
    }
    float qsum = 0.f;  // sum of the rounded, scaled q of the row (the biased-K correction)
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      qb[nt][s][0] = tc::pack2<T>(qf[4 * s] * sc, qf[4 * s + 1] * sc);
      qb[nt][s][1] = tc::pack2<T>(qf[4 * s + 2] * sc, qf[4 * s + 3] * sc);
      const float2 f0 = tc::unpack2<T>(qb[nt][s][0]), f1 = tc::unpack2<T>(qb[nt][s][1]);
      qsum += (f0.x + f0.y) + (f1.x + f1.y);
    }
    qsum += __shfl_xor_sync(kFull, qsum, 1);
    qsum += __shfl_xor_sync(kFull, qsum, 2);
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const float sc_col = __shfl_sync(kFull, sc, (2 * t + k) * 4);
      const float qsum_col = __shfl_sync(kFull, qsum, (2 * t + k) * 4);
      const int rc = nt * 8 + 2 * t + k;
      col_scale[nt][k] = prm.scale_log2 / sc_col;
      col_shift[nt][k] = kInt8 ? -1152.f * qsum_col * col_scale[nt][k] : 0.f;
      col_pos[nt][k] = rc < rows ? static_cast<int>(kv_len - q_len + rc / group) : -1;
    }
  }
  const bool windowed = prm.local_window >= 0;
  const int pos_min = static_cast<int>(kv_len - q_len);  // position of the first query row
  const bool k_tok = kInt8 && c.k_mode == ScaleMode::kPerToken;
  const bool v_tok = kInt8 && c.v_mode == ScaleMode::kPerToken;

  float oacc[kSteps][kNT][4];
#pragma unroll
  for (int i = 0; i < kSteps; ++i)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int k = 0; k < 4; ++k) oacc[i][nt][k] = 0.f;
  float m_run[kNT][2], l_run[kNT][2];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      m_run[nt][k] = -INFINITY;
      l_run[nt][k] = 0.f;
    }
  float v_ref = 0.f;  // per-token V: O = oacc * v_ref
  float v_ref_inv = 0.f;

  const int32_t* table_row = prm.block_tables + static_cast<int64_t>(b) * prm.bt_stride;
  // Bits 2 * slot, 2 * slot + 1: keys g, g + 8 of the slot's step are real keys. Bit 16 + nt * 2 + col:
  // this thread met a visible key of the column (the empty-row test; kept in this register, which
  // the loop carries anyway, since one more loop-carried register cost 32 on int8 head_dim 128).
  uint32_t valid_bits = 0;
  constexpr int kSeen = 16;
  static_assert(2 * Traits::kStages <= kSeen && kSeen + 2 * kNT <= 32, "valid and seen bits share a register");

  auto slot_ptr = [&](int slot, int unit) { return smem_u4 + ((slot * kW + warp) * kUnits + unit) * 32 + lane; };
  constexpr int kCR = Traits::kCR;
  auto k_tile = [&](int slot) { return smem_u4 + ((slot * kW + warp) * kUnits) * 32; };  // 16 * kCR chunks
  // Bulk variant: the K tile (V tile: + kTileBytes) of (slot, warp), the thread's scale unit, the
  // slot's mbarrier, and the 16-byte chunk c of row r of a tile (box c / 8, swizzled in its box).
  auto bk_tile = [&](int slot) {
    return reinterpret_cast<char*>(smem_u4) + (slot * kW + warp) * 2 * Traits::kTileBytes;
  };
  auto bk_scale = [&](int slot) {
    return reinterpret_cast<uint4*>(reinterpret_cast<char*>(smem_u4) + Traits::kScaleOff) + (slot * kW + warp) * 32 + lane;
  };
  auto bk_bar = [&](int slot) {
    return reinterpret_cast<uint64_t*>(reinterpret_cast<char*>(smem_u4) + Traits::kBarOff) + slot * kW + warp;
  };
  auto bk_chunk = [](const char* tile, int r, int c) {
    return reinterpret_cast<const uint4*>(tile + (c >> 3) * 2048 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
  };
  auto swz = [](int chunk, int row) { return kCR >= 8 ? (chunk ^ (row & 7)) : chunk; };
  const int copy_row = lane / kCR;    // first K row this lane copies
  const int copy_chunk = lane % kCR;  // the chunk of every row it copies
  const uint32_t k_copy_const = kvh * prm.k_head_bytes + 16 * copy_chunk;

  // Per-thread constant parts of the byte offsets (pages with page_size % 16 == 0: the step's 16
  // keys sit at in-page offsets off0 .. off0 + 15 of one block).
  const char* k_bytes = static_cast<const char*>(c.k_data);
  const char* v_bytes = static_cast<const char*>(c.v_data);
  const uint32_t v_hd = kvh * prm.v_head_bytes + g * (kD / 8) * Traits::kEB;
  uint32_t v_thr[4];
#pragma unroll
  for (int q4 = 0; q4 < 4; ++q4) v_thr[q4] = v_hd + (2 * t + (q4 & 1) + 8 * (q4 >> 1)) * prm.v_pos_bytes;
  const uint32_t ks_hd = static_cast<uint32_t>(kvh * c.k_scale_stride_b);
  const uint32_t vs_hd = static_cast<uint32_t>(kvh * c.v_scale_stride_b);
  const uint32_t ks_blk = static_cast<uint32_t>(c.k_scale_stride_a), ks_pos = static_cast<uint32_t>(c.k_scale_stride_c);
  const uint32_t vs_blk = static_cast<uint32_t>(c.v_scale_stride_a), vs_pos = static_cast<uint32_t>(c.v_scale_stride_c);
  const float* k_tok_scale = static_cast<const float*>(c.k_scale);  // fp32 when per-token (planner)
  const float* v_tok_scale = static_cast<const float*>(c.v_scale);

  // Page-aligned steps: the per-token K / V scales of keys g, g + 8 (block ublk, in-page offset
  // off0 of the step's first key) into the thread's scale unit, zero-filled past the step's keys or
  // in an invalid block; bits gets their validity.
  auto page_scales = [&](uint32_t ublk, uint32_t off0, bool blk_ok, int left, float* sc, uint32_t& bits) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int rel = g + 8 * h;
      const bool ok = blk_ok && rel < left;
      bits |= ok ? (1u << h) : 0u;
      const uint32_t so = ublk * ks_blk + ks_hd + (off0 + rel) * ks_pos;
      if (k_tok) cp_async_4(sc + h, k_tok_scale + (ok ? so : 0u), ok ? 4 : 0);
      const uint32_t sv = ublk * vs_blk + vs_hd + (off0 + rel) * vs_pos;
      if (v_tok) cp_async_4(sc + 2 + h, v_tok_scale + (ok ? sv : 0u), ok ? 4 : 0);
    }
  };
  int32_t pf_blk = 0;  // prefetched block id of step pf_it (page-aligned path)
  int pf_it = -1;
  auto issue = [&](int it, int slot) {
    const int jb = j0 + (warp + it * kW) * 16;
    const int left = j1 - jb;  // keys of the step that exist: >= 1
    float* sc = Traits::kBulk ? reinterpret_cast<float*>(bk_scale(slot)) : reinterpret_cast<float*>(slot_ptr(slot, kUnits - 1));
    uint32_t bits = 0;
    if constexpr (Traits::kBulk) {
#if KVQ_SM90_ENABLED
      uint32_t page_idx, off0;
      c.page_div.divmod(static_cast<uint32_t>(jb), page_idx, off0);
      const int32_t blk = pf_it == it ? pf_blk : table_row[page_idx];
      if (it + 1 < n_w) {
        pf_blk = table_row[c.page_div.div(static_cast<uint32_t>(jb + kW * 16))];
        pf_it = it + 1;
      }
      const bool blk_ok = blk >= 0 && blk < c.num_blocks;
      if (lane == 0) {
        // An invalid block id reads block -1: out of the tensor map's bounds, so the box is
        // zero-filled (and still counts its full bytes).
        uint64_t* bar = bk_bar(slot);
        (void)::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta, ::cuda::ptx::space_shared,
                                               bar, 2 * Traits::kTileBytes);
        const int32_t cb = blk_ok ? blk : -1;
        const int32_t c1 = prm.tma_pos_first ? static_cast<int32_t>(off0) : kvh;
        const int32_t c2 = prm.tma_pos_first ? kvh : static_cast<int32_t>(off0);
        char* kt = bk_tile(slot);
#pragma unroll
        for (int bx = 0; bx < Traits::kBoxes; ++bx) {
          const int32_t crd[4] = {bx * (128 / Traits::kEB), c1, c2, cb};
          ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global, kt + bx * 2048, &prm.tma_k,
                                            crd, bar);
          ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global,
                                            kt + Traits::kTileBytes + bx * 2048, &prm.tma_v, crd, bar);
        }
      }
      const uint32_t ublk = blk_ok ? static_cast<uint32_t>(blk) : 0u;
      page_scales(ublk, off0, blk_ok, left, sc, bits);
#endif
    } else if (prm.page_aligned) {
      uint32_t page_idx, off0;
      c.page_div.divmod(static_cast<uint32_t>(jb), page_idx, off0);
      // The block id of this step was fetched one issue earlier (its load latency hidden behind a
      // compute step); fetch the next step's now.
      const int32_t blk = pf_it == it ? pf_blk : table_row[page_idx];
      if (it + 1 < n_w) {
        pf_blk = table_row[c.page_div.div(static_cast<uint32_t>(jb + kW * 16))];
        pf_it = it + 1;
      }
      const bool blk_ok = blk >= 0 && blk < c.num_blocks;
      const uint32_t ublk = blk_ok ? static_cast<uint32_t>(blk) : 0u;
      const char* kblk = k_bytes + static_cast<uint64_t>(ublk) * prm.k_blk_bytes + off0 * prm.k_pos_bytes;
      const char* vblk = v_bytes + static_cast<uint64_t>(ublk) * prm.v_blk_bytes + off0 * prm.v_pos_bytes;
#pragma unroll
      for (int i = 0; i < Traits::kKCopies; ++i) {
        const int row = copy_row + Traits::kRowsPerCopy * i;
        const bool ok = blk_ok && row < left;
        cp_async_16(k_tile(slot) + row * kCR + swz(copy_chunk, row), kblk + k_copy_const + row * prm.k_pos_bytes, ok ? 16 : 0);
      }
      page_scales(ublk, off0, blk_ok, left, sc, bits);
#pragma unroll
      for (int q4 = 0; q4 < 4; ++q4) {
        const int rel = 2 * t + (q4 & 1) + 8 * (q4 >> 1);
        const bool ok = blk_ok && rel < left;
        const char* src = vblk + v_thr[q4];
        if constexpr (kVBytes >= 16) {
#pragma unroll
          for (int u = 0; u < kVBytes / 16; ++u)
            cp_async_16(slot_ptr(slot, 2 * kKVec + q4 * (kVBytes / 16) + u), src + 16 * u, ok ? 16 : 0);
        } else {
          cp_async_8(reinterpret_cast<char*>(slot_ptr(slot, 2 * kKVec + (q4 >> 1))) + 8 * (q4 & 1), src, ok ? 8 : 0);
        }
      }
    } else {  // any page size: one table lookup per key
      auto where = [&](int rel, int32_t& block, uint32_t& off) {
        if (rel >= left) return false;
        return locate_token(c, table_row, static_cast<uint32_t>(jb + rel), block, off);
      };
#pragma unroll
      for (int i = 0; i < Traits::kKCopies; ++i) {
        const int row = copy_row + Traits::kRowsPerCopy * i;
        int32_t block = 0;
        uint32_t off = 0;
        const bool ok = where(row, block, off);
        const char* src = ok ? k_bytes + static_cast<uint64_t>(block) * prm.k_blk_bytes + off * prm.k_pos_bytes + k_copy_const : k_bytes;
        cp_async_16(k_tile(slot) + row * kCR + swz(copy_chunk, row), src, ok ? 16 : 0);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int32_t block = 0;
        uint32_t off = 0;
        const bool ok = where(g + 8 * h, block, off);
        bits |= ok ? (1u << h) : 0u;
        if (k_tok) cp_async_4(sc + h, k_tok_scale + (ok ? block * ks_blk + ks_hd + off * ks_pos : 0u), ok ? 4 : 0);
        if (v_tok) cp_async_4(sc + 2 + h, v_tok_scale + (ok ? block * vs_blk + vs_hd + off * vs_pos : 0u), ok ? 4 : 0);
      }
#pragma unroll
      for (int q4 = 0; q4 < 4; ++q4) {
        int32_t block = 0;
        uint32_t off = 0;
        const bool ok = where(2 * t + (q4 & 1) + 8 * (q4 >> 1), block, off);
        const char* src = ok ? v_bytes + static_cast<uint64_t>(block) * prm.v_blk_bytes + off * prm.v_pos_bytes + v_hd : v_bytes;
        if constexpr (kVBytes >= 16) {
#pragma unroll
          for (int u = 0; u < kVBytes / 16; ++u)
            cp_async_16(slot_ptr(slot, 2 * kKVec + q4 * (kVBytes / 16) + u), src + (ok ? 16 * u : 0), ok ? 16 : 0);
        } else {
          cp_async_8(reinterpret_cast<char*>(slot_ptr(slot, 2 * kKVec + (q4 >> 1))) + 8 * (q4 & 1), src, ok ? 8 : 0);
        }
      }
    }
    valid_bits = (valid_bits & ~(3u << (2 * slot))) | (bits << (2 * slot));
  };

  // One call computes kSub consecutive steps it, it + 1, .. of the warp (slots (it + u) % kS): their
  // Q·Kᵀ chains side by side, one softmax update over all their scores, then their P·V. (kSub = 2 on
  // a 4-slot ring measured slower on the H200 than one step at 4 CTAs per SM: docs/perf-notes.md.)
  auto compute_n = [&]<int kSub>(int it) {
    // ---- S^T = K Q^T ----
    float x[kSub][kNT][4];
    float vs_key[kSub][2];
#pragma unroll
    for (int sb = 0; sb < kSub; ++sb) {
      const int slot = (it + sb) % kS;
      const int jb = j0 + (warp + (it + sb) * kW) * 16;
      uint4 kr[2][kKVec];
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int u = 0; u < kKVec; ++u) {
          if constexpr (Traits::kBulk)
            kr[h][u] = *bk_chunk(bk_tile(slot), g + 8 * h, 2 * t + (u & 1) + 8 * (u >> 1));
          else
            kr[h][u] = k_tile(slot)[(g + 8 * h) * kCR + swz(t + 4 * u, g + 8 * h)];
        }
      float sacc[kNT][4], sacc2[kNT][4];  // even / odd k-steps: two independent MMA chains
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int k = 0; k < 4; ++k) sacc[nt][k] = sacc2[nt][k] = 0.f;
      const uint32_t* w0 = reinterpret_cast<const uint32_t*>(&kr[0][0]);
      const uint32_t* w1 = reinterpret_cast<const uint32_t*>(&kr[1][0]);
      if constexpr (Traits::kS8) {
        // s32 sums of the high and low q parts (two independent chains), K's int8 words as A.
        int ih[kNT][4], il[kNT][4];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int k = 0; k < 4; ++k) ih[nt][k] = il[nt][k] = 0;
#pragma unroll
        for (int st = 0; st < kD / 32; ++st) {
          const uint32_t a[4] = {w0[2 * st], w1[2 * st], w0[2 * st + 1], w1[2 * st + 1]};
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            tc::mma_16832_s8(ih[nt], a, qb[nt][st][0], qb[nt][st][1]);
            tc::mma_16832_s8(il[nt], a, qb[nt][kD / 32 + st][0], qb[nt][kD / 32 + st][1]);
          }
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int k = 0; k < 4; ++k) sacc[nt][k] = static_cast<float>(ih[nt][k] * 128 + il[nt][k]);
      } else {
#pragma unroll
        for (int s = 0; s < kSteps; ++s) {
          uint32_t a[4];
          if constexpr (kInt8) {  // fp16 k + 1152 (exact); the 1152 * sum(q) term is removed per column
            int8x4_to_biased_f16(w0[s], a[0], a[2]);
            int8x4_to_biased_f16(w1[s], a[1], a[3]);
          } else {
            a[0] = w0[2 * s];
            a[2] = w0[2 * s + 1];
            a[1] = w1[2 * s];
            a[3] = w1[2 * s + 1];
          }
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            if (s & 1)
              tc::mma_16816<T>(sacc2[nt], a, qb[nt][s][0], qb[nt][s][1]);
            else
              tc::mma_16816<T>(sacc[nt], a, qb[nt][s][0], qb[nt][s][1]);
          }
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int k = 0; k < 4; ++k) sacc[nt][k] += sacc2[nt][k];
      }
      const float* scl = Traits::kBulk ? reinterpret_cast<const float*>(bk_scale(slot))
                                       : reinterpret_cast<const float*>(slot_ptr(slot, kUnits - 1));
      const uint32_t bits = (valid_bits >> (2 * slot)) & 3u;
      float ks_key[2] = {1.f, 1.f};
      vs_key[sb][0] = vs_key[sb][1] = 1.f;
      if (k_tok) {
        ks_key[0] = scl[0];
        ks_key[1] = scl[1];
      }
      if (v_tok) {
        vs_key[sb][0] = scl[2];
        vs_key[sb][1] = scl[3];
      }
      // ---- scores, masks ----
      const bool all_valid = __all_sync(kFull, bits == 3u);
      const bool need_mask = !all_valid || jb + 15 > pos_min || windowed;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int h = k >> 1, col = k & 1;
          x[sb][nt][k] = fmaf(sacc[nt][k], col_scale[nt][col], col_shift[nt][col]) * ks_key[h];
          if (need_mask) {
            const int j = jb + g + 8 * h;
            const int pos = col_pos[nt][col];
            bool vis = ((bits >> h) & 1u) && j <= pos;
            if (windowed) vis = vis && (pos - j <= prm.local_window || j < prm.global_window);
            x[sb][nt][k] = vis ? x[sb][nt][k] : -INFINITY;
            valid_bits |= vis ? (1u << (kSeen + nt * 2 + col)) : 0u;
          } else {
            valid_bits |= 1u << (kSeen + nt * 2 + col);
          }
        }
    }
    // ---- online softmax (lazy rescale) ----
    // A column's reference max m_run moves only when some score exceeds it by more than 8 (one
    // vote, no shuffles, in the common case); then the exact column maxima are reduced.
    bool need = false;
#pragma unroll
    for (int sb = 0; sb < kSub; ++sb)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int col = 0; col < 2; ++col)
          need = need || (fmaxf(x[sb][nt][col], x[sb][nt][2 + col]) > m_run[nt][col] + 8.f);
    float v_fac = 1.f;
    if (v_tok) {  // the reference V scale moves when the steps' largest scale leaves [v_ref / 16, 16 v_ref]
      float sv_loc = 0.f;
#pragma unroll
      for (int sb = 0; sb < kSub; ++sb) sv_loc = fmaxf(sv_loc, fmaxf(vs_key[sb][0], vs_key[sb][1]));
      const bool big = __any_sync(kFull, sv_loc > 16.f * v_ref);
      const bool small = __all_sync(kFull, sv_loc * 16.f < v_ref);
      if (big || small) {
        float sv = sv_loc;
        sv = fmaxf(sv, __shfl_xor_sync(kFull, sv, 4));
        sv = fmaxf(sv, __shfl_xor_sync(kFull, sv, 8));
        sv = fmaxf(sv, __shfl_xor_sync(kFull, sv, 16));
        if (sv > 0.f) {
          const float r = __frcp_rn(sv);
          v_fac = v_ref * r;
          v_ref = sv;
          v_ref_inv = r;
        }
      }
    }
    if (__any_sync(kFull, need) || v_fac != 1.f) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int col = 0; col < 2; ++col) {
          float mx = -INFINITY;
#pragma unroll
          for (int sb = 0; sb < kSub; ++sb) mx = fmaxf(mx, fmaxf(x[sb][nt][col], x[sb][nt][2 + col]));
          mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 4));
          mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 8));
          mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 16));
          float alpha = 1.f;
          if (mx > m_run[nt][col]) {
            alpha = m_run[nt][col] == -INFINITY ? 0.f : exp2f(m_run[nt][col] - mx);
            m_run[nt][col] = mx;
          }
          l_run[nt][col] *= alpha;
          const float f = alpha * v_fac;
#pragma unroll
          for (int i = 0; i < kSteps; ++i) {
            oacc[i][nt][col] *= f;
            oacc[i][nt][2 + col] *= f;
          }
        }
    }
#pragma unroll
    for (int sb = 0; sb < kSub; ++sb) {
      const int slot = (it + sb) % kS;
      const int jb = j0 + (warp + (it + sb) * kW) * 16;
      (void)jb;  // read by the bulk variant's V tail test only
      uint32_t pb[kNT][2];
      const float vr0 = v_tok ? vs_key[sb][0] * v_ref_inv : 1.f;
      const float vr1 = v_tok ? vs_key[sb][1] * v_ref_inv : 1.f;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        float p[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float m = m_run[nt][k & 1];
          p[k] = fast_exp2(x[sb][nt][k] - (m == -INFINITY ? 0.f : m));
        }
        l_run[nt][0] += p[0] + p[2];
        l_run[nt][1] += p[1] + p[3];
        if (v_tok) {
          p[0] *= vr0;
          p[1] *= vr0;
          p[2] *= vr1;
          p[3] *= vr1;
        }
        const uint32_t x0 = tc::pack2<T>(p[0], p[1]), x1 = tc::pack2<T>(p[2], p[3]);
        pb[nt][0] = movmatrix_trans(x0);
        pb[nt][1] = movmatrix_trans(x1);
      }
      // ---- O^T += V^T P^T ----
      constexpr int kVW = kVBytes / 4;  // 32-bit words per V row piece
      uint32_t vw[4][kVW];
#pragma unroll
      for (int q4 = 0; q4 < 4; ++q4) {
        if constexpr (Traits::kBulk) {
          const int row = 2 * t + (q4 & 1) + 8 * (q4 >> 1);
          // A bf16 / fp16 cache's rows past the sequence's end hold whatever the page holds (the box
          // copies whole pages' rows); their p is 0, and 0 * NaN would still be NaN: zero them.
          const bool live = kInt8 || jb + row < j1;
#pragma unroll
          for (int u = 0; u < kVBytes / 16; ++u) {
            uint4 v = *bk_chunk(bk_tile(slot) + Traits::kTileBytes, row, g + 8 * u);
            if (!live) v = make_uint4(0, 0, 0, 0);
            vw[q4][4 * u] = v.x;
            vw[q4][4 * u + 1] = v.y;
            vw[q4][4 * u + 2] = v.z;
            vw[q4][4 * u + 3] = v.w;
          }
        } else if constexpr (kVBytes >= 16) {
#pragma unroll
          for (int u = 0; u < kVBytes / 16; ++u) {
            const uint4 v = *slot_ptr(slot, 2 * kKVec + q4 * (kVBytes / 16) + u);
            vw[q4][4 * u] = v.x;
            vw[q4][4 * u + 1] = v.y;
            vw[q4][4 * u + 2] = v.z;
            vw[q4][4 * u + 3] = v.w;
          }
        } else {
          const uint2 v = *reinterpret_cast<const uint2*>(reinterpret_cast<const char*>(slot_ptr(slot, 2 * kKVec + (q4 >> 1))) + 8 * (q4 & 1));
          vw[q4][0] = v.x;
          vw[q4][1] = v.y;
        }
      }
#pragma unroll
      for (int i = 0; i < kSteps; ++i) {
        uint32_t a[4];
        if constexpr (kInt8) {
          const uint32_t sel = (i & 1) ? 0x7362u : 0x5140u;
          const uint32_t xab = __byte_perm(vw[0][i >> 1], vw[1][i >> 1], sel);
          const uint32_t xcd = __byte_perm(vw[2][i >> 1], vw[3][i >> 1], sel);
          tc::int8x4_to_pairs<__half>(xab, a[0], a[1]);  // exact v (a biased v + 1152 measured 4.8e-2 at 128k keys)
          tc::int8x4_to_pairs<__half>(xcd, a[2], a[3]);
        } else {
          a[0] = __byte_perm(vw[0][i], vw[1][i], 0x5410u);
          a[1] = __byte_perm(vw[0][i], vw[1][i], 0x7632u);
          a[2] = __byte_perm(vw[2][i], vw[3][i], 0x5410u);
          a[3] = __byte_perm(vw[2][i], vw[3][i], 0x7632u);
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) tc::mma_16816<T>(oacc[i][nt], a, pb[nt][0], pb[nt][1]);
      }
    }
  };

  // ---- main loop: a kS-deep cp.async ring per warp, thread-private slots ----
  if constexpr (Traits::kBulk) {
#if KVQ_SM90_ENABLED
    if (threadIdx.x < kS * kW) wg::mbar_init(reinterpret_cast<uint64_t*>(reinterpret_cast<char*>(smem_u4) + Traits::kBarOff) + threadIdx.x, 1);
    wg::mbar_init_fence();
    __syncthreads();
#else
    __trap();  // the host launches the bulk variant on sm_90 only
#endif
  }
#pragma unroll
  for (int st = 0; st < kS - 1; ++st) {
    if (st < n_w) issue(st, st);
    cp_async_commit();
  }
  for (int it = 0; it < n_w; ++it) {
    const int nxt = it + kS - 1;
    __syncwarp();  // every lane is done reading the K tile of the slot refilled now (step it - 1)
    if (nxt < n_w) issue(nxt, nxt % kS);
    cp_async_commit();
    cp_async_wait<kS - 1>();
    __syncwarp();  // the K tile of step it, copied by the whole warp, is complete and visible
#if KVQ_SM90_ENABLED
    if constexpr (Traits::kBulk) wg::mbar_wait(bk_bar(it % kS), static_cast<uint32_t>(it / kS) & 1u);
#endif
    compute_n.template operator()<1>(it);
  }
  cp_async_wait<0>();

  // ---- merge the four warps (LSE rule) and write ----
  // A column this thread met no visible key of gets l = -0 (its l is +0: masked keys have p =
  // exp2(-inf) = 0); the sums below keep -0 only where no lane and no warp met one.
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
    for (int col = 0; col < 2; ++col) {
      float l = ((valid_bits >> (kSeen + nt * 2 + col)) & 1u) ? l_run[nt][col] : -0.f;
      l += __shfl_xor_sync(kFull, l, 4);
      l += __shfl_xor_sync(kFull, l, 8);
      l += __shfl_xor_sync(kFull, l, 16);
      l_run[nt][col] = l;
    }
  __syncthreads();  // every warp is done with its ring
#if KVQ_SM90_ENABLED
  if constexpr (Traits::kBulk)
    if (threadIdx.x < kS * kW)
      wg::mbar_inval(reinterpret_cast<uint64_t*>(reinterpret_cast<char*>(smem_u4) + Traits::kBarOff) + threadIdx.x);
#endif
  float* sm_m = reinterpret_cast<float*>(smem_u4);
  float* sm_l = sm_m + kW * kRows;
  float* sm_acc = sm_l + kW * kRows;  // [kW][kRows][kD]
  const float o_fac = v_tok ? v_ref : 1.f;
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
    for (int col = 0; col < 2; ++col) {
      const int r = nt * 8 + 2 * t + col;
      if (g == 0) {
        sm_m[warp * kRows + r] = m_run[nt][col];
        sm_l[warp * kRows + r] = l_run[nt][col];
      }
#pragma unroll
      for (int i = 0; i < kSteps; ++i) {
        const int d = v_dim_of(g, 2 * i);  // elements 2i, 2i + 1 are adjacent d's (pieces of >= 8 bytes)
        float* dst = sm_acc + (warp * kRows + r) * kD + d;
        dst[0] = oacc[i][nt][col] * o_fac;
        dst[1] = oacc[i][nt][2 + col] * o_fac;
      }
    }
  __syncthreads();
  for (int idx = threadIdx.x; idx < rows * kD; idx += Traits::kThreads) {
    const int r = idx / kD;
    const int d = idx % kD;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kW; ++w) m = fmaxf(m, sm_m[w * kRows + r]);
    const float m_use = m == -INFINITY ? 0.f : m;
    float l = -0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < kW; ++w) {
      const float mw = sm_m[w * kRows + r];
      const float a = mw == -INFINITY ? 0.f : exp2f(mw - m_use);
      l += sm_l[w * kRows + r] * a;  // a zero l keeps its sign: (-0) * 0 = -0, +0 wins a sum
      o += sm_acc[(w * kRows + r) * kD + d] * a;
    }
    const bool empty = __float_as_uint(l) == 0x80000000u;  // -0: no visible key
    const bool all_neg_inf = __float_as_uint(l) == 0u;     // +0: visible keys, every score -inf
    const float kNaN = __int_as_float(0x7fc00000);
    o = (empty || all_neg_inf) ? 0.f : o / l;              // l NaN (a NaN or +inf score): o NaN
    if (kInt8 && c.v_mode == ScaleMode::kPerChannel)
      o *= load_scale(c.v_scale, kvh * c.v_scale_stride_a + d * c.v_scale_stride_b, c.v_scale_dtype);
    if (empty || all_neg_inf) o = 0.f;                     // whatever the V scales hold
    float lse = empty ? -INFINITY : (all_neg_inf ? INFINITY : (m + log2f(l)) * 0.69314718055994531f);
    if (prm.num_splits == 1 && all_neg_inf) o = lse = kNaN;  // several splits: +inf marks the partial
    const int64_t tok = q_start + r / group;
    const int hq = row_head(r);
    if (prm.num_splits == 1) {
      const int64_t oi = tok * prm.o_stride_t + hq * prm.o_stride_h + d;
      if (prm.q_bf16)
        static_cast<__nv_bfloat16*>(prm.out)[oi] = __float2bfloat16_rn(o);
      else
        static_cast<__half*>(prm.out)[oi] = __float2half_rn(o);
      if (prm.lse != nullptr && d == 0) prm.lse[tok * prm.lse_stride_t + hq * prm.lse_stride_h] = lse;
    } else {
      const int64_t row = (tok * prm.num_qo_heads + hq) * prm.num_splits + split;
      prm.partial_o[row * kD + d] = o;
      if (d == 0) prm.partial_lse[row] = lse;
    }
  }
}

// Merge of the splits: one CTA per (query row, q head): O = sum_s w_s O_s / sum_s w_s with
// w_s = exp(lse_s - max lse) over the splits with a finite lse. A NaN partial makes the row NaN; a
// +inf partial (visible keys, all scores -inf) weighs 0 among finite ones and makes the row NaN when
// no split is finite; only splits that are all -inf (no visible key) give an empty row.
// Decode (no cu_q_lens): blockIdx.x = row * Hq + h over total_rows rows. Multi-token:
// blockIdx.x = (b * max_q_len + i) * Hq + h, the row cu_q_lens[b] + i, merged only where the main
// kernel computed it (b in the well-formed prefix of cu_q_lens, i < q_len): rows past
// cu_q_lens[batch] (bucket padding), of skipped sequences or past max_q_len are not written.
// Parallel over the splits: the LSE max / flags / sum are block reductions (fixed order:
// deterministic for a fixed split count), and thread i sums the float4 i % (kD / 4) of the splits
// i / (kD / 4), i / (kD / 4) + kPhases, ... before a shared-memory sum over the phases.
template <int kD>
__global__ void __launch_bounds__(128) mma_decode_merge_kernel(const __grid_constant__ MmaDecodeParams prm) {
  static_assert(kMmaDecodeMaxSplits <= 256, "w_s holds one weight per split");
  constexpr int kV4 = kD / 4;            // float4 per split row
  constexpr int kPhases = 128 / kV4;     // splits summed side by side
  static_assert(128 % kV4 == 0, "head dims 64, 128, 256");
  __shared__ float w_s[256];
  __shared__ float red_m[4], red_d[4];
  __shared__ unsigned red_f[4];
  __shared__ float4 part[kPhases][kV4];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the split kernel (its launch overlaps that kernel's
  // tail): nothing of the split kernel's is read before it has completed and its writes are visible.
  cudaGridDependencySynchronize();
#endif
  const int h = static_cast<int>(blockIdx.x % prm.num_qo_heads);
  const int64_t unit = blockIdx.x / prm.num_qo_heads;
  int64_t tok = unit;
  if (prm.cu_q_lens != nullptr) {
    const int b = static_cast<int>(unit / prm.max_q_len), i = static_cast<int>(unit % prm.max_q_len);
    if (!mma_decode_detail::cu_prefix_ok(prm, b)) return;  // CTA-uniform from here on
    if (i >= prm.cu_q_lens[b + 1] - prm.cu_q_lens[b]) return;
    tok = prm.cu_q_lens[b] + i;
  }
  if (tok >= prm.total_rows) return;
  const int64_t th = tok * prm.num_qo_heads + h;
  const int S = prm.num_splits;
  const float* lse_s = prm.partial_lse + th * S;
  const float* o_s = prm.partial_o + th * S * kD;
  const float kNaN = __int_as_float(0x7fc00000);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // max over the splits with lse < +inf; flags: bit 0 a NaN split, bit 1 a +inf split
  float m = -INFINITY;
  unsigned flags = 0;
  for (int s = tid; s < S; s += 128) {
    const float x = lse_s[s];
    flags |= (x != x) ? 1u : 0u;
    flags |= (x == INFINITY) ? 2u : 0u;
    if (x < INFINITY) m = fmaxf(m, x);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    flags |= __shfl_xor_sync(0xffffffffu, flags, o);
  }
  if (lane == 0) {
    red_m[warp] = m;
    red_f[warp] = flags;
  }
  __syncthreads();
  m = fmaxf(fmaxf(red_m[0], red_m[1]), fmaxf(red_m[2], red_m[3]));
  flags = red_f[0] | red_f[1] | red_f[2] | red_f[3];
  float dsum = 0.f;
  if (m != -INFINITY)
    for (int s = tid; s < S; s += 128) {
      const float x = lse_s[s];
      if (x > -INFINITY && x < INFINITY) dsum += expf(x - m);
    }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) dsum += __shfl_xor_sync(0xffffffffu, dsum, o);
  if (lane == 0) red_d[warp] = dsum;
  __syncthreads();
  const float denom = (red_d[0] + red_d[1]) + (red_d[2] + red_d[3]);
  // NaN: a NaN split, or visible keys in some split and no finite score anywhere.
  if ((flags & 1u) || (m == -INFINITY && (flags & 2u))) m = kNaN;
  for (int s = tid; s < S; s += 128) {
    const float x = lse_s[s];
    w_s[s] = (m == -INFINITY || m != m || !(x > -INFINITY && x < INFINITY)) ? 0.f : expf(x - m) / denom;
  }
  __syncthreads();
  const int f = tid % kV4, ph = tid / kV4;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (m != -INFINITY && m == m)
    for (int s = ph; s < S; s += kPhases) {
      const float w = w_s[s];
      const float4 v = reinterpret_cast<const float4*>(o_s + static_cast<int64_t>(s) * kD)[f];
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
    }
  part[ph][f] = acc;
  __syncthreads();
  for (int d = tid; d < kD; d += 128) {
    float o = m != m ? kNaN : 0.f;
    if (m != -INFINITY && m == m) {
#pragma unroll
      for (int p = 0; p < kPhases; ++p) o += reinterpret_cast<const float*>(&part[p][0])[d];
    }
    const int64_t oi = tok * prm.o_stride_t + h * prm.o_stride_h + d;
    if (prm.q_bf16)
      static_cast<__nv_bfloat16*>(prm.out)[oi] = __float2bfloat16_rn(o);
    else
      static_cast<__half*>(prm.out)[oi] = __float2half_rn(o);
  }
  if (prm.lse != nullptr && tid == 0)
    prm.lse[tok * prm.lse_stride_t + h * prm.lse_stride_h] = m == -INFINITY ? -INFINITY : m + logf(denom);  // NaN m: NaN
}

}  // namespace kvq::cuda
