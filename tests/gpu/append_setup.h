// tests/gpu/append_setup.h — the append cases of the GPU tests: bf16 K/V tokens into an int8 cache
// [6 blocks, 2 kv heads, 4 positions, D 32] (24 slots) with per-channel scales, on the host; the
// tests upload what they run on.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kvq/kvq.h"
#include "tests/common/tensor.h"

namespace kvq::test {

struct AppendSetup {
  HostTensor k_new, v_new, slots, k_cache, v_cache, k_scale, v_scale;
  AppendArgs host_args() const {
    AppendArgs a;
    a.k_new = k_new.view();
    a.v_new = v_new.view();
    a.slot_mapping = slots.view();
    a.kv.k_cache = k_cache.view();
    a.kv.v_cache = v_cache.view();
    a.kv.k_scale = k_scale.view();
    a.kv.v_scale = v_scale.view();
    return a;
  }
};

inline AppendSetup append_setup(std::vector<int64_t> slots) {
  const int64_t N = static_cast<int64_t>(slots.size()), H = 2, D = 32, blocks = 6, ps = 4;
  AppendSetup s;
  s.k_new = HostTensor(DType::kBFloat16, {N, H, D});
  s.v_new = HostTensor(DType::kBFloat16, {N, H, D});
  for (int64_t i = 0; i < s.k_new.storage_elements(); ++i) {
    s.k_new.store(i, std::sin(0.37 * i) * 2);
    s.v_new.store(i, std::cos(0.11 * i));
  }
  s.slots = HostTensor(DType::kInt64, {N});
  for (int64_t n = 0; n < N; ++n) s.slots.store(n, static_cast<double>(slots[n]));
  s.k_cache = HostTensor(DType::kInt8, {blocks, H, ps, D});
  s.v_cache = HostTensor(DType::kInt8, {blocks, H, ps, D});
  for (int64_t i = 0; i < s.k_cache.storage_elements(); ++i) {
    s.k_cache.store(i, 7);
    s.v_cache.store(i, -7);
  }
  s.k_scale = HostTensor(DType::kFloat32, {H, D});
  s.v_scale = HostTensor(DType::kFloat32, {H, D});
  for (int64_t i = 0; i < s.k_scale.storage_elements(); ++i) {
    s.k_scale.store(i, 0.02);
    s.v_scale.store(i, 0.01);
  }
  return s;
}

}  // namespace kvq::test
