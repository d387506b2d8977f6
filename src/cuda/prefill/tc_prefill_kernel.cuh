// src/cuda/prefill/tc_prefill_kernel.cuh — the tensor-core paged prefill kernel (FlashAttention-2
// class) over a bf16/fp16 cache or an int8 cache read directly ("fused").
//
// What it computes: docs/design.md §1 for one CTA = (tile of packed query rows, kv head, sequence).
// Packed rows: row r of sequence b's packed space is (query token r / group, q head r % group of
// the kv head's group), so the q heads of one GQA group share every K/V tile the CTA loads.
// q head of (kv head g, head-in-group i): grouped g * group + i, interleaved i * num_kv_heads + g.
//
// Threads: 4 or 8 warps (tc_num_warps); warp w owns kMmaQ m16 row tiles (16 * kMmaQ packed rows)
// and reads the whole K/V tile, so softmax state is warp-private (quad shuffles only). Per KV tile (kTileKv tokens):
//   S = Q·Kᵀ   (ldmatrix Q and K, mma.sync m16n8k16, fp32 accumulators)
//   online softmax in fp32 with exp2 (softmax_scale * log2 e folded in), masked entries -inf,
//   P rounded to the q dtype, O += P·V (ldmatrix.trans V).
// KV tiles are TOKEN ranges: each 16-byte cp.async computes its token's (block, offset) through
// the block table with a fast divisor, so any page size works; tokens past kv_len, invalid block
// ids and head-dim padding are zero-filled (src-size 0) and masked. kStages-deep cp.async ring.
//
// Hostile metadata (check=false; docs/api.md "Hostile metadata"): kv_len is clamped to the table
// (max_blocks_per_seq * page_size) and positions follow the clamped length; a token whose table
// entry is not a block id in [0, num_blocks) is masked (per-stage validity bytes in shared memory,
// and a CTA-wide "tile has one" flag from the iteration's barrier, so full tiles pay nothing); a
// sequence at or after the first malformed cu_q_lens entry (decreasing, negative, past total_q) is
// skipped; window bounds never overflow (global_window is capped at the key count, pos - window
// is only taken for pos >= 0). Non-finite values: an empty row (no visible
// key) is written as zeros / lse -inf whatever the data; a row whose visible scores hold a NaN or
// +inf, or are all -inf, is NaN (out and lse) — docs/api.md "Non-finite values".
//
// Per-token V scales with fp16 q (Traits::kFactorV, its own instantiation): p * s_v would be
// rounded to fp16 for P·V, which loses most of its bits for small scales (s_v = amax/127 ~ 2e-6 is
// subnormal in fp16). O is kept in units of a running scale sigma (the largest |s_v| seen so far,
// per CTA): P·V takes p * s_v / sigma, in [0, 1], and a growing sigma rescales O together with the
// softmax's alpha; the epilogue multiplies by sigma. bf16 has fp32's exponent range and needs
// none of it (the other instantiations carry no sigma: no register cost).
//
// Memory: shared rows are padded by 16 bytes (an odd number of 16-byte units per row), which makes
// every ldmatrix phase and cp.async store conflict-free without a swizzle, for every head dim.
//   [Q: kTileQ x kHeadDim (q dtype)] [kStages x (K tile, V tile) in cache dtype]
//   int8 only: [K, V tiles converted to the q dtype] [kStages x (K, V) per-token scales fp32]
//
// int8 caches: the int8 tile lands in shared memory (half the bytes of bf16), then all threads
// convert it once to the q dtype (exact, common/mma_int8.cuh) into the conversion buffers; every warp
// then reads the converted tile like the bf16 path. (Converting per warp in registers would repeat
// the conversion once per warp: each warp needs the whole tile.) Scales use the identities of
// docs/design.md §1: per-channel K scale folded into Q when Q is staged (fp32 product rounded to the q
// dtype), per-token K scale multiplies score columns (with softmax_scale * log2 e), per-token V
// scale multiplies probabilities before they are rounded for P·V (the row sum l uses the unscaled
// probabilities), per-channel V scale multiplies O in the epilogue.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "src/cuda/common/attn_tile.cuh"
#include "src/cuda/common/mma_int8.cuh"
#include "src/cuda/common/scale_code.h"

