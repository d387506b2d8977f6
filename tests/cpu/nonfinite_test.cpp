// tests/cpu/nonfinite_test.cpp — docs/design.md §1 "Non-finite values" on the CPU backend:
// a NaN or Inf that reaches a score makes the affected rows NaN (out and lse); one that
// reaches a value makes the affected outputs non-finite; only masking makes an empty row (zeros,
// lse -inf); no NaN turns into zeros. Every test compares against the same case without the
// non-finite value: rows it cannot reach must be bit-identical.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "src/core/backend.h"
#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Outputs {
  HostTensor out, lse;
};

Outputs run(PagedCase& c, const PrefillArgs& a) {
  c.poison_outputs();
  paged_prefill(a);
  return {c.out, c.lse};
}

Outputs run_decode_case(PagedCase& c, const DecodeArgs& a) {
  c.poison_outputs();
  paged_decode(a);
  return {c.out, c.lse};
}

PagedCaseSpec spec_of(uint64_t seed) {
  PagedCaseSpec s;
  s.q_lens = {5, 7};
  s.kv_lens = {20, 7};
  s.num_qo_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 32;
  s.page_size = 4;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

bool all_nan(const HostTensor& out, int64_t t, int64_t h) {
  for (int64_t d = 0; d < out.size(2); ++d)
    if (!std::isnan(out.at({t, h, d}))) return false;
  return true;
}

bool any_nonfinite(const HostTensor& out, int64_t t, int64_t h) {
  for (int64_t d = 0; d < out.size(2); ++d)
    if (!std::isfinite(out.at({t, h, d}))) return true;
  return false;
}

bool all_zero(const HostTensor& out, int64_t t, int64_t h) {
  for (int64_t d = 0; d < out.size(2); ++d)
    if (out.at({t, h, d}) != 0.0) return false;
  return true;
}

// Bits of out[t, h, :] (and lse[t, h]) agree.
bool same_bits(const Outputs& a, const Outputs& b, int64_t t, int64_t h) {
  for (int64_t d = 0; d < a.out.size(2); ++d) {
    const int64_t off = a.out.offset({t, h, d});
    if (std::memcmp(static_cast<const uint8_t*>(a.out.data()) + off * 2,
                    static_cast<const uint8_t*>(b.out.data()) + off * 2, 2) != 0)
      return false;
  }
  const int64_t lo = a.lse.offset({t, h});
  return std::memcmp(a.lse.ptr<float>() + lo, b.lse.ptr<float>() + lo, 4) == 0;
}

int64_t kv_head_of(const PagedCase& c, int64_t h) { return h / (c.spec.num_qo_heads / c.spec.num_kv_heads); }

// Sequence and in-sequence index of row t.
void locate_row(const PagedCase& c, int64_t t, int64_t& b, int64_t& i) {
  for (b = 0; b + 1 < static_cast<int64_t>(c.cu_q_lens_host.size()); ++b)
    if (t < c.cu_q_lens_host[b + 1]) break;
  i = t - c.cu_q_lens_host[b];
}

TEST(NonFinite, NaNInQMakesItsRowNaN) {
  PagedCase c = make_paged_case(spec_of(1));
  const PrefillArgs a = c.prefill_args();
  const Outputs clean = run(c, a);
  c.q.set({2, 1, 3}, kNaN);
  const Outputs got = run(c, a);
  EXPECT_TRUE(all_nan(got.out, 2, 1)) << "the NaN must reach every dim of its row";
  EXPECT_TRUE(std::isnan(got.lse.at({2, 1}))) << "and its lse";
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < c.spec.num_qo_heads; ++h)
      if (!(t == 2 && h == 1)) EXPECT_TRUE(same_bits(clean, got, t, h)) << "row " << t << " head " << h << " changed";
}

TEST(NonFinite, InfInQMakesItsRowNaN) {
  PagedCase c = make_paged_case(spec_of(2));
  const PrefillArgs a = c.prefill_args();
  const Outputs clean = run(c, a);
  c.q.set({8, 3, 0}, kInf);
  const Outputs got = run(c, a);
  EXPECT_TRUE(all_nan(got.out, 8, 3));
  EXPECT_TRUE(std::isnan(got.lse.at({8, 3})));
  EXPECT_TRUE(same_bits(clean, got, 8, 2));
  EXPECT_TRUE(same_bits(clean, got, 7, 3));
}

