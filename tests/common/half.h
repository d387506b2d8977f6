// tests/common/half.h — bf16 and fp16 <-> float conversions, written here (not taken from src/)
// so that tests check the library's conversions against an independent implementation.
//
// float -> bf16/fp16 rounds to nearest, ties to even (IEEE default), like __float2bfloat16_rn /
// __float2half_rn. Overflow goes to +-inf, NaN stays NaN (quiet), fp16 subnormals are exact.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace kvq::test {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// bf16 is the upper half of an fp32: widening is a shift.
inline float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7fff plus the lsb of the kept half rounds to nearest with ties to even; a carry
  // out of the mantissa correctly bumps the exponent (up to inf).
  const uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7fffu + lsb) >> 16);
}

inline float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    // Subnormal (or zero): mant * 2^-24, exact in fp32.
    const float mag = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -mag : mag;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t float_to_fp16_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  // 65520 = 0x477ff000 is the midpoint between 65504 (max, odd mantissa) and 2^16: ties go to inf.
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 0x38800000u) {
    // Below 2^-14: the result is a multiple of 2^-24. |f| * 2^24 < 1024 is exact in fp32, and
    // nearbyint rounds it to nearest-even (default rounding mode). 1024 encodes the smallest normal.
    const float scaled = std::ldexp(bits_float(a), 24);
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  uint32_t h = ((((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu));
  const uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carry may bump the exponent
  return static_cast<uint16_t>(sign | h);
}

inline float round_to_bf16(float f) { return bf16_bits_to_float(float_to_bf16_bits(f)); }
inline float round_to_fp16(float f) { return fp16_bits_to_float(float_to_fp16_bits(f)); }

}  // namespace kvq::test