namespace kvq::cuda::tc {

struct TcPrefillParams {
  const void* q;                 // [total_q, num_qo_heads, head_dim] DTypeQ
  void* out;                     // [total_q, num_qo_heads, head_dim] DTypeQ
  float* lse;                    // [total_q, num_qo_heads] fp32, or null
  const void* k_cache;           // HND [num_blocks, num_kv_heads, page_size, head_dim] / NHD [.., page_size, num_kv_heads, ..]
  const void* v_cache;           // same shape; DTypeQ or int8
  const void* k_scale;           // per-channel [num_kv_heads, head_dim] / per-token [num_blocks, ...], fp32/bf16/fp16
  const void* v_scale;
  const int32_t* block_tables;   // [batch_size, max_blocks_per_seq]
  const int32_t* cu_q_lens;      // [batch_size + 1]
  const int32_t* kv_lens;        // [batch_size]
  int64_t q_stride_n, q_stride_h;
  int64_t o_stride_n, o_stride_h;
  int64_t lse_stride_n, lse_stride_h;
  int64_t k_stride_block, k_stride_head, k_stride_pos;  // elements
  int64_t v_stride_block, v_stride_head, v_stride_pos;
  int64_t bt_stride;             // block_tables row stride
  int64_t cu_stride, kvl_stride; // element strides of cu_q_lens and kv_lens
  // per-channel: a = head, b = dim. per-token: a = block, b = head, c = position.
  int64_t ks_stride_a, ks_stride_b, ks_stride_c;
  int64_t vs_stride_a, vs_stride_b, vs_stride_c;
  int k_scale_mode, v_scale_mode;    // scale_code(ScaleMode): kScaleNone / kScalePerChannel / kScalePerToken
  int k_scale_dtype, v_scale_dtype;  // 0 fp32, 1 bf16, 2 fp16
  int total_q;                   // q.shape[0]
  int num_kv_heads;
  int head_dim;                  // actual head dim (<= kHeadDim; the rest is zero padding)
  int num_blocks;
  int max_blocks_per_seq;
  int num_q_tiles;               // CTA tiles per (sequence, kv head), an upper bound over the batch
  int causal;
  int local_window;              // < 0: none
  int global_window;
  int gqa_interleaved;
  float sm_scale_log2;           // softmax_scale * log2(e)
  FastDiv page_div;              // page_size
  FastDiv group_div;             // group_size
  // The Hopper prefill only, for measurements (KVQ_WG_DIAG, docs/perf-notes.md): bit 0 skips the
  // K/V copies, bit 1 the softmax (serial order), bit 2 the int8 conversion. Output is garbage
  // when set; 0 in normal use.
  int diag = 0;
};

// Tile sizes, in one place: read by the traits and by the host launcher (grid size: tc_tile_q
// depends on the head dim only). Chosen by measurement on H100 (docs/perf-notes.md, "Tensor-core
// prefill"): 128 packed rows per CTA up to D128 (4 warps x two m16 tiles; the int8 cache at D128
// runs 8 warps x one m16 tile, whose lower register need lets it take 64-token KV tiles), 64 rows
// with 32-token KV tiles for D >= 192 (registers).
constexpr int tc_tile_q(int head_dim) { return head_dim <= 128 ? 128 : 64; }
constexpr int tc_num_warps(int head_dim, bool kv_int8) { return head_dim == 128 && kv_int8 ? 8 : 4; }
constexpr int tc_mma_q(int head_dim, bool kv_int8) { return tc_tile_q(head_dim) / (16 * tc_num_warps(head_dim, kv_int8)); }
constexpr int tc_tile_kv(int head_dim, bool kv_int8) {
  return head_dim <= 64 || head_dim == 128 ? 64 : (head_dim <= 96 ? (kv_int8 ? 32 : 64) : 32);
}

template <int kHeadDim_, typename DTypeQ_, bool kKvInt8_, bool kFactorV_ = false>
struct TcPrefillTraits {
  static constexpr int kHeadDim = kHeadDim_;
  using DTypeQ = DTypeQ_;
  static constexpr bool kKvInt8 = kKvInt8_;
  static constexpr bool kFactorV = kFactorV_;  // per-token V scales factored by sigma (fp16 q)
  static constexpr int kNumWarps = tc_num_warps(kHeadDim, kKvInt8_);
  static constexpr int kNumThreads = 32 * kNumWarps;
  static constexpr int kMmaQ = tc_mma_q(kHeadDim, kKvInt8_);
  static constexpr int kTileQ = tc_tile_q(kHeadDim);
  static constexpr int kTileKv = tc_tile_kv(kHeadDim, kKvInt8_);
  static constexpr int kStages = 2;
  static constexpr int kRowElems = kHeadDim + 8;  // padded 16-bit row
  static constexpr int kRowBytes = kRowElems * 2;
  static constexpr int kKvElemBytes = kKvInt8 ? 1 : 2;
  static constexpr int kKvChunkElems = 16 / kKvElemBytes;
  static constexpr int kKvRowBytes = kKvInt8 ? kHeadDim + 16 : kRowBytes;
  static constexpr int kKvChunks = kHeadDim / kKvChunkElems;  // 16-byte chunks per K/V row
  static constexpr int kQChunks = kHeadDim / 8;
  static constexpr int kQBytes = kTileQ * kRowBytes;
  static constexpr int kKvTileBytes = kTileKv * kKvRowBytes;
  static constexpr int kStageBytes = 2 * kKvTileBytes;
  static constexpr int kConvTileBytes = kTileKv * kRowBytes;
  static constexpr int kConvBytes = kKvInt8 ? 2 * kConvTileBytes : 0;
  static constexpr int kScaleBytes = kKvInt8 ? kStages * 2 * kTileKv * 4 : 0;
  static constexpr int kVmaxWarps = kTileKv / 32;  // warps holding one tile's V scales
  static constexpr int kVmaxBytes = kFactorV ? kStages * kVmaxWarps * 4 : 0;
  static constexpr int kValidBytes = (kStages * kTileKv + 15) / 16 * 16;  // token validity per stage
  static constexpr int kSmemBytes =
      kQBytes + kStages * kStageBytes + kConvBytes + kScaleBytes + kVmaxBytes + kValidBytes;

  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 256, "head dims are multiples of 32 up to 256");
  static_assert((kRowBytes / 16) % 2 == 1 && (kKvRowBytes / 16) % 2 == 1,
                "padded rows must be an odd number of 16-byte units (conflict-free ldmatrix)");
  static_assert(2 * kTileKv <= kNumThreads, "one thread per per-token scale of K and V");
  static_assert(kTileKv % 16 == 0, "P·V consumes kv in k16 steps");
  static_assert(kTileKv % 32 == 0, "the V scales of a tile are whole warps (tile max by redux)");
  static_assert(!kFactorV || kKvInt8, "sigma factors per-token V scales of an int8 cache");
  static_assert(kStages >= 2, "the ring needs one tile in flight");
  static_assert(kTileQ == 16 * kMmaQ * kNumWarps, "the host sizes the grid with tc_tile_q");
};

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename Tr>
__device__ __forceinline__ void tc_prefill_device(const TcPrefillParams& p, uint8_t* smem) {
  using T = typename Tr::DTypeQ;
  constexpr int kHeadDim = Tr::kHeadDim;
  constexpr int kMmaQ = Tr::kMmaQ;
  constexpr int kTileQ = Tr::kTileQ;
  constexpr int kTileKv = Tr::kTileKv;
  constexpr int kStages = Tr::kStages;
  constexpr int kThreads = Tr::kNumThreads;
  constexpr int kNbKv = kTileKv / 8;      // n8 blocks of S
  constexpr int kNbD = kHeadDim / 8;      // n8 blocks of O
  const float kNegInf = -__int_as_float(0x7f800000);

  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int kv_head = blockIdx.x % p.num_kv_heads;
  const int q_tile = p.num_q_tiles - 1 - static_cast<int>(blockIdx.x / p.num_kv_heads);  // heavy tiles first
  const int batch_idx = blockIdx.y;

  // Rows are clamped to [0, total_q) whatever cu_q_lens holds, so bad metadata cannot send a
  // read or write out of q / out / lse.
  const int q_start = min(max(p.cu_q_lens[batch_idx * p.cu_stride], 0), p.total_q);
  const int q_len = min(max(p.cu_q_lens[(batch_idx + 1) * p.cu_stride], q_start), p.total_q) - q_start;
  // kv_len clamped to what the table covers: a hostile length never iterates past the table.
  const int64_t table_cap = static_cast<int64_t>(p.max_blocks_per_seq) * p.page_div.d;
  const int kv_len = static_cast<int>(min(static_cast<int64_t>(max(p.kv_lens[batch_idx * p.kvl_stride], 0)), table_cap));
  const int group = static_cast<int>(p.group_div.d);
  const int packed_len = q_len * group;
  const int row0 = q_tile * kTileQ;
  if (q_len <= 0 || row0 >= packed_len) return;
  {
    // cu_q_lens must be well formed up to this sequence (0 <= cu[0] <= ... <= cu[b + 1] <= total_q);
    // a sequence at or after a malformed entry is skipped, so no two sequences claim one row.
    bool bad = false;
    for (int i = tid; i <= batch_idx; i += kThreads) {
      const int lo = p.cu_q_lens[i * p.cu_stride], hi = p.cu_q_lens[(i + 1) * p.cu_stride];
      bad = bad || hi < lo || lo < 0 || hi > p.total_q;
    }
    if (__syncthreads_or(bad)) return;
  }

  // Visible KV range of the whole tile (bottom-right causal: query i at kv_len - q_len + i).
  const int delta = kv_len - q_len;
  const int tok_min = static_cast<int>(p.group_div.div(row0));
  const int tok_max = min(q_len - 1, static_cast<int>(p.group_div.div(row0 + kTileQ - 1)));
  const int pos_min = delta + tok_min;
  const int pos_max = delta + tok_max;
  const KvTileRange range =
      kv_tile_range(kv_len, pos_min, pos_max, kTileKv, p.causal != 0, p.local_window, p.global_window);
  const int n_iter = range.n_iter;
  auto tile_of = [&](int it) { return range.tile(it); };

  T* s_q = reinterpret_cast<T*>(smem);
  uint8_t* s_stage = smem + Tr::kQBytes;
  uint8_t* s_conv = s_stage + kStages * Tr::kStageBytes;
  float* s_scale = reinterpret_cast<float*>(s_conv + Tr::kConvBytes);  // [kStages][2][kTileKv]
  float* s_vmax = s_scale + Tr::kScaleBytes / 4;                        // [kStages][kVmaxWarps]
  uint8_t* s_valid = reinterpret_cast<uint8_t*>(s_vmax) + Tr::kVmaxBytes;  // [kStages][kTileKv]

  const bool k_per_token = Tr::kKvInt8 && p.k_scale_mode == kScalePerToken;
  const bool v_per_token = Tr::kKvInt8 && p.v_scale_mode == kScalePerToken;
  const bool k_per_channel = Tr::kKvInt8 && p.k_scale_mode == kScalePerChannel;
  const bool v_per_channel = Tr::kKvInt8 && p.v_scale_mode == kScalePerChannel;

  auto q_head_of = [&](int head_in_group) {
    return p.gqa_interleaved ? head_in_group * p.num_kv_heads + kv_head : kv_head * group + head_in_group;
  };

  // ---- Q tile -> shared (zero rows past packed_len and columns past head_dim) ----
  const T* q_ptr = static_cast<const T*>(p.q);
  for (int idx = tid; idx < kTileQ * Tr::kQChunks; idx += kThreads) {
    const int r = idx / Tr::kQChunks;
    const int ch = idx % Tr::kQChunks;
    const int pr = row0 + r;
    const bool valid = pr < packed_len && ch * 8 < p.head_dim;
    const T* src = q_ptr;
    if (valid) {
      uint32_t tok, hin;
      p.group_div.divmod(static_cast<uint32_t>(pr), tok, hin);
      src = q_ptr + (static_cast<int64_t>(q_start) + tok) * p.q_stride_n +
            static_cast<int64_t>(q_head_of(static_cast<int>(hin))) * p.q_stride_h + ch * 8;
    }
    T* dst = s_q + r * Tr::kRowElems + ch * 8;
    if (k_per_channel) {
      // Fold the per-channel K scale into Q: <q, k8*s> = <q*s, k8>.
      uint4 v = make_uint4(0, 0, 0, 0);
      if (valid) {
        v = *reinterpret_cast<const uint4*>(src);
        uint32_t* w = reinterpret_cast<uint32_t*>(&v);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int d = ch * 8 + 2 * e;
          const float2 x = unpack2<T>(w[e]);
          const float s0 = load_scale_any(p.k_scale, kv_head * p.ks_stride_a + d * p.ks_stride_b, p.k_scale_dtype);
          const float s1 =
              load_scale_any(p.k_scale, kv_head * p.ks_stride_a + (d + 1) * p.ks_stride_b, p.k_scale_dtype);
          w[e] = pack2<T>(x.x * s0, x.y * s1);
        }
      }
      *reinterpret_cast<uint4*>(dst) = v;
    } else {
      cp_async_16(smem_addr(dst), src, valid ? 16u : 0u);
    }
  }

  // ---- K/V tile issue: one 16-byte cp.async per (token, chunk), K and V share the address math ----
  const uint8_t* k_base =
      static_cast<const uint8_t*>(p.k_cache) + kv_head * p.k_stride_head * Tr::kKvElemBytes;
  const uint8_t* v_base =
      static_cast<const uint8_t*>(p.v_cache) + kv_head * p.v_stride_head * Tr::kKvElemBytes;
  const int32_t* bt_row = p.block_tables + batch_idx * p.bt_stride;

  auto locate = [&](int j, int& block, uint32_t& off) {
    uint32_t page;
    p.page_div.divmod(static_cast<uint32_t>(j), page, off);
    block = -1;
    if (j < kv_len && page < static_cast<uint32_t>(p.max_blocks_per_seq)) block = bt_row[page];
    return block >= 0 && block < p.num_blocks;
  };

  auto issue_row_chunk = [&](int kv0, int r, int ch, uint8_t* s_k, uint8_t* s_v) {
    int block;
    uint32_t off;
    const bool ok = locate(kv0 + r, block, off) && ch * Tr::kKvChunkElems < p.head_dim;
    const uint8_t* ks = k_base;
    const uint8_t* vs = v_base;
    if (ok) {
      ks = k_base + (block * p.k_stride_block + off * p.k_stride_pos + ch * Tr::kKvChunkElems) * Tr::kKvElemBytes;
      vs = v_base + (block * p.v_stride_block + off * p.v_stride_pos + ch * Tr::kKvChunkElems) * Tr::kKvElemBytes;
    }
    cp_async_16(smem_addr(s_k + r * Tr::kKvRowBytes + ch * 16), ks, ok ? 16u : 0u);
    cp_async_16(smem_addr(s_v + r * Tr::kKvRowBytes + ch * 16), vs, ok ? 16u : 0u);
  };
  // Token validity of tile `tile`, thread t < kTileKv for token t: 1 when it has a block. Returns
  // whether the token is inside kv_len but has no valid block (it is then masked).
  auto mark_valid = [&](int tile, int slot) -> bool {
    if (tid >= kTileKv) return false;
    int block;
    uint32_t off;
    const int j = tile * kTileKv + tid;
    const bool ok = locate(j, block, off);
    s_valid[slot * kTileKv + tid] = ok ? 1 : 0;
    return !ok && j < kv_len;
  };
  auto issue_tile = [&](int tile, int slot) {
    const int kv0 = tile * kTileKv;
    uint8_t* s_k = s_stage + slot * Tr::kStageBytes;
    uint8_t* s_v = s_k + Tr::kKvTileBytes;
    mark_valid(tile, slot);
    if constexpr (Tr::kNumWarps == 4 && kThreads % Tr::kKvChunks == 0 && kTileKv % (kThreads / Tr::kKvChunks) == 0) {
      // Fixed chunk per thread, rows strided: the block-table loads of all rows issue back to back
      // (not at 8 warps, whose 128-register budget spills with it).
      constexpr int kRowStep = kThreads / Tr::kKvChunks;
#pragma unroll
      for (int r = tid / Tr::kKvChunks; r < kTileKv; r += kRowStep) issue_row_chunk(kv0, r, tid % Tr::kKvChunks, s_k, s_v);
    } else {
#pragma unroll 2
      for (int idx = tid; idx < kTileKv * Tr::kKvChunks; idx += kThreads)
        issue_row_chunk(kv0, idx / Tr::kKvChunks, idx % Tr::kKvChunks, s_k, s_v);
    }
  };

  // Per-token scale of this thread's token in tile `tile` (thread t < kTileKv: K, next kTileKv: V).
  // K scales carry softmax_scale * log2 e. Tokens that are absent get 0.
  auto load_token_scale = [&](int tile) -> float {
    float s = 0.f;
    if (tid < 2 * kTileKv) {
      const bool is_v = tid >= kTileKv;
      if (is_v ? v_per_token : k_per_token) {
        int block;
        uint32_t off;
        if (locate(tile * kTileKv + (tid % kTileKv), block, off)) {
          if (is_v) {
            s = load_scale_any(p.v_scale, block * p.vs_stride_a + kv_head * p.vs_stride_b + off * p.vs_stride_c,
                               p.v_scale_dtype);
          } else {
            s = load_scale_any(p.k_scale, block * p.ks_stride_a + kv_head * p.ks_stride_b + off * p.ks_stride_c,
                               p.k_scale_dtype) *
                p.sm_scale_log2;
          }
        }
      }
    }
    return s;
  };
  // Called by every thread (uniform control flow): the V-scale warps also store their tile max.
  auto store_token_scale = [&](int slot, float s) {
    if (Tr::kKvInt8 && tid < 2 * kTileKv) {
      s_scale[slot * 2 * kTileKv + tid] = s;
      if (Tr::kFactorV && tid >= kTileKv) {  // whole warps (kTileKv % 32 == 0)
        // Non-negative floats order like their bits (redux.sync: one instruction); a NaN scale
        // is left out of the max (it still reaches P·V through p * s_v).
        const unsigned a = __reduce_max_sync(0xffffffffu, s == s ? __float_as_uint(fabsf(s)) : 0u);
        if (lane == 0) s_vmax[slot * Tr::kVmaxWarps + (tid - kTileKv) / 32] = __uint_as_float(a);
      }
    }
  };

  // ---- prologue: Q and the first kStages-1 tiles, one commit group each (Q rides with tile 0) ----
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_iter) {
      issue_tile(tile_of(s), s);
      if (Tr::kKvInt8) store_token_scale(s, load_token_scale(tile_of(s)));
    }
    cp_async_commit();
  }

  // Absolute position of one of this thread's rows (rows past packed_len take the last query's).
  // Recomputed on masked tiles only, so it holds no registers across the main loop.
  auto row_pos = [&](int mq, int rr) {
    const int pr = row0 + warp * 16 * kMmaQ + mq * 16 + rr * 8 + lane / 4;
    return delta + min(static_cast<int>(p.group_div.div(static_cast<uint32_t>(pr))), q_len - 1);
  };

  float o[kMmaQ][kNbD][4];
  float m[kMmaQ][2];
  // l starts at -0: it stays -0 (sign bit set) until this thread's columns of the row meet a
  // visible key, which tells an empty row (-0) from one whose visible scores were all -inf (+0)
  // without a register live across the loop.
  float l[kMmaQ][2];
  float sigma = 0.f;  // per-token V: O is kept in units of sigma (see the header)
