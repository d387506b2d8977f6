// src/cuda/common/fastdiv.cuh — division by a runtime constant (FlashInfer's uint_fastdiv idea).
//
// For a divisor d >= 1 fixed at launch (page_size), precompute (m, s) on the host so that
// n / d == (umulhi(n, m) + n) >> s for every 32-bit n (Granlund-Montgomery / Hacker's Delight
// 10-9 "round-up" method with the 33-bit multiplier's top bit handled by the "+ n" term, which is
// done in 64 bits so it cannot overflow). d == 1 is m = 0, s = 0. The project's one fast divider:
// the tensor-core kernels use it as tc::FastDiv.
// Host and device; tested against plain division in tests/gpu.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define KVQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define KVQ_HOST_DEVICE inline
#endif

namespace kvq::cuda {

struct UintFastDiv {
  uint32_t d = 1;  // divisor
  uint32_t m = 0;  // magic multiplier (low 32 bits of the 33-bit value); 0 for d == 1
  uint32_t s = 0;  // total right shift of (umulhi(n, m) + n): ceil(log2 d); 0 for d == 1

  UintFastDiv() = default;
  explicit UintFastDiv(uint32_t divisor) : d(divisor) {
    if (d <= 1) { d = 1; m = 0; s = 0; return; }  // (0 + n) >> 0 == n: no branch at run time
    uint32_t l = 0;
    while ((uint64_t{1} << l) < d) ++l;  // l = ceil(log2 d), 1..32
    // m = floor(2^32 * (2^l - d) / d) + 1
    m = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << l) - d)) / d + 1);
    s = l;
  }

  KVQ_HOST_DEVICE uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, m);
#else
    const uint32_t hi = static_cast<uint32_t>((uint64_t{n} * m) >> 32);
#endif
    return static_cast<uint32_t>((uint64_t{hi} + n) >> s);
  }
  // q = n / d, r = n % d.
  KVQ_HOST_DEVICE void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * d;
  }
};

}  // namespace kvq::cuda
