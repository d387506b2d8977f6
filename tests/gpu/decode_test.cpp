// tests/gpu/decode_test.cpp — the split-KV CUDA decode against the CPU backend (fp64 oracle): the
// seed's 8-case decode matrix (our per-(sequence, head) criterion and the seed's elementwise
// one), randomized shapes (groups 1..16, head dims, page sizes, HND/NHD, per-token scales, bf16/
// fp16 caches, windows, forced split counts), and the workspace contract.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "tests/common/seed_cases.h"
#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

constexpr double kTolNative = 1e-2;

struct DecodeRun {
  HostTensor out, lse;
};

DecodeRun run_gpu_decode(PagedCase& c, DeviceCase& dc, const DecodeArgs& host_args) {
  c.poison_outputs();
  dc.out.upload(c.out);
  if (c.lse.defined()) dc.lse.upload(c.lse);
  DecodeArgs a = dc.decode_args(host_args);
  const size_t ws_bytes = decode_workspace_size(a);
  DeviceTensor ws = DeviceTensor::bytes(ws_bytes);
  a.workspace = {ws.data(), ws_bytes};
  paged_decode(a);
  if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error("cudaDeviceSynchronize after paged_decode");
  DecodeRun r{c.out, c.lse};
  dc.out.download(r.out);
  if (c.lse.defined()) dc.lse.download(r.lse);
  return r;
}

void check_decode(const PagedCase& c, const DecodeRun& run, const RefOutput& ref, const std::string& what,
                  bool seed_criterion) {
  const ErrorStats st = compare_decode_output(run.out.view(), ref);
  EXPECT_TRUE(st.ok(kTolNative)) << what << ": " << st.describe() << " (seed " << c.spec.seed << ")";
  if (seed_criterion) {
    const double frac = fraction_within(run.out.view(), ref, c.batch_size, kSeedDecodeTol, kSeedDecodeTol);
    EXPECT_EQ(frac, 1.0) << what << ": seed criterion (atol = rtol = 2e-2 on every element)";
  }
  if (c.lse.defined()) {
    const LseStats ls = compare_lse(run.lse.view(), ref, c.batch_size);
    EXPECT_EQ(ls.num_mismatch, 0) << what << ": " << ls.describe();
    EXPECT_LE(ls.max_abs, 2e-2) << what << ": " << ls.describe();
  }
}

class SeedDecode : public testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(SeedDecode, MatchesCpu) {
  const auto [idx, splits] = GetParam();
  const SeedCase& sc = seed_decode_cases()[idx];
  Rng rng(3000 + idx);
  const SeedLengths lens = seed_decode_lengths(sc, rng);
  PagedCase c = make_paged_case({.q_lens = lens.q_lens, .kv_lens = lens.kv_lens, .num_qo_heads = sc.num_qo_heads,
                                 .num_kv_heads = sc.num_kv_heads, .head_dim = sc.head_dim, .page_size = sc.page_size,
                                 .scale_dtype = DType::kBFloat16, .with_lse = true,
                                 .seed = static_cast<uint64_t>(4000 + idx)});
  DeviceCase dc(c);
  DecodeArgs host = c.decode_args();
  host.num_splits = splits;
  const RefOutput ref = cpu_decode(host, true);
  const DecodeRun run = run_gpu_decode(c, dc, host);
  check_decode(c, run, ref, std::string(sc.id) + " splits=" + std::to_string(splits), true);
}

