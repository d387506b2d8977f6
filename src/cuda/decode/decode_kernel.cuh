// src/cuda/decode/decode_kernel.cuh — split-KV ("flash decoding") paged attention for one query
// token per sequence, plus the LSE merge of the splits.
//
// What: out[b, h] = softmax over the visible keys of sequence b (all kv_len keys, minus those a
// local window hides) of <q[b,h], k_j> * softmax_scale, times v_j. lse optional.
// Mapping: grid.x = batch_size * num_splits (split fastest), grid.y = num_kv_heads * head tiles,
// 128 threads. One CTA serves up to kGroupTile q heads of the same kv head, so every K/V tile is
// read from memory once for all of them. Split s of sequence b covers keys
// [s * chunk, (s+1) * chunk) with chunk = ceil(kv_len / num_splits) rounded up to whole tiles.
// A key row (head_dim elements) is read by a group of kTpk consecutive threads, each one 16-byte
// vector (kVecElems = 16 int8 or 8 bf16/fp16 elements); a pass covers kKeysPerPass = 128 / kTpk
// keys, a tile kUnroll passes. K and V tiles stream through a kStages-deep cp.async pipeline in
// shared memory; each thread copies, and later reads back, only its own 16-byte vectors, so the
// main loop has no barrier at all.
// Softmax: every key group keeps its own online-softmax state per head (running max m, sum l and
// the fp32 accumulator acc[head][its kVecElems dims]) over the keys it sees; the score of a key is
// a butterfly sum over the group's lanes, so all lanes of the group hold it. After the loop the
// key groups are merged exactly with the LSE rule (shuffles inside a warp, then shared memory
// across the warps), which is the same merge the split kernel's partial results get.
// Numerics: q is converted to fp32 once with softmax_scale * log2(e) and the per-channel K scale
// folded in (exp2 is used throughout; lse is converted back to natural log). int8 -> fp32 is
// exact (magic-number conversion). Per-token K scale multiplies the score; per-token V scale
// multiplies p (not l); per-channel V scale multiplies O in the epilogue. One split: O and lse go
// to out directly; several: partial O (normalised, fp32) and lse go to the workspace and
// decode_merge_kernel combines them.
// Non-finite values (docs/design.md §1 "Non-finite values", the CPU backend's rule): l starts at -0
// and only visible keys add to it (invisible ones add -0), so after the merges l == -0 means no
// visible key (an empty row: zeros, lse -inf), l == +0 means visible keys whose scores were all
// -inf (a NaN row), and a NaN or +inf score leaves l NaN (a NaN row). fmaxf drops a NaN score from
// the running max, but exp2(NaN - m) is NaN, so it still reaches l. A split partial carries the
// three cases in its lse: -inf (no visible key), +inf (visible keys, all -inf: never a real lse,
// whose scores are finite), NaN; the merge weighs a +inf split 0 among finite ones and makes the
// row NaN when no split has a finite lse but one is +inf.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "src/cuda/common/convert.cuh"
#include "src/cuda/common/cp_async.cuh"
#include "src/cuda/common/paged.cuh"
#include "src/cuda/common/warp.cuh"

