// src/cuda/prefill/generic_kernel.cuh — the generic paged prefill: correct for any shape, not fast.
//
// What: for every real query row t < cu_q_lens[batch_size] and q head h, the attention of
// docs/design.md §1 over the paged cache (causal / windows / per-sequence boolean mask), with K and V
// dequantized on the fly (int8 * scale; bf16/fp16 caches as is).
// Mapping: one warp per (query row, q head); kWarps warps per CTA; grid.x = ceil(total_q * Hq / kWarps).
// Lane l holds dims d = l + 32k (k < kMaxDimsPerLane = 8, so head_dim <= 256, runtime head_dim)
// of q and of the fp32 output accumulator. Per visible key j the warp computes <q, k_j> with a
// butterfly reduction, then updates an online softmax (running max m, sum l) and acc += p * v_j.
// The sequence of row t is found by binary search in cu_q_lens; the mask offset of sequence b is
// sum_{b'<b} q_len_b' * kv_len_b', summed on the device. Keys whose table entry is not a valid
// block id are skipped (masked), so garbage metadata never causes an out-of-bounds access.
// Hostile metadata (check=false; docs/api.md "Hostile metadata"): only the well-formed prefix of
// cu_q_lens (0 <= cu[0] <= ... <= cu[n] <= total_q) is served — a row no sequence of that prefix
// covers is not written — and kv_len is clamped to the table (max_blocks_per_seq * page_size),
// positions following the clamped length. Mask indices are never negative and never reach
// mask_numel. Non-finite values (docs/api.md): no visible key -> zeros, lse -inf; visible scores
// with a NaN or +inf, or all -inf -> a NaN row (out and lse); a -inf score has weight 0.
// Numerics (match src/cpu): scores in fp32 (per-channel K scale folded into q, per-token K scale
// times the score, times softmax_scale), exp in fp32. kNative rounds p to the output (query)
// dtype before P·V, like FlashAttention; per-token V scale multiplies p after that rounding,
// per-channel V scale multiplies O in the epilogue. kInt8 (docs/design.md §1): q' = q * k_scale is
// split per (row, head) into two int8 parts with s_q = max|q'|/127 (1 if < 1e-6): hi =
// clamp(round(q'/s_q), -127, 127), lo = clamp(round((q'/s_q - hi) * 128), -127, 127), so q' = s_q (hi
// + lo / 128) to s_q / 256; scores are float(128 hi·k8 + lo·k8) / 128 * s_q * softmax_scale (* the
// per-token K scale). The lane holds w = 128 hi + lo (|w| <= 16383, exact in fp32) and sums its <= 8
// products w * k8 exactly in fp32 (< 2^24); the warp adds the lanes' sums in int32 (< 2^30), so the
// one rounding is the final int -> float, as src/cpu's fp32 hi·k8 + (lo·k8) / 128. An int8 q with
// q_scale is taken as is (w = q8, no / 128) when K is not per-channel. P·V is kNative's (p rounded to
// DTypeO, V scales on p / on O as above). Retired: the uint8-P recipe (round(p * 255), O / 255) and
// the single-part q8 = hi.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "src/cuda/common/convert.cuh"
#include "src/cuda/common/paged.cuh"
#include "src/cuda/common/warp.cuh"