TEST(NonFinite, NaNPerChannelKScalePoisonsItsKvHead) {
  // Before the fix one NaN channel turned every row into zeros with lse -inf.
  PagedCase c = make_paged_case(spec_of(3));
  const PrefillArgs a = c.prefill_args();
  const Outputs clean = run(c, a);
  c.k_scale.set({0, 5}, kNaN);
  const Outputs got = run(c, a);
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < c.spec.num_qo_heads; ++h) {
      if (kv_head_of(c, h) == 0) {
        EXPECT_TRUE(all_nan(got.out, t, h)) << "row " << t << " head " << h;
        EXPECT_TRUE(std::isnan(got.lse.at({t, h}))) << "row " << t << " head " << h;
      } else {
        EXPECT_TRUE(same_bits(clean, got, t, h)) << "row " << t << " head " << h;
      }
    }
}

TEST(NonFinite, NaNPerTokenKScaleReachesOnlyTheRowsThatSeeIt) {
  PagedCaseSpec s = spec_of(4);
  s.k_scale_mode = ScaleMode::kPerToken;
  PagedCase c = make_paged_case(s);
  const PrefillArgs a = c.prefill_args();
  const Outputs clean = run(c, a);
  // Sequence 1 (rows 5..11, positions 0..6): key 3 is seen by positions >= 3.
  const int64_t j = 3;
  const int64_t blk = c.physical_block(1, j);
  c.k_scale.store(token_scale_offset(c.k_scale.view(), s.layout, blk, 0, j % s.page_size), kNaN);
  const Outputs got = run(c, a);
  for (int64_t i = 0; i < 7; ++i)
    for (int64_t h = 0; h < s.num_qo_heads; ++h) {
      const int64_t t = 5 + i;
      if (kv_head_of(c, h) == 0 && i >= j) {
        EXPECT_TRUE(all_nan(got.out, t, h)) << "position " << i << " head " << h << " sees the NaN key";
        EXPECT_TRUE(std::isnan(got.lse.at({t, h})));
      } else {
        EXPECT_TRUE(same_bits(clean, got, t, h)) << "position " << i << " head " << h << " does not see it";
      }
    }
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t h = 0; h < s.num_qo_heads; ++h) EXPECT_TRUE(same_bits(clean, got, t, h)) << "sequence 0 row " << t;
}

TEST(NonFinite, NaNPerChannelVScaleMakesItsDimNaN) {
  PagedCase c = make_paged_case(spec_of(5));
  const PrefillArgs a = c.prefill_args();
  const Outputs clean = run(c, a);
  c.v_scale.set({1, 4}, kNaN);
  const Outputs got = run(c, a);
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < c.spec.num_qo_heads; ++h) {
      if (kv_head_of(c, h) != 1) {
        EXPECT_TRUE(same_bits(clean, got, t, h)) << "row " << t << " head " << h;
        continue;
      }
      for (int64_t d = 0; d < c.spec.head_dim; ++d) {
        if (d == 4)
          EXPECT_TRUE(std::isnan(got.out.at({t, h, d}))) << "row " << t << " head " << h;
        else
          EXPECT_EQ(got.out.at({t, h, d}), clean.out.at({t, h, d})) << "row " << t << " head " << h << " dim " << d;
      }
      EXPECT_EQ(got.lse.at({t, h}), clean.lse.at({t, h})) << "a value does not change the scores";
    }
}

TEST(NonFinite, InfInBf16VCacheReachesTheOutputs) {
  PagedCaseSpec s = spec_of(6);
  s.kv_dtype = DType::kBFloat16;
  PagedCase c = make_paged_case(s);
  const PrefillArgs a = c.prefill_args();
  const Outputs clean = run(c, a);
  // Key 0 of sequence 0, kv head 1, dim 2: every row of sequence 0 sees key 0.
  c.v_cache.store(cache_offset(c.v_cache.view(), s.layout, c.physical_block(0, 0), 1, 0, 2), kInf);
  const Outputs got = run(c, a);
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t h = 0; h < s.num_qo_heads; ++h) {
      if (kv_head_of(c, h) == 1)
        EXPECT_FALSE(std::isfinite(got.out.at({t, h, 2}))) << "row " << t << " head " << h;
      else
        EXPECT_TRUE(same_bits(clean, got, t, h)) << "row " << t << " head " << h;
    }
  for (int64_t t = 5; t < c.total_q; ++t)
    for (int64_t h = 0; h < s.num_qo_heads; ++h) EXPECT_TRUE(same_bits(clean, got, t, h)) << "sequence 1 row " << t;
}

