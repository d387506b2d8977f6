// tests/gpu/prefill_test.cpp — every CUDA prefill path (fused, dequant, generic, each forced, and
// auto) against the CPU backend: the seed's 16-case matrix, randomized shapes (page sizes, head
// dims, groups, layouts, windows, masks, per-token scales, fp16, strided q/out, bucket padding),
// int8 compute / int8 q, and the seed's edge cases. Outputs are poisoned before every run; rows past
// cu_q_lens[B] must stay poisoned. A forced fused/dequant path that refuses a shape (kvq::Error on
// "path") is reported as skipped for that shape, never as passed.
#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/seed_cases.h"
#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

constexpr double kTolNative = 1e-2;
// int8 compute vs fp64: the contract's 1e-2 (docs/design.md §5), as on the CPU (tests/cpu/cpu_check.h;
// the retired recipes were held to 3e-2 and 1.5e-2 here). The GPU runs the CPU's recipe
// (kTolInt8VsCpu below).
constexpr double kTolInt8 = 1e-2;
// int8 compute vs the CPU backend's own int8 recipe (fp32): only rounding differs (p rounded against
// the running max on the GPU, the exact max on the CPU; output rounding), expected ~2.5e-3.
constexpr double kTolInt8VsCpu = 5e-3;
// Above this many multiply-adds the CPU oracle runs on a sample of the rows (naive fp64 reference).
constexpr double kFullOracleCost = 3e10;

const std::vector<PrefillPath> kPaths = {PrefillPath::kFused, PrefillPath::kDequant, PrefillPath::kGeneric};

// One case with its oracle, kept between the tests of the different paths of that case.
struct Prepared {
  std::string key;
  std::unique_ptr<PagedCase> c;
  std::unique_ptr<DeviceCase> dc;
  PrefillArgs host_args;
  RefOutput ref;
  HostTensor q8, q_scale;  // int8 query of the case, when it has one (host_args.q points here)
};

Prepared& prepared() {
  static Prepared p;
  return p;
}

void run_and_check(Prepared& p, PrefillPath path, double tol, bool seed_criterion) {
  GpuRun run = run_gpu_prefill(*p.c, *p.dc, p.host_args, path);
  // The seed matrix is in every path's scope (native compute, no mask, D <= 256): a refusal there is
  // a failure, never a skip. Randomized shapes may be out of a forced path's scope (masks, int8
  // compute, bf16 caches on dequant): those skip, loudly.
  if (!run.served && seed_criterion) {
    ADD_FAILURE() << "path " << path_name(path) << " refused a seed-matrix shape: " << run.refusal;
    return;
  }
  if (!run.served) GTEST_SKIP() << "path " << path_name(path) << " does not serve this shape: " << run.refusal;
  expect_prefill_matches(*p.c, run, p.ref, tol, std::string("path ") + path_name(path));
  if (seed_criterion) {
    const double frac = fraction_within(run.out.view(), p.ref, p.c->total_q, kSeedPrefillTol, kSeedPrefillTol);
    EXPECT_GE(frac, kSeedPrefillFrac) << "seed criterion, path " << path_name(path);
  }
}

// ---------------------------------------------------------------- seed matrix
class SeedPrefill : public testing::TestWithParam<std::tuple<int, PrefillPath>> {};

TEST_P(SeedPrefill, MatchesCpu) {
  const auto [idx, path] = GetParam();
  const SeedCase& sc = seed_prefill_cases()[idx];
  Prepared& p = prepared();
  const std::string key = std::string("seed_") + sc.id;
  if (p.key != key) {
    p = Prepared{};
    Rng rng(1000 + idx);
    const SeedLengths lens = seed_prefill_lengths(sc, rng);
    p.c = std::make_unique<PagedCase>(make_paged_case(
        {.q_lens = lens.q_lens, .kv_lens = lens.kv_lens, .num_qo_heads = sc.num_qo_heads, .num_kv_heads = sc.num_kv_heads,
         .head_dim = sc.head_dim, .page_size = sc.page_size,
         .scale_dtype = DType::kBFloat16,  // the seed stores its scales in bf16
         .padding_rows = 3, .with_lse = true, .seed = static_cast<uint64_t>(2000 + idx)}));
    p.dc = std::make_unique<DeviceCase>(*p.c);
    p.host_args = p.c->prefill_args();
    if (prefill_cost(*p.c) <= kFullOracleCost) {
      p.ref = cpu_prefill(p.host_args, /*fp64=*/true);
    } else {
      p.ref = reference_prefill(p.host_args, {RefCompute::kExact}, /*row_stride=*/8)[0];
    }
    p.key = key;
  }
  run_and_check(p, path, kTolNative, /*seed_criterion=*/true);
}