namespace kvq::cuda {

// Sum over the warp's 32 lanes in int32 (exact, order independent).
__device__ __forceinline__ int warp_sum_i32(int x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

struct GenericPrefillParams {
  const void* q = nullptr;           // [total_q, num_qo_heads, head_dim] DTypeQ
  const float* q_scale = nullptr;    // [total_q, num_qo_heads] fp32, int8 q only
  PagedCacheParams cache;            // the paged K/V cache and its scales
  const int32_t* block_tables = nullptr;  // [batch_size, max_blocks_per_seq]
  const int32_t* cu_q_lens = nullptr;     // [batch_size + 1]
  const int32_t* kv_lens = nullptr;       // [batch_size]
  const uint8_t* mask = nullptr;     // [sum_b q_len_b * kv_len_b] bool, or null
  int64_t mask_stride = 1;
  int64_t mask_numel = 0;            // entries of mask: indices past it are invisible, never read
  void* out = nullptr;               // [total_q, num_qo_heads, head_dim] DTypeO
  float* lse = nullptr;              // [total_q, num_qo_heads] fp32, or null
  int64_t q_stride_t = 0, q_stride_h = 0;
  int64_t qs_stride_t = 0, qs_stride_h = 0;
  int64_t o_stride_t = 0, o_stride_h = 0;
  int64_t lse_stride_t = 0, lse_stride_h = 0;
  int64_t bt_stride = 0;             // block_tables row stride
  int64_t total_q = 0;
  int32_t batch_size = 0;
  int32_t max_blocks_per_seq = 0;
  int64_t num_blocks = 0;            // 64-bit (cache.num_blocks is int32): ids are valid in [0, num_blocks)
  int32_t num_qo_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t group_size = 1;
  int32_t head_dim = 0;
  float softmax_scale = 1.f;
  int32_t local_window = -1;
  int32_t global_window = 0;
  bool causal = true;
  bool gqa_interleaved = false;
  bool compute_int8 = false;
};

struct GenericPrefillTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMaxDimsPerLane = 8;
  static constexpr int kMaxHeadDim = 32 * kMaxDimsPerLane;
  static_assert(kMaxHeadDim == 256, "docs/design.md §2: head dims 1..256");
};

template <typename DTypeQ, typename DTypeKV, typename DTypeO>
__device__ void generic_prefill_device(const GenericPrefillParams& prm) {
  using Traits = GenericPrefillTraits;
  constexpr int kDpl = Traits::kMaxDimsPerLane;
  const int lane_idx = threadIdx.x & 31;
  const int64_t warp_global = static_cast<int64_t>(blockIdx.x) * Traits::kWarps + (threadIdx.x >> 5);
  const int64_t t = warp_global / prm.num_qo_heads;
  const int h = static_cast<int>(warp_global % prm.num_qo_heads);
  if (t >= prm.total_q) return;
  // The well-formed prefix of cu_q_lens: sequences [0, num_ok). The warp's lanes test the pairs in
  // parallel and agree on the first malformed one (warp-uniform).
  int first_bad = prm.batch_size;
  for (int i = lane_idx; i < prm.batch_size; i += 32) {
    const int32_t lo_i = prm.cu_q_lens[i], hi_i = prm.cu_q_lens[i + 1];
    if (hi_i < lo_i || lo_i < 0 || hi_i > prm.total_q) {
      first_bad = i;
      break;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) first_bad = min(first_bad, __shfl_xor_sync(0xffffffffu, first_bad, o));
  const int num_ok = first_bad;
  if (num_ok == 0) return;
  const int64_t num_rows = prm.cu_q_lens[num_ok];
  if (t >= num_rows || t < prm.cu_q_lens[0]) return;  // bucket padding / rows before cu_q_lens[0]: never touched
  // b = the last sequence with cu_q_lens[b] <= t (skips empty sequences).
  int lo = 0, hi = num_ok - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (prm.cu_q_lens[mid] <= t) lo = mid; else hi = mid - 1;
  }
  const int b = lo;
  const int64_t q_start = prm.cu_q_lens[b];
  const int64_t q_len = prm.cu_q_lens[b + 1] - q_start;
  const int64_t i = t - q_start;
  const int64_t table_cap = static_cast<int64_t>(prm.max_blocks_per_seq) * prm.cache.page_size;
  int64_t kv_len = prm.kv_lens[b];
  const int64_t kv_len_raw = kv_len < 0 ? 0 : kv_len;  // the mask's row length
  kv_len = kv_len_raw < table_cap ? kv_len_raw : table_cap;
  const int64_t pos = kv_len - q_len + i;
  const int kv_head = prm.gqa_interleaved ? h % prm.num_kv_heads : h / prm.group_size;
  const int D = prm.head_dim;
  const PagedCacheParams& c = prm.cache;
  const bool kv_int8 = std::is_same_v<DTypeKV, int8_t>;
  const bool k_per_channel = kv_int8 && c.k_mode == ScaleMode::kPerChannel;
  const bool k_per_token = kv_int8 && c.k_mode == ScaleMode::kPerToken;
  const bool v_per_channel = kv_int8 && c.v_mode == ScaleMode::kPerChannel;
  const bool v_per_token = kv_int8 && c.v_mode == ScaleMode::kPerToken;
  const bool int8_math = prm.compute_int8;
  constexpr bool kQInt8 = std::is_same_v<DTypeQ, int8_t>;
  // An int8 query is used as is (s_q = q_scale) unless a per-channel K scale must be folded in,
  // in which case it is dequantized and requantized like a float query (src/cpu/attention.cpp).
  const bool q_as_is = kQInt8 && int8_math && !k_per_channel;

  // q (real value) with the per-channel K scale folded in.
  float qf[kDpl];
  const DTypeQ* q_row = static_cast<const DTypeQ*>(prm.q) + t * prm.q_stride_t + h * prm.q_stride_h;
  const float q_in_scale = std::is_same_v<DTypeQ, int8_t> ? prm.q_scale[t * prm.qs_stride_t + h * prm.qs_stride_h] : 1.f;
#pragma unroll
  for (int k = 0; k < kDpl; ++k) {
    const int d = lane_idx + 32 * k;
    float x = 0.f;
    if (d < D) {
      x = q_as_is ? to_float(q_row[d]) : to_float(q_row[d]) * q_in_scale;
      if (k_per_channel) x *= load_scale(c.k_scale, kv_head * c.k_scale_stride_a + d * c.k_scale_stride_b, c.k_scale_dtype);
    }
    qf[k] = x;
  }
  // int8 math: qf holds w = 128 hi + lo (two_part) or the int8 q as is; the integer sum of w·k8 is
  // multiplied by score_scale * w_unit.
  const bool two_part = int8_math && !q_as_is;
  const float w_unit = two_part ? 1.f / 128.f : 1.f;
  float score_scale = prm.softmax_scale;
  if (q_as_is) {
    score_scale *= q_in_scale;
  } else if (int8_math) {
    float amax = 0.f;
    bool has_nan = false;
#pragma unroll
    for (int k = 0; k < kDpl; ++k) {
      amax = fmaxf(amax, fabsf(qf[k]));
      has_nan = has_nan || qf[k] != qf[k];
    }
    amax = warp_max(amax);
    float s_q = amax / 127.f;
    if (s_q < 1e-6f) s_q = 1.f;
#pragma unroll
    for (int k = 0; k < kDpl; ++k) {
      // hi = clamp(round(t)), lo = clamp(round((t - hi) * 128)) with t = q'/s_q the IEEE quotient
      // (the one quantize_int8 takes); t - hi and * 128 are exact (src/cpu/quant.h).
      const int hi = max(-127, static_cast<int>(quantize_int8(qf[k], s_q)));
      int lo = __float2int_rn(__fmul_rn(__fsub_rn(__fdiv_rn(qf[k], s_q), static_cast<float>(hi)), 128.f));  // NaN: 0
      lo = lo < -127 ? -127 : (lo > 127 ? 127 : lo);
      qf[k] = static_cast<float>(128 * hi + lo);
    }
    // fmaxf skips a NaN and quantize maps it to 0: carry it in the score scale (src/cpu does too).
    score_scale *= __any_sync(0xffffffffu, has_nan) ? __int_as_float(0x7fc00000) : s_q;
  }

  // Mask row of (b, i): offset sum_{b'<b} q_len_b' * kv_len_b' + i * kv_len.
  const uint8_t* mask_row = nullptr;
  int64_t mask_row_idx = 0;
  if (prm.mask != nullptr) {
    // Every term is >= 0 (sequences of the well-formed prefix) and below 2^62; the sum stops at
    // mask_numel (< 2^62), past which every read is refused anyway: no overflow, no negative index.
    int64_t off = 0;
    for (int bb = 0; bb < b && off < prm.mask_numel; ++bb) {
      const int64_t ql = static_cast<int64_t>(prm.cu_q_lens[bb + 1]) - prm.cu_q_lens[bb];
      const int64_t kl = prm.kv_lens[bb] < 0 ? 0 : prm.kv_lens[bb];
      off += ql * kl;
    }
    mask_row_idx = off < prm.mask_numel ? off + i * kv_len_raw : prm.mask_numel;
    mask_row = prm.mask;
  }

  const int32_t* table_row = prm.block_tables + static_cast<int64_t>(b) * prm.bt_stride;
  const DTypeKV* k_base = static_cast<const DTypeKV*>(c.k_data);
  const DTypeKV* v_base = static_cast<const DTypeKV*>(c.v_data);

  float m = -INFINITY, l = 0.f;
  bool seen = false;  // a visible key was scored
  float acc[kDpl];
#pragma unroll
  for (int k = 0; k < kDpl; ++k) acc[k] = 0.f;

  // Visible keys: [0, end) when no local window, else [0, min(global, end)) and [max(global, pos - local), end).
  const int64_t end = prm.causal ? (pos + 1 < kv_len ? pos + 1 : kv_len) : kv_len;
  int64_t r0_end = end, r1_begin = end;
  if (prm.local_window >= 0) {
    r0_end = prm.global_window < end ? prm.global_window : end;
    if (r0_end < 0) r0_end = 0;
    r1_begin = pos - prm.local_window;
    if (r1_begin < r0_end) r1_begin = r0_end;
  }
  for (int range = 0; range < 2; ++range) {
    const int64_t j_begin = range == 0 ? 0 : r1_begin;
    const int64_t j_end = range == 0 ? r0_end : end;
    for (int64_t j = j_begin; j < j_end; ++j) {
      // The mask length is checked on the host only with check=true: guard the read here too.
      if (mask_row != nullptr && (mask_row_idx + j >= prm.mask_numel || !mask_row[(mask_row_idx + j) * prm.mask_stride]))
        continue;
      uint32_t page, offset;
      c.page_div.divmod(static_cast<uint32_t>(j), page, offset);
      const int32_t block = table_row[page];
      if (block < 0 || block >= prm.num_blocks) continue;  // not a block: the key is masked
      const DTypeKV* k_row = k_base + k_elem_offset(c, block, offset, kv_head);
      float part = 0.f;
#pragma unroll
      for (int k = 0; k < kDpl; ++k) {
        const int d = lane_idx + 32 * k;
        if (d < D) part += qf[k] * to_float(k_row[d]);
      }
      // int8 math: part is an exact integer (|w * k8| <= 16383 * 128, <= 8 of them: < 2^24).
      float s = int8_math && kv_int8 ? static_cast<float>(warp_sum_i32(__float2int_rn(part))) * w_unit : warp_sum(part);
      s *= score_scale;
      if (k_per_token) s *= load_scale(c.k_scale, k_token_scale_offset(c, block, offset, kv_head), c.k_scale_dtype);
      seen = true;
      const float m_new = fmaxf(m, s);
      // While every score so far is -inf the reference point is 0, so a -inf score gets weight
      // exp(-inf) = 0 instead of exp(-inf - -inf) = NaN (order independent, like src/cpu).
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = expf(m - m_use);  // m = -inf first: alpha = 0, acc is 0 anyway
      const float p = expf(s - m_use);
      l = l * alpha + p;
      m = m_new;
      float pv = round_to<DTypeO>(p);  // both compute modes: P·V in 16 bits
      if (v_per_token) pv *= load_scale(c.v_scale, v_token_scale_offset(c, block, offset, kv_head), c.v_scale_dtype);
      const DTypeKV* v_row = v_base + v_elem_offset(c, block, offset, kv_head);
#pragma unroll
      for (int k = 0; k < kDpl; ++k) {
        const int d = lane_idx + 32 * k;
        acc[k] = acc[k] * alpha + (d < D ? pv * to_float(v_row[d]) : 0.f);
      }
    }
  }

  // No visible key: an empty row (zeros, lse -inf). Visible keys without a positive sum (all -inf:
  // 0/0) or with a NaN one (a NaN or +inf score): a NaN row.
  const bool empty = !seen;
  const bool nan_row = seen && !(l > 0.f);
  const float kNaN = __int_as_float(0x7fc00000);
  const float inv_l = (empty || nan_row) ? 0.f : 1.f / l;
  DTypeO* o_row = static_cast<DTypeO*>(prm.out) + t * prm.o_stride_t + h * prm.o_stride_h;
#pragma unroll
  for (int k = 0; k < kDpl; ++k) {
    const int d = lane_idx + 32 * k;
    if (d < D) {
      float o = acc[k] * inv_l;
      if (v_per_channel && !empty && !nan_row)
        o *= load_scale(c.v_scale, kv_head * c.v_scale_stride_a + d * c.v_scale_stride_b, c.v_scale_dtype);
      if (empty) o = 0.f;
      if (nan_row) o = kNaN;
      o_row[d] = from_float<DTypeO>(o);
    }
  }
  if (prm.lse != nullptr && lane_idx == 0) {
    prm.lse[t * prm.lse_stride_t + h * prm.lse_stride_h] = empty ? -INFINITY : (nan_row ? kNaN : m + logf(l));
  }
}

template <typename DTypeQ, typename DTypeKV, typename DTypeO>
__global__ void __launch_bounds__(GenericPrefillTraits::kThreads)
generic_prefill_kernel(const __grid_constant__ GenericPrefillParams params) {
  generic_prefill_device<DTypeQ, DTypeKV, DTypeO>(params);
}

}  // namespace kvq::cuda
