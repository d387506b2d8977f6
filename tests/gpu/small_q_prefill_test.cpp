// tests/gpu/small_q_prefill_test.cpp — paged_prefill's short chunks on the tensor-core decode kernel
// (PrefillKernel::kMmaDecode: a plan from host lengths, path auto, at most 8 query tokens per
// sequence, causal; src/core/plan.cpp decides) against the CPU backend (fp64 oracle):
//   - SmallQGrid: head dims 64/128/256 x groups 1/2/4/8 x page sizes 1/16/64/7, every case a varlen
//     batch mixing q_len 1..(8, or what 16 rows per kv head allow) with a q_len 0 sequence,
//     kv_len == q_len and long prefixes (split KV); int8 caches with per-channel and per-token K/V
//     scales (per-channel ones in fp32/bf16/fp16), bf16 and fp16 caches, fp16/bf16 q, HND/NHD,
//     grouped and interleaved GQA, sliding and global windows (windows shorter than the chunk
//     included), softmax_scale and q magnitudes other than the defaults, K outlier channels,
//     strided q/out, bucket padding; lse on. Inputs random (never zero), block tables shuffled,
//     outputs NaN-poisoned before each run: every row must be written, padding never.
//   - SmallQPrefill.RouteIsChosenAndIntrospectable: plan.kernel says mma_decode where the route
//     applies and path where it does not (KVQ_SMALL_Q_DECODE=0, no host lengths, a forced path,
//     q_len 9, non-causal chunks, int8 compute, a mask, too many rows per kv head, an unserved head
//     dim, bf16 per-token scales); a plan held against a call it does not fit is refused.
//   - SmallQPrefill.MatchesTheOldRoute: the same calls with KVQ_SMALL_Q_DECODE=0 (the tensor-core
//     prefill kernel): both meet the oracle and each other, and differ in their bits (two kernels).
//   - SmallQPrefill.ForcedSplitCounts / DeterministicForAFixedPlan / GraphCaptureReplay: the split
//     merge over cu_q_lens, bit-identical reruns, CUDA-graph capture of plan + run.
//   - SmallQPrefill.HostileMetadata: device lengths beyond the plan's (rows past max_q_len not
//     computed, positions from the true q_len) and malformed cu_q_lens (the well-formed prefix
//     served, the rest untouched), as docs/api.md "Hostile metadata" says.
//   - SmallQPrefill.NonFiniteRowsAgreeWithTheCpuBackend: NaN q and NaN keys inside the chunk.
// Run: kvq_gpu_tests --gtest_filter='*SmallQ*'
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/gpu/graph_setup.h"