namespace kvq::cuda {

struct DecodeParams {
  const void* q = nullptr;           // [batch_size, num_qo_heads, head_dim] DTypeQ
  PagedCacheParams cache;            // paged K/V and scales
  const int32_t* block_tables = nullptr;  // [batch_size, max_blocks_per_seq]
  const int32_t* kv_lens = nullptr;       // [batch_size]
  void* out = nullptr;               // [batch_size, num_qo_heads, head_dim] DTypeQ
  float* lse = nullptr;              // [batch_size, num_qo_heads] fp32 or null
  float* partial_o = nullptr;        // [batch_size, num_qo_heads, num_splits, head_dim] fp32 (num_splits > 1)
  float* partial_lse = nullptr;      // [batch_size, num_qo_heads, num_splits] fp32 (num_splits > 1)
  int64_t q_stride_b = 0, q_stride_h = 0;
  int64_t o_stride_b = 0, o_stride_h = 0;
  int64_t lse_stride_b = 0, lse_stride_h = 0;
  int64_t bt_stride = 0;
  int32_t batch_size = 0;
  int32_t max_blocks_per_seq = 0;
  int32_t num_qo_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t group_size = 1;
  int32_t num_head_tiles = 1;        // ceil(group_size / kGroupTile)
  int32_t head_dim = 0;
  int32_t num_splits = 1;
  float scale_log2 = 1.f;            // softmax_scale * log2(e)
  int32_t local_window = -1;
  int32_t global_window = 0;
  bool gqa_interleaved = false;
  bool vec_aligned = false;          // 16-byte vector loads are legal for every K/V row
};

template <typename DTypeQ_, typename DTypeKV_, int kTpk_>
struct DecodeTraits {
  using DTypeQ = DTypeQ_;
  using DTypeKV = DTypeKV_;
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kTpk = kTpk_;
  static constexpr int kVecElems = VecTraits<DTypeKV>::kN;
  static constexpr int kMaxHeadDim = kTpk * kVecElems;
  static constexpr int kKeysPerPass = kThreads / kTpk;
  static constexpr int kUnroll = 2;
  static constexpr int kTileKeys = kKeysPerPass * kUnroll;
  static constexpr int kGroupTile = 4;
  static constexpr int kStages = 4;               // cp.async pipeline depth (tiles in flight)
  static constexpr int kMinBlocksPerSm = 3;       // caps registers at 170 so three CTAs share an SM
  static constexpr int kTileVecs = kTileKeys * kTpk;  // 16-byte vectors of one K (or V) tile
  static_assert(kTpk >= 1 && kTpk <= 32 && (kTpk & (kTpk - 1)) == 0, "a key row is read by a power-of-two lane group of one warp");
  static_assert(kMaxHeadDim <= 256 || kTpk == 16 || kTpk == 32, "head dims up to 256");
};

template <typename Traits>
struct DecodeSmem {
  // The K/V stage buffers while the loop runs; the cross-warp merge buffers afterwards.
  union {
    struct {
      uint4 k[Traits::kStages][Traits::kTileVecs];
      uint4 v[Traits::kStages][Traits::kTileVecs];
    } stage;
    struct {
      float acc[Traits::kWarps][Traits::kGroupTile][Traits::kMaxHeadDim];
      float m[Traits::kWarps][Traits::kGroupTile];
      float l[Traits::kWarps][Traits::kGroupTile];
    } merge;
  };
};

template <typename T>
__device__ __forceinline__ uint4 load_vec16(const T* ptr, int valid_elems, bool aligned) {
  constexpr int kN = VecTraits<T>::kN;
  if (aligned && valid_elems >= kN) return *reinterpret_cast<const uint4*>(ptr);
  uint4 v = make_uint4(0, 0, 0, 0);
  T* e = reinterpret_cast<T*>(&v);
#pragma unroll
  for (int i = 0; i < kN; ++i)
    if (i < valid_elems) e[i] = ptr[i];
  return v;
}

// (m, l, acc) <- LSE merge of itself with (m2, l2, acc2), all in log2 units. The sign of a zero l
// survives: (-0) * 0 + (-0) * 0 = -0 (nothing visible on either side), any +0 makes it +0.
template <int kN>
__device__ __forceinline__ void merge_state(float& m, float& l, float (&acc)[kN], float m2, float l2, const float* acc2) {
  const float m_new = fmaxf(m, m2);
  const float m_use = m_new == -INFINITY ? 0.f : m_new;
  const float a = exp2f(m - m_use), a2 = exp2f(m2 - m_use);
  l = l * a + l2 * a2;
#pragma unroll
  for (int e = 0; e < kN; ++e) acc[e] = acc[e] * a + acc2[e] * a2;
  m = m_new;
}

template <typename Traits>
__device__ void decode_device(const DecodeParams& prm, DecodeSmem<Traits>& sm) {
  using DTypeQ = typename Traits::DTypeQ;
  using DTypeKV = typename Traits::DTypeKV;
  constexpr int kTpk = Traits::kTpk;
  constexpr int kVec = Traits::kVecElems;
  constexpr int kG = Traits::kGroupTile;
  constexpr int kKpp = Traits::kKeysPerPass;
  constexpr int kU = Traits::kUnroll;
  constexpr int kTile = Traits::kTileKeys;
  constexpr int kS = Traits::kStages;
  constexpr bool kInt8 = std::is_same_v<DTypeKV, int8_t>;

  const int tid = threadIdx.x;
  const int lane_idx = tid & 31;
  const int warp_idx = tid >> 5;
  const int kg = tid / kTpk;  // key group within a pass
  const int vi = tid % kTpk;  // vector index within the key row
  const int split = blockIdx.x % prm.num_splits;
  const int b = blockIdx.x / prm.num_splits;
  const int kv_head = blockIdx.y / prm.num_head_tiles;
  const int head_tile = blockIdx.y % prm.num_head_tiles;
  const int D = prm.head_dim;
  const PagedCacheParams& c = prm.cache;
  const int g0 = head_tile * kG;
  const int gt = min(kG, prm.group_size - g0);

  const int64_t table_cap = static_cast<int64_t>(prm.max_blocks_per_seq) * c.page_size;
  int64_t kv_len_raw = prm.kv_lens[b];
  kv_len_raw = kv_len_raw < 0 ? 0 : kv_len_raw;
  const int64_t kv_len = kv_len_raw < table_cap ? kv_len_raw : table_cap;
  const int64_t pos = kv_len - 1;  // the query's position follows the clamped length
  int64_t chunk = (kv_len + prm.num_splits - 1) / prm.num_splits;
  chunk = (chunk + kTile - 1) / kTile * kTile;
  const int64_t j0 = split * chunk;
  const int64_t j1 = j0 + chunk < kv_len ? j0 + chunk : kv_len;

  auto q_head = [&](int r) {
    const int gi = g0 + r;
    return prm.gqa_interleaved ? gi * prm.num_kv_heads + kv_head : kv_head * prm.group_size + gi;
  };

  // q (fp32, scales folded) for this thread's kVec dims of each head of the tile.
  const int d0 = vi * kVec;
  const int valid_d = D - d0;
  float qreg[kG][kVec];
#pragma unroll
  for (int r = 0; r < kG; ++r) {
    const DTypeQ* q_row = static_cast<const DTypeQ*>(prm.q) + b * prm.q_stride_b + q_head(r < gt ? r : 0) * prm.q_stride_h;
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const int d = d0 + e;
      float x = 0.f;
      if (r < gt && d < D) {
        x = to_float(q_row[d]) * prm.scale_log2;
        if (kInt8 && c.k_mode == ScaleMode::kPerChannel)
          x *= load_scale(c.k_scale, kv_head * c.k_scale_stride_a + d * c.k_scale_stride_b, c.k_scale_dtype);
      }
      qreg[r][e] = x;
    }
  }

