// Sanity tests of the test suite's own helpers: the naive reference on hand-computed tiny cases
// (so the oracle is checked by something other than the code it checks), the paged-cache
// builder's invariants, HostTensor strides/poison, and the compare helpers.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "tests/common/test_common.h"

namespace kvq::test {
namespace {

// One sequence, Hq = Hkv = 1, D = 2, page size 2, per-channel scales all 0.5, q = (1, 0).
PagedCase tiny(std::vector<int32_t> q_lens, std::vector<int32_t> kv_lens, int64_t num_qo_heads = 1, int64_t num_kv_heads = 1) {
  PagedCaseSpec s;
  s.q_lens = std::move(q_lens);
  s.kv_lens = std::move(kv_lens);
  s.num_qo_heads = num_qo_heads;
  s.num_kv_heads = num_kv_heads;
  s.head_dim = 2;
  s.page_size = 2;
  s.with_lse = true;
  s.seed = 1;
  PagedCase c = make_paged_case(s);
  for (int64_t i = 0; i < c.k_scale.numel(); ++i) {
    c.k_scale.store(i, 0.5);
    c.v_scale.store(i, 0.5);
  }
  for (int64_t t = 0; t < c.num_rows; ++t)
    for (int64_t h = 0; h < num_qo_heads; ++h) {
      c.q.set({t, h, 0}, 1.0);
      c.q.set({t, h, 1}, 0.0);
    }
  return c;
}

void set_kv(PagedCase& c, int64_t b, int64_t j, int64_t head, int k0, int k1, int v0, int v1) {
  const int64_t blk = c.physical_block(b, j), pos = j % c.spec.page_size;
  const TensorView k = c.k_cache.view(), v = c.v_cache.view();
  store_element(k, cache_offset(k, c.spec.layout, blk, head, pos, 0), k0);
  store_element(k, cache_offset(k, c.spec.layout, blk, head, pos, 1), k1);
  store_element(v, cache_offset(v, c.spec.layout, blk, head, pos, 0), v0);
  store_element(v, cache_offset(v, c.spec.layout, blk, head, pos, 1), v1);
}

TEST(Reference, SingleKeyReturnsItsValue) {
  PagedCase c = tiny({1}, {1});
  set_kv(c, 0, 0, 0, 6, -2, 10, -4);
  const RefOutput r = reference_prefill(c.prefill_args());
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 0), 5.0);   // 10 * 0.5
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 1), -2.0);
  // lse = S = softmax_scale * <q, k> = (1/sqrt(2) in fp32) * 3
  EXPECT_NEAR(r.lse_at(0, 0), 3.0 / std::sqrt(2.0), 1e-7);
}

TEST(Reference, EqualScoresAverageAndLseIsLogCount) {
  PagedCase c = tiny({1}, {3});
  // k0 = 0 for every key: all scores 0, so O = mean(v), lse = log(3).
  set_kv(c, 0, 0, 0, 0, 9, 2, 0);
  set_kv(c, 0, 1, 0, 0, -9, 4, 6);
  set_kv(c, 0, 2, 0, 0, 1, 6, 0);
  const RefOutput r = reference_prefill(c.prefill_args());
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 0), (1.0 + 2.0 + 3.0) / 3.0);
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 1), 1.0);
  EXPECT_NEAR(r.lse_at(0, 0), std::log(3.0), 1e-15);
}

TEST(Reference, SoftmaxWeights) {
  PagedCase c = tiny({1}, {2});
  PrefillArgs a = c.prefill_args();
  a.softmax_scale = 1.0f;
  // Scores 0.5 * 2 = 1 and 0: weights e/(e+1), 1/(e+1).
  set_kv(c, 0, 0, 0, 2, 0, 2, 0);
  set_kv(c, 0, 1, 0, 0, 0, 0, 2);
  const RefOutput r = reference_prefill(a);
  const double e = std::exp(1.0);
  EXPECT_NEAR(r.out_at(0, 0, 0), e / (e + 1), 1e-15);
  EXPECT_NEAR(r.out_at(0, 0, 1), 1 / (e + 1), 1e-15);
  EXPECT_NEAR(r.lse_at(0, 0), std::log(e + 1), 1e-15);
}

