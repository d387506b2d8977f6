// src/cuda/append/append_kernel.cuh — quantize-and-write of new K/V tokens into the paged cache,
// and the per-channel calibration (amax) reduction.
//
// append: one warp per (token n, kv head, K or V): grid.x = ceil(num_tokens * num_kv_heads * 2 / kWarps).
// Lane l handles dims l + 32k. slot = slot_mapping[n]; slot < 0 (padding) or past the cache
// (num_blocks * page_size) is skipped. Block slot / page_size, offset slot % page_size.
// Numerics, bit-exact with src/cpu/quant: per-token scale = max(amax / 127, 1e-8) in fp32, stored
// in the scale tensor's dtype (round to nearest even) and the *stored* (rounded) value is used to
// quantize; q = clamp(__float2int_rn(x / scale), -128, 127) with IEEE fp32 division (nvcc's
// default -prec-div=true). Per-channel scales are read as fp32. bf16/fp16 caches: converted copy.
// calibrate: grid (ceil(H*D / 256), token chunks); each thread takes one (head, dim) column over a
// strided set of tokens and folds |x| into scale_out's bits with atomicMax (non-negative floats
// order like their int bits); a finalize kernel turns amax into max(amax / 127, 1e-5).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "src/cuda/common/convert.cuh"
#include "src/cuda/common/paged.cuh"
#include "src/cuda/common/warp.cuh"

namespace kvq::cuda {

struct AppendParams {
  const void* k_new = nullptr;       // [num_tokens, num_kv_heads, head_dim] DTypeIn
  const void* v_new = nullptr;       // [num_tokens, num_kv_heads, head_dim] DTypeIn
  const void* slot_mapping = nullptr;  // [num_tokens] int32 or int64
  bool slot_int64 = true;
  int64_t k_stride_n = 0, k_stride_h = 0;
  int64_t v_stride_n = 0, v_stride_h = 0;
  PagedCacheParams cache;            // k_data/v_data written through (cast away const)
  int64_t num_tokens = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int64_t num_slots = 0;             // num_blocks * page_size
};

struct AppendTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256
};

// A per-token scale rounded to the scale tensor's dtype (the value stored and used to quantize).
__device__ __forceinline__ float round_scale(float v, DType dtype) {
  if (dtype == DType::kBFloat16) return __bfloat162float(__float2bfloat16_rn(v));
  if (dtype == DType::kFloat16) return __half2float(__float2half_rn(v));
  return v;
}

__device__ __forceinline__ void store_scale(void* ptr, int64_t idx, DType dtype, float v) {
  if (dtype == DType::kBFloat16) static_cast<__nv_bfloat16*>(ptr)[idx] = __float2bfloat16_rn(v);
  else if (dtype == DType::kFloat16) static_cast<__half*>(ptr)[idx] = __float2half_rn(v);
  else static_cast<float*>(ptr)[idx] = v;
}