  float acc[kG][kVec];
  float m_run[kG], l_run[kG];
#pragma unroll
  for (int r = 0; r < kG; ++r) {
    m_run[r] = -INFINITY;
    l_run[r] = -0.f;  // -0 until a visible key (see the header)
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc[r][e] = 0.f;
  }

  const int32_t* table_row = prm.block_tables + static_cast<int64_t>(b) * prm.bt_stride;
  const DTypeKV* k_base = static_cast<const DTypeKV*>(c.k_data);
  const DTypeKV* v_base = static_cast<const DTypeKV*>(c.v_data);
  const bool windowed = prm.local_window >= 0;

  // Key slot of this thread's group in a tile: u * kKpp + kg; its vector sits at [slot][vi].
  auto key_info = [&](int64_t ts, int u, int32_t& block, uint32_t& offset) {
    const int64_t j = ts + u * kKpp + kg;
    block = 0;
    offset = 0;
    bool ok = j < j1 && locate_token(c, table_row, static_cast<uint32_t>(j), block, offset);
    if (ok && windowed) ok = (pos - j <= prm.local_window) || (j < prm.global_window);
    return ok;
  };
  auto issue = [&](int64_t ts, int stage) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      int32_t block;
      uint32_t offset;
      const bool ok = key_info(ts, u, block, offset) && valid_d > 0;
      const int idx = (u * kKpp + kg) * kTpk + vi;
      const DTypeKV* kp = ok ? k_base + k_elem_offset(c, block, offset, kv_head) + d0 : k_base;
      const DTypeKV* vp = ok ? v_base + v_elem_offset(c, block, offset, kv_head) + d0 : v_base;
      if (prm.vec_aligned) {
        cp_async_16(&sm.stage.k[stage][idx], kp, ok ? 16 : 0);
        cp_async_16(&sm.stage.v[stage][idx], vp, ok ? 16 : 0);
      } else {
        sm.stage.k[stage][idx] = ok ? load_vec16(kp, valid_d, false) : make_uint4(0, 0, 0, 0);
        sm.stage.v[stage][idx] = ok ? load_vec16(vp, valid_d, false) : make_uint4(0, 0, 0, 0);
      }
    }
  };

  const int64_t num_tiles = j1 > j0 ? (j1 - j0 + kTile - 1) / kTile : 0;
