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
//   quantize_p(p)       = round_half_even(p * 255)  p in [0, 1]: int8-compute probabilities, as
//                         uint8 with scale 1/255 (docs/design.md §1 allows 1/127 or 1/255; 1/127 misses
//                         the 3e-2 bound on long flat rows, see docs/perf-notes.md)
//   quantize_q(x, s)    = quantize(x, s) with s = query_scale(max|x|): the int8-compute query
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

// Unnormalised probability p in [0, 1] as an integer in [0, 127] (scale 1/127).
constexpr float kPScale = 255.f;  // P8 = round(p * kPScale), dequantized by 1 / kPScale
inline int32_t quantize_p(float p) { return static_cast<int32_t>(std::nearbyint(p * kPScale)); }

inline float dequantize_int8(int8_t v, float scale) { return static_cast<float>(v) * scale; }

}  // namespace kvq::cpu
