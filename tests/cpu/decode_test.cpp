// Decode on the CPU backend (q [B, Hq, D], one query per sequence at position kv_len - 1)
// against the naive fp64 reference: the seed's 8 decode configurations as-is (both GQA layouts,
// our criterion and the seed's atol = rtol = 2e-2 on every element), then windows, per-token
// scales, cache layouts, kv_len 0, strided views, dtypes, split counts, and agreement with prefill.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "tests/common/seed_cases.h"
#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

class SeedDecode : public ::testing::TestWithParam<SeedCase> {};

TEST_P(SeedDecode, MatchesReference) {
  const SeedCase& sc = GetParam();
  const uint64_t seed = seed_of(GetParam(), 2);
  Rng rng(seed);
  const SeedLengths lens = seed_decode_lengths(sc, rng);
  PagedCaseSpec s;
  s.q_lens = lens.q_lens;
  s.kv_lens = lens.kv_lens;
  s.num_qo_heads = sc.num_qo_heads;
  s.num_kv_heads = sc.num_kv_heads;
  s.head_dim = sc.head_dim;
  s.page_size = sc.page_size;
  s.scale_dtype = DType::kBFloat16;
  s.with_lse = true;
  s.seed = seed;
  PagedCase c = make_paged_case(s);
  SCOPED_TRACE(std::string(sc.id) + " " + case_label(s));
  for (GqaLayout gqa : {GqaLayout::kGrouped, GqaLayout::kInterleaved}) {
    SCOPED_TRACE(to_string(gqa));
    const DecodeArgs args = c.decode_args(-1, 0, gqa);
    const double rel = check_decode(c, args);
    const RefOutput ref = reference_decode(args);
    const double frac = fraction_within(c.out.view(), ref, c.num_rows, kSeedDecodeTol, kSeedDecodeTol);
    EXPECT_EQ(frac, 1.0) << "seed criterion: every element within atol = rtol = 2e-2";
    std::printf("[ seed    ] decode %-26s %-11s rel %.2e, seed-frac %.4f\n", sc.id, to_string(gqa), rel, frac);
  }
}

INSTANTIATE_TEST_SUITE_P(Seed, SeedDecode, ::testing::ValuesIn(seed_decode_cases()),
                         [](const ::testing::TestParamInfo<SeedCase>& param_info) { return std::string(param_info.param.id); });

