// src/cuda/common/cp_async.cuh — cp.async (sm_80+) wrappers, the only ones in the project: 16-byte
// global -> shared copies that bypass L1 and registers (.cg), 8- and 4-byte ones (.ca: the sizes .cg
// does not take), grouped and waited on per pipeline stage. src_bytes below the copy's size
// zero-fills the rest (0: nothing is read, though src must still be an address).
#pragma once
#include <cstdint>

namespace kvq::cuda {

// 16 bytes to the shared-memory address dst (a __cvta_generic_to_shared value).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* gmem, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
// 16 bytes to the shared-memory pointer smem.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  cp_async_16(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem, static_cast<uint32_t>(src_bytes));
}
__device__ __forceinline__ void cp_async_8(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace kvq::cuda
