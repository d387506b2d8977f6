// tests/gpu/mma_decode_test.cpp — the tensor-core split-KV decode (src/cuda/decode/mma_decode*),
// forced with KVQ_DECODE_PATH=mma (an error, not a fallback, when it does not serve a case),
// against the CPU backend's fp64 oracle: a grid over head dims 64/128/256, groups 1..16, page
// sizes 1..1000, HND/NHD, both GQA layouts, int8 (per-channel and per-token K/V, fp32/bf16/fp16
// scales) and bf16/fp16 caches, fp16/bf16 q, windows, forced split counts and lse; small-magnitude
// per-token V tokens with peaked attention; a 128k-key sequence; determinism; the served-shape
// error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

class ForceMma : public testing::Test {
 protected:
  void SetUp() override { setenv("KVQ_DECODE_PATH", "mma", 1); }
  void TearDown() override { unsetenv("KVQ_DECODE_PATH"); }
};

struct DecodeOut {
  HostTensor out, lse;
};

DecodeOut run_decode(PagedCase& c, DeviceCase& dc, const DecodeArgs& host_args) {
  c.poison_outputs();
  dc.out.upload(c.out);
  if (c.lse.defined()) dc.lse.upload(c.lse);
  DecodeArgs a = dc.decode_args(host_args);
  const size_t ws_bytes = decode_workspace_size(a);
  DeviceTensor ws = DeviceTensor::bytes(ws_bytes > 0 ? ws_bytes : 1);
  a.workspace = {ws.data(), ws_bytes};
  paged_decode(a);
  if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error("cudaDeviceSynchronize after paged_decode");
  DecodeOut r{c.out, c.lse};
  dc.out.download(r.out);
  if (c.lse.defined()) dc.lse.download(r.lse);
  return r;
}

void check(const PagedCase& c, const DecodeOut& run, const RefOutput& ref, const std::string& what, double tol = 1e-2) {
  const ErrorStats st = compare_decode_output(run.out.view(), ref);
  EXPECT_TRUE(st.ok(tol)) << what << ": " << st.describe();
  if (c.lse.defined()) {
    const LseStats ls = compare_lse(run.lse.view(), ref, c.batch_size);
    EXPECT_EQ(ls.num_mismatch, 0) << what << ": " << ls.describe();
    EXPECT_LE(ls.max_abs, 2e-2) << what << ": " << ls.describe();
  }
}

struct GridCase {
  PagedCaseSpec spec;
  int local_window = -1, global_window = 0;
  GqaLayout gqa = GqaLayout::kGrouped;
  int num_splits = 0;
  std::string name;
};