#pragma unroll
  for (int st = 0; st < kS - 1; ++st) {
    if (st < num_tiles) issue(j0 + st * kTile, st);
    cp_async_commit();
  }
  for (int64_t it = 0; it < num_tiles; ++it) {
    const int64_t ts = j0 + it * kTile;
    // The slot refilled here held tile it-1, which this thread alone wrote and already consumed.
    if (it + kS - 1 < num_tiles) issue(j0 + (it + kS - 1) * kTile, static_cast<int>((it + kS - 1) % kS));
    cp_async_commit();
    cp_async_wait<kS - 1>();
    const int stage = static_cast<int>(it % kS);
    if (windowed && ts + kTile - 1 < pos - prm.local_window && ts >= prm.global_window) continue;

    // Scores of this group's kU keys for every head (all lanes of the group get them).
    float s[kU][kG];
    float v_tok[kU];
    bool vis[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      int32_t block;
      uint32_t offset;
      const bool valid = key_info(ts, u, block, offset);
      vis[u] = valid;
      float k_tok = 1.f;
      v_tok[u] = 1.f;
      if (valid && kInt8 && c.k_mode == ScaleMode::kPerToken)
        k_tok = load_scale(c.k_scale, k_token_scale_offset(c, block, offset, kv_head), c.k_scale_dtype);
      if (valid && kInt8 && c.v_mode == ScaleMode::kPerToken)
        v_tok[u] = load_scale(c.v_scale, v_token_scale_offset(c, block, offset, kv_head), c.v_scale_dtype);
      float f[kVec];
      unpack16(sm.stage.k[stage][(u * kKpp + kg) * kTpk + vi], static_cast<DTypeKV*>(nullptr), f);
#pragma unroll
      for (int r = 0; r < kG; ++r) {
        float pa = 0.f, pb = 0.f;  // two chains: half the FMA dependency depth
#pragma unroll
        for (int e = 0; e < kVec; e += 2) {
          pa = fmaf(qreg[r][e], f[e], pa);
          pb = fmaf(qreg[r][e + 1], f[e + 1], pb);
        }
        const float part = group_sum<kTpk>(pa + pb);
        s[u][r] = valid ? part * k_tok : -INFINITY;
      }
    }
    // Online softmax update of this group's state, once per tile.
    float p[kU][kG];
#pragma unroll
    for (int r = 0; r < kG; ++r) {
      float m_new = m_run[r];
#pragma unroll
      for (int u = 0; u < kU; ++u) m_new = fmaxf(m_new, s[u][r]);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(m_run[r] - m_use);
      float psum = -0.f;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        // An invisible key adds -0 (keeps "nothing seen" at -0); a visible -inf score adds +0.
        p[u][r] = vis[u] ? exp2f(s[u][r] - m_use) : -0.f;
        psum += p[u][r];
      }
      l_run[r] = l_run[r] * alpha + psum;
      m_run[r] = m_new;
      if (alpha != 1.f) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[r][e] *= alpha;
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float f[kVec];
      unpack16(sm.stage.v[stage][(u * kKpp + kg) * kTpk + vi], static_cast<DTypeKV*>(nullptr), f);
#pragma unroll
      for (int r = 0; r < kG; ++r) {
        const float pv = p[u][r] * v_tok[u];
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[r][e] = fmaf(pv, f[e], acc[r][e]);
      }
    }
  }
  cp_async_wait<0>();

  // Merge the key groups of a warp (lanes with equal vi), then the warps through shared memory.
