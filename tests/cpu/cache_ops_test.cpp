// append, dequantize_blocks and calibrate on the CPU backend against the naive implementations
// of tests/common/reference.h. Our definition is bit-exact: the whole cache (and scale tensors,
// and untouched regions) must be byte-identical to the naive result. The seed's cache-write
// cases are also checked with the seed's own criterion (at most one unit of difference, at most
// 1e-5 of the elements differing).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

struct ByteDiff {
  int64_t num_diff = 0;
  int64_t max_unit_diff = 0;  // int8 caches: max |a - b|
  int64_t first = -1;
};

ByteDiff diff_int8(const HostTensor& a, const HostTensor& b) {
  ByteDiff d;
  for (int64_t i = 0; i < a.storage_elements(); ++i) {
    const int64_t x = a.ptr<int8_t>()[i], y = b.ptr<int8_t>()[i];
    if (x != y) {
      if (d.first < 0) d.first = i;
      ++d.num_diff;
      d.max_unit_diff = std::max<int64_t>(d.max_unit_diff, std::abs(x - y));
    }
  }
  return d;
}

// A deep copy of a tensor (same dtype, shape, strides and bytes).
HostTensor clone(const HostTensor& t) {
  if (!t.defined()) return HostTensor();
  HostTensor c = HostTensor::strided(t.dtype(), t.shape(), t.strides());
  std::memcpy(c.data(), t.data(), t.nbytes());
  return c;
}

struct AppendCase {
  PagedCase cache;               // the cache written into (k_cache/v_cache/scales), initial content random
  HostTensor k_new, v_new, slots;
};

// New tokens: n_tokens random values (randn * gain, in `dtype`), slots from `slots`.
AppendCase make_append_case(const PagedCaseSpec& spec, const std::vector<int64_t>& slots, DType new_dtype,
                            DType slot_dtype, double gain) {
  AppendCase a{make_paged_case(spec), {}, {}, {}};
  const int64_t n = static_cast<int64_t>(slots.size());
  a.k_new = HostTensor(new_dtype, {n, spec.num_kv_heads, spec.head_dim});
  a.v_new = HostTensor(new_dtype, {n, spec.num_kv_heads, spec.head_dim});
  Rng rng(spec.seed + 17);
  for (int64_t i = 0; i < a.k_new.numel(); ++i) {
    a.k_new.store(i, rng.normal() * gain);
    a.v_new.store(i, rng.normal() * gain);
  }
  a.slots = HostTensor(slot_dtype, {n});
  for (int64_t i = 0; i < n; ++i) a.slots.store(i, static_cast<double>(slots[static_cast<size_t>(i)]));
  return a;
}

AppendArgs append_args(const HostTensor& k_new, const HostTensor& v_new, const HostTensor& slots, const PagedKvCache& kv) {
  AppendArgs args;
  args.k_new = k_new.view();
  args.v_new = v_new.view();
  args.slot_mapping = slots.view();
  args.kv = kv;
  return args;
}

PagedKvCache kv_of(const HostTensor& k, const HostTensor& v, const HostTensor& ks, const HostTensor& vs, KvLayout layout) {
  PagedKvCache kv;
  kv.k_cache = k.view();
  kv.v_cache = v.view();
  kv.k_scale = ks.view();
  kv.v_scale = vs.view();
  kv.layout = layout;
  return kv;
}

