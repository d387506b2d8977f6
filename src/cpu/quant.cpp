// src/cpu/quant.cpp — the public quantization primitives (include/kvq/kvq.h), thin wrappers over
// src/cpu/quant.h, which holds the definition and its prose.
#include "kvq/kvq.h"
#include "src/cpu/quant.h"

namespace kvq {

int8_t quantize_value(float x, float scale) { return cpu::quantize_int8(x, scale); }

float per_token_scale(float amax) { return cpu::per_token_scale_of(amax); }

}  // namespace kvq