std::string seed_name(const testing::TestParamInfo<std::tuple<int, PrefillPath>>& info) {
  return std::string(seed_prefill_cases()[std::get<0>(info.param)].id) + "_" + path_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Seed, SeedPrefill, testing::Combine(testing::Range(0, 16), testing::ValuesIn(kPaths)),
                         seed_name);

// ---------------------------------------------------------------- randomized shapes
struct RandomConfig {
  PagedCaseSpec spec;
  MaskOptions mask_options;
  GqaLayout gqa = GqaLayout::kGrouped;
  bool mask = false;
  ComputeMode compute = ComputeMode::kNative;
  bool int8_q = false;
  std::string name;
};

RandomConfig random_config(int i) {
  static const int64_t kPages[] = {1, 3, 16, 48, 64, 256, 1000, 7, 100};
  static const int64_t kDims[] = {64, 80, 96, 128, 192, 256};
  Rng rng(7000 + i);
  RandomConfig r;
  PagedCaseSpec& s = r.spec;
  s.seed = 9000 + i;
  s.page_size = kPages[i % 9];
  s.head_dim = kDims[(i / 2 + rng.randint(0, 6)) % 6];
  if (i % 11 == 5) s.head_dim = 1 + rng.randint(0, 256);  // an odd head dim for the generic path
  const int64_t group = 1 + rng.randint(0, 16);
  s.num_kv_heads = 1 + rng.randint(0, 3);
  s.num_qo_heads = group * s.num_kv_heads;
  s.layout = rng.bernoulli(0.5) ? KvLayout::kHND : KvLayout::kNHD;
  r.gqa = rng.bernoulli(0.3) ? GqaLayout::kInterleaved : GqaLayout::kGrouped;
  s.q_dtype = rng.bernoulli(0.3) ? DType::kFloat16 : DType::kBFloat16;
  const int kv_kind = static_cast<int>(rng.randint(0, 10));
  s.kv_dtype = kv_kind == 0 ? s.q_dtype : DType::kInt8;
  s.k_scale_mode = rng.bernoulli(0.3) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.v_scale_mode = rng.bernoulli(0.3) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  const int sd = static_cast<int>(rng.randint(0, 3));
  s.scale_dtype = sd == 0 ? DType::kFloat32 : (sd == 1 ? DType::kBFloat16 : DType::kFloat16);
  s.num_outlier_channels = rng.bernoulli(0.3) ? 2 : 0;
  const int64_t batch = 1 + rng.randint(0, 4);
  r.mask = i % 7 == 3;
  r.mask_options.causal = !r.mask;
  if (!r.mask && rng.bernoulli(0.25)) {
    r.mask_options.local_window = static_cast<int>(rng.randint(0, 200));
    r.mask_options.global_window = static_cast<int>(rng.randint(0, 8));
  }
  for (int64_t b = 0; b < batch; ++b) {
    int32_t q_len = static_cast<int32_t>(rng.randint(0, 70));
    int32_t prefix = static_cast<int32_t>(rng.randint(0, 3) == 0 ? 0 : rng.randint(0, 400));
    // kv lengths around page boundaries now and then
    if (rng.bernoulli(0.3)) prefix = static_cast<int32_t>(s.page_size * (1 + rng.randint(0, 3)) + rng.randint(-1, 2) - q_len);
    if (prefix < 0) prefix = 0;
    if (b == 1 && i % 5 == 0) q_len = 0;  // an empty sequence
    s.q_lens.push_back(q_len);
    s.kv_lens.push_back(q_len + prefix);
  }
  s.with_lse = rng.bernoulli(0.5);
  s.padding_rows = rng.randint(0, 4);
  if (rng.bernoulli(0.25)) {
    s.q_pad = {0, 1, 8};
    s.out_pad = {0, 2, 0};
  }
  s.extra_table_cols = rng.randint(0, 3);
  if (i % 13 == 4 && s.kv_dtype == DType::kInt8) {
    r.compute = ComputeMode::kInt8;
    r.int8_q = rng.bernoulli(0.5);
    if (r.int8_q) s.q_dtype = DType::kBFloat16;  // out is bf16 for an int8 q
  }
  std::ostringstream os;
  os << "r" << i << "_hd" << s.head_dim << "_ps" << s.page_size << "_g" << group << "_"
     << (s.layout == KvLayout::kHND ? "hnd" : "nhd") << "_" << (s.kv_dtype == DType::kInt8 ? "i8" : "f16")
     << (s.k_scale_mode == ScaleMode::kPerToken ? "_ktok" : "") << (s.v_scale_mode == ScaleMode::kPerToken ? "_vtok" : "")
     << (r.mask ? "_mask" : "") << (r.mask_options.local_window >= 0 ? "_win" : "")
     << (r.gqa == GqaLayout::kInterleaved ? "_abab" : "") << (r.compute == ComputeMode::kInt8 ? "_int8" : "")
     << (r.int8_q ? "q" : "");
  r.name = os.str();
  return r;
}

