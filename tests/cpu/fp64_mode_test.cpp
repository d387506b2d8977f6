// The CPU backend's test-only fp64 mode (kvq::cpu::set_fp64_accumulation) against the naive fp64
// reference. Both compute the same exact quantity in double, so they agree to ~1e-12 before the
// output is rounded to its dtype. The outputs can only show that through rounding: every output
// element must be the reference rounded to fp32 and then to the output dtype (the backend goes
// double -> float -> bf16/fp16, a double rounding that may land 2^-17 (bf16) / 2^-14 (fp16) ulp
// past the half-ulp of a direct rounding), i.e. |out - float(ref)| <= 0.5 ulp (+1e-6 ulp of slack
// for ties), and lse (fp32) must be the correctly rounded reference (<= 0.5 ulp_fp32).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "src/core/backend.h"
#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

struct Fp64Guard {
  Fp64Guard() { kvq::cpu::set_fp64_accumulation(true); }
  ~Fp64Guard() { kvq::cpu::set_fp64_accumulation(false); }
};

// Distance between r and the next representable value of dtype above |r| (normal or subnormal).
double ulp_of(double r, DType dtype) {
  const int mant = dtype == DType::kBFloat16 ? 7 : dtype == DType::kFloat16 ? 10 : 23;
  const int min_exp = dtype == DType::kFloat16 ? -14 : -126;
  const double a = std::fabs(r);
  int e = a > 0 ? static_cast<int>(std::floor(std::log2(a))) : min_exp;
  if (e < min_exp) e = min_exp;
  return std::ldexp(1.0, e - mant);
}

struct Fp64Stats {
  double max_ulps = 0;        // max |out - ref| / ulp(ref)
  double max_lse_ulps = 0;
  int64_t bad_lse_inf = 0;
  int64_t rows = 0;
};

Fp64Stats compare_fp64(const HostTensor& out, const HostTensor& lse, const RefOutput& ref, int64_t num_rows) {
  Fp64Stats st;
  for (int64_t t = 0; t < num_rows; ++t)
    for (int64_t h = 0; h < ref.num_qo_heads; ++h) {
      for (int64_t d = 0; d < ref.head_dim; ++d) {
        const double r = static_cast<float>(ref.out_at(t, h, d)), o = out.at({t, h, d});
        const double u = std::isfinite(o) ? std::fabs(o - r) / ulp_of(r, out.dtype()) : 1e30;
        st.max_ulps = std::max(st.max_ulps, u);
      }
      if (!lse.defined()) continue;
      const double r = ref.lse_at(t, h), o = lse.at({t, h});
      if (std::isinf(r)) {
        if (o != r) ++st.bad_lse_inf;
        continue;
      }
      st.max_lse_ulps = std::max(st.max_lse_ulps, std::isfinite(o) ? std::fabs(o - r) / ulp_of(r, DType::kFloat32) : 1e30);
    }
  st.rows = num_rows;
  return st;
}

void expect_fp64_prefill(PagedCase& c, const PrefillArgs& args, const std::string& what) {
  SCOPED_TRACE(what + " " + case_label(c.spec));
  const RefOutput ref = reference_prefill(args, RefCompute::kExact);
  RunResult run;
  {
    Fp64Guard guard;
    run = run_prefill(c, args);
  }
  EXPECT_EQ(run.out_written_outside, 0);
  const Fp64Stats st = compare_fp64(c.out, c.lse, ref, c.total_q);
  EXPECT_LE(st.max_ulps, 0.5 + 1e-6) << "output is not the correctly rounded fp64 reference";
  EXPECT_LE(st.max_lse_ulps, 0.5 + 1e-6) << "lse is not the correctly rounded fp64 reference";
  EXPECT_EQ(st.bad_lse_inf, 0);
  std::printf("[ fp64    ] %-28s max %.6f ulp, lse max %.6f ulp\n", what.c_str(), st.max_ulps, st.max_lse_ulps);
}