#pragma unroll
  for (int o = kTpk; o < 32; o <<= 1) {
#pragma unroll
    for (int r = 0; r < kG; ++r) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m_run[r], o);
      const float l2 = __shfl_xor_sync(0xffffffffu, l_run[r], o);
      float acc2[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc2[e] = __shfl_xor_sync(0xffffffffu, acc[r][e], o);
      merge_state<kVec>(m_run[r], l_run[r], acc[r], m2, l2, acc2);
    }
  }
  __syncthreads();  // every thread is done with the stage buffers before the merge reuses them
  if (lane_idx < kTpk) {
#pragma unroll
    for (int r = 0; r < kG; ++r) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) sm.merge.acc[warp_idx][r][d0 + e] = acc[r][e];
      if (vi == 0) {
        sm.merge.m[warp_idx][r] = m_run[r];
        sm.merge.l[warp_idx][r] = l_run[r];
      }
    }
  }
  __syncthreads();
  for (int idx = tid; idx < gt * D; idx += Traits::kThreads) {
    const int r = idx / D;
    const int d = idx % D;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < Traits::kWarps; ++w) m = fmaxf(m, sm.merge.m[w][r]);
    const float m_use = m == -INFINITY ? 0.f : m;
    float l = -0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < Traits::kWarps; ++w) {
      const float a = exp2f(sm.merge.m[w][r] - m_use);
      l += sm.merge.l[w][r] * a;
      o += sm.merge.acc[w][r][d] * a;
    }
    const bool empty = __float_as_uint(l) == 0x80000000u;  // -0: no visible key
    const bool all_neg_inf = __float_as_uint(l) == 0u;     // +0: visible keys, every score -inf
    const bool nan_sum = l != l;                           // a NaN or +inf score
    const float kNaN = __int_as_float(0x7fc00000);
    o = (empty || all_neg_inf) ? 0.f : o / l;
    if (kInt8 && c.v_mode == ScaleMode::kPerChannel)
      o *= load_scale(c.v_scale, kv_head * c.v_scale_stride_a + d * c.v_scale_stride_b, c.v_scale_dtype);
    float lse = empty ? -INFINITY : (nan_sum ? kNaN : (m + log2f(l)) * 0.69314718055994531f);
    const int hq = q_head(r);
    if (prm.num_splits == 1) {
      if (all_neg_inf) o = lse = kNaN;
      if (empty) o = 0.f;  // whatever the V scales hold
      static_cast<DTypeQ*>(prm.out)[b * prm.o_stride_b + hq * prm.o_stride_h + d] = from_float<DTypeQ>(o);
      if (prm.lse != nullptr && d == 0) prm.lse[b * prm.lse_stride_b + hq * prm.lse_stride_h] = lse;
    } else {
      if (all_neg_inf) lse = INFINITY;  // the merge's marker (see the header); o stays 0
      if (empty || all_neg_inf) o = 0.f;
      const int64_t row = (static_cast<int64_t>(b) * prm.num_qo_heads + hq) * prm.num_splits + split;
      prm.partial_o[row * D + d] = o;
      if (d == 0) prm.partial_lse[row] = lse;
    }
  }
}

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocksPerSm) decode_kernel(const __grid_constant__ DecodeParams params) {
  __shared__ DecodeSmem<Traits> smem;
  decode_device<Traits>(params, smem);
}

// Merge: one CTA per (b, q head): O = sum_s w_s O_s / sum_s w_s with w_s = exp(lse_s - max lse)
// over the splits with a finite lse. A NaN partial makes the row NaN; a +inf partial (visible keys,
// all scores -inf) weighs 0 among finite ones and makes the row NaN when no split is finite; only
// splits that are all -inf (no visible key) give an empty row.
template <typename DTypeO>
__global__ void __launch_bounds__(128) decode_merge_kernel(const __grid_constant__ DecodeParams prm) {
  const int64_t bh = blockIdx.x;
  const int b = static_cast<int>(bh / prm.num_qo_heads);
  const int h = static_cast<int>(bh % prm.num_qo_heads);
  const float* lse_s = prm.partial_lse + bh * prm.num_splits;
  const float* o_s = prm.partial_o + bh * prm.num_splits * prm.head_dim;
  float m = -INFINITY;
  bool nan = false, neg_inf_scores = false;
  for (int s = 0; s < prm.num_splits; ++s) {
    const float x = lse_s[s];
    nan = nan || x != x;
    neg_inf_scores = neg_inf_scores || x == INFINITY;
    if (x < INFINITY) m = fmaxf(m, x);
  }
  const bool nan_row = nan || (m == -INFINITY && neg_inf_scores);
  const bool empty = !nan_row && m == -INFINITY;
  const float kNaN = __int_as_float(0x7fc00000);
  auto weight = [&](float x) { return x > -INFINITY && x < INFINITY ? expf(x - m) : 0.f; };
  float denom = 0.f;
  if (!nan_row && !empty)
    for (int s = 0; s < prm.num_splits; ++s) denom += weight(lse_s[s]);
  for (int d = threadIdx.x; d < prm.head_dim; d += blockDim.x) {
    float o = nan_row ? kNaN : 0.f;
    if (!nan_row && !empty) {
      for (int s = 0; s < prm.num_splits; ++s) o += weight(lse_s[s]) * o_s[s * prm.head_dim + d];
      o /= denom;
    }
    static_cast<DTypeO*>(prm.out)[b * prm.o_stride_b + h * prm.o_stride_h + d] = from_float<DTypeO>(o);
  }
  if (prm.lse != nullptr && threadIdx.x == 0)
    prm.lse[b * prm.lse_stride_b + h * prm.lse_stride_h] = nan_row ? kNaN : (empty ? -INFINITY : m + logf(denom));
}

}  // namespace kvq::cuda
