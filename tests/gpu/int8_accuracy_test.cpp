// tests/gpu/int8_accuracy_test.cpp — the accuracy grid of compute=int8 on the GPU: path auto (on
// sm_90 the Hopper prefill's int8 Q·Kᵀ at D 128, elsewhere the generic kernel) and the generic
// kernel forced, on the cases of
// tests/common/int8_accuracy.h (near-uniform, randn and peaked attention; K outlier channels) x
// kv_len {1k, 16k, 64k, 128k} x {per-channel, per-token} scales — the bytes that
// tests/cpu/int8_accuracy_test.cpp checks on the CPU. Per case, scale mode and path:
//   - against the CPU backend's int8 recipe (fp32, docs/design.md §1): the same recipe, so only
//     rounding differs (the kernel rounds p against its running max, the CPU against the exact
//     one; expf; output rounding): <= kTolVsCpuRecipe, lse within 2e-2, nothing written outside;
//   - against the fp64 oracle (the CPU backend in fp64 mode), per grid point: the contract's 1e-2
//     (docs/design.md §5), K outlier channels included, printed.
// On a GPU host: kvq_gpu_tests --gtest_filter='Gpu/Int8Accuracy.*'
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "tests/common/int8_accuracy.h"
#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

// GPU vs CPU on the same int8 recipe: the CPU backend matches the recipe's fp64 model to 1.6-1.9e-3
// (output rounding); two independent P and output roundings are expected near 2.5e-3.
constexpr double kTolVsCpuRecipe = 5e-3;

class Int8Accuracy : public ::testing::TestWithParam<Int8Case> {};

TEST_P(Int8Accuracy, MatchesCpuAndFp64) {
  const Int8Case which = GetParam();
  PagedCase c = make_int8_accuracy_case(which);
  for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
    const char* mode_name = mode == ScaleMode::kPerChannel ? "per-channel" : "per-token";
    set_int8_accuracy_mode(c, mode);
    SCOPED_TRACE(std::string(int8_case_name(which)) + " " + mode_name);
    DeviceCase dc(c);
    const PrefillArgs host = c.prefill_args({}, GqaLayout::kGrouped, ComputeMode::kInt8);
    const RefOutput exact = cpu_prefill(host, /*fp64=*/true);
    const RefOutput recipe = cpu_prefill(host, /*fp64=*/false);
    for (PrefillPath path : {PrefillPath::kAuto, PrefillPath::kGeneric}) {
      const GpuRun run = run_gpu_prefill(c, dc, host, path);
      ASSERT_TRUE(run.served) << path_name(path) << ": " << run.refusal;
      const std::string what = std::string(mode_name) + " path " + path_name(path);
      expect_prefill_matches(c, run, recipe, kTolVsCpuRecipe, what + " vs the CPU int8 recipe");
      for (Int8Workload w : int8_case_workloads(which)) {
        for (int64_t b = 0; b < c.batch_size; ++b) {
          const int64_t kv = c.spec.kv_lens[static_cast<size_t>(b)];
          const double err = int8_workload_error(c, which, run.out.view(), exact, b, w);
          const double err_cpu = int8_workload_error(c, which, run.out.view(), recipe, b, w);
          std::printf("[ int8acc ] %-8s %-11s %-7s kv %6lld: rel %.2e vs fp64 (vs the CPU recipe %.2e)\n",
                      int8_workload_name(w), mode_name, path_name(path), static_cast<long long>(kv), err, err_cpu);
          EXPECT_LE(err, kInt8AccuracyTol) << int8_workload_name(w) << " " << what << " kv " << kv << ": vs fp64";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Gpu, Int8Accuracy, ::testing::Values(Int8Case::kPlainK, Int8Case::kOutlierK),
                         [](const ::testing::TestParamInfo<Int8Case>& info) {
                           return std::string(int8_case_name(info.param));
                         });

}  // namespace
}  // namespace kvq::test