#pragma unroll
  for (int mq = 0; mq < kMmaQ; ++mq) {
#pragma unroll
    for (int nb = 0; nb < kNbD; ++nb) o[mq][nb][0] = o[mq][nb][1] = o[mq][nb][2] = o[mq][nb][3] = 0.f;
    m[mq][0] = m[mq][1] = kNegInf;
    l[mq][0] = l[mq][1] = -0.f;
  }

  const uint32_t q_addr =
      smem_addr(s_q + (warp * 16 * kMmaQ + (lane % 16)) * Tr::kRowElems + (lane / 16) * 8);
  // K (non-trans): matrices (tok 0-7, k 0-7), (tok 0-7, k 8-15), (tok 8-15, k 0-7), (tok 8-15, k 8-15).
  const uint32_t k_lane_off = ((lane / 16) * 8 + (lane % 8)) * Tr::kRowBytes + ((lane / 8) % 2) * 16;
  // V (trans): matrices (tok 0-7, d 0-7), (tok 8-15, d 0-7), (tok 0-7, d 8-15), (tok 8-15, d 8-15).
  const uint32_t v_lane_off = (((lane / 8) % 2) * 8 + (lane % 8)) * Tr::kRowBytes + (lane / 16) * 16;

  for (int it = 0; it < n_iter; ++it) {
    const int slot = it % kStages;
    const int tile = tile_of(it);
    const int kv0 = tile * kTileKv;

    cp_async_wait<kStages - 2>();
    // Tile `it` visible to all; everyone is done with iteration it-1's buffers. The barrier also
    // ORs whether the tile holds a token inside kv_len without a valid block (each thread reads
    // the validity byte it wrote itself when it issued the tile).
    const bool tile_has_invalid =
        __syncthreads_or(tid < kTileKv && !s_valid[slot * kTileKv + tid] && kv0 + tid < kv_len) != 0;

    const int next = it + kStages - 1;
    float pending_scale = 0.f;

    uint32_t k_smem, v_smem;
    if constexpr (Tr::kKvInt8) {
      // int8 tile -> q dtype, once per CTA (exact).
      const uint8_t* src = s_stage + slot * Tr::kStageBytes;
      constexpr int kChunks = kHeadDim / 16;
      for (int idx = tid; idx < 2 * kTileKv * kChunks; idx += kThreads) {
        const int which = idx / (kTileKv * kChunks);
        const int rem = idx % (kTileKv * kChunks);
        const int r = rem / kChunks;
        const int ch = rem % kChunks;
        const uint4 w = *reinterpret_cast<const uint4*>(src + which * Tr::kKvTileBytes + r * Tr::kKvRowBytes + ch * 16);
        uint4 lo, hi;
        int8x4_to_pairs<T>(w.x, lo.x, lo.y);
        int8x4_to_pairs<T>(w.y, lo.z, lo.w);
        int8x4_to_pairs<T>(w.z, hi.x, hi.y);
        int8x4_to_pairs<T>(w.w, hi.z, hi.w);
        uint8_t* dst = s_conv + which * Tr::kConvTileBytes + r * Tr::kRowBytes + ch * 32;
        *reinterpret_cast<uint4*>(dst) = lo;
        *reinterpret_cast<uint4*>(dst + 16) = hi;
      }
      __syncthreads();  // converted tile visible
      k_smem = smem_addr(s_conv);
      v_smem = smem_addr(s_conv + Tr::kConvTileBytes);
    } else {
      k_smem = smem_addr(s_stage + slot * Tr::kStageBytes);
      v_smem = k_smem + Tr::kKvTileBytes;
    }

    // ---- S = Q·Kᵀ ----
    float s[kMmaQ][kNbKv][4];
#pragma unroll
    for (int mq = 0; mq < kMmaQ; ++mq)
#pragma unroll
      for (int nb = 0; nb < kNbKv; ++nb) s[mq][nb][0] = s[mq][nb][1] = s[mq][nb][2] = s[mq][nb][3] = 0.f;

#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t a[kMmaQ][4];
#pragma unroll
      for (int mq = 0; mq < kMmaQ; ++mq) ldmatrix_x4(a[mq], q_addr + (mq * 16 * Tr::kRowElems + kk * 16) * 2);
#pragma unroll
      for (int nb2 = 0; nb2 < kNbKv / 2; ++nb2) {
        uint32_t b[4];
        ldmatrix_x4(b, k_smem + nb2 * 16 * Tr::kRowBytes + k_lane_off + kk * 32);
#pragma unroll
        for (int mq = 0; mq < kMmaQ; ++mq) {
          mma_16816<T>(s[mq][2 * nb2], a[mq], b[0], b[1]);
          mma_16816<T>(s[mq][2 * nb2 + 1], a[mq], b[2], b[3]);
        }
      }
    }

    // Prefetch tile `next` into the slot iteration it-1 used (free since the barrier above). Issued
    // after Q·Kᵀ so the block-table latency overlaps other warps' MMAs.
    if (next < n_iter) {
      issue_tile(tile_of(next), next % kStages);
      if (Tr::kKvInt8) pending_scale = load_token_scale(tile_of(next));
    }
    cp_async_commit();

    // ---- scale, mask, online softmax (log2 domain) ----
    const float* s_ks = s_scale + slot * 2 * kTileKv;
    const float* s_vs = s_ks + kTileKv;
    const bool need_mask = tile_has_invalid || tile_needs_mask(kv0, kTileKv, kv_len, pos_min, pos_max, p.causal != 0,
                                                               p.local_window, p.global_window);
    // Without per-token K scales the constant scale is folded into exp2's FFMA: exp2(s*c - m).
    const float sc_mul = k_per_token ? 1.f : p.sm_scale_log2;
    if (k_per_token) {
#pragma unroll
      for (int nb = 0; nb < kNbKv; ++nb) {
        const float2 sc = *reinterpret_cast<const float2*>(s_ks + nb * 8 + 2 * (lane % 4));
#pragma unroll
        for (int mq = 0; mq < kMmaQ; ++mq) {
          s[mq][nb][0] *= sc.x;
          s[mq][nb][1] *= sc.y;
          s[mq][nb][2] *= sc.x;
          s[mq][nb][3] *= sc.y;
        }
      }
    }
    // Masking only on tiles that need it (a CTA-uniform branch, so full tiles pay nothing). Key j
    // of row pos is visible iff j <= hi && (j >= lo || j < global_window) and its block is valid.
    bool row_any[kMmaQ][2];  // the row has a visible key in this tile (this thread's columns)
