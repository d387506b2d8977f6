// tests/cpu/int8_accuracy_test.cpp — the accuracy grid of compute=int8 on the CPU backend (the
// oracle of the GPU paths): the workloads of tests/common/int8_accuracy.h (near-uniform, randn and
// peaked attention; K outlier channels) x kv_len {1k, 16k, 64k, 128k} x {per-channel, per-token}
// scales, against the naive fp64 reference of tests/common:
//   - the backend follows the int8 recipe of docs/design.md §1: it agrees with the reference's
//     model of that recipe (RefCompute::kInt8) to bf16 output rounding (kTolNativeVsRoundP), lse
//     to kTolLse;
//   - the contract's bound (docs/design.md §5): ||out - ref|| / ||ref|| <= 1e-2 per (sequence, head)
//     against fp64, at every grid point, K outlier channels included (printed, beside the error of
//     compute=bf16 on the same bytes, for comparison).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/common/int8_accuracy.h"
#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

class Int8Accuracy : public ::testing::TestWithParam<Int8Case> {};

// One test per case (CTest runs each test in its own process): the float K/V are drawn once and
// quantized in both scale modes.
TEST_P(Int8Accuracy, Fp64BoundAtEveryContextLength) {
  const Int8Case which = GetParam();
  const auto t0 = std::chrono::steady_clock::now();
  PagedCase c = make_int8_accuracy_case(which);
  std::printf("[ int8acc ] case %s: built in %.2fs\n", int8_case_name(which),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
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
    std::vector<double> errs;
    for (Int8Workload w : int8_case_workloads(which))
      for (int64_t b = 0; b < c.batch_size; ++b) errs.push_back(int8_workload_error(c, which, c.out.view(), refs[0], b, w));
    // compute=bf16 on the same bytes, for comparison only (printed).
    const RunResult native = run_prefill(c, c.prefill_args({}, GqaLayout::kGrouped, ComputeMode::kNative));
    size_t e = 0;
    for (Int8Workload w : int8_case_workloads(which)) {
      for (int64_t b = 0; b < c.batch_size; ++b, ++e) {
        const int64_t kv = c.spec.kv_lens[static_cast<size_t>(b)];
        const double err_native = int8_workload_error(c, which, c.out.view(), refs[0], b, w);
        std::printf("[ int8acc ] %-8s %-11s kv %6lld: rel %.2e vs fp64 (compute=bf16: %.2e)\n", int8_workload_name(w),
                    mode_name, static_cast<long long>(kv), errs[e], err_native);
        EXPECT_LE(errs[e], kInt8AccuracyTol) << int8_workload_name(w) << " " << mode_name << " kv " << kv << ": vs fp64";
      }
    }
    std::printf("[ int8acc ] case %s %s: reference %.2fs, kvq int8 %.2fs, bf16 %.2fs\n", int8_case_name(which),
                mode_name, std::chrono::duration<double>(t2 - t1).count(), run.seconds, native.seconds);
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, Int8Accuracy, ::testing::Values(Int8Case::kPlainK, Int8Case::kOutlierK),
                         [](const ::testing::TestParamInfo<Int8Case>& info) {
                           return std::string(int8_case_name(info.param));
                         });

}  // namespace
}  // namespace kvq::test