namespace kvq::test {
namespace {

constexpr double kTol = 1e-2;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Sets (or, with nullptr, unsets) an environment variable for the scope, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

// Every test runs with the route enabled unless it says otherwise.
class SmallQ : public testing::Test {
 protected:
  ScopedEnv env_{"KVQ_SMALL_Q_DECODE", nullptr};
};

using Result = RunOutputs;

// Poisons the case's outputs, uploads them, runs `a` (device args) under `plan` with a fresh
// workspace of plan.workspace_bytes on `stream`, downloads out and lse.
Result run_plan(PagedCase& c, DeviceCase& dc, PrefillArgs a, const PrefillPlan& plan, cudaStream_t stream = nullptr) {
  c.poison_outputs();
  dc.out.upload(c.out);
  if (c.lse.defined()) dc.lse.upload(c.lse);
  DeviceTensor ws = DeviceTensor::bytes(plan.workspace_bytes);
  a.plan = &plan;
  a.workspace = {ws.data(), plan.workspace_bytes};
  a.stream = stream;
  paged_prefill(a);
  if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error("cudaDeviceSynchronize after paged_prefill");
  Result r{c.out, c.lse};
  dc.out.download(r.out);
  if (c.lse.defined()) dc.lse.download(r.lse);
  return r;
}

// The plan of the case's own host lengths, path auto.
PrefillPlan host_plan(const PagedCase& c, const PrefillArgs& a) {
  return plan_prefill(a, c.cu_q_lens_host.data(), c.kv_lens.ptr<int32_t>());
}

// Our criterion (docs/design.md §5) plus: every valid row written (NaN poison never passes),
// nothing written past cu_q_lens[B], lse agreeing (-inf where the oracle has no visible key).
void expect_matches(const PagedCase& c, const Result& r, const RefOutput& ref, const std::string& what) {
  const ErrorStats st = compare_output(r.out.view(), ref, c.cu_q_lens_host);
  EXPECT_TRUE(st.ok(kTol)) << what << ": " << st.describe() << " (seed " << c.spec.seed << ")";
  EXPECT_EQ(count_written_outside(r.out, c.total_q), 0) << what << ": out written outside the valid rows";
  if (c.lse.defined()) {
    const LseStats ls = compare_lse(r.lse.view(), ref, c.total_q);
    EXPECT_EQ(ls.num_mismatch, 0) << what << ": " << ls.describe();
    EXPECT_LE(ls.max_abs, 2e-2) << what << ": " << ls.describe();
    EXPECT_EQ(count_written_outside(r.lse, c.total_q), 0) << what << ": lse written outside the valid rows";
  }
}

// Multiplies every element of q by f (rounded to q's dtype): attention other than unit-scale randn.
void scale_q(PagedCase& c, double f) {
  for (int64_t t = 0; t < c.q.size(0); ++t)
    for (int64_t h = 0; h < c.q.size(1); ++h)
      for (int64_t d = 0; d < c.q.size(2); ++d) c.q.set({t, h, d}, c.q.at({t, h, d}) * f);
}

// Rows [t0, t1) of out still hold the poison (out and lse), every head and dim.
bool rows_untouched(const Result& r, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t h = 0; h < r.out.size(1); ++h) {
      for (int64_t d = 0; d < r.out.size(2); ++d)
        if (!r.out.is_poison(r.out.offset({t, h, d}))) return false;
      if (r.lse.defined() && !r.lse.is_poison(r.lse.offset({t, h}))) return false;
    }
  return true;
}

// ||out - ref|| / ||ref|| over rows [t0, t1) (all heads and dims); a non-finite out gives inf.
double rows_rel_err(const HostTensor& out, const RefOutput& ref, int64_t t0, int64_t t1) {
  double num = 0, den = 0;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t h = 0; h < out.size(1); ++h)
      for (int64_t d = 0; d < out.size(2); ++d) {
        const double o = out.at({t, h, d}), e = ref.out_at(t, h, d);
        if (!std::isfinite(o)) return std::numeric_limits<double>::infinity();
        num += (o - e) * (o - e);
        den += e * e;
      }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// A small routed case: 4 sequences of q_len 3, 0, 1, 4 over int8 pages.
PagedCaseSpec small_spec(uint64_t seed) {
  PagedCaseSpec s;
  s.q_lens = {3, 0, 1, 4};
  s.kv_lens = {700, 37, 1, 2100};
  s.num_qo_heads = 8;
  s.num_kv_heads = 2;
  s.head_dim = 128;
  s.page_size = 16;
  s.k_scale_mode = ScaleMode::kPerChannel;
  s.v_scale_mode = ScaleMode::kPerToken;
  s.padding_rows = 2;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

// ---------------------------------------------------------------- the grid

struct GridCase {
  PagedCaseSpec spec;
  MaskOptions mask_options;
  GqaLayout gqa = GqaLayout::kGrouped;
  float softmax_scale = 0.f;
  double q_factor = 1.0;
  std::string name;
};

constexpr int kGridCases = 48;

GridCase grid_case(int i) {
  static const int64_t kDims[] = {64, 128, 256};
  static const int64_t kGroups[] = {1, 2, 4, 8};
  static const int64_t kPages[] = {1, 16, 64, 7};
  const int di = i % 3, gi = (i / 3) % 4, pi = (i / 12) % 4;
  const int kind = (di + 2 * gi + 3 * pi) % 6;  // every kind meets every dim, group and page size
  Rng rng(81000 + i);
  GridCase r;
  PagedCaseSpec& s = r.spec;
  s.seed = 82000 + i;
  s.head_dim = kDims[di];
  const int64_t group = kGroups[gi];
  s.num_kv_heads = 1 + rng.randint(0, 3);
  s.num_qo_heads = group * s.num_kv_heads;
  s.page_size = kPages[pi];
  s.layout = rng.bernoulli(0.5) ? KvLayout::kHND : KvLayout::kNHD;
  r.gqa = rng.bernoulli(0.3) ? GqaLayout::kInterleaved : GqaLayout::kGrouped;
  // kinds: int8 per-channel K/V, int8 per-token K/V, per-token K + per-channel V, per-channel K +
  // per-token V, bf16 cache, fp16 cache.
  s.q_dtype = rng.bernoulli(0.4) ? DType::kFloat16 : DType::kBFloat16;
  if (kind == 4) s.q_dtype = DType::kBFloat16;
  if (kind == 5) s.q_dtype = DType::kFloat16;
  s.kv_dtype = kind >= 4 ? s.q_dtype : DType::kInt8;
  s.k_scale_mode = (kind == 1 || kind == 2) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.v_scale_mode = (kind == 1 || kind == 3) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  if (kind == 0) {  // per-channel scales in any dtype (per-token ones are fp32 on this kernel)
    const int sd = static_cast<int>(rng.randint(0, 3));
    s.scale_dtype = sd == 0 ? DType::kFloat32 : (sd == 1 ? DType::kBFloat16 : DType::kFloat16);
  }
  if (rng.bernoulli(0.3)) s.num_outlier_channels = 3;
  // Rows per kv head: q_len * group <= 16 (8 at head_dim 256), and q_len <= 8.
  const int64_t max_q = std::min<int64_t>(8, (s.head_dim == 256 ? 8 : 16) / group);
  std::vector<int32_t> q_lens = {0};
  for (int32_t q = 1; q <= max_q; ++q) q_lens.push_back(q);
  for (int k = 0; k < 2; ++k) q_lens.push_back(static_cast<int32_t>(1 + rng.randint(0, max_q)));
  const std::vector<int32_t> order = rng.permutation(static_cast<int64_t>(q_lens.size()));
  for (size_t b = 0; b < q_lens.size(); ++b) {
    const int32_t q_len = q_lens[static_cast<size_t>(order[b])];
    int32_t prefix = 0;
    const int pk = static_cast<int>(rng.randint(0, 5));
    if (pk == 1) prefix = static_cast<int32_t>(rng.randint(1, 40));
    if (pk == 2) prefix = static_cast<int32_t>(s.page_size * (1 + rng.randint(0, 4)) + rng.randint(-1, 2));
    if (pk == 3) prefix = static_cast<int32_t>(rng.randint(200, 1200));
    if (pk == 4) prefix = static_cast<int32_t>(rng.randint(1500, 3000));  // split KV
    if (prefix < 0) prefix = 0;
    s.q_lens.push_back(q_len);
    s.kv_lens.push_back(q_len + prefix);
  }
  if (rng.bernoulli(0.35)) {
    const int wk = static_cast<int>(rng.randint(0, 3));
    r.mask_options.local_window = wk == 0 ? static_cast<int>(rng.randint(0, 4))  // shorter than the chunk
                                          : static_cast<int>(rng.randint(0, 400));
    r.mask_options.global_window = static_cast<int>(rng.randint(0, 24));
  }
  if (rng.bernoulli(0.3)) r.softmax_scale = static_cast<float>(rng.uniform(0.02, 0.3));
  const double fk = rng.uniform();
  r.q_factor = fk < 0.3 ? 0.25 : (fk < 0.6 ? 1.0 : 3.0);
  s.with_lse = true;
  s.padding_rows = rng.randint(0, 4);
  if (rng.bernoulli(0.25)) {
    s.q_pad = {0, 1, 8};
    s.out_pad = {0, 2, 0};
  }
  s.extra_table_cols = rng.randint(0, 3);
  std::ostringstream os;
  os << "q" << i << "_hd" << s.head_dim << "_g" << group << "_ps" << s.page_size << "_"
     << (s.layout == KvLayout::kHND ? "hnd" : "nhd") << "_"
     << (s.kv_dtype == DType::kInt8 ? "i8" : (s.kv_dtype == DType::kBFloat16 ? "bf16c" : "f16c"))
     << (s.q_dtype == DType::kFloat16 ? "_qf16" : "_qbf16")
     << (s.kv_dtype == DType::kInt8 && s.k_scale_mode == ScaleMode::kPerToken ? "_ktok" : "")
     << (s.kv_dtype == DType::kInt8 && s.v_scale_mode == ScaleMode::kPerToken ? "_vtok" : "")
     << (r.mask_options.local_window >= 0 ? "_win" : "") << (r.gqa == GqaLayout::kInterleaved ? "_abab" : "")
     << (s.q_pad.empty() ? "" : "_strided");
  r.name = os.str();
  return r;
}

class SmallQGrid : public SmallQ, public testing::WithParamInterface<int> {};

TEST_P(SmallQGrid, MatchesCpu) {
  const GridCase cfg = grid_case(GetParam());
  PagedCase c = make_paged_case(cfg.spec);
  scale_q(c, cfg.q_factor);
  DeviceCase dc(c);
  PrefillArgs host = c.prefill_args(cfg.mask_options, cfg.gqa);
  host.softmax_scale = cfg.softmax_scale;
  const RefOutput ref = cpu_prefill(host, /*fp64=*/true);
  const PrefillArgs a = dc.prefill_args(host);
  const PrefillPlan plan = host_plan(c, a);
  ASSERT_EQ(plan.kernel, PrefillKernel::kMmaDecode) << cfg.name << ": the route must apply to this case";
  ASSERT_EQ(plan.path, PrefillPath::kFused);
  const Result r = run_plan(c, dc, a, plan);
  expect_matches(c, r, ref, cfg.name + " (" + std::to_string(plan.num_splits) + " splits)");
}

INSTANTIATE_TEST_SUITE_P(Grid, SmallQGrid, testing::Range(0, kGridCases),
                         [](const testing::TestParamInfo<int>& info) { return grid_case(info.param).name; });

// ---------------------------------------------------------------- the route

using SmallQPrefill = SmallQ;

TEST_F(SmallQPrefill, RouteIsChosenAndIntrospectable) {
  PagedCase c = make_paged_case(small_spec(11));
  DeviceCase dc(c);
  const PrefillArgs a = dc.prefill_args(c.prefill_args());
  const PrefillPlan plan = host_plan(c, a);
  EXPECT_EQ(plan.kernel, PrefillKernel::kMmaDecode);
  EXPECT_STREQ(to_string(plan.kernel), "mma_decode");
  EXPECT_EQ(plan.path, PrefillPath::kFused);
  EXPECT_EQ(plan.max_q_len, 4);
  ASSERT_GE(plan.num_splits, 1);
  // The split partials: fp32 [T, Hq, S, D], then fp32 [T, Hq, S], each rounded up to 256 bytes.
  const size_t rows = static_cast<size_t>(c.num_rows) * c.spec.num_qo_heads * plan.num_splits;
  const size_t expect_ws = plan.num_splits == 1 ? 0
                                                : (rows * c.spec.head_dim * 4 + 255) / 256 * 256 + (rows * 4 + 255) / 256 * 256;
  EXPECT_EQ(plan.workspace_bytes, expect_ws);

  auto kernel_of = [&](const PrefillArgs& args, const std::vector<int32_t>* cu) {
    return plan_prefill(args, cu ? cu->data() : nullptr, c.kv_lens.ptr<int32_t>()).kernel;
  };
  const std::vector<int32_t>& cu = c.cu_q_lens_host;
  {
    ScopedEnv off("KVQ_SMALL_Q_DECODE", "0");
    EXPECT_EQ(kernel_of(a, &cu), PrefillKernel::kPath) << "KVQ_SMALL_Q_DECODE=0 keeps the prefill kernel";
  }
  {
    ScopedEnv on("KVQ_SMALL_Q_DECODE", "1");
    EXPECT_EQ(kernel_of(a, &cu), PrefillKernel::kMmaDecode);
  }
  EXPECT_EQ(kernel_of(a, nullptr), PrefillKernel::kPath) << "no host lengths: today's route";
  {
    PrefillArgs f = a;
    f.path = PrefillPath::kFused;
    EXPECT_EQ(kernel_of(f, &cu), PrefillKernel::kPath) << "a forced path keeps its kernel";
  }
  {
    PrefillArgs n = a;
    n.mask_options.causal = false;
    EXPECT_EQ(kernel_of(n, &cu), PrefillKernel::kPath) << "non-causal chunks of several tokens";
    const std::vector<int32_t> ones = {0, 1, 1, 2, 3};  // max_q_len 1: the chunk's one query sees every key
    EXPECT_EQ(kernel_of(n, &ones), PrefillKernel::kMmaDecode) << "non-causal single-token rows";
  }
  {
    PrefillArgs i8 = a;
    i8.compute = ComputeMode::kInt8;
    EXPECT_EQ(kernel_of(i8, &cu), PrefillKernel::kPath) << "int8 compute is the prefill kernels' recipe";
  }
  {
    // 9 tokens in one sequence: past the route's 8.
    PagedCaseSpec s = small_spec(12);
    s.q_lens = {9, 1};
    s.kv_lens = {100, 5};
    s.num_qo_heads = 2;
    s.num_kv_heads = 2;
    PagedCase c9 = make_paged_case(s);
    DeviceCase dc9(c9);
    EXPECT_EQ(host_plan(c9, dc9.prefill_args(c9.prefill_args())).kernel, PrefillKernel::kPath) << "q_len 9";
  }
  {
    // group 8 x q_len 3 = 24 rows per kv head: more than the kernel's 16.
    PagedCaseSpec s = small_spec(13);
    s.num_qo_heads = 16;
    s.q_lens = {3, 1};
    s.kv_lens = {50, 5};
    PagedCase cg = make_paged_case(s);
    DeviceCase dcg(cg);
    EXPECT_EQ(host_plan(cg, dcg.prefill_args(cg.prefill_args())).kernel, PrefillKernel::kPath) << "24 rows";
  }
  {
    PagedCaseSpec s = small_spec(14);
    s.head_dim = 96;  // no decode instantiation
    PagedCase cd = make_paged_case(s);
    DeviceCase dcd(cd);
    EXPECT_EQ(host_plan(cd, dcd.prefill_args(cd.prefill_args())).kernel, PrefillKernel::kPath) << "head_dim 96";
  }
  {
    PagedCaseSpec s = small_spec(15);
    s.scale_dtype = DType::kBFloat16;  // per-token V scales in bf16: the kernel takes fp32 ones only
    PagedCase cs = make_paged_case(s);
    DeviceCase dcs(cs);
    EXPECT_EQ(host_plan(cs, dcs.prefill_args(cs.prefill_args())).kernel, PrefillKernel::kPath) << "bf16 per-token";
  }
  {
    PagedCaseSpec s = small_spec(16);
    PagedCase cm = make_paged_case(s);
    Rng rng(17);
    cm.set_random_mask(rng, 0.7);
    DeviceCase dcm(cm);
    MaskOptions mo;
    mo.causal = false;
    EXPECT_EQ(host_plan(cm, dcm.prefill_args(cm.prefill_args(mo))).kernel, PrefillKernel::kPath) << "a mask";
  }
  // A routed plan run with a call it does not fit is refused before anything runs.
  {
    PrefillArgs n = a;
    n.mask_options.causal = false;
    c.poison_outputs();
    dc.out.upload(c.out);
    DeviceTensor ws = DeviceTensor::bytes(plan.workspace_bytes);
    n.plan = &plan;
    n.workspace = {ws.data(), plan.workspace_bytes};
    try {
      paged_prefill(n);
      ADD_FAILURE() << "expected kvq::Error: a causal mma_decode plan run non-causally";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "plan") << e.what();
      EXPECT_NE(std::string(e.what()).find("mma_decode"), std::string::npos) << e.what();
    }
    HostTensor out = c.out;
    dc.out.download(out);
    EXPECT_TRUE(same_bytes(out, c.out)) << "a refused call wrote out";
  }
}

TEST_F(SmallQPrefill, MatchesTheOldRoute) {
  for (DType kvd : {DType::kInt8, DType::kBFloat16}) {
    PagedCaseSpec s = small_spec(21);
    s.q_lens = {4, 2, 0, 8, 1, 3};
    s.kv_lens = {4, 300, 20, 1500, 4096, 77};
    s.num_qo_heads = 16;
    s.num_kv_heads = 8;  // group 2: 16 rows at q_len 8
    s.kv_dtype = kvd;
    PagedCase c = make_paged_case(s);
    DeviceCase dc(c);
    MaskOptions mo;
    mo.local_window = 700;
    mo.global_window = 4;
    const PrefillArgs host = c.prefill_args(mo);
    const RefOutput ref = cpu_prefill(host, true);
    const PrefillArgs a = dc.prefill_args(host);
    const PrefillPlan routed = host_plan(c, a);
    PrefillPlan old;
    {
      ScopedEnv off("KVQ_SMALL_Q_DECODE", "0");
      old = host_plan(c, a);
    }
    ASSERT_EQ(routed.kernel, PrefillKernel::kMmaDecode);
    ASSERT_EQ(old.kernel, PrefillKernel::kPath);
    const std::string what = kvd == DType::kInt8 ? "int8 cache" : "bf16 cache";
    const Result r_new = run_plan(c, dc, a, routed);
    const Result r_old = run_plan(c, dc, a, old);
    expect_matches(c, r_new, ref, what + ", decode kernel");
    expect_matches(c, r_old, ref, what + ", prefill kernel");
    // Against each other: the same rows, empty rows alike, within the tolerance.
    const RefOutput other = to_ref_output(r_old.out.view(), r_old.lse.view());
    const ErrorStats st = compare_output(r_new.out.view(), other, c.cu_q_lens_host);
    EXPECT_TRUE(st.ok(kTol)) << what << ", decode vs prefill kernel: " << st.describe();
    const LseStats ls = compare_lse(r_new.lse.view(), other, c.total_q);
    EXPECT_EQ(ls.num_mismatch, 0) << what << ": " << ls.describe();
    // Two different kernels (accumulation orders, fp16 vs bf16 operands) never agree in every bit
    // over these ~100k outputs: identical bits would mean the route was not taken.
    EXPECT_FALSE(same_bytes(r_new.out, r_old.out)) << what << ": the routed run is bit-identical to the old route";
  }
}

TEST_F(SmallQPrefill, ForcedSplitCounts) {
  PagedCase c = make_paged_case(small_spec(31));
  DeviceCase dc(c);
  const PrefillArgs host = c.prefill_args();
  const RefOutput ref = cpu_prefill(host, true);
  const PrefillArgs a = dc.prefill_args(host);
  const PrefillPlan planned = host_plan(c, a);
  ASSERT_EQ(planned.kernel, PrefillKernel::kMmaDecode);
  for (int splits : {1, 2, 7, 40}) {
    PrefillPlan p = planned;
    p.num_splits = splits;
    const size_t rows = static_cast<size_t>(c.num_rows) * c.spec.num_qo_heads * splits;
    p.workspace_bytes = splits == 1 ? 0 : (rows * c.spec.head_dim * 4 + 255) / 256 * 256 + (rows * 4 + 255) / 256 * 256;
    const Result r = run_plan(c, dc, a, p);
    expect_matches(c, r, ref, std::to_string(splits) + " splits");
  }
  // A workspace smaller than the split count needs is refused.
  PrefillPlan p = planned;
  p.num_splits = 7;
  p.workspace_bytes = 256;
  EXPECT_THROW(run_plan(c, dc, a, p), Error);
}

TEST_F(SmallQPrefill, DeterministicForAFixedPlan) {
  PagedCase c = make_paged_case(small_spec(41));
  DeviceCase dc(c);
  const PrefillArgs a = dc.prefill_args(c.prefill_args());
  PrefillPlan plan = host_plan(c, a);
  ASSERT_EQ(plan.kernel, PrefillKernel::kMmaDecode);
  plan.num_splits = 5;
  const size_t rows = static_cast<size_t>(c.num_rows) * c.spec.num_qo_heads * 5;
  plan.workspace_bytes = (rows * c.spec.head_dim * 4 + 255) / 256 * 256 + (rows * 4 + 255) / 256 * 256;
  const Result x = run_plan(c, dc, a, plan);
  const Result y = run_plan(c, dc, a, plan);
  EXPECT_TRUE(same_bytes(x.out, y.out)) << "two runs of one plan differ (out)";
  EXPECT_TRUE(same_bytes(x.lse, y.lse)) << "two runs of one plan differ (lse)";
}

TEST_F(SmallQPrefill, GraphCaptureReplay) {
  PagedCaseSpec s = small_spec(51);
  s.q_lens = {4, 4, 4, 4};
  s.kv_lens = {900, 64, 2000, 4};
  PagedCase c = make_paged_case(s);
  DeviceCase dc(c);
  PrefillArgs a = dc.prefill_args(c.prefill_args());
  const PrefillPlan plan = host_plan(c, a);
  ASSERT_EQ(plan.kernel, PrefillKernel::kMmaDecode);
  DeviceTensor ws = DeviceTensor::bytes(plan.workspace_bytes);
  a.plan = &plan;
  a.workspace = {ws.data(), plan.workspace_bytes};
  GraphOfOneCall g;
  a.stream = g.stream();
  ASSERT_NO_FATAL_FAILURE(g.capture([&a] { paged_prefill(a); }));
  // Round 0: the planned lengths; round 1: shorter chunks and prefixes written in place (the plan's
  // max_q_len still bounds them), sequence 1 resting (q_len 0).
  for (int round = 0; round < 2; ++round) {
    if (round == 1) {
      const int32_t q_new[] = {2, 0, 4, 1};
      const int32_t kv_new[] = {500, 64, 1999, 1};
      int32_t* cu = c.cu_q_lens.ptr<int32_t>();
      for (int b = 0; b < 4; ++b) {
        cu[b + 1] = cu[b] + q_new[b];
        c.cu_q_lens_host[static_cast<size_t>(b) + 1] = cu[b + 1];
        c.kv_lens.ptr<int32_t>()[b] = kv_new[b];
        c.spec.q_lens[static_cast<size_t>(b)] = q_new[b];
        c.spec.kv_lens[static_cast<size_t>(b)] = kv_new[b];
      }
      c.total_q = cu[4];
      dc.cu_q_lens.upload(c.cu_q_lens);
      dc.kv_lens.upload(c.kv_lens);
    }
    const Result eager = g.run(c, dc, false);
    const Result r = g.run(c, dc, true);
    EXPECT_TRUE(same_bytes(r.out, eager.out)) << "replay differs from eager, round " << round;
    EXPECT_TRUE(same_bytes(r.lse, eager.lse)) << "replay lse differs from eager, round " << round;
    expect_matches(c, r, cpu_prefill(c.prefill_args(), true), "graph round " + std::to_string(round));
  }
}

TEST_F(SmallQPrefill, HostileMetadata) {
  // Device lengths beyond the plan's: planned with q_len <= 2, run with 4, 2, 3. Rows past the
  // planned max_q_len are not computed (left as they were); the computed ones sit at the positions
  // of the true q_len (docs/api.md "Hostile metadata"). Planner's, 1 and 5 splits.
  {
    PagedCaseSpec s = small_spec(61);
    s.q_lens = {4, 2, 3};
    s.kv_lens = {1200, 30, 9};
    s.padding_rows = 1;
    PagedCase c = make_paged_case(s);
    DeviceCase dc(c);
    const PrefillArgs host = c.prefill_args();
    const RefOutput ref = cpu_prefill(host, true);  // the true lengths
    const PrefillArgs a = dc.prefill_args(host);
    const std::vector<int32_t> cu_plan = {0, 2, 4, 6};
    const PrefillPlan planned = plan_prefill(a, cu_plan.data(), c.kv_lens.ptr<int32_t>());
    ASSERT_EQ(planned.kernel, PrefillKernel::kMmaDecode);
    ASSERT_EQ(planned.max_q_len, 2);
    for (int splits : {0, 1, 5}) {
      PrefillPlan p = planned;
      if (splits > 0) {
        p.num_splits = splits;
        const size_t rows = static_cast<size_t>(c.num_rows) * s.num_qo_heads * splits;
        p.workspace_bytes = splits == 1 ? 0 : (rows * s.head_dim * 4 + 255) / 256 * 256 + (rows * 4 + 255) / 256 * 256;
      }
      const Result r = run_plan(c, dc, a, p);
      const std::string what = "beyond the plan, " + std::to_string(p.num_splits) + " splits";
      EXPECT_LE(rows_rel_err(r.out, ref, 0, 2), kTol) << what << ": sequence 0 rows 0, 1";
      EXPECT_TRUE(rows_untouched(r, 2, 4)) << what << ": sequence 0 rows 2, 3 (past max_q_len)";
      EXPECT_LE(rows_rel_err(r.out, ref, 4, 6), kTol) << what << ": sequence 1";
      EXPECT_LE(rows_rel_err(r.out, ref, 6, 8), kTol) << what << ": sequence 2 rows 0, 1";
      EXPECT_TRUE(rows_untouched(r, 8, 10)) << what << ": sequence 2 row 2 and the padding row";
    }
  }
  // Malformed cu_q_lens: only the well-formed prefix is served, the rest left as it was.
  {
    PagedCaseSpec s = small_spec(62);
    s.q_lens = {3, 2, 3};
    s.kv_lens = {800, 2, 40};
    s.padding_rows = 2;
    PagedCase c = make_paged_case(s);
    DeviceCase dc(c);
    const RefOutput ref = cpu_prefill(c.prefill_args(), true);
    const PrefillArgs a = dc.prefill_args(c.prefill_args());
    const PrefillPlan planned = host_plan(c, a);
    ASSERT_EQ(planned.kernel, PrefillKernel::kMmaDecode);
    const int64_t rows = c.num_rows;  // 10
    struct Bad {
      std::vector<int32_t> cu;
      int64_t served_rows;  // rows [0, served_rows) computed, the rest untouched
      const char* what;
    };
    const std::vector<Bad> bad = {
        {{0, 3, 2, 8}, 3, "decreasing at sequence 1"},
        {{0, 3, 5, static_cast<int32_t>(rows) + 4}, 5, "past total_q at sequence 2"},
        {{-1, 3, 5, 8}, 0, "negative cu_q_lens[0]"},
    };
    for (const Bad& m : bad) {
      for (int splits : {1, 6}) {
        HostTensor cu = c.cu_q_lens;
        for (int b = 0; b < 4; ++b) cu.ptr<int32_t>()[b] = m.cu[static_cast<size_t>(b)];
        dc.cu_q_lens.upload(cu);
        PrefillPlan p = planned;
        p.num_splits = splits;
        const size_t n = static_cast<size_t>(rows) * s.num_qo_heads * splits;
        p.workspace_bytes = splits == 1 ? 0 : (n * s.head_dim * 4 + 255) / 256 * 256 + (n * 4 + 255) / 256 * 256;
        const Result r = run_plan(c, dc, a, p);
        const std::string what = std::string(m.what) + ", " + std::to_string(splits) + " splits";
        if (m.served_rows > 0) EXPECT_LE(rows_rel_err(r.out, ref, 0, m.served_rows), kTol) << what;
        EXPECT_TRUE(rows_untouched(r, m.served_rows, rows)) << what << ": rows from " << m.served_rows << " on";
      }
    }
    dc.cu_q_lens.upload(c.cu_q_lens);
  }
}

TEST_F(SmallQPrefill, NonFiniteRowsAgreeWithTheCpuBackend) {
  // bf16 cache: a NaN in key kv_len - 2 of sequence 0 (q_len 4: rows 2, 3 see it, rows 0, 1 mask it
  // causally in the same tile), a NaN in q (row 5, head 3), and on the int8 cache a NaN per-channel
  // K scale. NaN rows (out and lse) exactly where the CPU backend has them; the others match it.
  for (DType kvd : {DType::kBFloat16, DType::kInt8}) {
    PagedCaseSpec s = small_spec(71);
    s.q_lens = {4, 3, 2};
    s.kv_lens = {300, 3, 2000};
    s.kv_dtype = kvd;
    s.v_scale_mode = ScaleMode::kPerChannel;
    PagedCase c = make_paged_case(s);
    if (kvd == DType::kBFloat16) {
      const int64_t j = s.kv_lens[0] - 2;
      c.k_cache.store(cache_offset(c.k_cache.view(), s.layout, c.physical_block(0, j), 1, j % s.page_size, 5), kNaN);
    } else {
      c.k_scale.set({1, 7}, kNaN);  // every row of kv head 1 (q heads 4..7) sees it
    }
    c.q.set({5, 3, 9}, kNaN);
    DeviceCase dc(c);
    const PrefillArgs host = c.prefill_args();
    const RefOutput cpu = cpu_prefill(host, false);
    const PrefillArgs a = dc.prefill_args(host);
    const PrefillPlan plan = host_plan(c, a);
    ASSERT_EQ(plan.kernel, PrefillKernel::kMmaDecode);
    const Result r = run_plan(c, dc, a, plan);
    int64_t nan_rows = 0;
    for (int64_t t = 0; t < c.total_q; ++t)
      for (int64_t h = 0; h < s.num_qo_heads; ++h) {
        const bool cpu_nan = std::isnan(cpu.lse_at(t, h));
        nan_rows += cpu_nan;
        EXPECT_EQ(std::isnan(r.lse.at({t, h})), cpu_nan) << to_string(kvd) << " row " << t << " head " << h;
        bool all_nan = true, any_nan = false;
        for (int64_t d = 0; d < s.head_dim; ++d) {
          const bool n = std::isnan(r.out.at({t, h, d}));
          all_nan = all_nan && n;
          any_nan = any_nan || n;
        }
        EXPECT_EQ(all_nan, cpu_nan) << to_string(kvd) << " row " << t << " head " << h;
        if (!cpu_nan) EXPECT_FALSE(any_nan) << to_string(kvd) << " row " << t << " head " << h;
      }
    EXPECT_GT(nan_rows, 0);
  }
}

}  // namespace
}  // namespace kvq::test