TEST(Reference, CausalIsBottomRightAligned) {
  // q_len 2 over kv_len 3: row 0 sits at position 1 (sees keys 0, 1), row 1 at position 2.
  PagedCase c = tiny({2}, {3});
  set_kv(c, 0, 0, 0, 0, 0, 2, 0);
  set_kv(c, 0, 1, 0, 0, 0, 4, 0);
  set_kv(c, 0, 2, 0, 0, 0, 12, 0);
  const RefOutput r = reference_prefill(c.prefill_args());
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 0), 1.5);
  EXPECT_DOUBLE_EQ(r.out_at(1, 0, 0), (1.0 + 2.0 + 6.0) / 3.0);
  MaskOptions nc;
  nc.causal = false;
  const RefOutput all = reference_prefill(c.prefill_args(nc));
  EXPECT_DOUBLE_EQ(all.out_at(0, 0, 0), 3.0);
}

TEST(Reference, LocalAndGlobalWindow) {
  // Position 4 with local 1, global 1: keys 0 (global), 3 and 4 (local) are visible.
  PagedCase c = tiny({1}, {5});
  for (int j = 0; j < 5; ++j) set_kv(c, 0, j, 0, 0, 0, 2 * (j + 1), 0);  // v = j + 1 after scaling
  MaskOptions w;
  w.local_window = 1;
  w.global_window = 1;
  const RefOutput r = reference_prefill(c.prefill_args(w));
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 0), (1.0 + 4.0 + 5.0) / 3.0);
  const DecodeArgs d = c.decode_args(1, 1);
  EXPECT_DOUBLE_EQ(reference_decode(d).out_at(0, 0, 0), (1.0 + 4.0 + 5.0) / 3.0);
}

TEST(Reference, MaskedRowIsZeroWithMinusInfLse) {
  PagedCase c = tiny({2}, {2});
  set_kv(c, 0, 0, 0, 0, 0, 2, 0);
  set_kv(c, 0, 1, 0, 0, 0, 4, 0);
  c.mask = HostTensor(DType::kBool, {4});
  c.mask.store(0, 0);  // row 0: nothing visible
  c.mask.store(1, 0);
  c.mask.store(2, 0);  // row 1: key 1 only
  c.mask.store(3, 1);
  MaskOptions nc;
  nc.causal = false;
  const RefOutput r = reference_prefill(c.prefill_args(nc));
  EXPECT_EQ(r.out_at(0, 0, 0), 0.0);
  EXPECT_TRUE(std::isinf(r.lse_at(0, 0)) && r.lse_at(0, 0) < 0);
  EXPECT_DOUBLE_EQ(r.out_at(1, 0, 0), 2.0);
}

TEST(Reference, GqaHeadMapping) {
  // Hq 4, Hkv 2: grouped maps heads (0,1)->0, (2,3)->1; interleaved (0,2)->0, (1,3)->1.
  PagedCase c = tiny({1}, {1}, 4, 2);
  set_kv(c, 0, 0, 0, 0, 0, 2, 0);   // kv head 0: v = 1
  set_kv(c, 0, 0, 1, 0, 0, 20, 0);  // kv head 1: v = 10
  const RefOutput g = reference_prefill(c.prefill_args({}, GqaLayout::kGrouped));
  const RefOutput i = reference_prefill(c.prefill_args({}, GqaLayout::kInterleaved));
  const double grouped[4] = {1, 1, 10, 10}, interleaved[4] = {1, 10, 1, 10};
  for (int h = 0; h < 4; ++h) {
    EXPECT_DOUBLE_EQ(g.out_at(0, h, 0), grouped[h]) << h;
    EXPECT_DOUBLE_EQ(i.out_at(0, h, 0), interleaved[h]) << h;
  }
}