std::string seed_decode_name(const testing::TestParamInfo<std::tuple<int, int>>& info) {
  return std::string(seed_decode_cases()[std::get<0>(info.param)].id) + "_splits" + std::to_string(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Seed, SeedDecode, testing::Combine(testing::Range(0, 8), testing::Values(0, 1, 5)),
                         seed_decode_name);

struct DecodeConfig {
  PagedCaseSpec spec;
  int local_window = -1, global_window = 0;
  GqaLayout gqa = GqaLayout::kGrouped;
  int num_splits = 0;
  std::string name;
};

DecodeConfig decode_config(int i) {
  static const int64_t kPages[] = {1, 3, 16, 48, 64, 256, 1000, 7};
  static const int64_t kDims[] = {64, 80, 96, 128, 192, 256};
  Rng rng(11000 + i);
  DecodeConfig r;
  PagedCaseSpec& s = r.spec;
  s.seed = 12000 + i;
  s.page_size = kPages[i % 8];
  s.head_dim = kDims[(i + rng.randint(0, 6)) % 6];
  if (i % 9 == 4) s.head_dim = 1 + rng.randint(0, 256);
  const int64_t group = 1 + (i % 16);
  s.num_kv_heads = 1 + rng.randint(0, 3);
  s.num_qo_heads = group * s.num_kv_heads;
  s.layout = rng.bernoulli(0.5) ? KvLayout::kHND : KvLayout::kNHD;
  r.gqa = rng.bernoulli(0.3) ? GqaLayout::kInterleaved : GqaLayout::kGrouped;
  s.q_dtype = rng.bernoulli(0.3) ? DType::kFloat16 : DType::kBFloat16;
  s.kv_dtype = rng.randint(0, 6) == 0 ? s.q_dtype : DType::kInt8;
  s.k_scale_mode = rng.bernoulli(0.3) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.v_scale_mode = rng.bernoulli(0.3) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  const int sd = static_cast<int>(rng.randint(0, 3));
  s.scale_dtype = sd == 0 ? DType::kFloat32 : (sd == 1 ? DType::kBFloat16 : DType::kFloat16);
  const int64_t batch = 1 + rng.randint(0, 6);
  for (int64_t b = 0; b < batch; ++b) {
    s.q_lens.push_back(1);
    int32_t kv = static_cast<int32_t>(1 + rng.randint(0, 1500));
    if (rng.bernoulli(0.3)) kv = static_cast<int32_t>(std::max<int64_t>(1, s.page_size * (1 + rng.randint(0, 4)) + rng.randint(-1, 2)));
    s.kv_lens.push_back(kv);
  }
  if (rng.bernoulli(0.25)) {
    r.local_window = static_cast<int>(rng.randint(0, 300));
    r.global_window = static_cast<int>(rng.randint(0, 8));
  }
  const int sp = static_cast<int>(rng.randint(0, 4));
  r.num_splits = sp == 0 ? 0 : (sp == 1 ? 1 : (sp == 2 ? 3 : 16));
  s.with_lse = rng.bernoulli(0.5);
  s.extra_table_cols = rng.randint(0, 3);
  std::ostringstream os;
  os << "d" << i << "_hd" << s.head_dim << "_ps" << s.page_size << "_g" << group << "_"
     << (s.layout == KvLayout::kHND ? "hnd" : "nhd") << "_" << (s.kv_dtype == DType::kInt8 ? "i8" : "f16")
     << (s.k_scale_mode == ScaleMode::kPerToken ? "_ktok" : "") << (s.v_scale_mode == ScaleMode::kPerToken ? "_vtok" : "")
     << (r.local_window >= 0 ? "_win" : "") << (r.gqa == GqaLayout::kInterleaved ? "_abab" : "") << "_s" << r.num_splits;
  r.name = os.str();
  return r;
}

class RandomDecode : public testing::TestWithParam<int> {};

TEST_P(RandomDecode, MatchesCpu) {
  const DecodeConfig cfg = decode_config(GetParam());
  PagedCase c = make_paged_case(cfg.spec);
  DeviceCase dc(c);
  DecodeArgs host = c.decode_args(cfg.local_window, cfg.global_window, cfg.gqa);
  host.num_splits = cfg.num_splits;
  const RefOutput ref = cpu_decode(host, true);
  const DecodeRun run = run_gpu_decode(c, dc, host);
  check_decode(c, run, ref, cfg.name, false);
}

INSTANTIATE_TEST_SUITE_P(Random, RandomDecode, testing::Range(0, 40),
                         [](const testing::TestParamInfo<int>& info) { return decode_config(info.param).name; });

// Small shapes for compute-sanitizer (filter "*Small*"): splits, windows, empty sequence.
TEST(SmallDecode, SplitsWindowsEmpty) {
  for (int splits : {1, 4}) {
    PagedCase c = make_paged_case({.q_lens = {1, 1, 1}, .kv_lens = {37, 0, 130}, .num_qo_heads = 8, .num_kv_heads = 2,
                                   .head_dim = 128, .page_size = 16, .v_scale_mode = ScaleMode::kPerToken,
                                   .with_lse = true, .seed = static_cast<uint64_t>(90 + splits)});
    DeviceCase dc(c);
    DecodeArgs host = c.decode_args(20, 3);
    host.num_splits = splits;
    const RefOutput ref = cpu_decode(host, true);
    const DecodeRun run = run_gpu_decode(c, dc, host);
    check_decode(c, run, ref, "splits=" + std::to_string(splits), false);
  }
}

TEST(SmallDecode, OddHeadDimNhdBf16Cache) {
  PagedCase c = make_paged_case({.q_lens = {1, 1}, .kv_lens = {45, 9}, .num_qo_heads = 6, .num_kv_heads = 1,
                                 .head_dim = 72, .page_size = 5, .layout = KvLayout::kNHD,
                                 .kv_dtype = DType::kBFloat16, .seed = 95});
  DeviceCase dc(c);
  DecodeArgs host = c.decode_args();
  host.num_splits = 2;
  const RefOutput ref = cpu_decode(host, true);
  const DecodeRun run = run_gpu_decode(c, dc, host);
  check_decode(c, run, ref, "hd72 nhd bf16", false);
}

TEST(DecodeWorkspace, TooSmallIsAnErrorNamingWorkspace) {
  PagedCase c = make_paged_case({.q_lens = {1, 1}, .kv_lens = {300, 500}, .num_qo_heads = 4, .num_kv_heads = 1,
                                 .head_dim = 64, .page_size = 16, .seed = 96});
  DeviceCase dc(c);
  DecodeArgs a = dc.decode_args(c.decode_args());
  a.num_splits = 4;
  const size_t need = decode_workspace_size(a);
  ASSERT_GT(need, 0u);
  DeviceTensor ws = DeviceTensor::bytes(need);
  a.workspace = {ws.data(), need - 1};
  try {
    paged_decode(a);
    FAIL() << "expected kvq::Error for a workspace of " << need - 1 << " bytes";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "workspace") << e.what();
  }
  a.workspace = {nullptr, 0};
  EXPECT_THROW(paged_decode(a), Error);
}

}  // namespace
}  // namespace kvq::test