#pragma unroll
    for (int mq = 0; mq < kMmaQ; ++mq) row_any[mq][0] = row_any[mq][1] = true;
    if (need_mask) {
      const uint8_t* valid = s_valid + slot * kTileKv;
#pragma unroll
      for (int mq = 0; mq < kMmaQ; ++mq) {
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const int pos = row_pos(mq, rr);
          const RowBounds rb = row_bounds(pos, kv_len, p.causal != 0, p.local_window);
          bool any = false;
#pragma unroll
          for (int nb = 0; nb < kNbKv; ++nb) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int c = nb * 8 + 2 * (lane % 4) + e;
              const int j = kv0 + c;
              const bool vis = key_visible(j, rb, p.global_window) && valid[c] != 0;
              if (!vis) s[mq][nb][2 * rr + e] = kNegInf;
              any = any || vis;
            }
          }
          row_any[mq][rr] = any;
        }
      }
    }

    // Per-token V: the running scale sigma grows to this tile's largest |s_v|; O (in units of
    // sigma) is rescaled with the softmax's alpha, and P·V takes p * s_v / sigma.
    float v_rescale = 1.f, v_inv = 1.f;
    if constexpr (Tr::kFactorV) {
      float tile_max = s_vmax[slot * Tr::kVmaxWarps];
#pragma unroll
      for (int w = 1; w < Tr::kVmaxWarps; ++w) tile_max = fmaxf(tile_max, s_vmax[slot * Tr::kVmaxWarps + w]);
      const float sigma_new = fmaxf(sigma, tile_max);
      v_rescale = sigma_new > 0.f ? sigma / sigma_new : 1.f;
      v_inv = sigma_new > 0.f ? 1.f / sigma_new : 0.f;
      sigma = sigma_new;
    }