// Runs kvq::append on the case and reference_append on a copy; returns (cache, scale) diffs.
void run_append_and_compare(AppendCase& a, bool expect_bit_exact, const std::string& what) {
  SCOPED_TRACE(what + " " + case_label(a.cache.spec));
  PagedCase& c = a.cache;
  HostTensor rk = clone(c.k_cache), rv = clone(c.v_cache), rks = clone(c.k_scale), rvs = clone(c.v_scale);
  reference_append(append_args(a.k_new, a.v_new, a.slots, kv_of(rk, rv, rks, rvs, c.spec.layout)));
  kvq::append(append_args(a.k_new, a.v_new, a.slots, c.kv()));
  if (c.spec.kv_dtype == DType::kInt8) {
    const ByteDiff dk = diff_int8(c.k_cache, rk), dv = diff_int8(c.v_cache, rv);
    if (expect_bit_exact) {
      EXPECT_EQ(dk.num_diff, 0) << "k_cache differs from the naive append (first at element " << dk.first << ")";
      EXPECT_EQ(dv.num_diff, 0) << "v_cache differs from the naive append (first at element " << dv.first << ")";
    } else {
      EXPECT_LE(dk.max_unit_diff, 1);
      EXPECT_LE(dv.max_unit_diff, 1);
    }
  } else {
    EXPECT_TRUE(same_bytes(c.k_cache, rk)) << "k_cache differs from the naive append";
    EXPECT_TRUE(same_bytes(c.v_cache, rv)) << "v_cache differs from the naive append";
  }
  if (c.k_scale.defined()) {
    EXPECT_TRUE(same_bytes(c.k_scale, rks)) << "k_scale differs (per-token scales must be computed and stored exactly)";
  }
  if (c.v_scale.defined()) {
    EXPECT_TRUE(same_bytes(c.v_scale, rvs)) << "v_scale differs";
  }
}

PagedCaseSpec cache_spec(uint64_t seed, int64_t num_tokens_capacity, int64_t page_size) {
  PagedCaseSpec s;
  // One sequence owning enough blocks; extra blocks give room for slots outside any sequence.
  s.q_lens = {1};
  s.kv_lens = {static_cast<int32_t>(num_tokens_capacity)};
  s.num_qo_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.page_size = page_size;
  s.extra_blocks = 2;
  s.seed = seed;
  return s;
}

// Number of slots of the cache make_paged_case builds for a spec.
int64_t slot_capacity(const PagedCaseSpec& s) {
  int64_t blocks = s.extra_blocks;
  for (int32_t kv : s.kv_lens) blocks += (kv + s.page_size - 1) / s.page_size;
  return blocks * s.page_size;
}

// Distinct random slots in [0, capacity), with some -1 (skipped) and -7 (also negative) mixed in.
std::vector<int64_t> random_slots(Rng& rng, int64_t n, int64_t capacity) {
  std::vector<int32_t> perm = rng.permutation(capacity);
  std::vector<int64_t> slots;
  for (int64_t i = 0; i < n; ++i) slots.push_back(i % 7 == 3 ? -1 : i % 11 == 5 ? -7 : perm[static_cast<size_t>(i)]);
  return slots;
}

TEST(Append, PerChannelAllDtypesAndLayouts) {
  uint64_t seed = 300;
  for (KvLayout layout : {KvLayout::kHND, KvLayout::kNHD})
    for (DType new_dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32})
      for (DType slot_dtype : {DType::kInt32, DType::kInt64}) {
        PagedCaseSpec s = cache_spec(seed++, 100, 16);
        s.layout = layout;
        Rng rng(seed);
        // gain 1.5: some new values exceed the calibrated range, exercising the clamp.
        AppendCase a = make_append_case(s, random_slots(rng, 60, slot_capacity(s)), new_dtype, slot_dtype, 1.5);
        run_append_and_compare(a, true, std::string("new ") + to_string(new_dtype) + " slots " + to_string(slot_dtype));
      }
}

