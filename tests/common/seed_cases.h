// tests/common/seed_cases.h — mojo_opset's accuracy matrix (the tests of mojo_opset PR #361) as data,
// shared by the CPU suite, the GPU suite and the benchmarks.
#pragma once
#include <cstdint>
#include <ostream>
#include <vector>

#include "tests/common/rng.h"

namespace kvq::test {

// One row of the seed's prefill or decode table. Decode rows have q_len = 1 per sequence and
// kv lengths drawn from [1, max_seq_len - 1]; kv_computed is 0 for them.
struct SeedCase {
  const char* id;          // "M_BF16_GROUP"
  int64_t batch_size;
  int64_t num_qo_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t max_len;         // prefill: Q_LEN; decode: S_LEN
  int64_t kv_computed;     // prefill: KV_COMPUTED (cached prefix bound), 0 = no prefix
  int64_t page_size;
};

// The 16 prefill rows (seed tolerance: atol = rtol = 5e-2, >= 90% of elements within).
const std::vector<SeedCase>& seed_prefill_cases();
// The 8 decode rows (seed tolerance: atol = rtol = 2e-2, every element within).
const std::vector<SeedCase>& seed_decode_cases();

constexpr double kSeedPrefillTol = 5e-2;
constexpr double kSeedPrefillFrac = 0.90;
constexpr double kSeedDecodeTol = 2e-2;

// Lengths of one seed case, drawn the way the tests of mojo_opset PR #361 draw them:
//   q_len_b  = ((randint(Q/2, Q) + b) % (Q-1)) + 1
//   prefix_b = KC == 0 ? 0 : ((randint(KC/2, KC) + b) % (KC-1)) + 1;  kv_len_b = q_len_b + prefix_b
// Decode: q_len_b = 1, kv_len_b = ((randint(S/2, S) + b) % (S-1)) + 1.
struct SeedLengths {
  std::vector<int32_t> q_lens;
  std::vector<int32_t> kv_lens;
};
SeedLengths seed_prefill_lengths(const SeedCase& c, Rng& rng);
SeedLengths seed_decode_lengths(const SeedCase& c, Rng& rng);

// A stable per-case seed (FNV-1a of the id), so a failure reproduces from the printed seed.
uint64_t seed_of(const SeedCase& c, uint64_t salt = 0);

// gtest prints parameters with PrintTo: the id, not the struct's bytes.
void PrintTo(const SeedCase& c, std::ostream* os);

// Multiply-adds of the causal visible pairs of a prefill case: 4 * Hq * D * visible_pairs.
double prefill_flops(const SeedCase& c, const SeedLengths& lens);

}  // namespace kvq::test