GridCase grid_case(int i) {
  static const int64_t kDims[] = {64, 128, 256};
  static const int64_t kGroups[] = {1, 2, 4, 5, 8, 16, 3, 6};
  static const int64_t kPages[] = {16, 1, 64, 7, 256, 32, 1000, 48, 3};
  Rng rng(51000 + i);
  GridCase r;
  PagedCaseSpec& s = r.spec;
  s.seed = 52000 + i;
  s.head_dim = kDims[i % 3];
  int64_t group = kGroups[(i / 3) % 8];
  if (s.head_dim == 256 && group > 8) group = 8;
  s.num_kv_heads = 1 + rng.randint(0, 3);
  s.num_qo_heads = group * s.num_kv_heads;
  s.page_size = kPages[i % 9];
  s.layout = (i / 2) % 2 == 0 ? KvLayout::kHND : KvLayout::kNHD;
  r.gqa = rng.bernoulli(0.3) ? GqaLayout::kInterleaved : GqaLayout::kGrouped;
  s.q_dtype = rng.bernoulli(0.4) ? DType::kFloat16 : DType::kBFloat16;
  s.kv_dtype = rng.randint(0, 5) < 2 ? s.q_dtype : DType::kInt8;  // a 16-bit cache has q's dtype
  s.k_scale_mode = rng.bernoulli(0.4) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.v_scale_mode = rng.bernoulli(0.4) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  const int sd = static_cast<int>(rng.randint(0, 3));
  s.scale_dtype = sd == 0 ? DType::kFloat32 : (sd == 1 ? DType::kBFloat16 : DType::kFloat16);
  // The kernel takes per-token scales in fp32 only (bf16/fp16 per-token scales go to the CUDA-core kernel).
  if (s.k_scale_mode == ScaleMode::kPerToken || s.v_scale_mode == ScaleMode::kPerToken) s.scale_dtype = DType::kFloat32;
  if (rng.bernoulli(0.3)) s.num_outlier_channels = 3;
  const int64_t batch = 1 + rng.randint(0, 5);
  for (int64_t b = 0; b < batch; ++b) {
    s.q_lens.push_back(1);
    int32_t kv = static_cast<int32_t>(1 + rng.randint(0, 3000));
    if (b == 0 && i % 5 == 0) kv = 0;  // an empty sequence: zeros, lse -inf
    s.kv_lens.push_back(kv);
  }
  if (rng.bernoulli(0.25)) {
    r.local_window = static_cast<int>(rng.randint(0, 500));
    r.global_window = static_cast<int>(rng.randint(0, 20));
  }
  const int sp = static_cast<int>(rng.randint(0, 4));
  r.num_splits = sp == 0 ? 0 : (sp == 1 ? 1 : (sp == 2 ? 7 : 40));
  s.with_lse = rng.bernoulli(0.6);
  s.extra_table_cols = rng.randint(0, 3);
  std::ostringstream os;
  os << "m" << i << "_hd" << s.head_dim << "_g" << group << "_ps" << s.page_size << "_"
     << (s.layout == KvLayout::kHND ? "hnd" : "nhd") << "_"
     << (s.kv_dtype == DType::kInt8 ? "i8" : (s.kv_dtype == DType::kBFloat16 ? "bf16c" : "f16c"))
     << (s.q_dtype == DType::kFloat16 ? "_qf16" : "_qbf16")
     << (s.kv_dtype == DType::kInt8 && s.k_scale_mode == ScaleMode::kPerToken ? "_ktok" : "")
     << (s.kv_dtype == DType::kInt8 && s.v_scale_mode == ScaleMode::kPerToken ? "_vtok" : "")
     << (r.local_window >= 0 ? "_win" : "") << (r.gqa == GqaLayout::kInterleaved ? "_abab" : "") << "_s" << r.num_splits;
  r.name = os.str();
  return r;
}

class MmaDecodeGrid : public ForceMma, public testing::WithParamInterface<int> {};

TEST_P(MmaDecodeGrid, MatchesCpu) {
  const GridCase cfg = grid_case(GetParam());
  PagedCase c = make_paged_case(cfg.spec);
  DeviceCase dc(c);
  DecodeArgs host = c.decode_args(cfg.local_window, cfg.global_window, cfg.gqa);
  host.num_splits = cfg.num_splits;
  const RefOutput ref = cpu_decode(host, true);
  const DecodeOut run = run_decode(c, dc, host);
  check(c, run, ref, cfg.name);
}

INSTANTIATE_TEST_SUITE_P(Grid, MmaDecodeGrid, testing::Range(0, 72),
                         [](const testing::TestParamInfo<int>& info) { return grid_case(info.param).name; });

// Per-token V with small-magnitude tokens (scale and value 1e-3 of the rest) and peaked
// attention (q scaled up 8x): p * s_v would underflow fp16 without the kernel's V-scale factoring.
TEST_F(ForceMma, SmallMagnitudeVTokensPeaked) {
  for (DType qd : {DType::kFloat16, DType::kBFloat16}) {
    PagedCaseSpec s;
    s.q_lens = {1, 1, 1};
    s.kv_lens = {8192, 3000, 777};
    s.num_qo_heads = 16;
    s.num_kv_heads = 4;
    s.head_dim = 128;
    s.page_size = 16;
    s.q_dtype = qd;
    s.k_scale_mode = ScaleMode::kPerChannel;
    s.v_scale_mode = ScaleMode::kPerToken;
    s.with_lse = true;
    s.seed = 777;
    PagedCase c = make_paged_case(s);
    Rng rng(778);
    const int64_t vs_n = c.v_scale.numel();
    for (int64_t e = 0; e < vs_n; ++e)
      if (rng.bernoulli(0.5)) c.v_scale.store(e, c.v_scale.load(e) * 1e-3);
    const int64_t qn = c.q.storage_elements();
    for (int64_t e = 0; e < qn; ++e) c.q.store(e, round_to_dtype(c.q.load(e) * 8.0, qd));
    DeviceCase dc(c);
    const DecodeArgs host = c.decode_args();
    const RefOutput ref = cpu_decode(host, true);
    const DecodeOut run = run_decode(c, dc, host);
    check(c, run, ref, qd == DType::kFloat16 ? "small V, fp16 q" : "small V, bf16 q");
  }
}