constexpr int kNumRandom = 40;

class RandomPrefill : public testing::TestWithParam<std::tuple<int, PrefillPath>> {};

TEST_P(RandomPrefill, MatchesCpu) {
  const auto [i, path] = GetParam();
  Prepared& p = prepared();
  const RandomConfig cfg = random_config(i);
  const std::string key = "random_" + cfg.name;
  if (p.key != key) {
    p = Prepared{};
    p.c = std::make_unique<PagedCase>(make_paged_case(cfg.spec));
    if (cfg.mask) {
      Rng rng(cfg.spec.seed + 1);
      p.c->set_random_mask(rng, 0.6, 5);
    }
    p.dc = std::make_unique<DeviceCase>(*p.c);
    p.host_args = p.c->prefill_args(cfg.mask_options, cfg.gqa, cfg.compute);
    if (cfg.int8_q) {
      make_int8_query(p.c->q, p.q8, p.q_scale);
      p.host_args.q = p.q8.view();
      p.host_args.q_scale = p.q_scale.view();
      p.dc->q = DeviceTensor(p.q8);
      p.dc->q_scale = DeviceTensor(p.q_scale);
    }
    // Exact fp64 oracle; both compute modes are held to 1e-2 against it (kTolInt8, kTolNative).
    p.ref = cpu_prefill(p.host_args, /*fp64=*/true);
    p.key = key;
  }
  run_and_check(p, path, cfg.compute == ComputeMode::kInt8 ? kTolInt8 : kTolNative, false);
}

std::string random_name(const testing::TestParamInfo<std::tuple<int, PrefillPath>>& info) {
  return random_config(std::get<0>(info.param)).name + "_" + path_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Random, RandomPrefill,
                         testing::Combine(testing::Range(0, kNumRandom),
                                          testing::Values(PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kDequant,
                                                          PrefillPath::kGeneric)),
                         random_name);

// ---------------------------------------------------------------- small named cases
// Small shapes for compute-sanitizer (filter "*Small*").
class SmallPrefill : public testing::TestWithParam<PrefillPath> {};

// A small case: `host` (args over c's host tensors) against its fp64 CPU oracle, on the device by
// `path`. A served run must match within tol; an unserved one comes back for the test to skip.
GpuRun run_small(PagedCase& c, const PrefillArgs& host, PrefillPath path, double tol) {
  DeviceCase dc(c);
  const RefOutput ref = cpu_prefill(host, true);
  GpuRun run = run_gpu_prefill(c, dc, host, path);
  if (run.served) expect_prefill_matches(c, run, ref, tol, path_name(path));
  return run;
}

TEST_P(SmallPrefill, PagesWindowsPadding) {
  PagedCase c = make_paged_case({.q_lens = {5, 0, 17}, .kv_lens = {21, 3, 40}, .num_qo_heads = 4, .num_kv_heads = 2,
                                 .head_dim = 64, .page_size = 7, .k_scale_mode = ScaleMode::kPerToken,
                                 .padding_rows = 3, .with_lse = true, .seed = 77});
  MaskOptions mo;
  mo.local_window = 9;
  mo.global_window = 2;
  const GpuRun run = run_small(c, c.prefill_args(mo), GetParam(), kTolNative);
  if (!run.served) GTEST_SKIP() << run.refusal;
}