template <typename DTypeIn, typename DTypeCache>
__device__ void append_device(const AppendParams& prm) {
  constexpr int kDpl = AppendTraits::kMaxDimsPerLane;
  const int lane_idx = threadIdx.x & 31;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * AppendTraits::kWarps + (threadIdx.x >> 5);
  const int64_t per_token = static_cast<int64_t>(prm.num_kv_heads) * 2;
  const int64_t n = w / per_token;
  if (n >= prm.num_tokens) return;
  const int rem = static_cast<int>(w % per_token);
  const int h = rem >> 1;
  const bool is_v = rem & 1;
  const int64_t slot = prm.slot_int64 ? static_cast<const int64_t*>(prm.slot_mapping)[n]
                                      : static_cast<const int32_t*>(prm.slot_mapping)[n];
  if (slot < 0 || slot >= prm.num_slots) return;
  const PagedCacheParams& c = prm.cache;
  // 64-bit block index: a cache may hold 2^31 blocks or more (small pages), so slot / page_size
  // must not be narrowed to int32 (paged.cuh's helpers take int32 ids from block tables).
  const int64_t block = slot / c.page_size;
  const int64_t offset = slot % c.page_size;
  const DTypeIn* src = static_cast<const DTypeIn*>(is_v ? prm.v_new : prm.k_new) +
                       n * (is_v ? prm.v_stride_n : prm.k_stride_n) + h * (is_v ? prm.v_stride_h : prm.k_stride_h);
  DTypeCache* dst = static_cast<DTypeCache*>(const_cast<void*>(is_v ? c.v_data : c.k_data)) +
                    (is_v ? block * c.v_stride_block + h * c.v_stride_head + offset * c.v_stride_pos
                          : block * c.stride_block + h * c.stride_head + offset * c.stride_pos);
  const int D = prm.head_dim;
  float x[kDpl];
#pragma unroll
  for (int k = 0; k < kDpl; ++k) {
    const int d = lane_idx + 32 * k;
    x[k] = d < D ? to_float(src[d]) : 0.f;
  }
  if constexpr (std::is_same_v<DTypeCache, int8_t>) {
    const ScaleMode mode = is_v ? c.v_mode : c.k_mode;
    const void* scale_ptr = is_v ? c.v_scale : c.k_scale;
    const DType scale_dtype = is_v ? c.v_scale_dtype : c.k_scale_dtype;
    float token_scale = 1.f;
    if (mode == ScaleMode::kPerToken) {
      float amax = 0.f;
#pragma unroll
      for (int k = 0; k < kDpl; ++k) amax = fmaxf(amax, fabsf(x[k]));
      amax = warp_max(amax);
      const float s = fmaxf(amax / 127.f, 1e-8f);
      const int64_t idx = is_v ? block * c.v_scale_stride_a + h * c.v_scale_stride_b + offset * c.v_scale_stride_c
                               : block * c.k_scale_stride_a + h * c.k_scale_stride_b + offset * c.k_scale_stride_c;
      if (lane_idx == 0) store_scale(const_cast<void*>(scale_ptr), idx, scale_dtype, s);
      token_scale = round_scale(s, scale_dtype);
    }
    const int64_t sa = is_v ? c.v_scale_stride_a : c.k_scale_stride_a;
    const int64_t sb = is_v ? c.v_scale_stride_b : c.k_scale_stride_b;
#pragma unroll
    for (int k = 0; k < kDpl; ++k) {
      const int d = lane_idx + 32 * k;
      if (d < D) {
        const float s = mode == ScaleMode::kPerToken ? token_scale : load_scale(scale_ptr, h * sa + d * sb, scale_dtype);
        dst[d] = quantize_int8(x[k], s);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < kDpl; ++k) {
      const int d = lane_idx + 32 * k;
      if (d < D) dst[d] = from_float<DTypeCache>(x[k]);
    }
  }
}

template <typename DTypeIn, typename DTypeCache>
__global__ void __launch_bounds__(AppendTraits::kThreads) append_kernel(const __grid_constant__ AppendParams params) {
  append_device<DTypeIn, DTypeCache>(params);
}

// check=true: the first (token, kv head) row of k_new / v_new written by append (slot in
// [0, num_slots)) that holds a NaN or Inf; *first_bad (init INT64_MAX) gets
// (token * num_kv_heads + head) * 2 + (0 for k_new, 1 for v_new) by atomicMin.
template <typename DTypeIn>
__global__ void append_find_nonfinite_kernel(const __grid_constant__ AppendParams prm,
                                             unsigned long long* first_bad) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * AppendTraits::kWarps + (threadIdx.x >> 5);
  const int lane_idx = threadIdx.x & 31;
  const int64_t per_token = static_cast<int64_t>(prm.num_kv_heads) * 2;
  const int64_t n = w / per_token;
  if (n >= prm.num_tokens) return;
  const int rem = static_cast<int>(w % per_token);
  const int h = rem >> 1;
  const bool is_v = rem & 1;
  const int64_t slot = prm.slot_int64 ? static_cast<const int64_t*>(prm.slot_mapping)[n]
                                      : static_cast<const int32_t*>(prm.slot_mapping)[n];
  if (slot < 0 || slot >= prm.num_slots) return;
  const DTypeIn* src = static_cast<const DTypeIn*>(is_v ? prm.v_new : prm.k_new) +
                       n * (is_v ? prm.v_stride_n : prm.k_stride_n) + h * (is_v ? prm.v_stride_h : prm.k_stride_h);
  bool bad = false;
  for (int d = lane_idx; d < prm.head_dim; d += 32) bad = bad || !isfinite(to_float(src[d]));
  if (__any_sync(0xffffffffu, bad) && lane_idx == 0)
    atomicMin(first_bad, static_cast<unsigned long long>(w));
}

struct CalibrateParams {
  const void* x = nullptr;     // [num_tokens, num_kv_heads, head_dim] DTypeIn
  int64_t stride_n = 0, stride_h = 0;
  float* scale_out = nullptr;  // [num_kv_heads, head_dim] fp32
  int64_t out_stride_h = 0, out_stride_d = 0;
  int64_t num_tokens = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

__global__ void calibrate_init_kernel(const __grid_constant__ CalibrateParams prm) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(prm.num_kv_heads) * prm.head_dim) return;
  const int h = static_cast<int>(i / prm.head_dim), d = static_cast<int>(i % prm.head_dim);
  prm.scale_out[h * prm.out_stride_h + d * prm.out_stride_d] = 0.f;
}

template <typename DTypeIn>
__global__ void calibrate_amax_kernel(const __grid_constant__ CalibrateParams prm) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(prm.num_kv_heads) * prm.head_dim) return;
  const int h = static_cast<int>(i / prm.head_dim), d = static_cast<int>(i % prm.head_dim);
  const DTypeIn* x = static_cast<const DTypeIn*>(prm.x) + h * prm.stride_h + d;
  float amax = 0.f;
  for (int64_t n = blockIdx.y; n < prm.num_tokens; n += gridDim.y) amax = fmaxf(amax, fabsf(to_float(x[n * prm.stride_n])));
  // amax >= 0 (NaN inputs aside), so its int bits order like the floats.
  atomicMax(reinterpret_cast<int*>(&prm.scale_out[h * prm.out_stride_h + d * prm.out_stride_d]), __float_as_int(amax));
}

__global__ void calibrate_finalize_kernel(const __grid_constant__ CalibrateParams prm) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(prm.num_kv_heads) * prm.head_dim) return;
  const int h = static_cast<int>(i / prm.head_dim), d = static_cast<int>(i % prm.head_dim);
  float* s = &prm.scale_out[h * prm.out_stride_h + d * prm.out_stride_d];
  *s = fmaxf(*s / 127.f, 1e-5f);
}

}  // namespace kvq::cuda
