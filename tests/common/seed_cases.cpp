#include "tests/common/seed_cases.h"

#include <cstddef>

namespace kvq::test {

const std::vector<SeedCase>& seed_prefill_cases() {
  static const std::vector<SeedCase> cases = {
      // id                           B  Hq Hkv   D     Q    KC    bs
      {"M_BF16",                      2, 16, 4, 128, 1024,    0,   32},
      {"M_BF16_PADDIM",               2, 16, 4,  96, 1024,    0,  128},
      {"M_BF16_WITH_CACHE",           2,  8, 1, 128,  512, 1024,  128},
      {"M_BF16_BIGPAGE",              2,  8, 1, 128, 1024, 2048, 1024},
      {"M_BF16_GROUP",                2,  8, 2, 128, 1024,    0,  128},
      {"M_BF16_VARLEN_BLK16_D64",     3, 12, 3,  64,  257,  513,   16},
      {"M_BF16_VARLEN_BLK256_D192",   4, 20, 5, 192,  193,  769,  256},
      {"M_BF16_VARLEN_BLK64_D80",     3, 24, 6,  80,  321,  641,   64},
      {"M_BF16_SMALL_BLK16",          1, 16, 4, 128,  128,    0,   16},
      {"M_BF16_H24_VARLEN",           2, 24, 6, 128,  255,  129,   32},
      {"M_BF16_VARLEN_513",           3, 16, 4, 128,  513,  257,   64},
      {"M_BF16_H24_BLK128",           4, 24, 6, 128,  769,  511,  128},
      {"M_BF16_ODD_KV_333",           5, 16, 4, 128, 1025,  333,  256},
      {"M_BF16_H24_ODD_777",          6, 24, 6, 128, 1537,  777,  128},
      {"M_BF16_LONG_ODD",             5, 16, 4, 128, 2049, 1025,  256},
      {"M_BF16_H24_LONG",             4, 24, 6, 128, 3073, 1537,  256},
  };
  return cases;
}

const std::vector<SeedCase>& seed_decode_cases() {
  static const std::vector<SeedCase> cases = {
      // id                           B  Hq Hkv   D     S  KC    bs
      {"M_BF16",                      8, 16, 4, 128, 1024, 0,   32},
      {"M_BF16_PADDIM",               8, 16, 4,  96, 1024, 0,  128},
      {"M_BF16_LONG",                 4,  8, 1, 128, 8192, 0, 1024},
      {"M_BF16_BIGPAGE",              4,  8, 1, 128, 2048, 0, 1024},
      {"M_BF16_GROUP",                4,  8, 2, 128, 2048, 0,  128},
      {"M_BF16_VARLEN_BLK16_D64",     5, 12, 3,  64,  257, 0,   16},
      {"M_BF16_VARLEN_BLK256_D192",   3, 20, 5, 192, 1537, 0,  256},
      {"M_BF16_VARLEN_BLK64_D80",     6, 24, 6,  80,  513, 0,   64},
  };
  return cases;
}

SeedLengths seed_prefill_lengths(const SeedCase& c, Rng& rng) {
  SeedLengths l;
  const int64_t q = c.max_len, kc = c.kv_computed;
  for (int64_t b = 0; b < c.batch_size; ++b) {
    const int64_t q_len = ((rng.randint(q / 2, q) + b) % (q - 1)) + 1;
    const int64_t prefix = kc == 0 ? 0 : ((rng.randint(kc / 2, kc) + b) % (kc - 1)) + 1;
    l.q_lens.push_back(static_cast<int32_t>(q_len));
    l.kv_lens.push_back(static_cast<int32_t>(q_len + prefix));
  }
  return l;
}

SeedLengths seed_decode_lengths(const SeedCase& c, Rng& rng) {
  SeedLengths l;
  const int64_t s = c.max_len;
  for (int64_t b = 0; b < c.batch_size; ++b) {
    l.q_lens.push_back(1);
    l.kv_lens.push_back(static_cast<int32_t>(((rng.randint(s / 2, s) + b) % (s - 1)) + 1));
  }
  return l;
}

uint64_t seed_of(const SeedCase& c, uint64_t salt) {
  uint64_t h = 1469598103934665603ull ^ salt;
  for (const char* p = c.id; *p != 0; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ull;
  return h;
}

void PrintTo(const SeedCase& c, std::ostream* os) {
  *os << c.id << " (B " << c.batch_size << ", Hq " << c.num_qo_heads << ", Hkv " << c.num_kv_heads << ", D " << c.head_dim
      << ", len " << c.max_len << ", kc " << c.kv_computed << ", bs " << c.page_size << ")";
}

double prefill_flops(const SeedCase& c, const SeedLengths& lens) {
  double pairs = 0;
  for (size_t b = 0; b < lens.q_lens.size(); ++b) {
    const double q = lens.q_lens[b], kv = lens.kv_lens[b];
    pairs += q * (kv - q) + q * (q + 1) / 2;
  }
  return 4.0 * static_cast<double>(c.num_qo_heads * c.head_dim) * pairs;
}

}  // namespace kvq::test