PagedCaseSpec decode_spec(uint64_t seed, std::vector<int32_t> kv_lens) {
  PagedCaseSpec s;
  s.kv_lens = std::move(kv_lens);
  s.q_lens.assign(s.kv_lens.size(), 1);
  s.num_qo_heads = 16;
  s.num_kv_heads = 4;
  s.head_dim = 128;
  s.page_size = 16;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

TEST(Decode, LayoutsScalesAndPageSizes) {
  uint64_t seed = 30;
  for (int64_t ps : {1, 3, 16, 100, 1024})
    for (KvLayout layout : {KvLayout::kHND, KvLayout::kNHD})
      for (int combo = 0; combo < 4; ++combo) {
        PagedCaseSpec s = decode_spec(seed++, {1, static_cast<int32_t>(ps), static_cast<int32_t>(ps + 1), 517});
        s.page_size = ps;
        s.layout = layout;
        s.k_scale_mode = (combo & 1) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
        s.v_scale_mode = (combo & 2) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
        s.extra_blocks = 2;
        PagedCase c = make_paged_case(s);
        SCOPED_TRACE(case_label(s));
        check_decode(c, c.decode_args(-1, 0, (combo & 1) ? GqaLayout::kInterleaved : GqaLayout::kGrouped));
      }
}

TEST(Decode, HeadDimsAndGroups) {
  uint64_t seed = 80;
  for (int64_t d : {1, 33, 64, 80, 96, 192, 256})
    for (int64_t group : {1, 2, 5, 16}) {
      PagedCaseSpec s = decode_spec(seed++, {40, 1, 300});
      s.head_dim = d;
      s.num_kv_heads = group == 16 ? 1 : 2;
      s.num_qo_heads = group * s.num_kv_heads;
      s.page_size = 48;
      PagedCase c = make_paged_case(s);
      SCOPED_TRACE(case_label(s));
      const DecodeArgs args = c.decode_args();
      if (d >= 8) {
        check_decode(c, args);
      } else {
        // A handful of scalars per (sequence, head): elementwise criterion (see cpu_check.h).
        const RefOutput ref = reference_decode(args);
        run_decode(c, args);
        EXPECT_EQ(fraction_within(c.out.view(), ref, c.num_rows, 5e-3, 1e-2), 1.0);
        EXPECT_EQ(compare_lse(c.lse.view(), ref, c.num_rows).num_mismatch, 0);
      }
    }
}

TEST(Decode, Windows) {
  struct W {
    int local, global;
  };
  for (W w : {W{0, 0}, W{1, 0}, W{4, 4}, W{255, 4}, W{1023, 4}, W{30, 0}}) {
    PagedCaseSpec s = decode_spec(120 + static_cast<uint64_t>(w.local), {1, 3, 260, 1500, 5});
    s.page_size = 64;
    s.k_scale_mode = ScaleMode::kPerToken;
    PagedCase c = make_paged_case(s);
    SCOPED_TRACE("local " + std::to_string(w.local) + " global " + std::to_string(w.global));
    check_decode(c, c.decode_args(w.local, w.global));
  }
}

TEST(Decode, EmptySequenceGivesZeros) {
  PagedCaseSpec s = decode_spec(130, {0, 17, 0, 1});
  s.extra_table_cols = 1;
  PagedCase c = make_paged_case(s);
  check_decode(c, c.decode_args());
  for (int64_t b : {0, 2})
    for (int64_t h = 0; h < s.num_qo_heads; ++h) {
      for (int64_t d = 0; d < s.head_dim; ++d) ASSERT_EQ(c.out.at({b, h, d}), 0.0);
      ASSERT_TRUE(std::isinf(c.lse.at({b, h})) && c.lse.at({b, h}) < 0);
    }
}

TEST(Decode, StridedViewsAndDtypes) {
  struct Combo {
    DType q, kv, scale;
  };
  uint64_t seed = 140;
  for (Combo cb : {Combo{DType::kBFloat16, DType::kInt8, DType::kFloat32}, Combo{DType::kFloat16, DType::kInt8, DType::kFloat16},
                   Combo{DType::kBFloat16, DType::kBFloat16, DType::kFloat32}, Combo{DType::kFloat16, DType::kFloat16, DType::kFloat32}}) {
    PagedCaseSpec s = decode_spec(seed++, {33, 200, 7});
    s.q_dtype = cb.q;
    s.kv_dtype = cb.kv;
    s.scale_dtype = cb.scale;
    s.q_pad = {0, 2, 8};
    s.out_pad = {0, 1, 4};
    PagedCase c = make_paged_case(s);
    SCOPED_TRACE(case_label(s));
    check_decode(c, c.decode_args());  // also: nothing written in the gaps of out
  }
}

TEST(Decode, SplitCountsAgree) {
  PagedCaseSpec s = decode_spec(150, {1, 64, 1000, 4097});
  s.page_size = 32;
  PagedCase c = make_paged_case(s);
  const RefOutput ref = reference_decode(c.decode_args());
  for (int splits : {0, 1, 2, 3, 7, 64}) {
    DecodeArgs args = c.decode_args();
    args.num_splits = splits;
    run_decode(c, args);
    const ErrorStats st = compare_decode_output(c.out.view(), ref);
    EXPECT_TRUE(st.ok(kTolNative)) << "num_splits " << splits << ": " << st.describe();
    EXPECT_LE(compare_lse(c.lse.view(), ref, c.num_rows).max_abs, kTolLse) << "num_splits " << splits;
  }
}

TEST(Decode, MatchesPrefillWithOneQueryPerSequence) {
  // Decode row b is the prefill query at position kv_len_b - 1 of a q_len = 1 chunk.
  PagedCaseSpec s = decode_spec(160, {5, 129, 700});
  s.k_scale_mode = ScaleMode::kPerToken;
  PagedCase c = make_paged_case(s);
  MaskOptions mo;
  mo.local_window = 100;
  mo.global_window = 3;
  run_decode(c, c.decode_args(100, 3));
  const RefOutput from_decode = to_ref_output(c.out.view(), c.lse.view());
  run_prefill(c, c.prefill_args(mo));
  const ErrorStats st = compare_output(c.out.view(), from_decode, c.cu_q_lens_host);
  // Both are the CPU backend's native path on identical inputs: they agree to output rounding.
  EXPECT_TRUE(st.ok(4e-3)) << st.describe();
}

}  // namespace
}  // namespace kvq::test