// One long sequence (the split-KV case): 128k keys, Llama-3-8B shapes.
TEST_F(ForceMma, Context128k) {
  PagedCaseSpec s;
  s.q_lens = {1};
  s.kv_lens = {131072};
  s.num_qo_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.page_size = 64;
  s.k_scale_mode = ScaleMode::kPerChannel;
  s.v_scale_mode = ScaleMode::kPerToken;
  s.num_outlier_channels = 4;
  s.with_lse = true;
  s.seed = 4242;
  PagedCase c = make_paged_case(s);
  DeviceCase dc(c);
  const DecodeArgs host = c.decode_args();
  const RefOutput ref = cpu_decode(host, true);
  const DecodeOut run = run_decode(c, dc, host);
  check(c, run, ref, "128k");
}

TEST_F(ForceMma, DeterministicForAFixedPlan) {
  PagedCaseSpec s;
  s.q_lens = {1, 1, 1, 1};
  s.kv_lens = {5000, 1, 2048, 999};
  s.num_qo_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.page_size = 16;
  s.v_scale_mode = ScaleMode::kPerToken;
  s.seed = 31;
  PagedCase c = make_paged_case(s);
  DeviceCase dc(c);
  DecodeArgs host = c.decode_args();
  host.num_splits = 5;
  const DecodeOut a = run_decode(c, dc, host);
  const DecodeOut b = run_decode(c, dc, host);
  ASSERT_EQ(a.out.nbytes(), b.out.nbytes());
  EXPECT_EQ(std::memcmp(a.out.data(), b.out.data(), a.out.nbytes()), 0) << "two runs differ";
}

TEST_F(ForceMma, UnservedShapeIsANotImplementedError) {
  PagedCaseSpec s;
  s.q_lens = {1};
  s.kv_lens = {40};
  s.num_qo_heads = 4;
  s.num_kv_heads = 1;
  s.head_dim = 96;
  s.page_size = 16;
  s.seed = 5;
  PagedCase c = make_paged_case(s);
  DeviceCase dc(c);
  try {
    run_decode(c, dc, c.decode_args());
    FAIL() << "expected kvq::Error: head_dim 96 is not served by the tensor-core decode";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not implemented"), std::string::npos) << e.what();
    EXPECT_EQ(e.argument(), "KVQ_DECODE_PATH") << e.what();
  }
}

// Small shapes for compute-sanitizer (filter "*SmallMma*"): every cache dtype, splits, windows,
// an empty sequence, page sizes 1 and 16.
TEST_F(ForceMma, SmallMmaDecode) {
  int n = 0;
  for (DType kvd : {DType::kInt8, DType::kBFloat16, DType::kFloat16})
    for (int splits : {1, 3})
      for (int64_t page : {1, 16}) {
        PagedCaseSpec s;
        s.q_lens = {1, 1, 1};
        s.kv_lens = {70, 0, 131};
        s.num_qo_heads = 8;
        s.num_kv_heads = 2;
        s.head_dim = 64;
        s.page_size = page;
        s.kv_dtype = kvd;
        s.q_dtype = kvd == DType::kFloat16 ? DType::kFloat16 : DType::kBFloat16;
        s.v_scale_mode = ScaleMode::kPerToken;
        s.k_scale_mode = splits == 3 ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
        s.with_lse = true;
        s.seed = 600 + n++;
        PagedCase c = make_paged_case(s);
        DeviceCase dc(c);
        DecodeArgs host = c.decode_args(splits == 3 ? 40 : -1, 2);
        host.num_splits = splits;
        const RefOutput ref = cpu_decode(host, true);
        const DecodeOut run = run_decode(c, dc, host);
        check(c, run, ref, "small " + std::to_string(n));
      }
}

}  // namespace
}  // namespace kvq::test
