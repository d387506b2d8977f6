// tests/cpu/cpu_check.h — helpers shared by the CPU-backend tests: run an entry point on a
// PagedCase (outputs poisoned first) and compare with the naive reference.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kvq/kvq.h"
#include "tests/common/compare.h"
#include "tests/common/paged_cache.h"
#include "tests/common/reference.h"

namespace kvq::test {

// Our criterion for bf16 compute against the fp64 reference (docs/design.md §5).
constexpr double kTolNative = 1e-2;
// int8 compute against the fp64 reference: the contract's 1e-2 (docs/design.md §5). The recipe
// (q in two int8 parts) errs about as much as bf16 compute; tests/cpu/int8_accuracy_test.cpp holds
// it to 1e-2 on the long-context grid (K outlier channels included). The retired recipes were held
// to 3e-2 (uint8 P) and 1.5e-2 (single-part q8: 1.05e-2 on randn data) here.
constexpr double kTolInt8 = 1e-2;
// kNative against the reference that models its numerics (P rounded to the query dtype). The
// output itself is rounded to bf16 (relative rms ~2^-9/sqrt(3) = 1.1e-3), so this cannot be much
// tighter than ~1.5e-3 in bf16 (1.7e-3 measured on the seed matrix; small cases with per-token V
// scales, where the kernel rounds p*s_v rather than p, reach ~3e-3); fp16 outputs use 1e-3.
constexpr double kTolNativeVsRoundP = 4e-3;
// lse is fp32: |lse - ref| over the rows, absolute.
constexpr double kTolLse = 2e-3;

inline std::string case_label(const PagedCaseSpec& s) {
  std::ostringstream os;
  os << "seed=" << s.seed << " B=" << s.q_lens.size() << " Hq=" << s.num_qo_heads << " Hkv=" << s.num_kv_heads
     << " D=" << s.head_dim << " ps=" << s.page_size << " layout=" << to_string(s.layout)
     << " q=" << to_string(s.q_dtype) << " kv=" << to_string(s.kv_dtype) << " kscale=" << to_string(s.k_scale_mode)
     << " vscale=" << to_string(s.v_scale_mode) << " q_lens=[";
  for (size_t b = 0; b < s.q_lens.size() && b < 16; ++b) os << (b ? "," : "") << s.q_lens[b];
  os << "] kv_lens=[";
  for (size_t b = 0; b < s.kv_lens.size() && b < 16; ++b) os << (b ? "," : "") << s.kv_lens[b];
  os << "]";
  return os.str();
}

struct RunResult {
  double seconds = 0;
  int64_t out_written_outside = 0;
  int64_t lse_written_outside = 0;
};

inline RunResult run_prefill(PagedCase& c, const PrefillArgs& args) {
  c.poison_outputs();
  const auto t0 = std::chrono::steady_clock::now();
  kvq::paged_prefill(args);
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.out_written_outside = count_written_outside(c.out, c.total_q);
  if (c.lse.defined()) r.lse_written_outside = count_written_outside(c.lse, c.total_q);
  return r;
}

inline RunResult run_decode(PagedCase& c, const DecodeArgs& args) {
  c.poison_outputs();
  const auto t0 = std::chrono::steady_clock::now();
  kvq::paged_decode(args);
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.out_written_outside = count_written_outside(c.out, c.num_rows);
  if (c.lse.defined()) r.lse_written_outside = count_written_outside(c.lse, c.num_rows);
  return r;
}

// The standard assertions on one prefill run: no stray writes, our relative criterion, lse.
// lse is compared with lse_ref when given (int8 compute: its own model), else with ref.
// Tiny head dims (< 8) make the per-(sequence, head) norm ill-conditioned (a handful of scalars
// that may cancel to ~0), so there the criterion is elementwise: |out - ref| <= 5e-3 + 1e-2 |ref|
// (5e-3 ~ one bf16 ulp at magnitude 1), plus the usual NaN and empty-row checks.
inline void expect_prefill_matches(const PagedCase& c, const RunResult& run, const RefOutput& ref, double tol,
                                   const char* what, const RefOutput* lse_ref = nullptr) {
  EXPECT_EQ(run.out_written_outside, 0) << what << ": out written outside rows [0, cu_q_lens[B]) or in stride gaps";
  EXPECT_EQ(run.lse_written_outside, 0) << what << ": lse written outside rows [0, cu_q_lens[B])";
  const ErrorStats st = compare_output(c.out.view(), ref, c.cu_q_lens_host);
  if (c.spec.head_dim >= 8) {
    EXPECT_TRUE(st.ok(tol)) << what << " (tol " << tol << "): " << st.describe();
  } else {
    EXPECT_TRUE(st.ok(std::numeric_limits<double>::infinity())) << what << ": " << st.describe();
    EXPECT_EQ(fraction_within(c.out.view(), ref, c.total_q, 5e-3, tol), 1.0) << what << " elementwise: " << st.describe();
  }
  if (c.lse.defined()) {
    const LseStats ls = compare_lse(c.lse.view(), lse_ref != nullptr ? *lse_ref : ref, c.total_q);
    EXPECT_EQ(ls.num_mismatch, 0) << what << ": " << ls.describe();
    EXPECT_LE(ls.max_abs, kTolLse) << what << ": " << ls.describe();
  }
}

inline void expect_decode_matches(const PagedCase& c, const RunResult& run, const RefOutput& ref, double tol,
                                  const char* what) {
  EXPECT_EQ(run.out_written_outside, 0) << what << ": out written in stride gaps";
  EXPECT_EQ(run.lse_written_outside, 0) << what << ": lse written in stride gaps";
  const ErrorStats st = compare_decode_output(c.out.view(), ref);
  EXPECT_TRUE(st.ok(tol)) << what << " (tol " << tol << "): " << st.describe();
  if (c.lse.defined()) {
    const LseStats ls = compare_lse(c.lse.view(), ref, c.num_rows);
    EXPECT_EQ(ls.num_mismatch, 0) << what << ": " << ls.describe();
    EXPECT_LE(ls.max_abs, kTolLse) << what << ": " << ls.describe();
  }
}

}  // namespace kvq::test

