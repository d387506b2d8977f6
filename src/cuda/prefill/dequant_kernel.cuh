// src/cuda/prefill/dequant_kernel.cuh — dequantize the blocks a batch references (int8 * scale ->
// bf16/fp16), in full mode (block id -> same id) or compact mode (references in row-major
// (sequence, block) order -> out blocks 0, 1, 2, ..., with a remapped block table).
//
// dequant_table_kernel (compact mode, one CTA of 1024 threads): an exclusive scan of
// num_pages_b = ceil(kv_len_b / page_size) over the batch in chunks of 1024, writing
// out_block_tables[b, i] = prefix_b + i for i < num_pages_b, -1 after (and -1 for ids that would
// reach num_out_blocks, so a later reader never leaves the buffer, and -1 where the source id is
// not a block in [0, num_blocks): that out block is never written, so a reader must not take it
// for data — the dequant prefill path then masks the keys, as the fused path does).
// dequant_copy_kernel: grid (table width, batch_size, row chunks); CTA (i, b, z) copies rows
// [z * kRowsPerCta, ...) of the block referenced at (b, i) — a row is one (kv head, in-page
// position), head_dim elements — one warp per row, lane l on dims l + 32k. Source ids outside
// [0, num_blocks) are skipped. Numerics: fp32 int8 * scale, rounded to nearest-even, exactly as
// src/cpu/cache_ops.cpp. Duplicate references in full mode write identical values.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "src/cuda/common/convert.cuh"

namespace kvq::cuda {

struct DequantParams {
  const void* cache = nullptr;      // [num_blocks, ...] DTypeIn
  const void* scale = nullptr;      // per-channel [Hkv, D] / per-token [num_blocks, ...] or null
  DType scale_dtype = DType::kFloat32;
  ScaleMode mode = ScaleMode::kNone;
  int64_t c_stride_block = 0, c_stride_head = 0, c_stride_pos = 0;
  int64_t s_stride_a = 0, s_stride_b = 0, s_stride_c = 0;  // as PagedCacheParams
  const int32_t* block_tables = nullptr;  // [batch_size, width]
  int64_t bt_stride = 0;
  int32_t width = 0;                // block_tables columns
  const int32_t* kv_lens = nullptr; // [batch_size]
  void* out = nullptr;              // [num_out_blocks, ...] DTypeOut
  int64_t o_stride_block = 0, o_stride_head = 0, o_stride_pos = 0;
  void* out_table = nullptr;        // compact mode: [batch_size, out_width] int32/int64
  bool out_table_int64 = false;
  int64_t ot_stride_b = 0, ot_stride_i = 0;
  int32_t out_width = 0;
  int64_t num_out_blocks = 0;
  int64_t num_blocks = 0;           // 64-bit: a cache of 2^31 blocks holds every int32 id
  int32_t batch_size = 0;
  int32_t num_kv_heads = 0;
  int32_t page_size = 1;
  int32_t head_dim = 0;
};

struct DequantTraits {
  static constexpr int kThreads = 256;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kRowsPerCta = 64;
  static constexpr int kScanThreads = 1024;
};

__device__ __forceinline__ int64_t dequant_num_pages(const DequantParams& prm, int b) {
  int64_t kv_len = prm.kv_lens[b];
  kv_len = kv_len < 0 ? 0 : kv_len;
  int64_t n = (kv_len + prm.page_size - 1) / prm.page_size;
  return n < prm.width ? n : prm.width;
}

__global__ void __launch_bounds__(DequantTraits::kScanThreads) dequant_table_kernel(const __grid_constant__ DequantParams prm) {
  __shared__ int64_t warp_sums[DequantTraits::kScanThreads / 32];
  __shared__ int64_t carry;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  const int lane_idx = threadIdx.x & 31, warp_idx = threadIdx.x >> 5;
  for (int base = 0; base < prm.batch_size; base += DequantTraits::kScanThreads) {
    const int b = base + threadIdx.x;
    const int64_t n = b < prm.batch_size ? dequant_num_pages(prm, b) : 0;
    int64_t x = n;  // inclusive warp scan
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane_idx >= o) x += y;
    }
    if (lane_idx == 31) warp_sums[warp_idx] = x;
    __syncthreads();
    int64_t warp_prefix = 0;
    for (int w = 0; w < warp_idx; ++w) warp_prefix += warp_sums[w];
    const int64_t prefix = carry + warp_prefix + x - n;
    if (b < prm.batch_size) {
      const int32_t* src_row = prm.block_tables + b * prm.bt_stride;
      for (int i = 0; i < prm.out_width; ++i) {
        int64_t id = i < n ? prefix + i : -1;
        if (id >= prm.num_out_blocks) id = -1;
        if (id >= 0 && (i >= prm.width || src_row[i] < 0 || src_row[i] >= prm.num_blocks)) id = -1;
        const int64_t off = b * prm.ot_stride_b + i * prm.ot_stride_i;
        if (prm.out_table_int64) static_cast<int64_t*>(prm.out_table)[off] = id;
        else static_cast<int32_t*>(prm.out_table)[off] = static_cast<int32_t>(id);
      }
    }
    __syncthreads();
    if (threadIdx.x == DequantTraits::kScanThreads - 1) carry += warp_prefix + x;
    __syncthreads();
  }
}

