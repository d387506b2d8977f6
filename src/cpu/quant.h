// src/cpu/quant.h — the int8 KV-cache format, as inline functions.
//
// This header *defines* the quantization that every kvq kernel reproduces bit-exactly
// (docs/design.md §1). All arithmetic is fp32, IEEE, no fused multiply-add and no fast-math:
//
//   quantize(x, scale)  = clamp(round_half_even(x / scale), -128, 127)
//                         x / scale is an IEEE fp32 division (CUDA: '/' with the default
//                         -prec-div=true, or __fdiv_rn), rounded by std::nearbyint in the
//                         default rounding mode (CUDA: __float2int_rn). NaN quantizes to 0
//                         (cvt.rni.s32.f32 of NaN is 0); +-inf and overflow clamp.
//   per_token_scale(a)  = fmaxf(a / 127, 1e-8)     a = fmaxf-reduction of |x| over head_dim
//   calibrate_scale(a)  = fmaxf(a / 127, 1e-5)     a = fmaxf-reduction of |x| over tokens
//   quantize_q(x, s)    = clamp(round_half_even(x / s), -127, 127) with s = query_scale(max|x|):
//                         the int8-compute query's high part (symmetric: -128 is never produced)
//   quantize_q_lo(x, s, hi) = clamp(round_half_even((x / s - hi) * 128), -127, 127): its low part,
//                         so that x = s * (hi + lo / 128) to s / 256 (|lo| <= 64). x / s is the
//                         same IEEE quotient as in quantize_q; x / s - hi is exact (Sterbenz) and
//                         * 128 is exact, so the one rounding is the final round_half_even.
//   query_scale(a)      = a / 127, or 1 when that is below 1e-6
//
// fmaxf ignores a NaN operand, so a NaN element never turns a scale into NaN. A per-token
// scale is stored in the scale tensor's dtype (fp32/bf16/fp16) and the values are quantized
// with the *stored* (rounded) scale, so that dequantization q * stored_scale is consistent.
// Dequantization is exact: float(int8) * scale in fp32 (one rounding).
#pragma once
#include <cmath>
#include <cstdint>

namespace kvq::cpu {

inline constexpr float kPerTokenScaleMin = 1e-8f;
inline constexpr float kCalibrateScaleMin = 1e-5f;
inline constexpr float kQueryScaleMin = 1e-6f;

// round_half_even(v) clamped to [-128, 127]; NaN gives 0.
inline int8_t clamp_round_int8(float v) {
  const float r = std::nearbyint(v);
  if (r != r) return 0;
  if (r > 127.f) return 127;
  if (r < -128.f) return -128;
  return static_cast<int8_t>(r);
}

inline int8_t quantize_int8(float x, float scale) { return clamp_round_int8(x / scale); }

// amax accumulation with fmaxf semantics (NaN operands ignored).
inline float amax_update(float amax, float x) { return std::fmax(amax, std::fabs(x)); }

inline float per_token_scale_of(float amax) { return std::fmax(amax / 127.f, kPerTokenScaleMin); }
inline float calibrate_scale_of(float amax) { return std::fmax(amax / 127.f, kCalibrateScaleMin); }

inline float query_scale_of(float amax) {
  const float s = amax / 127.f;
  return s < kQueryScaleMin ? 1.f : s;
}

// The int8-compute query element: round_half_even(x / s_q) clamped to [-127, 127]; NaN gives 0.
inline int8_t quantize_q(float x, float s_q) {
  const int8_t v = quantize_int8(x, s_q);
  return v < -127 ? int8_t{-127} : v;
}

// The int8-compute query's low part (see above); NaN gives 0.
inline int8_t quantize_q_lo(float x, float s_q, int8_t hi) {
  const int8_t v = clamp_round_int8((x / s_q - static_cast<float>(hi)) * 128.f);
  return v < -127 ? int8_t{-127} : v;
}

inline float dequantize_int8(int8_t v, float scale) { return static_cast<float>(v) * scale; }

}  // namespace kvq::cpu
