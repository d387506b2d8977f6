// bench/cli/workload.cpp — see workload.h.
#include "bench/cli/workload.h"

#include <algorithm>

namespace kvq_cli {

Batch make_batch(const std::vector<int32_t>& q_lens, const std::vector<int32_t>& kv_lens,
                 int64_t page_size, const std::vector<int32_t>& perm, size_t* next) {
  Batch b;
  b.q_lens = q_lens;
  b.kv_lens = kv_lens;
  b.cu_q_lens.assign(1, 0);
  for (int32_t q : q_lens) b.cu_q_lens.push_back(b.cu_q_lens.back() + q);
  for (int32_t kv : kv_lens) b.max_blocks = std::max<int64_t>(b.max_blocks, (kv + page_size - 1) / page_size);
  b.table.assign(kv_lens.size() * b.max_blocks, -1);
  for (size_t s = 0; s < kv_lens.size(); ++s) {
    int64_t n = (kv_lens[s] + page_size - 1) / page_size;
    for (int64_t i = 0; i < n; ++i) b.table[s * b.max_blocks + i] = perm.at((*next)++);
  }
  return b;
}

int64_t visible_pairs(const Batch& b, bool causal) {
  int64_t total = 0;
  for (size_t s = 0; s < b.kv_lens.size(); ++s) {
    int64_t q = b.q_lens[s], kv = b.kv_lens[s];
    for (int64_t i = 0; i < q; ++i) total += causal ? std::min<int64_t>(kv, kv - q + i + 1) : kv;
  }
  return total;
}

std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng, float stddev) {
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<uint16_t> v(n);
  for (auto& x : v) {
    float f = dist(rng);
    if (f == 0.f) f = 1e-3f;  // never zeros
    x = float_to_bf16(f);
  }
  return v;
}

}  // namespace kvq_cli