TEST(Append, PerTokenScalesComputedAndStored) {
  uint64_t seed = 320;
  for (KvLayout layout : {KvLayout::kHND, KvLayout::kNHD})
    for (int combo = 1; combo < 4; ++combo) {
      PagedCaseSpec s = cache_spec(seed++, 90, 7);
      s.layout = layout;
      s.k_scale_mode = (combo & 1) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
      s.v_scale_mode = (combo & 2) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
      Rng rng(seed);
      AppendCase a = make_append_case(s, random_slots(rng, 50, slot_capacity(s)), DType::kBFloat16, DType::kInt64, 3.0);
      // A token of zeros: its per-token scale is the 1e-8 floor and its int8 values are 0.
      for (int64_t h = 0; h < s.num_kv_heads; ++h)
        for (int64_t d = 0; d < s.head_dim; ++d) {
          a.k_new.set({0, h, d}, 0.0);
          a.v_new.set({0, h, d}, 0.0);
        }
      // Its slot: one no other token writes.
      int64_t zero_slot = 0;
      for (bool used = true; used; ++zero_slot) {
        used = false;
        for (int64_t i = 1; i < a.slots.numel(); ++i) used = used || a.slots.load(i) == static_cast<double>(zero_slot);
        if (!used) break;
      }
      a.slots.store(0, static_cast<double>(zero_slot));
      run_append_and_compare(a, true, "combo " + std::to_string(combo));
      if (s.k_scale_mode == ScaleMode::kPerToken) {
        const TensorView ks = a.cache.k_scale.view();
        for (int64_t h = 0; h < s.num_kv_heads; ++h)
          EXPECT_EQ(static_cast<float>(load_element(ks, token_scale_offset(ks, s.layout, zero_slot / 7, h, zero_slot % 7))), 1e-8f);
      }
    }
}

TEST(Append, PerTokenWithHalfPrecisionScales) {
  // Scales stored in bf16/fp16: the stored scale is rounded; the naive append quantizes with the
  // stored value. The library may quantize with the fp32 value instead: allow one unit.
  for (DType sd : {DType::kBFloat16, DType::kFloat16}) {
    PagedCaseSpec s = cache_spec(340, 64, 16);
    s.k_scale_mode = s.v_scale_mode = ScaleMode::kPerToken;
    s.scale_dtype = sd;
    Rng rng(341);
    AppendCase a = make_append_case(s, random_slots(rng, 40, slot_capacity(s)), DType::kBFloat16, DType::kInt32, 1.0);
    run_append_and_compare(a, false, std::string("scales ") + to_string(sd));
  }
}

TEST(Append, RoundHalfEvenAndClampExactly) {
  // Per-channel scales set to powers of two so that x / scale is an exact tie or out of range.
  PagedCaseSpec s = cache_spec(350, 32, 16);
  s.num_kv_heads = 1;
  s.head_dim = 8;
  AppendCase a = make_append_case(s, {0, 1, 2}, DType::kFloat32, DType::kInt64, 1.0);
  const double scale = 0.25;
  for (int64_t d = 0; d < s.head_dim; ++d) {
    a.cache.k_scale.set({0, d}, scale);
    a.cache.v_scale.set({0, d}, scale);
  }
  const double units[3][8] = {{2.5, -2.5, 3.5, -3.5, 0.5, -0.5, 1.5, 126.5},
                              {127.5, 128.0, 1000.0, -128.0, -128.5, -129.0, -1000.0, 0.0},
                              {2.4999, 2.5001, -2.5001, 5.5, 6.5, -6.5, 64.5, -64.5}};
  const int expect[3][8] = {{2, -2, 4, -4, 0, 0, 2, 126},
                            {127, 127, 127, -128, -128, -128, -128, 0},
                            {2, 3, -3, 6, 6, -6, 64, -64}};
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t d = 0; d < 8; ++d) {
      a.k_new.set({n, 0, d}, units[n][d] * scale);
      a.v_new.set({n, 0, d}, -units[n][d] * scale);
    }
  kvq::append(append_args(a.k_new, a.v_new, a.slots, a.cache.kv()));
  const TensorView kc = a.cache.k_cache.view(), vc = a.cache.v_cache.view();
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t d = 0; d < 8; ++d) {
      const int64_t off = cache_offset(kc, s.layout, n / 16, 0, n % 16, d);  // slot n, identity-free: see below
      (void)off;
    }
  // Slots 0..2 are absolute: block slot/16 = 0, positions 0..2.
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t d = 0; d < 8; ++d) {
      EXPECT_EQ(load_element(kc, cache_offset(kc, s.layout, 0, 0, n, d)), expect[n][d]) << "k n=" << n << " d=" << d;
      const int neg = -expect[n][d] < -128 ? -128 : (-expect[n][d] > 127 ? 127 : -expect[n][d]);
      // v = -units: ties stay symmetric (round-half-even is odd-symmetric); the clamp is not.
      const double vu = -units[n][d];
      const int vexp = vu >= 127.5 ? 127 : vu <= -128.5 ? -128 : static_cast<int>(std::nearbyint(vu));
      EXPECT_EQ(load_element(vc, cache_offset(vc, s.layout, 0, 0, n, d)), std::min(127, std::max(-128, vexp)))
          << "v n=" << n << " d=" << d << " (" << neg << ")";
    }
}

