// src/cuda/common/convert.cuh — element conversions between the dtypes kvq kernels touch.
//
// to_float / from_float for float, __nv_bfloat16, __half, int8_t (from_float rounds to nearest
// even, as the CPU backend does). The int8x4 conversions turn the 4 signed bytes of a 32-bit word
// into exact fp32 / bf16 / fp16 values with the magic-number trick: flip the sign bit
// (u = b ^ 0x80 = b + 128 as an unsigned byte), byte-permute u into the low mantissa bits of a
// power of two whose mantissa unit is 1 (fp32 2^23, fp16 1024), subtract that power plus 128.
// bf16 (7 mantissa bits) cannot carry an 8-bit payload, so it takes the fp32 result's high half.
// load_scale reads a scale of any of the three scale dtypes as fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kvq/types.h"

namespace kvq::cuda {

__host__ __device__ __forceinline__ float to_float(float x) { return x; }
__host__ __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__host__ __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__host__ __device__ __forceinline__ float to_float(int8_t x) { return static_cast<float>(x); }

template <typename T>
__host__ __device__ __forceinline__ T from_float(float x);
template <>
__host__ __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__host__ __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__host__ __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// Round x to T and back (the rounding a product operand of dtype T sees).
template <typename T>
__device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }
template <>
__device__ __forceinline__ float round_to<float>(float x) { return x; }

// Saturating round-half-even quantization of x / scale, the int8 format of src/cpu/quant.
__device__ __forceinline__ int8_t quantize_int8(float x, float scale) {
  int v = __float2int_rn(x / scale);
  v = v < -128 ? -128 : (v > 127 ? 127 : v);
  return static_cast<int8_t>(v);
}

// Scale tensors may be fp32, bf16 or fp16 (DType::kFloat32/kBFloat16/kFloat16).
__device__ __forceinline__ float load_scale(const void* ptr, int64_t idx, DType dtype) {
  switch (dtype) {
    case DType::kBFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(ptr)[idx]);
    case DType::kFloat16: return __half2float(static_cast<const __half*>(ptr)[idx]);
    default: return static_cast<const float*>(ptr)[idx];
  }
}

// 4 int8 -> 4 fp32 (exact) with integer/fp32-add instructions only: u = b + 128 as an unsigned
// byte is permuted into the low mantissa byte of 2^23 (0x4B0000uu = 2^23 + u), then one FADD
// removes 2^23 + 128.
__device__ __forceinline__ void int8x4_to_float4_magic(uint32_t w, float (&f)[4]) {
  const uint32_t u = w ^ 0x80808080u;
  f[0] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440)) - 8388736.f;
  f[1] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7441)) - 8388736.f;
  f[2] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7442)) - 8388736.f;
  f[3] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7443)) - 8388736.f;
}

// 4 int8 (one 32-bit word, byte 0 first) -> 4 bf16 (two bf16x2, element 0 in the low half of lo).
// bf16 has only 7 stored mantissa bits, so an 8-bit payload cannot ride in one bf16 magic number;
// instead the exact fp32 values above are truncated to their high halves (an integer in
// [-128, 127] has at most 8 significant bits, so the low 16 bits of its fp32 are zero: exact).
__device__ __forceinline__ void int8x4_to_bf16x4(uint32_t w, __nv_bfloat162& lo, __nv_bfloat162& hi) {
  float f[4];
  int8x4_to_float4_magic(w, f);
  const uint32_t lo_bits = __byte_perm(__float_as_uint(f[0]), __float_as_uint(f[1]), 0x7632);
  const uint32_t hi_bits = __byte_perm(__float_as_uint(f[2]), __float_as_uint(f[3]), 0x7632);
  lo = *reinterpret_cast<const __nv_bfloat162*>(&lo_bits);
  hi = *reinterpret_cast<const __nv_bfloat162*>(&hi_bits);
}

// 4 int8 -> 4 fp16 in integer instructions plus one packed subtract per pair: fp16 has 10
// mantissa bits, so 0x64uu = 1024 + u exactly for u = b + 128 < 256 (b ^ 0x80 as an unsigned
// byte); subtracting 1024 + 128 leaves b exactly.
__device__ __forceinline__ void int8x4_to_half4(uint32_t w, __half2& lo, __half2& hi) {
  const uint32_t u = w ^ 0x80808080u;
  const uint32_t lo_bits = __byte_perm(u, 0x64646464u, 0x5140);  // [0x64,u1,0x64,u0]
  const uint32_t hi_bits = __byte_perm(u, 0x64646464u, 0x5342);
  const __half2 bias = __floats2half2_rn(1152.f, 1152.f);
  lo = __hsub2(*reinterpret_cast<const __half2*>(&lo_bits), bias);
  hi = __hsub2(*reinterpret_cast<const __half2*>(&hi_bits), bias);
}

// 4 int8 -> 4 fp32 (exact), for CUDA-core kernels.
__device__ __forceinline__ void int8x4_to_float4(uint32_t w, float (&f)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) f[i] = static_cast<float>(static_cast<int8_t>((w >> (8 * i)) & 0xffu));
}

// Unpack a 16-byte vector of T into fp32 (kN = 16 / sizeof(T) elements).
template <typename T>
struct VecTraits;
template <>
struct VecTraits<int8_t> { static constexpr int kN = 16; };
template <>
struct VecTraits<__nv_bfloat16> { static constexpr int kN = 8; };
template <>
struct VecTraits<__half> { static constexpr int kN = 8; };

__device__ __forceinline__ void unpack16(const uint4& v, int8_t*, float (&f)[16]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float t[4];
    int8x4_to_float4_magic(w[i], t);
#pragma unroll
    for (int k = 0; k < 4; ++k) f[4 * i + k] = t[k];
  }
}
__device__ __forceinline__ void unpack16(const uint4& v, __nv_bfloat16*, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ void unpack16(const uint4& v, __half*, float (&f)[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __half22float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

}  // namespace kvq::cuda
