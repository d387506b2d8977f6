// src/cuda/common/paged.cuh — addressing of a paged K/V cache (HND or NHD, any strides).
//
// PagedCacheParams is the POD kernels receive: the K and V base pointers, the element strides of
// (block, head, in-page position) — HND [num_blocks, num_kv_heads, page_size, head_dim] and NHD
// [num_blocks, page_size, num_kv_heads, head_dim] differ only in those strides — the scale
// pointers with their own strides, and page_size as a fast divisor. A token j of sequence b lives
// at block_tables[b, j / page_size], in-page offset j % page_size. make_paged_params (backend.cu /
// anything host-side holding a PagedKvCache) fills it from the public views; paged_strides is the
// host's one mapping of a view's axes to those three strides (src/core/paged_strides.h), for
// every kernel's params.
#pragma once
#include <cstdint>

#include "src/cuda/common/fastdiv.cuh"
#include "kvq/types.h"

namespace kvq::cuda {

struct PagedCacheParams {
  const void* k_data = nullptr;  // HND [num_blocks, num_kv_heads, page_size, head_dim] / NHD [num_blocks, page_size, num_kv_heads, head_dim]
  const void* v_data = nullptr;  // same shape as k_data
  int64_t stride_block = 0;      // elements between consecutive blocks (K); V may differ:
  int64_t stride_head = 0;
  int64_t stride_pos = 0;
  int64_t v_stride_block = 0;
  int64_t v_stride_head = 0;
  int64_t v_stride_pos = 0;
  // Scales (int8 caches). per-channel [num_kv_heads, head_dim]: (stride_a = head, stride_b = dim).
  // per-token HND [num_blocks, num_kv_heads, page_size] / NHD [num_blocks, page_size, num_kv_heads]:
  // (stride_a = block, stride_b = head, stride_c = position).
  const void* k_scale = nullptr;
  const void* v_scale = nullptr;
  DType k_scale_dtype = DType::kFloat32;
  DType v_scale_dtype = DType::kFloat32;
  ScaleMode k_mode = ScaleMode::kNone;
  ScaleMode v_mode = ScaleMode::kNone;
  int64_t k_scale_stride_a = 0, k_scale_stride_b = 0, k_scale_stride_c = 0;
  int64_t v_scale_stride_a = 0, v_scale_stride_b = 0, v_scale_stride_c = 0;
  int32_t num_blocks = 0;
  int32_t page_size = 1;
  UintFastDiv page_div;
};

// Physical (block, offset) of token j of a sequence whose block-table row is `table_row`.
// Returns false when the table entry is not a valid block id (the kernel then treats the token
// as absent instead of reading out of bounds).
__device__ __forceinline__ bool locate_token(const PagedCacheParams& c, const int32_t* table_row,
                                             uint32_t j, int32_t& block, uint32_t& offset) {
  uint32_t page_idx;
  c.page_div.divmod(j, page_idx, offset);
  block = table_row[page_idx];
  return block >= 0 && block < c.num_blocks;
}

__device__ __forceinline__ int64_t k_elem_offset(const PagedCacheParams& c, int32_t block, uint32_t offset,
                                                 int64_t kv_head) {
  return block * c.stride_block + kv_head * c.stride_head + static_cast<int64_t>(offset) * c.stride_pos;
}
__device__ __forceinline__ int64_t v_elem_offset(const PagedCacheParams& c, int32_t block, uint32_t offset,
                                                 int64_t kv_head) {
  return block * c.v_stride_block + kv_head * c.v_stride_head + static_cast<int64_t>(offset) * c.v_stride_pos;
}

// Per-token scale of (block, offset, kv_head); per-channel scale of (kv_head, dim).
__device__ __forceinline__ int64_t k_token_scale_offset(const PagedCacheParams& c, int32_t block, uint32_t offset,
                                                        int64_t kv_head) {
  return block * c.k_scale_stride_a + kv_head * c.k_scale_stride_b + static_cast<int64_t>(offset) * c.k_scale_stride_c;
}
__device__ __forceinline__ int64_t v_token_scale_offset(const PagedCacheParams& c, int32_t block, uint32_t offset,
                                                        int64_t kv_head) {
  return block * c.v_scale_stride_a + kv_head * c.v_scale_stride_b + static_cast<int64_t>(offset) * c.v_scale_stride_c;
}

}  // namespace kvq::cuda

#include "kvq/views.h"
#include "src/core/paged_strides.h"

namespace kvq::cuda {

// Host side: a paged view's (block, kv head, in-page position) strides for either layout.
using detail::PagedStrides;
using detail::paged_strides;

// Host side: fills PagedCacheParams from a validated PagedKvCache.
inline PagedCacheParams make_paged_params(const PagedKvCache& kv, int64_t page_size, int64_t num_blocks,
                                          ScaleMode k_mode, ScaleMode v_mode) {
  PagedCacheParams c;
  c.k_data = kv.k_cache.data;
  c.v_data = kv.v_cache.data;
  const PagedStrides k = paged_strides(kv.k_cache, kv.layout), v = paged_strides(kv.v_cache, kv.layout);
  c.stride_block = k.block;
  c.stride_head = k.head;
  c.stride_pos = k.pos;
  c.v_stride_block = v.block;
  c.v_stride_head = v.head;
  c.v_stride_pos = v.pos;
  c.k_mode = k_mode;
  c.v_mode = v_mode;
  auto fill = [&](const TensorView& s, ScaleMode mode, const void*& ptr, DType& dt, int64_t& a, int64_t& b,
                  int64_t& cc) {
    if (mode == ScaleMode::kNone || !s.defined()) return;
    ptr = s.data;
    dt = s.dtype;
    if (mode == ScaleMode::kPerChannel) {
      a = s.strides[0];
      b = s.strides[1];
      cc = 0;
    } else {
      const PagedStrides t = paged_strides(s, kv.layout);
      a = t.block;
      b = t.head;
      cc = t.pos;
    }
  };
  fill(kv.k_scale, k_mode, c.k_scale, c.k_scale_dtype, c.k_scale_stride_a, c.k_scale_stride_b, c.k_scale_stride_c);
  fill(kv.v_scale, v_mode, c.v_scale, c.v_scale_dtype, c.v_scale_stride_a, c.v_scale_stride_b, c.v_scale_stride_c);
  c.num_blocks = static_cast<int32_t>(num_blocks);
  c.page_size = static_cast<int32_t>(page_size);
  c.page_div = UintFastDiv(static_cast<uint32_t>(page_size));
  return c;
}

}  // namespace kvq::cuda
