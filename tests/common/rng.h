// tests/common/rng.h — a seeded, platform-independent random number generator for tests.
//
// std::normal_distribution and friends are implementation-defined, so the same seed would give
// different data on different standard libraries. Rng is xoshiro256** seeded by splitmix64, with
// its own uniform/normal/randint, so a seed printed by a failing test reproduces it anywhere.
#pragma once
#include <cstdint>
#include <vector>

namespace kvq::test {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0);

  uint64_t next_u64();
  // Uniform in [0, 1).
  double uniform();
  // Uniform in [lo, hi).
  double uniform(double lo, double hi);
  // Standard normal (Marsaglia's polar method).
  double normal();
  // Uniform integer in [lo, hi) (like torch.randint(lo, hi)); hi > lo.
  int64_t randint(int64_t lo, int64_t hi);
  // Bernoulli(p).
  bool bernoulli(double p);
  // A uniformly random permutation of 0..n-1 (Fisher-Yates).
  std::vector<int32_t> permutation(int64_t n);

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace kvq::test