TEST(Append, SkippedSlotsLeaveCacheUntouched) {
  PagedCaseSpec s = cache_spec(360, 64, 16);
  AppendCase a = make_append_case(s, {-1, -1, -5, -1}, DType::kBFloat16, DType::kInt64, 1.0);
  const HostTensor k0 = clone(a.cache.k_cache), v0 = clone(a.cache.v_cache);
  kvq::append(append_args(a.k_new, a.v_new, a.slots, a.cache.kv()));
  EXPECT_TRUE(same_bytes(a.cache.k_cache, k0));
  EXPECT_TRUE(same_bytes(a.cache.v_cache, v0));
}

TEST(Append, OutOfRangeSlots) {
  // docs/design.md §3: kernels never write out of bounds whatever the metadata holds; with check=true
  // the bad slot is reported as a kvq::Error naming slot_mapping and nothing is written.
  PagedCaseSpec s = cache_spec(365, 64, 16);
  const int64_t capacity = slot_capacity(s);
  AppendCase a = make_append_case(s, {3, capacity, capacity + 1000, 4}, DType::kBFloat16, DType::kInt64, 1.0);
  const HostTensor k0 = clone(a.cache.k_cache), v0 = clone(a.cache.v_cache);
  AppendArgs args = append_args(a.k_new, a.v_new, a.slots, a.cache.kv());
  args.check = true;
  try {
    kvq::append(args);
    ADD_FAILURE() << "append with slot >= num_blocks * page_size and check=true did not throw";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "slot_mapping") << e.what();
  }
  EXPECT_TRUE(same_bytes(a.cache.k_cache, k0)) << "check=true failure wrote to the cache";
  EXPECT_TRUE(same_bytes(a.cache.v_cache, v0));
}

TEST(Append, HalfPrecisionCaches) {
  for (DType kv : {DType::kBFloat16, DType::kFloat16})
    for (DType nd : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
      PagedCaseSpec s = cache_spec(370, 50, 8);
      s.kv_dtype = kv;
      s.layout = kv == DType::kFloat16 ? KvLayout::kNHD : KvLayout::kHND;
      Rng rng(371);
      AppendCase a = make_append_case(s, random_slots(rng, 30, slot_capacity(s)), nd, DType::kInt32, 1.0);
      run_append_and_compare(a, true, std::string("cache ") + to_string(kv) + " new " + to_string(nd));
    }
}

// The seed's cache-write cases: (B, Hkv, D, bs, prefix lens, new lens); prefix -1 = padded
// sequence (slots -1, nothing written). Static per-channel scales (calibrated on the cache).
struct SeedWrite {
  int64_t batch, num_kv_heads, head_dim, page_size;
  std::vector<int32_t> prefix, news;
};