TEST(Reference, PerTokenScales) {
  PagedCaseSpec s;
  s.q_lens = {1};
  s.kv_lens = {2};
  s.num_qo_heads = 1;
  s.num_kv_heads = 1;
  s.head_dim = 2;
  s.page_size = 4;
  s.k_scale_mode = s.v_scale_mode = ScaleMode::kPerToken;
  PagedCase c = make_paged_case(s);
  c.q.set({0, 0, 0}, 1.0);
  c.q.set({0, 0, 1}, 0.0);
  const TensorView vs = c.v_scale.view(), ks = c.k_scale.view();
  for (int j = 0; j < 2; ++j) {
    set_kv(c, 0, j, 0, 0, 0, 10, 0);
    store_element(ks, token_scale_offset(ks, s.layout, c.physical_block(0, j), 0, j), 1.0);
    store_element(vs, token_scale_offset(vs, s.layout, c.physical_block(0, j), 0, j), j == 0 ? 0.5 : 0.25);
  }
  const RefOutput r = reference_prefill(c.prefill_args());
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 0), (5.0 + 2.5) / 2);
}

TEST(Reference, Int8ModelIsExactOnOneKey) {
  // One key: p = 1 exactly (exact in bf16 too), so O = v8 * v_scale exactly.
  PagedCase c = tiny({1}, {1});
  set_kv(c, 0, 0, 0, 3, 1, -7, 100);
  const RefOutput r = reference_prefill(c.prefill_args({}, GqaLayout::kGrouped, ComputeMode::kInt8), RefCompute::kInt8);
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 0), -3.5);
  EXPECT_DOUBLE_EQ(r.out_at(0, 0, 1), 50.0);
}

TEST(Reference, RowStrideSamplesRows) {
  PagedCase c = tiny({10, 3}, {10, 3});
  const auto r = reference_prefill(c.prefill_args(), {RefCompute::kExact}, 4)[0];
  const std::set<int64_t> expect = {0, 4, 8, 9, 10, 12};  // i % 4 == 0 or the last row of each sequence
  for (int64_t t = 0; t < 13; ++t) EXPECT_EQ(r.computed(t), expect.count(t) == 1) << t;
}

TEST(PagedCaseBuilder, TablesAreShuffledPermutationsWithMinusOneTail) {
  PagedCaseSpec s;
  s.q_lens = {3, 0, 5};
  s.kv_lens = {40, 0, 17};
  s.page_size = 16;
  s.extra_table_cols = 2;
  s.seed = 9;
  PagedCase c = make_paged_case(s);
  EXPECT_EQ(c.num_blocks, 3 + 0 + 2 + 10);  // needed + 10, as the seed
  EXPECT_EQ(c.max_blocks_per_seq, 3 + 2);
  std::set<int32_t> seen;
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t used = (s.kv_lens[static_cast<size_t>(b)] + 15) / 16;
    for (int64_t i = 0; i < c.max_blocks_per_seq; ++i) {
      const int32_t id = static_cast<int32_t>(c.block_tables.at({b, i}));
      if (i < used) {
        EXPECT_TRUE(id >= 0 && id < c.num_blocks);
        EXPECT_TRUE(seen.insert(id).second) << "block used twice";
      } else {
        EXPECT_EQ(id, -1);
      }
    }
  }
  EXPECT_EQ(c.cu_q_lens_host, (std::vector<int32_t>{0, 3, 3, 8}));
}

TEST(PagedCaseBuilder, QuantizesPerChannelLikeTheSeed) {
  PagedCaseSpec s;
  s.q_lens = {4};
  s.kv_lens = {30};
  s.head_dim = 16;
  s.num_outlier_channels = 2;
  s.seed = 10;
  PagedCase c = make_paged_case(s);
  // scale = max(amax over all blocks and positions / 127, 1e-5); every int8 = round(x / scale).
  for (int64_t h = 0; h < s.num_kv_heads; ++h)
    for (int64_t d = 0; d < s.head_dim; ++d) {
      float amax = 0;
      for (int64_t blk = 0; blk < c.num_blocks; ++blk)
        for (int64_t p = 0; p < s.page_size; ++p) amax = std::max(amax, std::fabs(static_cast<float>(c.k_orig.at({blk, h, p, d}))));
      const float sc = static_cast<float>(c.k_scale.at({h, d}));
      EXPECT_EQ(sc, std::max(amax / 127.f, 1e-5f));
      for (int64_t blk = 0; blk < c.num_blocks; ++blk)
        for (int64_t p = 0; p < s.page_size; ++p) {
          const double q = c.k_cache.at({blk, h, p, d});
          EXPECT_EQ(q, std::nearbyint(static_cast<float>(c.k_orig.at({blk, h, p, d})) / sc));
          EXPECT_LE(std::fabs(q), 127.0);
        }
    }
}