#pragma unroll
    for (int mq = 0; mq < kMmaQ; ++mq) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float mx = kNegInf;
#pragma unroll
        for (int nb = 0; nb < kNbKv; ++nb) mx = fmaxf(mx, fmaxf(s[mq][nb][2 * rr], s[mq][nb][2 * rr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // log2 domain; sc_mul > 0 keeps the order. Rounded up, so that every exponent below,
        // fmaf(s, sc_mul, -m) (exact product), is <= 0: with m = s * sc_mul rounded to nearest,
        // the best key's exponent was the product's rounding error, whose exp2 overflows for a
        // huge softmax_scale.
        mx = fmaxf(m[mq][rr], __fmul_ru(mx, sc_mul));
        const float m_use = mx == kNegInf ? 0.f : mx;
        const float alpha = fast_exp2(m[mq][rr] - m_use);
        m[mq][rr] = mx;
        float sum = 0.f;
#pragma unroll
        for (int nb = 0; nb < kNbKv; ++nb) {
          const float p0 = fast_exp2(fmaf(s[mq][nb][2 * rr], sc_mul, -m_use));
          const float p1 = fast_exp2(fmaf(s[mq][nb][2 * rr + 1], sc_mul, -m_use));
          s[mq][nb][2 * rr] = p0;
          s[mq][nb][2 * rr + 1] = p1;
          sum += p0 + p1;
        }
        // Columns of this thread with no visible key in this tile add nothing: l is only rescaled,
        // which keeps a -0 ("nothing seen yet") at -0 (adding the +0 sum would make it +0). The
        // rescale itself is needed: the row max may have grown through the quad's other columns.
        l[mq][rr] = row_any[mq][rr] ? l[mq][rr] * alpha + sum : l[mq][rr] * alpha;
        const float o_scale = alpha * v_rescale;
#pragma unroll
        for (int nb = 0; nb < kNbD; ++nb) {
          o[mq][nb][2 * rr] *= o_scale;
          o[mq][nb][2 * rr + 1] *= o_scale;
        }
      }
    }

    // ---- O += P·V (P rounded to the q dtype; per-token V scale applied to P first) ----
#pragma unroll
    for (int kt = 0; kt < kTileKv / 16; ++kt) {
      float2 vs0 = make_float2(1.f, 1.f), vs1 = make_float2(1.f, 1.f);
      if (v_per_token) {
        vs0 = *reinterpret_cast<const float2*>(s_vs + kt * 16 + 2 * (lane % 4));
        vs1 = *reinterpret_cast<const float2*>(s_vs + kt * 16 + 8 + 2 * (lane % 4));
        if constexpr (Tr::kFactorV) {
          vs0.x *= v_inv;
          vs0.y *= v_inv;
          vs1.x *= v_inv;
          vs1.y *= v_inv;
        }
      }
      uint32_t pa[kMmaQ][4];
#pragma unroll
      for (int mq = 0; mq < kMmaQ; ++mq) {
        pa[mq][0] = pack2<T>(s[mq][2 * kt][0] * vs0.x, s[mq][2 * kt][1] * vs0.y);
        pa[mq][1] = pack2<T>(s[mq][2 * kt][2] * vs0.x, s[mq][2 * kt][3] * vs0.y);
        pa[mq][2] = pack2<T>(s[mq][2 * kt + 1][0] * vs1.x, s[mq][2 * kt + 1][1] * vs1.y);
        pa[mq][3] = pack2<T>(s[mq][2 * kt + 1][2] * vs1.x, s[mq][2 * kt + 1][3] * vs1.y);
      }
#pragma unroll
      for (int db = 0; db < kHeadDim / 16; ++db) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_smem + kt * 16 * Tr::kRowBytes + v_lane_off + db * 32);
#pragma unroll
        for (int mq = 0; mq < kMmaQ; ++mq) {
          mma_16816<T>(o[mq][2 * db], pa[mq], b[0], b[1]);
          mma_16816<T>(o[mq][2 * db + 1], pa[mq], b[2], b[3]);
        }
      }
    }

    // The scales of tile `next` land in their slot now (read after a later barrier).
    if (Tr::kKvInt8 && next < n_iter) store_token_scale(next % kStages, pending_scale);
  }
  cp_async_wait<0>();

  // ---- epilogue: normalize, per-channel V scale, write rows that exist ----
  T* out_ptr = static_cast<T*>(p.out);
  constexpr float kLn2 = 0.693147180559945309f;