TEST(Append, SeedCacheWriteCases) {
  const std::vector<SeedWrite> cases = {
      {2, 2, 128, 128, {0, 0}, {130, 33}},
      {2, 2, 128, 2048, {1023, 2047}, {900, 1025}},
      {3, 2, 128, 128, {32, -1, 35}, {1, 1, 1}},
      {8, 2, 128, 128, {224, 542, 34, 41, 54, 57, 65, 0}, {432, 84, 977, 93, 23, 89, 31, 555}},
  };
  uint64_t seed = 400;
  for (const SeedWrite& w : cases) {
    PagedCaseSpec s;
    for (int64_t b = 0; b < w.batch; ++b) {
      const int32_t p = w.prefix[static_cast<size_t>(b)];
      s.kv_lens.push_back(p < 0 ? 0 : p + w.news[static_cast<size_t>(b)]);
      s.q_lens.push_back(0);
    }
    s.num_qo_heads = w.num_kv_heads;
    s.num_kv_heads = w.num_kv_heads;
    s.head_dim = w.head_dim;
    s.page_size = w.page_size;
    s.extra_blocks = 2;
    s.seed = seed++;
    // Slots of the new tokens through each sequence's (shuffled) blocks.
    PagedCase probe = make_paged_case(s);
    std::vector<int64_t> slots;
    for (int64_t b = 0; b < w.batch; ++b) {
      const int32_t p = w.prefix[static_cast<size_t>(b)];
      for (int32_t i = 0; i < w.news[static_cast<size_t>(b)]; ++i) {
        if (p < 0) {
          slots.push_back(-1);
          continue;
        }
        const int64_t pos = p + i;
        slots.push_back(probe.physical_block(b, pos) * w.page_size + pos % w.page_size);
      }
    }
    AppendCase a = make_append_case(s, slots, DType::kBFloat16, DType::kInt64, 1.0);
    SCOPED_TRACE("seed write case B=" + std::to_string(w.batch) + " bs=" + std::to_string(w.page_size));
    HostTensor rk = clone(a.cache.k_cache), rv = clone(a.cache.v_cache);
    reference_append(append_args(a.k_new, a.v_new, a.slots, kv_of(rk, rv, a.cache.k_scale, a.cache.v_scale, s.layout)));
    kvq::append(append_args(a.k_new, a.v_new, a.slots, a.cache.kv()));
    for (const auto& [got, want, name] : {std::tuple{&a.cache.k_cache, &rk, "k"}, std::tuple{&a.cache.v_cache, &rv, "v"}}) {
      const ByteDiff d = diff_int8(*got, *want);
      // The seed's criterion, then ours.
      EXPECT_LE(d.max_unit_diff, 1) << name;
      EXPECT_LE(static_cast<double>(d.num_diff), 1e-5 * static_cast<double>(got->numel())) << name;
      EXPECT_EQ(d.num_diff, 0) << name << ": not bit-exact (first difference at element " << d.first << ")";
    }
  }
}

TEST(Append, ThenAttentionReadsWhatWasWritten) {
  // Write a chunk with append, then prefill over it: the output matches the reference over the
  // written cache (the reference reads the same bytes).
  PagedCaseSpec s = cache_spec(420, 80, 16);
  s.q_lens = {24};
  s.k_scale_mode = ScaleMode::kPerToken;
  s.with_lse = true;
  PagedCase c = make_paged_case(s);
  std::vector<int64_t> slots;
  for (int64_t pos = 56; pos < 80; ++pos) slots.push_back(c.physical_block(0, pos) * 16 + pos % 16);
  AppendCase a{std::move(c), {}, {}, {}};
  a.k_new = HostTensor(DType::kBFloat16, {24, 2, 64});
  a.v_new = HostTensor(DType::kBFloat16, {24, 2, 64});
  Rng rng(421);
  for (int64_t i = 0; i < a.k_new.numel(); ++i) {
    a.k_new.store(i, rng.normal() * 4.0);  // different magnitude from the prefix
    a.v_new.store(i, rng.normal());
  }
  a.slots = HostTensor(DType::kInt64, {24});
  for (int64_t i = 0; i < 24; ++i) a.slots.store(i, static_cast<double>(slots[static_cast<size_t>(i)]));
  kvq::append(append_args(a.k_new, a.v_new, a.slots, a.cache.kv()));
  check_prefill(a.cache, a.cache.prefill_args(), "prefill after append");
}

