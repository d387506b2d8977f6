// Prefill features on the CPU backend against the naive fp64 reference: cache and GQA layouts,
// empty sequences, the seed's bucket-padding case, sliding windows, non-causal with and without a
// mask, per-token scales in every K/V combination, fp16 queries, bf16/fp16 caches, scale dtypes,
// strided q/out views, explicit softmax scales, outlier channels, int8 queries, long prefixes.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

PagedCaseSpec base_spec(uint64_t seed, std::vector<int32_t> q_lens, std::vector<int32_t> kv_lens) {
  PagedCaseSpec s;
  s.q_lens = std::move(q_lens);
  s.kv_lens = std::move(kv_lens);
  s.num_qo_heads = 8;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.page_size = 16;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

TEST(PrefillFeatures, CacheAndGqaLayouts) {
  for (KvLayout layout : {KvLayout::kHND, KvLayout::kNHD})
    for (GqaLayout gqa : {GqaLayout::kGrouped, GqaLayout::kInterleaved}) {
      PagedCaseSpec s = base_spec(11, {17, 1, 40}, {50, 33, 40});
      s.layout = layout;
      s.num_qo_heads = 12;
      s.num_kv_heads = 3;
      PagedCase c = make_paged_case(s);
      SCOPED_TRACE(std::string(to_string(gqa)) + " " + case_label(s));
      check_prefill(c, c.prefill_args({}, gqa));
    }
}

TEST(PrefillFeatures, EmptySequences) {
  // q_len 0 with a cached prefix, q_len 0 with kv_len 0, and ordinary sequences around them.
  PagedCaseSpec s = base_spec(12, {0, 3, 0, 5, 0}, {0, 7, 9, 5, 16});
  s.extra_table_cols = 2;
  PagedCase c = make_paged_case(s);
  SCOPED_TRACE(case_label(s));
  check_prefill(c, c.prefill_args());
}

TEST(PrefillFeatures, NonCausalEmptyKvGivesZeros) {
  PagedCaseSpec s = base_spec(13, {4, 3, 2}, {0, 9, 0});
  PagedCase c = make_paged_case(s);
  MaskOptions mo;
  mo.causal = false;
  const PrefillArgs args = c.prefill_args(mo);
  check_prefill(c, args);
  for (int64_t t : {0, 1, 2, 3, 7, 8})
    for (int64_t h = 0; h < s.num_qo_heads; ++h) {
      for (int64_t d = 0; d < s.head_dim; ++d) ASSERT_EQ(c.out.at({t, h, d}), 0.0) << "row " << t;
      ASSERT_TRUE(std::isinf(c.lse.at({t, h})) && c.lse.at({t, h}) < 0) << "row " << t;
    }
}

TEST(PrefillFeatures, SeedBucketPadding) {
  // mojo_opset PR #361's tests: T = 8 slots, cu_q_lens = [0,1,2,3,4,4,4], kv_lens = [1,1,1,1,0,0], Hq 4, Hkv 2,
  // D 128, bs 16, table rows 4-5 all -1: only out[:4] is defined, rows 4..7 must stay untouched.
  PagedCaseSpec s = base_spec(14, {1, 1, 1, 1, 0, 0}, {1, 1, 1, 1, 0, 0});
  s.num_qo_heads = 4;
  s.head_dim = 128;
  s.padding_rows = 4;
  PagedCase c = make_paged_case(s);
  ASSERT_EQ(c.num_rows, 8);
  ASSERT_EQ(c.block_tables.at({4, 0}), -1);
  ASSERT_EQ(c.block_tables.at({5, 0}), -1);
  check_prefill(c, c.prefill_args());
  EXPECT_EQ(count_written_outside(c.out, 4), 0);
}

TEST(PrefillFeatures, SlidingWindows) {
  struct W {
    int local, global;
  };
  // Small windows on small pages (including local 0: only the diagonal, plus the global keys).
  for (W w : {W{0, 0}, W{1, 0}, W{3, 2}, W{7, 1}, W{0, 5}, W{20, 4}})
    for (int64_t ps : {3, 16}) {
      PagedCaseSpec s = base_spec(15 + static_cast<uint64_t>(w.local * 10 + w.global + ps), {9, 30, 1}, {40, 30, 45});
      s.page_size = ps;
      PagedCase c = make_paged_case(s);
      MaskOptions mo;
      mo.local_window = w.local;
      mo.global_window = w.global;
      SCOPED_TRACE("local " + std::to_string(w.local) + " global " + std::to_string(w.global) + " " + case_label(s));
      check_prefill(c, c.prefill_args(mo));
    }
}

TEST(PrefillFeatures, SeedSlidingWindowVariants) {
  // The seed's (global 4, local 255) and (global 4, local 1023), with the D 256 / bs 256 and
  // bs 1024 shapes it adds; lengths long enough that the windows bite (sizes reduced for the CPU).
  struct V {
    int64_t head_dim, page_size;
    int local;
  };
  for (V v : {V{128, 128, 255}, V{256, 256, 255}, V{128, 1024, 1023}, V{256, 256, 1023}}) {
    PagedCaseSpec s = base_spec(16 + static_cast<uint64_t>(v.head_dim + v.page_size + v.local), {70, 33}, {1400, 600});
    s.head_dim = v.head_dim;
    s.page_size = v.page_size;
    s.num_qo_heads = 4;
    s.num_kv_heads = 1;
    s.extra_blocks = 2;
    PagedCase c = make_paged_case(s);
    MaskOptions mo;
    mo.local_window = v.local;
    mo.global_window = 4;
    SCOPED_TRACE("local " + std::to_string(v.local) + " " + case_label(s));
    check_prefill(c, c.prefill_args(mo));
  }
}

TEST(PrefillFeatures, NonCausal) {
  // q_len below, equal to and above kv_len (allowed without causality).
  PagedCaseSpec s = base_spec(17, {5, 20, 30}, {37, 20, 9});
  PagedCase c = make_paged_case(s);
  MaskOptions mo;
  mo.causal = false;
  check_prefill(c, c.prefill_args(mo));
}

TEST(PrefillFeatures, NonCausalWithMask) {
  for (double p : {0.5, 0.05}) {
    PagedCaseSpec s = base_spec(18, {5, 20, 30, 0}, {37, 20, 9, 4});
    PagedCase c = make_paged_case(s);
    Rng rng(19);
    c.set_random_mask(rng, p, 3);  // every third q row fully masked: zeros and lse -inf
    MaskOptions mo;
    mo.causal = false;
    SCOPED_TRACE("p_visible " + std::to_string(p));
    check_prefill(c, c.prefill_args(mo));
  }
}

TEST(PrefillFeatures, PerTokenScales) {
  for (KvLayout layout : {KvLayout::kHND, KvLayout::kNHD})
    for (ScaleMode km : {ScaleMode::kPerChannel, ScaleMode::kPerToken})
      for (ScaleMode vm : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
        PagedCaseSpec s = base_spec(20, {12, 1, 25}, {40, 17, 25});
        s.layout = layout;
        s.k_scale_mode = km;
        s.v_scale_mode = vm;
        s.page_size = 7;
        s.num_outlier_channels = 3;
        PagedCase c = make_paged_case(s);
        SCOPED_TRACE(case_label(s));
        check_prefill(c, c.prefill_args());
      }
}

TEST(PrefillFeatures, DtypeCombinations) {
  struct Combo {
    DType q, kv, scale;
  };
  for (Combo cb : {Combo{DType::kFloat16, DType::kInt8, DType::kFloat32}, Combo{DType::kBFloat16, DType::kInt8, DType::kFloat16},
                   Combo{DType::kBFloat16, DType::kInt8, DType::kBFloat16}, Combo{DType::kFloat16, DType::kInt8, DType::kBFloat16},
                   Combo{DType::kBFloat16, DType::kBFloat16, DType::kFloat32}, Combo{DType::kFloat16, DType::kFloat16, DType::kFloat32}})
    for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
      if (cb.kv != DType::kInt8 && mode == ScaleMode::kPerToken) continue;
      PagedCaseSpec s = base_spec(21, {10, 33}, {30, 33});
      s.q_dtype = cb.q;
      s.kv_dtype = cb.kv;
      s.scale_dtype = cb.scale;
      s.k_scale_mode = s.v_scale_mode = mode;
      s.head_dim = 96;
      PagedCase c = make_paged_case(s);
      SCOPED_TRACE(case_label(s) + " scale " + to_string(cb.scale));
      check_prefill(c, c.prefill_args());
    }
}