TEST(HostTensorTest, PaddedStridesPoisonAndWrittenOutside) {
  HostTensor t = HostTensor::padded(DType::kBFloat16, {3, 2, 4}, {0, 1, 2});
  EXPECT_EQ(t.strides(), (std::vector<int64_t>{18, 6, 1}));
  EXPECT_FALSE(t.view().is_contiguous());
  t.poison();
  EXPECT_EQ(count_written_outside(t, 2), 0);
  t.set({1, 1, 3}, 1.0);  // inside the first two rows
  EXPECT_EQ(count_written_outside(t, 2), 0);
  t.set({2, 0, 0}, 1.0);  // a row past the valid ones
  EXPECT_EQ(count_written_outside(t, 2), 1);
  t.store(4, 1.0);        // the gap after dim 3 of (0, 0)
  EXPECT_EQ(count_written_outside(t, 2), 2);
  EXPECT_TRUE(std::isnan(HostTensor(t).at({2, 1, 0})));
}

TEST(CompareTest, RelativeErrorNanAndEmptyRows) {
  RefOutput ref;
  ref.num_rows = 2;
  ref.num_qo_heads = 1;
  ref.head_dim = 2;
  ref.out = {3, 4, 0, 0};
  ref.lse = {1.0, -std::numeric_limits<double>::infinity()};
  HostTensor out(DType::kFloat32, {2, 1, 2});
  out.set({0, 0, 0}, 3.03);
  out.set({0, 0, 1}, 4.04);
  ErrorStats st = compare_output(out.view(), ref, {0, 1, 2});
  EXPECT_NEAR(st.max_rel, 0.01, 1e-6);
  EXPECT_TRUE(st.ok(0.011));
  EXPECT_FALSE(st.ok(0.009));
  out.set({1, 0, 1}, 1e-3);  // empty row must be exactly zero
  st = compare_output(out.view(), ref, {0, 1, 2});
  EXPECT_EQ(st.num_empty_nonzero, 1);
  EXPECT_FALSE(st.ok(1.0));
  out.set({1, 0, 1}, 0.0);
  out.set({0, 0, 0}, std::numeric_limits<double>::quiet_NaN());
  st = compare_output(out.view(), ref, {0, 1, 2});
  EXPECT_EQ(st.num_nonfinite, 1);
  EXPECT_TRUE(std::isinf(st.max_rel));
  EXPECT_FALSE(st.ok(1e9));
  EXPECT_EQ(fraction_within(out.view(), ref, 2, 0.1, 0.1), 0.75);
}

TEST(SeedCasesTest, TableAndLengths) {
  ASSERT_EQ(seed_prefill_cases().size(), 16u);
  ASSERT_EQ(seed_decode_cases().size(), 8u);
  for (const SeedCase& c : seed_prefill_cases()) {
    Rng rng(seed_of(c));
    const SeedLengths l = seed_prefill_lengths(c, rng);
    ASSERT_EQ(static_cast<int64_t>(l.q_lens.size()), c.batch_size);
    for (size_t b = 0; b < l.q_lens.size(); ++b) {
      EXPECT_GE(l.q_lens[b], 1);
      EXPECT_LE(l.q_lens[b], c.max_len - 1);
      const int32_t prefix = l.kv_lens[b] - l.q_lens[b];
      if (c.kv_computed == 0) EXPECT_EQ(prefix, 0);
      else EXPECT_TRUE(prefix >= 1 && prefix <= c.kv_computed - 1) << prefix;
    }
  }
  for (const SeedCase& c : seed_decode_cases()) {
    Rng rng(seed_of(c));
    const SeedLengths l = seed_decode_lengths(c, rng);
    for (int32_t kv : l.kv_lens) EXPECT_TRUE(kv >= 1 && kv <= c.max_len - 1);
  }
}

}  // namespace
}  // namespace kvq::test