TEST(NonFinite, EmptyRowsStayZeroWhateverTheDataHolds) {
  // Causal with q_len > kv_len (check=false): positions -3..-1 see no key. NaN scales must not
  // reach them: only masking makes an empty row, and an empty row is zeros with lse -inf.
  PagedCaseSpec s = spec_of(7);
  s.q_lens = {6, 2};
  s.kv_lens = {3, 9};
  PagedCase c = make_paged_case(s);
  c.k_scale.set({0, 1}, kNaN);
  c.v_scale.set({0, 2}, kNaN);
  c.v_scale.set({1, 2}, kNaN);
  const Outputs got = run(c, c.prefill_args());
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t h = 0; h < s.num_qo_heads; ++h) {
      if (i < 3) {
        EXPECT_TRUE(all_zero(got.out, i, h)) << "position " << i - 3 << " head " << h;
        EXPECT_EQ(got.lse.at({i, h}), -kInf) << "position " << i - 3 << " head " << h;
      } else {
        EXPECT_TRUE(any_nonfinite(got.out, i, h)) << "position " << i - 3 << " head " << h;
      }
    }
}

TEST(NonFinite, VisibleScoresAllNegInfGiveNaNNotAnEmptyRow) {
  // bf16 K = +1 and q = -1 with softmax_scale 1e38: every visible score overflows to -inf. The keys
  // are visible, so the row is not empty: 0/0 is NaN (out and lse), not zeros.
  PagedCaseSpec s = spec_of(8);
  s.kv_dtype = DType::kBFloat16;
  PagedCase c = make_paged_case(s);
  for (int64_t j = 0; j < 20; ++j)
    for (int64_t d = 0; d < s.head_dim; ++d)
      c.k_cache.store(cache_offset(c.k_cache.view(), s.layout, c.physical_block(0, j), 0, j % s.page_size, d), 1.0);
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t h = 0; h < 2; ++h)  // heads 0 and 1 read kv head 0
      for (int64_t d = 0; d < s.head_dim; ++d) c.q.set({t, h, d}, -1.0);
  PrefillArgs a = c.prefill_args();
  a.softmax_scale = 1e38f;
  const Outputs got = run(c, a);
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t h = 0; h < 2; ++h) {
      EXPECT_TRUE(all_nan(got.out, t, h)) << "row " << t << " head " << h;
      EXPECT_TRUE(std::isnan(got.lse.at({t, h}))) << "row " << t << " head " << h;
    }
}

TEST(NonFinite, Int8ComputeKeepsANaNInQ) {
  // int8 compute quantizes q per row with an fmax-amax, which skips a NaN, and quantize() maps a
  // NaN to 0: without care the NaN vanishes.
  PagedCase c = make_paged_case(spec_of(9));
  const PrefillArgs a = c.prefill_args({}, GqaLayout::kGrouped, ComputeMode::kInt8);
  const Outputs clean = run(c, a);
  c.q.set({6, 0, 9}, kNaN);
  const Outputs got = run(c, a);
  EXPECT_TRUE(all_nan(got.out, 6, 0));
  EXPECT_TRUE(std::isnan(got.lse.at({6, 0})));
  EXPECT_TRUE(same_bits(clean, got, 6, 1));
  EXPECT_TRUE(same_bits(clean, got, 5, 0));
}

TEST(NonFinite, DecodeNaNInQMakesItsRowNaN) {
  PagedCaseSpec s = spec_of(10);
  s.q_lens = {1, 1, 1};
  s.kv_lens = {9, 30, 1};
  PagedCase c = make_paged_case(s);
  const DecodeArgs a = c.decode_args();
  const Outputs clean = run_decode_case(c, a);
  c.q.set({1, 2, 0}, kNaN);
  const Outputs got = run_decode_case(c, a);
  EXPECT_TRUE(all_nan(got.out, 1, 2));
  EXPECT_TRUE(std::isnan(got.lse.at({1, 2})));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t h = 0; h < s.num_qo_heads; ++h)
      if (!(b == 1 && h == 2)) EXPECT_TRUE(same_bits(clean, got, b, h)) << "sequence " << b << " head " << h;
}

TEST(NonFinite, Fp64OracleModePropagatesToo) {
  PagedCase c = make_paged_case(spec_of(11));
  c.q.set({0, 0, 0}, kNaN);
  cpu::set_fp64_accumulation(true);
  const Outputs got = run(c, c.prefill_args());
  cpu::set_fp64_accumulation(false);
  EXPECT_TRUE(all_nan(got.out, 0, 0));
  EXPECT_TRUE(std::isnan(got.lse.at({0, 0})));
  EXPECT_FALSE(any_nonfinite(got.out, 0, 1));
}

}  // namespace
}  // namespace kvq::test