TEST(PrefillFeatures, StridedQueryAndOutput) {
  for (KvLayout layout : {KvLayout::kHND, KvLayout::kNHD}) {
    PagedCaseSpec s = base_spec(22, {9, 14}, {20, 14});
    s.layout = layout;
    s.q_pad = {0, 1, 8};    // a gap after each head and after each row
    s.out_pad = {0, 3, 16};
    s.padding_rows = 2;
    PagedCase c = make_paged_case(s);
    ASSERT_FALSE(c.q.view().is_contiguous());
    ASSERT_FALSE(c.out.view().is_contiguous());
    SCOPED_TRACE(case_label(s));
    check_prefill(c, c.prefill_args());  // also checks that no gap of out was written
  }
}

TEST(PrefillFeatures, ExplicitSoftmaxScale) {
  for (float scale : {0.3f, 0.05f, 1.0f}) {
    PagedCaseSpec s = base_spec(23, {8, 19}, {24, 19});
    PagedCase c = make_paged_case(s);
    PrefillArgs args = c.prefill_args();
    args.softmax_scale = scale;
    SCOPED_TRACE("softmax_scale " + std::to_string(scale));
    check_prefill(c, args);
  }
}

TEST(PrefillFeatures, LongPrefixShortChunk) {
  PagedCaseSpec s = base_spec(24, {1, 3, 2}, {3000, 1777, 2049});
  s.head_dim = 128;
  s.page_size = 64;
  s.num_outlier_channels = 2;
  PagedCase c = make_paged_case(s);
  check_prefill(c, c.prefill_args());
}

