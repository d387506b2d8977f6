// src/cuda/common/cp_async.cuh — cp.async (sm_80+) wrappers: 16-byte global -> shared copies that
// bypass registers, grouped and waited on per pipeline stage.
#pragma once
#include <cstdint>

namespace kvq::cuda {

// Copies 16 bytes from gmem to smem; src_bytes < 16 zero-fills the rest (0: no global read at all).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace kvq::cuda