namespace kvq::test {

// Runs paged_prefill with `args` on case c and checks it against the reference models that
// apply: kNative vs fp64 (kTolNative) and vs the P-rounded model; kInt8 (or int8 q) vs fp64
// (kTolInt8) and vs the int8-compute model. Both models round P as the backend does, so the
// backend matches either to output rounding (kTolNativeVsRoundP; fp16 outputs 1e-3). Returns the
// fp64 relative error.
inline double check_prefill(PagedCase& c, const PrefillArgs& args, const char* what = "prefill") {
  const bool int8 = args.compute == ComputeMode::kInt8 || args.q.dtype == DType::kInt8;
  std::vector<RefOutput> refs =
      reference_prefill(args, {RefCompute::kExact, int8 ? RefCompute::kInt8 : RefCompute::kRoundP});
  const RunResult run = run_prefill(c, args);
  expect_prefill_matches(c, run, refs[0], int8 ? kTolInt8 : kTolNative, what, int8 ? &refs[1] : nullptr);
  const ErrorStats model = compare_output(c.out.view(), refs[1], c.cu_q_lens_host);
  double model_tol = args.out.dtype == DType::kFloat16 ? 1e-3 : kTolNativeVsRoundP;
  // Few elements per (sequence, head): single roundings do not average out.
  if (c.spec.head_dim < 8) model_tol *= 3;
  EXPECT_TRUE(model.ok(model_tol)) << what << ": vs " << (int8 ? "int8" : "P-rounded") << " model (tol " << model_tol
                                   << "): " << model.describe();
  return compare_output(c.out.view(), refs[0], c.cu_q_lens_host).max_rel;
}

inline double check_decode(PagedCase& c, const DecodeArgs& args, const char* what = "decode") {
  std::vector<RefOutput> refs = reference_decode(args, {RefCompute::kExact, RefCompute::kRoundP});
  const RunResult run = run_decode(c, args);
  expect_decode_matches(c, run, refs[0], kTolNative, what);
  const ErrorStats model = compare_decode_output(c.out.view(), refs[1]);
  const double model_tol = args.out.dtype == DType::kFloat16 ? 1e-3 : kTolNativeVsRoundP;
  EXPECT_TRUE(model.ok(model_tol)) << what << ": vs P-rounded model: " << model.describe();
  return compare_decode_output(c.out.view(), refs[0]).max_rel;
}

}  // namespace kvq::test
