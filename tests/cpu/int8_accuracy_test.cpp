// tests/cpu/int8_accuracy_test.cpp — the accuracy grid of compute=int8 on the CPU backend (the
// oracle of the GPU paths): the workloads of tests/common/int8_accuracy.h (near-uniform, randn and
// peaked attention; K outlier channels) x kv_len {1k, 16k, 64k, 128k} x {per-channel, per-token}
// scales, against the naive fp64 reference of tests/common:
//   - the backend follows the int8 recipe of docs/design.md §1: it agrees with the reference's
//     model of that recipe (RefCompute::kInt8) to bf16 output rounding (kTolNativeVsRoundP), lse
//     to kTolLse;
//   - the contract's bound (docs/design.md §5): ||out - ref|| / ||ref|| <= 1e-2 per (sequence, head)
//     against fp64, at every grid point (printed).
// Known gap: the recipe misses the bound when K has outlier channels (docs/design.md §1). Those
// points are reported as SKIPPED with their errors (never as passed), still held to the recipe
// model and to kOutlierRegressionCeiling so that they cannot silently get worse. Any other point
// over 1e-2 fails.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>

#include "tests/common/int8_accuracy.h"
#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

// 1.6x the largest error measured on the outlier workload (6.1e-2, per-channel scales, 128k keys):
// a regression guard for the known gap, not an accuracy claim.
constexpr double kOutlierRegressionCeiling = 1e-1;

class Int8Accuracy : public ::testing::TestWithParam<Int8Case> {};

// One test per case (CTest runs each test in its own process): the float K/V are drawn once and
// quantized in both scale modes.
TEST_P(Int8Accuracy, Fp64BoundAtEveryContextLength) {
  const Int8Case which = GetParam();
  const auto t0 = std::chrono::steady_clock::now();
  PagedCase c = make_int8_accuracy_case(which);
  std::printf("[ int8acc ] case %s: built in %.2fs\n", int8_case_name(which),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::ostringstream gap;
  for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
    const char* mode_name = mode == ScaleMode::kPerChannel ? "per-channel" : "per-token";
    const auto t1 = std::chrono::steady_clock::now();
    set_int8_accuracy_mode(c, mode);
    SCOPED_TRACE(std::string(int8_case_name(which)) + " " + case_label(c.spec));
    const PrefillArgs args = c.prefill_args({}, GqaLayout::kGrouped, ComputeMode::kInt8);
    const std::vector<RefOutput> refs = reference_prefill(args, {RefCompute::kExact, RefCompute::kInt8});
    const auto t2 = std::chrono::steady_clock::now();
    const RunResult run = run_prefill(c, args);
    EXPECT_EQ(run.out_written_outside, 0);
    EXPECT_EQ(run.lse_written_outside, 0);
    const LseStats lse = compare_lse(c.lse.view(), refs[1], c.total_q);
    EXPECT_EQ(lse.num_mismatch, 0) << mode_name << ": " << lse.describe();
    EXPECT_LE(lse.max_abs, kTolLse) << mode_name << ": lse vs the int8-recipe model: " << lse.describe();
    const ErrorStats vs_model = compare_output(c.out.view(), refs[1], c.cu_q_lens_host);
    EXPECT_TRUE(vs_model.ok(kTolNativeVsRoundP)) << mode_name << ": vs the int8-recipe model: " << vs_model.describe();
    for (Int8Workload w : int8_case_workloads(which)) {
      for (int64_t b = 0; b < c.batch_size; ++b) {
        const int64_t kv = c.spec.kv_lens[static_cast<size_t>(b)];
        const double err = int8_workload_error(c, which, c.out.view(), refs[0], b, w);
        const double err_model = int8_workload_error(c, which, c.out.view(), refs[1], b, w);
        std::printf("[ int8acc ] %-8s %-11s kv %6lld: rel %.2e vs fp64 (vs the recipe model %.2e)\n",
                    int8_workload_name(w), mode_name, static_cast<long long>(kv), err, err_model);
        if (w == Int8Workload::kOutliers && err <= kOutlierRegressionCeiling && err > kInt8AccuracyTol) {
          gap << " " << mode_name << " kv " << kv << ": " << err << ";";
          continue;
        }
        EXPECT_LE(err, kInt8AccuracyTol) << int8_workload_name(w) << " " << mode_name << " kv " << kv << ": vs fp64";
      }
    }
    std::printf("[ int8acc ] case %s %s: reference %.2fs, kvq %.2fs\n", int8_case_name(which), mode_name,
                std::chrono::duration<double>(t2 - t1).count(), run.seconds);
  }
  if (!gap.str().empty())
    GTEST_SKIP() << "known gap (docs/design.md §1): the int8 recipe misses the 1e-2 bound with K outlier channels:"
                 << gap.str();
}

INSTANTIATE_TEST_SUITE_P(Cpu, Int8Accuracy, ::testing::Values(Int8Case::kPlainK, Int8Case::kOutlierK),
                         [](const ::testing::TestParamInfo<Int8Case>& info) {
                           return std::string(int8_case_name(info.param));
                         });

}  // namespace
}  // namespace kvq::test