PagedCaseSpec spec(uint64_t seed) {
  PagedCaseSpec s;
  s.q_lens = {13, 1, 40, 0};
  s.kv_lens = {60, 17, 40, 5};
  s.num_qo_heads = 8;
  s.num_kv_heads = 2;
  s.head_dim = 80;
  s.page_size = 7;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

TEST(CpuFp64Mode, PrefillPerChannel) {
  PagedCase c = make_paged_case(spec(1));
  expect_fp64_prefill(c, c.prefill_args(), "per-channel");
  expect_fp64_prefill(c, c.prefill_args({}, GqaLayout::kInterleaved), "per-channel ABAB");
}

TEST(CpuFp64Mode, PrefillPerTokenNhdOutliers) {
  PagedCaseSpec s = spec(2);
  s.layout = KvLayout::kNHD;
  s.k_scale_mode = ScaleMode::kPerToken;
  s.num_outlier_channels = 4;
  PagedCase c = make_paged_case(s);
  expect_fp64_prefill(c, c.prefill_args(), "ktok vch NHD");
  PagedCaseSpec s2 = spec(3);
  s2.v_scale_mode = ScaleMode::kPerToken;
  s2.scale_dtype = DType::kBFloat16;
  PagedCase c2 = make_paged_case(s2);
  expect_fp64_prefill(c2, c2.prefill_args(), "kch vtok bf16 scales");
}

TEST(CpuFp64Mode, PrefillWindowsMaskDtypes) {
  PagedCase c = make_paged_case(spec(4));
  MaskOptions w;
  w.local_window = 5;
  w.global_window = 3;
  expect_fp64_prefill(c, c.prefill_args(w), "window 5/3");
  MaskOptions nc;
  nc.causal = false;
  Rng rng(5);
  c.set_random_mask(rng, 0.4, 5);
  expect_fp64_prefill(c, c.prefill_args(nc), "non-causal mask");
  PagedCaseSpec s = spec(6);
  s.q_dtype = DType::kFloat16;
  s.kv_dtype = DType::kFloat16;
  PagedCase c2 = make_paged_case(s);
  expect_fp64_prefill(c2, c2.prefill_args(), "fp16 q, fp16 cache");
  PagedCaseSpec s3 = spec(7);
  s3.kv_dtype = DType::kBFloat16;
  s3.head_dim = 33;
  PagedCase c3 = make_paged_case(s3);
  expect_fp64_prefill(c3, c3.prefill_args(), "bf16 cache D33");
}

TEST(CpuFp64Mode, Decode) {
  PagedCaseSpec s = spec(8);
  s.q_lens = {1, 1, 1, 1, 1};
  s.kv_lens = {1, 77, 300, 16, 0};
  s.k_scale_mode = ScaleMode::kPerToken;
  PagedCase c = make_paged_case(s);
  const DecodeArgs args = c.decode_args(40, 2, GqaLayout::kInterleaved);
  const RefOutput ref = reference_decode(args, RefCompute::kExact);
  {
    Fp64Guard guard;
    run_decode(c, args);
  }
  const Fp64Stats st = compare_fp64(c.out, c.lse, ref, c.num_rows);
  EXPECT_LE(st.max_ulps, 0.5 + 1e-6);
  EXPECT_LE(st.max_lse_ulps, 0.5 + 1e-6);
  EXPECT_EQ(st.bad_lse_inf, 0);
  std::printf("[ fp64    ] %-28s max %.6f ulp, lse max %.6f ulp\n", "decode", st.max_ulps, st.max_lse_ulps);
}

TEST(CpuFp64Mode, FlagRoundTrips) {
  EXPECT_FALSE(kvq::cpu::fp64_accumulation());
  {
    Fp64Guard guard;
    EXPECT_TRUE(kvq::cpu::fp64_accumulation());
  }
  EXPECT_FALSE(kvq::cpu::fp64_accumulation());
}

}  // namespace
}  // namespace kvq::test
