// src/cuda/common/tensor_map.h — host side of TMA over a paged KV cache: the driver's tensor-map
// encoder (looked up once through the runtime, no libcuda link) and one encoding of a cache view
// [blocks, a, b, D] (a, b = kv heads and in-page positions, in either order: HND or NHD) that both
// the tensor-core decode and the Hopper prefill load tiles through.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>

namespace kvq::cuda {

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      f = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A 4-D tensor map over one paged cache: dims (head_dim, dim1, dim2, blocks) with dim1 the in-page
// position when `pos_first` (its stride is the smaller one: HND) and the kv head otherwise (NHD);
// strides in elements; a box of 128 bytes of head dim x `box_rows` positions of one head and one
// block, with the 128-byte swizzle (a box row is one row of a wgmma / ldmatrix panel). Boxes out of
// bounds (block -1, columns past head_dim) are zero-filled. False when the driver refuses (e.g. a
// base or a stride not 16-byte aligned).
inline bool encode_paged_cache_map(CUtensorMap* map, const void* base, int elem_bytes, int64_t head_dim,
                                   int64_t page_size, int64_t num_kv_heads, int64_t num_blocks, int64_t stride_block,
                                   int64_t stride_head, int64_t stride_pos, uint32_t box_rows, bool pos_first) {
  auto enc = tensor_map_encoder();
  if (enc == nullptr || (elem_bytes != 1 && elem_bytes != 2)) return false;
  const CUtensorMapDataType dt = elem_bytes == 1 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_UINT16;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim),
                              static_cast<cuuint64_t>(pos_first ? page_size : num_kv_heads),
                              static_cast<cuuint64_t>(pos_first ? num_kv_heads : page_size),
                              static_cast<cuuint64_t>(num_blocks)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>((pos_first ? stride_pos : stride_head) * elem_bytes),
                                 static_cast<cuuint64_t>((pos_first ? stride_head : stride_pos) * elem_bytes),
                                 static_cast<cuuint64_t>(stride_block * elem_bytes)};
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(128 / elem_bytes), pos_first ? box_rows : 1u,
                             pos_first ? 1u : box_rows, 1u};
  const cuuint32_t estr[4] = {1, 1, 1, 1};
  return enc(map, dt, 4, const_cast<void*>(base), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
             CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace kvq::cuda