#pragma unroll
  for (int mq = 0; mq < kMmaQ; ++mq) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float lt = l[mq][rr];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      // No visible key (l still -0 on every lane of the quad: -0 + -0 = -0): an empty row (zeros,
      // lse -inf), whatever the data held. Visible keys but no positive sum (all scores -inf:
      // 0/0) or a NaN sum (a NaN or +inf score): a NaN row.
      const bool empty = __float_as_uint(lt) == 0x80000000u;
      const bool nan_row = !empty && !(lt > 0.f);
      const float kNaN = __int_as_float(0x7fc00000);
      const float inv = (empty || nan_row) ? 0.f : (Tr::kFactorV ? sigma : 1.f) / lt;
      const int pr = row0 + warp * 16 * kMmaQ + mq * 16 + rr * 8 + lane / 4;
      if (pr >= packed_len) continue;
      uint32_t tok, hin;
      p.group_div.divmod(static_cast<uint32_t>(pr), tok, hin);
      const int64_t tq = static_cast<int64_t>(q_start) + tok;
      const int qh = q_head_of(static_cast<int>(hin));
      T* orow = out_ptr + tq * p.o_stride_n + static_cast<int64_t>(qh) * p.o_stride_h;
#pragma unroll
      for (int nb = 0; nb < kNbD; ++nb) {
        const int d = nb * 8 + 2 * (lane % 4);
        if (d < p.head_dim) {
          float v0 = o[mq][nb][2 * rr] * inv;
          float v1 = o[mq][nb][2 * rr + 1] * inv;
          if (v_per_channel && !empty && !nan_row) {
            v0 *= load_scale_any(p.v_scale, kv_head * p.vs_stride_a + d * p.vs_stride_b, p.v_scale_dtype);
            v1 *= load_scale_any(p.v_scale, kv_head * p.vs_stride_a + (d + 1) * p.vs_stride_b, p.v_scale_dtype);
          }
          if (empty) v0 = v1 = 0.f;
          if (nan_row) v0 = v1 = kNaN;
          *reinterpret_cast<uint32_t*>(orow + d) = pack2<T>(v0, v1);
        }
      }
      if (p.lse != nullptr && lane % 4 == 0) {
        p.lse[tq * p.lse_stride_n + static_cast<int64_t>(qh) * p.lse_stride_h] =
            empty ? kNegInf : (nan_row ? kNaN : (m[mq][rr] + __log2f(lt)) * kLn2);
      }
    }
  }
}

template <typename Tr>
__global__ void __launch_bounds__(Tr::kNumThreads, 2) tc_prefill_kernel(const __grid_constant__ TcPrefillParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  tc_prefill_device<Tr>(p, smem);
}

}  // namespace kvq::cuda::tc