TEST_P(SmallPrefill, NhdMaskFp16) {
  PagedCase c = make_paged_case({.q_lens = {9, 4}, .kv_lens = {12, 30}, .num_qo_heads = 6, .num_kv_heads = 3,
                                 .head_dim = 96, .page_size = 16, .layout = KvLayout::kNHD, .q_dtype = DType::kFloat16,
                                 .v_scale_mode = ScaleMode::kPerToken, .scale_dtype = DType::kFloat16,
                                 .with_lse = true, .seed = 78});
  const bool masked = GetParam() == PrefillPath::kGeneric;
  MaskOptions mo;
  if (masked) {
    Rng rng(5);
    c.set_random_mask(rng, 0.5, 3);
    mo.causal = false;
  }
  const GpuRun run = run_small(c, c.prefill_args(mo), GetParam(), kTolNative);
  if (!run.served) GTEST_SKIP() << run.refusal;
}

// The seed's bucket-padding case: T = 8 slots, cu_q_lens [0,1,2,3,4,4,4], kv_lens [1,1,1,1,0,0].
TEST_P(SmallPrefill, SeedBucketPadding) {
  PagedCase c = make_paged_case({.q_lens = {1, 1, 1, 1, 0, 0}, .kv_lens = {1, 1, 1, 1, 0, 0}, .num_qo_heads = 4,
                                 .num_kv_heads = 2, .head_dim = 128, .page_size = 16, .padding_rows = 4,
                                 .with_lse = true, .seed = 79});
  const GpuRun run = run_small(c, c.prefill_args(), GetParam(), kTolNative);
  if (!run.served) GTEST_SKIP() << run.refusal;
}

TEST_P(SmallPrefill, Int8Compute) {
  PagedCase c = make_paged_case({.q_lens = {13, 6}, .kv_lens = {40, 6}, .num_qo_heads = 8, .num_kv_heads = 2,
                                 .head_dim = 128, .page_size = 16, .with_lse = true, .seed = 80});
  const PrefillArgs host = c.prefill_args({}, GqaLayout::kGrouped, ComputeMode::kInt8);
  const GpuRun run = run_small(c, host, GetParam(), kTolInt8);
  if (!run.served) GTEST_SKIP() << run.refusal;
  // Against the CPU's own int8 recipe (fp32): the same recipe, so only rounding differs.
  const RefOutput ref_int8 = cpu_prefill(host, false);
  const ErrorStats st = compare_output(run.out.view(), ref_int8, c.cu_q_lens_host);
  EXPECT_TRUE(st.ok(kTolInt8VsCpu)) << st.describe();
}

std::string path_param_name(const testing::TestParamInfo<PrefillPath>& info) { return path_name(info.param); }

INSTANTIATE_TEST_SUITE_P(Paths, SmallPrefill,
                         testing::Values(PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kDequant,
                                         PrefillPath::kGeneric),
                         path_param_name);

// A forced fused path on a shape it cannot serve errors (kvq::Error naming "path"); auto falls back.
TEST(PrefillPaths, MaskForcesGenericUnderAuto) {
  PagedCase c = make_paged_case({.q_lens = {8}, .kv_lens = {20}, .num_qo_heads = 2, .num_kv_heads = 1, .head_dim = 64,
                                 .page_size = 16, .seed = 81});
  Rng rng(3);
  c.set_random_mask(rng, 0.7);
  DeviceCase dc(c);
  MaskOptions mo;
  mo.causal = false;
  const PrefillArgs host = c.prefill_args(mo);
  const RefOutput ref = cpu_prefill(host, true);
  GpuRun run = run_gpu_prefill(c, dc, host, PrefillPath::kAuto);
  ASSERT_TRUE(run.served);
  expect_prefill_matches(c, run, ref, kTolNative, "auto with mask");
  GpuRun forced = run_gpu_prefill(c, dc, host, PrefillPath::kFused);
  EXPECT_FALSE(forced.served) << "a forced fused path must refuse a masked problem";
}

}  // namespace
}  // namespace kvq::test
