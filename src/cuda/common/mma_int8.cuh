// src/cuda/common/mma_int8.cuh — warp-level primitives of the tensor-core kernels (sm_80+), shared by the
// fused prefill and the kernels that come after it (the Hopper kernel, the tensor-core decode):
// ldmatrix (plain and transposed), mma.sync m16n8k16 (bf16 and fp16, fp32 accumulation) and
// m16n8k32 (s8, s32 accumulation), packing of fp32 pairs into the operand dtype, and the exact
// int8x4 -> 16-bit conversions of common/convert.cuh as operand registers; the fast divisor and
// cp.async are common/fastdiv.cuh's and common/cp_async.cuh's.
//
// Only sm_80 features are used, so the same code builds for 80 and 90a.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "src/cuda/common/convert.cuh"
#include "src/cuda/common/cp_async.cuh"
#include "src/cuda/common/fastdiv.cuh"

namespace kvq::cuda::tc {

// The project's one fast divider (common/fastdiv.cuh) and cp.async wrappers (common/cp_async.cuh),
// under the names the tensor-core kernels use.
using FastDiv = ::kvq::cuda::UintFastDiv;
using ::kvq::cuda::cp_async_16;
using ::kvq::cuda::cp_async_commit;
using ::kvq::cuda::cp_async_wait;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
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
// The exact conversions of common/convert.cuh (tested exhaustively there), as operand registers.
template <>
__device__ __forceinline__ void int8x4_to_pairs<__nv_bfloat16>(uint32_t w, uint32_t& lo, uint32_t& hi) {
  __nv_bfloat162 l, h;
  ::kvq::cuda::int8x4_to_bf16x4(w, l, h);
  lo = *reinterpret_cast<const uint32_t*>(&l);
  hi = *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ void int8x4_to_pairs<__half>(uint32_t w, uint32_t& lo, uint32_t& hi) {
  __half2 l, h;
  ::kvq::cuda::int8x4_to_half4(w, l, h);
  lo = *reinterpret_cast<const uint32_t*>(&l);
  hi = *reinterpret_cast<const uint32_t*>(&h);
}

// Scale tensors may be fp32 (0), bf16 (1) or fp16 (2).
__device__ __forceinline__ float load_scale_any(const void* ptr, int64_t idx, int dtype_code) {
  if (dtype_code == 1) return __bfloat162float(static_cast<const __nv_bfloat16*>(ptr)[idx]);
  if (dtype_code == 2) return __half2float(static_cast<const __half*>(ptr)[idx]);
  return static_cast<const float*>(ptr)[idx];
}

}  // namespace kvq::cuda::tc
