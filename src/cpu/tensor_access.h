// src/cpu/tensor_access.h — typed, strided element access for the CPU backend.
//
// The CPU backend reads caller memory through kvq::TensorView: a data pointer, a dtype and
// strides in elements. This header holds the few primitives every CPU file needs:
//
//   - bf16 and fp16 <-> fp32 conversions on raw bits. Narrowing rounds to nearest, ties to
//     even (the IEEE default, like __float2bfloat16_rn / __float2half_rn): overflow gives
//     +-inf, NaN stays a quiet NaN, fp16 subnormals are produced exactly. Widening is exact.
//   - load_f32 / store_f32: one element of any float dtype (and the integer dtypes for
//     loads), addressed by an element offset. The dtype switch sits in the call; hot loops
//     use load_row_f32 / store_row_f32 instead, which switch once per contiguous row.
//   - read_index: an int32/int64 element of a 1-D or 2-D metadata tensor, stride-aware.
//
// Nothing here allocates or throws but the dtype switch's "unsupported dtype" error, which
// validation upstream makes unreachable.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kvq/error.h"
#include "kvq/views.h"

namespace kvq::cpu {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Adding 0x7fff plus the kept half's lsb rounds to nearest-even; a mantissa carry bumps the
  // exponent, up to inf, which is the correct overflow.
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) return bits_f32(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in fp32.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return bits_f32(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  // 0x477ff000 = 65520, halfway between 65504 (largest finite, odd mantissa) and 65536: ties
  // round to even, i.e. to inf.
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 0x38800000u) {
    // Below 2^-14 the result is a multiple of 2^-24: |f| * 2^24 < 1024 is exact in fp32 and
    // nearbyint rounds it to nearest-even; 1024 is the encoding of the smallest normal.
    const float scaled = bits_f32(a) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  uint32_t h = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);
  const uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }
inline float round_to_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

// The value a float dtype would hold for v (v itself for fp32).
inline float round_to_dtype(float v, DType dtype) {
  switch (dtype) {
    case DType::kBFloat16: return round_to_bf16(v);
    case DType::kFloat16: return round_to_f16(v);
    default: return v;
  }
}

[[noreturn]] inline void throw_bad_dtype(const char* func, DType dtype) {
  throw Error(ErrorKind::kType, func, "dtype",
              std::string("expected a dtype the CPU backend reads here, got ") + to_string(dtype));
}

inline float load_f32(const void* data, DType dtype, int64_t idx) {
  switch (dtype) {
    case DType::kFloat32: return static_cast<const float*>(data)[idx];
    case DType::kBFloat16: return bf16_to_f32(static_cast<const uint16_t*>(data)[idx]);
    case DType::kFloat16: return f16_to_f32(static_cast<const uint16_t*>(data)[idx]);
    case DType::kInt8: return static_cast<float>(static_cast<const int8_t*>(data)[idx]);
    case DType::kUInt8: return static_cast<float>(static_cast<const uint8_t*>(data)[idx]);
    case DType::kBool: return static_cast<const uint8_t*>(data)[idx] ? 1.f : 0.f;
    case DType::kInt32: return static_cast<float>(static_cast<const int32_t*>(data)[idx]);
    case DType::kInt64: return static_cast<float>(static_cast<const int64_t*>(data)[idx]);
  }
  throw_bad_dtype("load_f32", dtype);
}

inline void store_f32(void* data, DType dtype, int64_t idx, float v) {
  switch (dtype) {
    case DType::kFloat32: static_cast<float*>(data)[idx] = v; return;
    case DType::kBFloat16: static_cast<uint16_t*>(data)[idx] = f32_to_bf16(v); return;
    case DType::kFloat16: static_cast<uint16_t*>(data)[idx] = f32_to_f16(v); return;
    default: break;
  }
  throw_bad_dtype("store_f32", dtype);
}

// n contiguous elements starting at element offset `offset`, widened to fp32.
inline void load_row_f32(const void* data, DType dtype, int64_t offset, int64_t n, float* dst) {
  switch (dtype) {
    case DType::kFloat32: {
      const float* src = static_cast<const float*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
      return;
    }
    case DType::kBFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
      return;
    }
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
      return;
    }
    case DType::kInt8: {
      const int8_t* src = static_cast<const int8_t*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f32(data, dtype, offset + i);
      return;
  }
}

// n contiguous elements at element offset `offset`, narrowed from fp32 with round-to-nearest-even.
inline void store_row_f32(void* data, DType dtype, int64_t offset, int64_t n, const float* src) {
  switch (dtype) {
    case DType::kFloat32: {
      float* dst = static_cast<float*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
      return;
    }
    case DType::kBFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::kFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
      return;
    }
    default: break;
  }
  throw_bad_dtype("store_row_f32", dtype);
}

// Element i of a 1-D int32/int64 tensor (stride-aware).
inline int64_t read_index(const TensorView& t, int64_t i) {
  const int64_t off = i * t.strides[0];
  if (t.dtype == DType::kInt64) return static_cast<const int64_t*>(t.data)[off];
  return static_cast<const int32_t*>(t.data)[off];
}

// Element (i, j) of a 2-D int32/int64 tensor (stride-aware).
inline int64_t read_index2(const TensorView& t, int64_t i, int64_t j) {
  const int64_t off = i * t.strides[0] + j * t.strides[1];
  if (t.dtype == DType::kInt64) return static_cast<const int64_t*>(t.data)[off];
  return static_cast<const int32_t*>(t.data)[off];
}

// Element offset of token `off` of block `blk`, kv head `h`: the first element of that row
// in a 4-D cache, or the scale itself in a 3-D per-token scale tensor (same index order).
//   HND: [num_blocks, num_kv_heads, page_size(, head_dim)]; NHD: [num_blocks, page_size, num_kv_heads(, head_dim)].
inline int64_t paged_offset(const TensorView& t, KvLayout layout, int64_t blk, int64_t h, int64_t off) {
  return layout == KvLayout::kHND ? blk * t.strides[0] + h * t.strides[1] + off * t.strides[2]
                                  : blk * t.strides[0] + off * t.strides[1] + h * t.strides[2];
}

}  // namespace kvq::cpu