TEST(DequantizeBlocks, FullAndCompact) {
  uint64_t seed = 500;
  for (KvLayout layout : {KvLayout::kHND, KvLayout::kNHD})
    for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken})
      for (DType out_dtype : {DType::kBFloat16, DType::kFloat16}) {
        PagedCaseSpec s;
        s.q_lens = {0, 0, 0, 0};
        s.kv_lens = {33, 0, 16, 70};
        s.num_qo_heads = 4;
        s.num_kv_heads = 2;
        s.head_dim = 80;
        s.page_size = 16;
        s.layout = layout;
        s.k_scale_mode = mode;
        s.extra_blocks = 5;
        s.extra_table_cols = 2;
        s.scale_dtype = mode == ScaleMode::kPerToken ? DType::kBFloat16 : DType::kFloat32;
        s.seed = seed++;
        PagedCase c = make_paged_case(s);
        SCOPED_TRACE(case_label(s) + " out " + to_string(out_dtype));
        // Full mode: out has the cache's shape; unreferenced blocks untouched.
        HostTensor out(out_dtype, c.k_cache.shape()), ref_out(out_dtype, c.k_cache.shape());
        out.poison();
        ref_out.poison();
        DequantArgs args;
        args.cache = c.k_cache.view();
        args.scale = c.k_scale.view();
        args.block_tables = c.block_tables.view();
        args.kv_lens = c.kv_lens.view();
        args.layout = layout;
        args.out = ref_out.view();
        reference_dequantize_blocks(args);
        args.out = out.view();
        kvq::dequantize_blocks(args);
        EXPECT_TRUE(same_bytes(out, ref_out)) << "full mode differs from the naive dequantization";
        // Compact mode: num_referenced blocks, remapped table.
        int64_t referenced = 0;
        for (const auto& ids : c.block_ids) referenced += static_cast<int64_t>(ids.size());
        std::vector<int64_t> shape = c.k_cache.shape();
        shape[0] = referenced;
        HostTensor cout(out_dtype, shape), cref(out_dtype, shape);
        cout.poison();
        cref.poison();
        HostTensor table(DType::kInt32, c.block_tables.shape()), ref_table(DType::kInt32, c.block_tables.shape());
        table.poison();
        ref_table.poison();
        args.out = cref.view();
        args.out_block_tables = ref_table.view();
        reference_dequantize_blocks(args);
        args.out = cout.view();
        args.out_block_tables = table.view();
        kvq::dequantize_blocks(args);
        EXPECT_TRUE(same_bytes(cout, cref)) << "compact mode differs from the naive dequantization";
        EXPECT_TRUE(same_bytes(table, ref_table)) << "compact block table differs";
        EXPECT_EQ(ref_table.at({1, 0}), -1);  // empty sequence: no blocks
      }
}

TEST(Calibrate, MatchesNaive) {
  uint64_t seed = 600;
  for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    HostTensor x(dtype, {37, 3, 48});
    Rng rng(seed++);
    for (int64_t i = 0; i < x.numel(); ++i) x.store(i, rng.normal() * (1 + i % 5));
    for (int64_t n = 0; n < 37; ++n) x.set({n, 1, 7}, 0.0);        // all-zero channel: floor 1e-5
    for (int64_t n = 0; n < 37; ++n) x.set({n, 2, 0}, 1e-6 * n);   // tiny channel (amax/127 < 1e-5): floor again
    HostTensor s(DType::kFloat32, {3, 48}), ref(DType::kFloat32, {3, 48});
    kvq::calibrate(x.view(), s.view());
    reference_calibrate(x.view(), ref.view());
    EXPECT_TRUE(same_bytes(s, ref)) << to_string(dtype);
    EXPECT_EQ(s.at({1, 7}), static_cast<double>(1e-5f));
    EXPECT_EQ(s.at({2, 0}), static_cast<double>(1e-5f));
  }
}

}  // namespace
}  // namespace kvq::test