template <typename DTypeIn, typename DTypeOut>
__global__ void __launch_bounds__(DequantTraits::kThreads) dequant_copy_kernel(const __grid_constant__ DequantParams prm) {
  const int i = blockIdx.x, b = blockIdx.y;
  if (i >= dequant_num_pages(prm, b)) return;
  const int32_t src = prm.block_tables[static_cast<int64_t>(b) * prm.bt_stride + i];
  if (src < 0 || src >= prm.num_blocks) return;
  int64_t dst = src;
  if (prm.out_table != nullptr) {
    if (i >= prm.out_width) return;
    const int64_t off = b * prm.ot_stride_b + i * prm.ot_stride_i;
    dst = prm.out_table_int64 ? static_cast<const int64_t*>(prm.out_table)[off]
                              : static_cast<const int32_t*>(prm.out_table)[off];
  }
  if (dst < 0 || dst >= prm.num_out_blocks) return;
  const int lane_idx = threadIdx.x & 31, warp_idx = threadIdx.x >> 5;
  const int64_t rows = static_cast<int64_t>(prm.num_kv_heads) * prm.page_size;
  const int64_t r_end = min(rows, static_cast<int64_t>(blockIdx.z + 1) * DequantTraits::kRowsPerCta);
  for (int64_t r = static_cast<int64_t>(blockIdx.z) * DequantTraits::kRowsPerCta + warp_idx; r < r_end;
       r += DequantTraits::kWarps) {
    const int h = static_cast<int>(r / prm.page_size);
    const int pos = static_cast<int>(r % prm.page_size);
    const DTypeIn* in = static_cast<const DTypeIn*>(prm.cache) + src * prm.c_stride_block + h * prm.c_stride_head +
                        pos * prm.c_stride_pos;
    DTypeOut* out = static_cast<DTypeOut*>(prm.out) + dst * prm.o_stride_block + h * prm.o_stride_head +
                    pos * prm.o_stride_pos;
    float tok = 1.f;
    if (prm.mode == ScaleMode::kPerToken)
      tok = load_scale(prm.scale, src * prm.s_stride_a + h * prm.s_stride_b + pos * prm.s_stride_c, prm.scale_dtype);
    for (int d = lane_idx; d < prm.head_dim; d += 32) {
      float x = to_float(in[d]);
      if (prm.mode == ScaleMode::kPerChannel) x = x * load_scale(prm.scale, h * prm.s_stride_a + d * prm.s_stride_b, prm.scale_dtype);
      else if (prm.mode == ScaleMode::kPerToken) x = x * tok;
      out[d] = from_float<DTypeOut>(x);
    }
  }
}

}  // namespace kvq::cuda