TEST(PrefillFeatures, Int8Query) {
  // q given as int8 with q_scale [T, Hq] (compute is int8): q8 = round(q / s), s = max|q| / levels.
  // With per-token K the backend takes q8 and s as they are (levels 90: q8 does not span [-127, 127],
  // so requantizing it would differ); with per-channel K it folds the K scale and requantizes.
  for (const float levels : {127.f, 90.f}) {
    for (ScaleMode km : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
      PagedCaseSpec s = base_spec(25, {12, 30}, {40, 30});
      s.k_scale_mode = km;
      PagedCase c = make_paged_case(s);
      HostTensor q8(DType::kInt8, {c.num_rows, s.num_qo_heads, s.head_dim});
      HostTensor q_scale(DType::kFloat32, {c.num_rows, s.num_qo_heads});
      for (int64_t t = 0; t < c.num_rows; ++t)
        for (int64_t h = 0; h < s.num_qo_heads; ++h) {
          float amax = 0.f;
          for (int64_t d = 0; d < s.head_dim; ++d) amax = std::max(amax, static_cast<float>(std::fabs(c.q.at({t, h, d}))));
          const float sc = amax / levels;
          q_scale.set({t, h}, sc);
          for (int64_t d = 0; d < s.head_dim; ++d) q8.set({t, h, d}, ref_quantize(static_cast<float>(c.q.at({t, h, d})), sc));
        }
      PrefillArgs args = c.prefill_args();
      args.q = q8.view();
      args.q_scale = q_scale.view();
      SCOPED_TRACE(case_label(s) + " levels=" + std::to_string(levels));
      check_prefill(c, args, "int8 q");
    }
  }
}

TEST(PrefillFeatures, Int8ComputeWindowsAndMask) {
  PagedCaseSpec s = base_spec(26, {12, 30, 7}, {90, 30, 7});
  s.k_scale_mode = ScaleMode::kPerToken;
  PagedCase c = make_paged_case(s);
  MaskOptions mo;
  mo.local_window = 9;
  mo.global_window = 2;
  check_prefill(c, c.prefill_args(mo, GqaLayout::kInterleaved, ComputeMode::kInt8), "int8 window");
  Rng rng(27);
  c.set_random_mask(rng, 0.3, 4);
  MaskOptions nc;
  nc.causal = false;
  check_prefill(c, c.prefill_args(nc, GqaLayout::kGrouped, ComputeMode::kInt8), "int8 mask");
}

TEST(PrefillFeatures, UnshuffledAndGarbageTableTail) {
  // Entries past the used blocks are never read: fill them with out-of-range garbage.
  PagedCaseSpec s = base_spec(28, {5, 16}, {21, 16});
  s.extra_table_cols = 3;
  s.shuffle_blocks = false;
  PagedCase c = make_paged_case(s);
  for (int64_t b = 0; b < c.batch_size; ++b)
    for (int64_t i = static_cast<int64_t>(c.block_ids[static_cast<size_t>(b)].size()); i < c.max_blocks_per_seq; ++i)
      c.block_tables.set({b, i}, 1000000 + static_cast<double>(i));
  check_prefill(c, c.prefill_args());
}

TEST(PrefillFeatures, DataChecksAcceptValidInput) {
  // check=true must not reject what is valid: -1 table tails, empty sequences, bucket padding.
  PagedCaseSpec s = base_spec(29, {0, 3, 1, 0}, {0, 7, 33, 16});
  s.extra_table_cols = 2;
  s.padding_rows = 3;
  PagedCase c = make_paged_case(s);
  PrefillArgs args = c.prefill_args();
  args.check = true;
  check_prefill(c, args, "check=true");
  PagedCaseSpec d = base_spec(30, {1, 1, 1}, {0, 5, 40});
  PagedCase dc = make_paged_case(d);
  DecodeArgs dargs = dc.decode_args();
  dargs.check = true;
  check_decode(dc, dargs, "decode check=true");
}

TEST(PrefillFeatures, PathsAndPlanOnCpu) {
  // Every path request and a plan from plan_prefill() give a correct result on CPU tensors.
  PagedCaseSpec s = base_spec(31, {7, 0, 21}, {30, 4, 21});
  PagedCase c = make_paged_case(s);
  for (PrefillPath path : {PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kDequant, PrefillPath::kGeneric}) {
    PrefillArgs args = c.prefill_args();
    args.path = path;
    SCOPED_TRACE(to_string(path));
    check_prefill(c, args, "path");
  }
  PrefillArgs args = c.prefill_args();
  const PrefillPlan plan = plan_prefill(args, c.cu_q_lens_host.data(), c.spec.kv_lens.data());
  EXPECT_EQ(plan.batch_size, 3);
  EXPECT_EQ(plan.total_q, 28);
  EXPECT_EQ(plan.max_q_len, 21);
  EXPECT_EQ(plan.max_kv_len, 30);
  EXPECT_EQ(plan.num_referenced_blocks, 2 + 1 + 2);
  std::vector<uint8_t> workspace(plan.workspace_bytes + 1);
  args.plan = &plan;
  args.workspace = {workspace.data(), plan.workspace_bytes};
  check_prefill(c, args, "planned");
}

}  // namespace
}  // namespace kvq::test
