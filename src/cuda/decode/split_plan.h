// src/cuda/decode/split_plan.h — the split-KV count both decode kernels' planners use: at least
// one full wave of resident CTAs, then the split count (up to 8 more) whose last wave is the
// fullest (512 CTAs on 396 slots: 1 split leaves the second wave 29% full, 3 fill 97% of two).
#pragma once
#include <algorithm>
#include <cstdint>

#include "src/cuda/common/device_info.h"

namespace kvq::cuda {

// ctas: CTAs of one split; slots: resident CTAs of the device; split_cap >= 1.
inline int64_t fullest_wave_splits(int64_t ctas, int64_t slots, int64_t split_cap) {
  ctas = std::max<int64_t>(1, ctas);
  const int64_t s_min = std::clamp<int64_t>((slots + ctas - 1) / ctas, 1, split_cap);
  int64_t best = s_min;
  double best_eff = 0;
  for (int64_t s = s_min; s <= std::min<int64_t>(split_cap, s_min + 8); ++s) {
    const int64_t total = ctas * s;
    const double eff = static_cast<double>(total) / (static_cast<double>((total + slots - 1) / slots) * slots);
    if (eff > best_eff + 0.02) {
      best_eff = eff;
      best = s;
    }
  }
  return best;
}

}  // namespace kvq::cuda
