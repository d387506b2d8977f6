// src/cuda/common/mma_int8.cuh — warp-level primitives of the tensor-core kernels (sm_80+), shared by the
// fused prefill and the kernels that come after it (the Hopper kernel, a tensor-core decode):
// cp.async with zero-fill, ldmatrix (plain and transposed), mma.sync m16n8k16 (bf16 and fp16,
// fp32 accumulation), packing of fp32 pairs into the operand dtype, an exact int8x4 -> 16-bit
// float conversion, and a 32-bit fast divisor for runtime divisors (page_size, group_size).
//
// Only sm_80 features are used, so the same code builds for 80 and 90a.
//
// int8 -> bf16 (exact): u = b ^ 0x80 is b + 128 as an unsigned byte; the fp32 whose bits are
// 0x4B0000uu is 2^23 + u exactly, so subtracting 2^23 + 128 gives b exactly, and any integer in
// [-128, 127] is exact in bf16, so the final cvt.rn.bf16x2.f32 does not round. (A 0x43uu bf16
// pattern would NOT work: bf16 has 7 mantissa bits, so u >= 128 spills into the exponent.)
// int8 -> fp16 (exact): 0x64uu is the fp16 1024 + u (10 mantissa bits); subtract 1152 = 1024 + 128.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace kvq::cuda::tc {

// n / d for 0 <= n < 2^31 with a precomputed multiplier (CUTLASS FastDivmod's round-up method:
// p = 31 + ceil(log2 d), m = ceil(2^p / d), n / d = umulhi(n, m) >> (p - 32)).
struct FastDiv {
  uint32_t d = 1;
  uint32_t mul = 0;
  uint32_t shr = 0;

  FastDiv() = default;
  __host__ explicit FastDiv(uint32_t divisor) : d(divisor < 1 ? 1 : divisor) {
    if (d == 1) return;
    uint32_t log2_ceil = 0;
    while ((uint64_t{1} << log2_ceil) < d) ++log2_ceil;
    const uint32_t p = 31 + log2_ceil;
    mul = static_cast<uint32_t>(((uint64_t{1} << p) + d - 1) / d);
    shr = p - 32;
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return d == 1 ? n : (__umulhi(n, mul) >> shr);
  }
  __device__ __forceinline__ void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * d;
  }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; src_bytes 0 zero-fills the destination (src must still be a
// valid address, it is not read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// D += A(16x16, row) * B(16x8, col), fp32 accumulators.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two fp32 -> one 32-bit register of two T (element 0 in the low half), round to nearest even.
// D (s32) += A (s8, 16 x 32, row) * B (s8, 32 x 8, col); the m16n8k32 fragment layout: a0 / a1 hold
// rows g / g + 8 at k = 4t .. 4t + 3, a2 / a3 the same rows at k = 16 + 4t ..; b0 / b1 column g at
// k = 4t .. and 16 + 4t ..; d as for m16n8k16 (rows g, g + 8; columns 2t, 2t + 1). Exact.
__device__ __forceinline__ void mma_16832_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t v);
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v));
}
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t v) {
  return __half22float2(*reinterpret_cast<__half2*>(&v));
}

// 4 int8 (bytes 0..3 of w) -> two registers of two T each: lo = (b0, b1), hi = (b2, b3). Exact.
template <typename T>
__device__ __forceinline__ void int8x4_to_pairs(uint32_t w, uint32_t& lo, uint32_t& hi);
template <>
__device__ __forceinline__ void int8x4_to_pairs<__nv_bfloat16>(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;
  constexpr float kBias = 8388736.f;  // 2^23 + 128
  const float f0 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7540)) - kBias;
  const float f1 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7541)) - kBias;
  const float f2 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7542)) - kBias;
  const float f3 = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7543)) - kBias;
  lo = pack2<__nv_bfloat16>(f0, f1);
  hi = pack2<__nv_bfloat16>(f2, f3);
}
template <>
__device__ __forceinline__ void int8x4_to_pairs<__half>(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;
  uint32_t l = __byte_perm(u, 0x64646464u, 0x5140);
  uint32_t h = __byte_perm(u, 0x64646464u, 0x5342);
  const __half2 bias = __floats2half2_rn(1152.f, 1152.f);
  __half2 lh = __hsub2(*reinterpret_cast<__half2*>(&l), bias);
  __half2 hh = __hsub2(*reinterpret_cast<__half2*>(&h), bias);
  lo = *reinterpret_cast<uint32_t*>(&lh);
  hi = *reinterpret_cast<uint32_t*>(&hh);
}

// Scale tensors may be fp32 (0), bf16 (1) or fp16 (2).
__device__ __forceinline__ float load_scale_any(const void* ptr, int64_t idx, int dtype_code) {
  if (dtype_code == 1) return __bfloat162float(static_cast<const __nv_bfloat16*>(ptr)[idx]);
  if (dtype_code == 2) return __half2float(static_cast<const __half*>(ptr)[idx]);
  return static_cast<const float*>(ptr)[idx];
}

}  // namespace kvq::cuda::tc
