// tests/gpu/hostile_test.cpp — hostile metadata and non-finite values on every CUDA path,
// one test per case. check=true: a kvq::Error naming the argument, nothing written. check=false:
// no out-of-bounds access, no hang, and the result docs/api.md "Hostile metadata" documents —
// kv_len clamped to the table (positions follow the clamped length), keys whose table entry is not
// a block id masked, sequences from the first malformed cu_q_lens entry on skipped (their rows
// untouched), windows and softmax_scale taken as given. The oracle of a check=false run is the
// naive fp64 reference of tests/common on the problem the kernels are documented to solve (invalid
// keys turned into masked ones), or the CPU backend where it accepts the same call.
//
// Prefill cases run on four paths: fused (tensor-core kernel over the int8 cache), dequant, generic
// (int8 cache) and fused over a bf16 cache. Every tensor has its own cudaMalloc (DeviceTensor) so
// compute-sanitizer memcheck sees an access past any of them; masks and outputs also get canaries.
// Run: kvq_gpu_tests --gtest_filter='Hostile*:FusedPrecision*'
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "tests/gpu/append_setup.h"
#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

constexpr double kTol = 1e-2;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

enum class HPath { kFusedInt8, kDequantInt8, kGenericInt8, kFusedBf16 };

const char* hpath_name(HPath p) {
  switch (p) {
    case HPath::kFusedInt8: return "FusedInt8";
    case HPath::kDequantInt8: return "DequantInt8";
    case HPath::kGenericInt8: return "GenericInt8";
    case HPath::kFusedBf16: return "FusedBf16";
  }
  return "?";
}
PrefillPath prefill_path(HPath p) {
  return p == HPath::kDequantInt8 ? PrefillPath::kDequant
                                  : (p == HPath::kGenericInt8 ? PrefillPath::kGeneric : PrefillPath::kFused);
}
bool int8_cache(HPath p) { return p != HPath::kFusedBf16; }

PagedCaseSpec base_spec(HPath path, std::vector<int32_t> q_lens, std::vector<int32_t> kv_lens, uint64_t seed) {
  PagedCaseSpec s;
  s.q_lens = std::move(q_lens);
  s.kv_lens = std::move(kv_lens);
  s.num_qo_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.page_size = 16;
  s.kv_dtype = int8_cache(path) ? DType::kInt8 : DType::kBFloat16;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

// One GPU prefill on the case's current host tensors (hostile metadata included).
struct PrefillRun {
  bool threw = false;
  std::string arg, what;
  HostTensor out, lse;
  double seconds = 0;
};

PrefillRun run_prefill(PagedCase& c, const PrefillArgs& host_args, HPath path, bool check) {
  c.poison_outputs();
  DeviceCase dc(c);
  PrefillArgs a = dc.prefill_args(host_args);
  a.path = prefill_path(path);
  a.check = check;
  PrefillRun r;
  // No host lengths: they would be validated, and a hostile batch has none to trust.
  const PrefillPlan plan = plan_prefill(a, nullptr, nullptr);
  DeviceTensor ws = DeviceTensor::bytes(plan.workspace_bytes);
  a.plan = &plan;
  a.workspace = {ws.data(), plan.workspace_bytes};
  const auto t0 = std::chrono::steady_clock::now();
  try {
    paged_prefill(a);
  } catch (const Error& e) {
    r.threw = true;
    r.arg = e.argument();
    r.what = e.what();
  }
  const cudaError_t err = cudaDeviceSynchronize();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (err != cudaSuccess) throw std::runtime_error(std::string("kernel fault: ") + cudaGetErrorName(err));
  r.out = c.out;
  r.lse = c.lse;
  dc.out.download(r.out);
  dc.lse.download(r.lse);
  return r;
}

int64_t count_not_poison(const HostTensor& t) {
  int64_t n = 0;
  for (int64_t i = 0; i < t.storage_elements(); ++i) n += !t.is_poison(i);
  return n;
}

// Rows [lo, hi) of out and lse still hold the poison (never written).
bool rows_untouched(const PrefillRun& r, int64_t lo, int64_t hi) {
  for (int64_t t = lo; t < hi; ++t)
    for (int64_t h = 0; h < r.out.size(1); ++h) {
      for (int64_t d = 0; d < r.out.size(2); ++d)
        if (!r.out.is_poison(r.out.offset({t, h, d}))) return false;
      if (!r.lse.is_poison(r.lse.offset({t, h}))) return false;
    }
  return true;
}

// check=true on the CPU backend over the same host tensors: its refusal's words.
std::string cpu_refusal(const PrefillArgs& host) {
  PrefillArgs a = host;
  a.check = true;
  try {
    paged_prefill(a);
  } catch (const Error& e) {
    return e.what();
  }
  return "(the CPU backend accepted the call)";
}

// cpu_what (when given): the CUDA backend must word the refusal exactly as the CPU backend does
// (both run core/validate.cpp's device-data checks, the CUDA one over host copies).
void expect_refused(const PrefillRun& r, const std::string& arg, const std::string& cpu_what = "") {
  EXPECT_TRUE(r.threw) << "check=true must refuse the call";
  EXPECT_EQ(r.arg, arg) << r.what;
  if (!cpu_what.empty()) {
    EXPECT_EQ(r.what, cpu_what) << "CUDA and CPU backends word the same bad input alike";
  }
  EXPECT_EQ(count_not_poison(r.out), 0) << "out written although the call was refused";
  EXPECT_EQ(count_not_poison(r.lse), 0) << "lse written although the call was refused";
}

void expect_matches(const PrefillRun& r, const RefOutput& ref, const std::vector<int32_t>& cu, const std::string& what) {
  ASSERT_FALSE(r.threw) << what << ": " << r.what;
  const ErrorStats st = compare_output(r.out.view(), ref, cu);
  EXPECT_TRUE(st.ok(kTol)) << what << ": " << st.describe();
  // lse over the rows of the sequences only (rows before cu[0] belong to none).
  int64_t mismatches = 0;
  double max_abs = 0;
  for (size_t b = 0; b + 1 < cu.size(); ++b)
    for (int64_t t = cu[b]; t < cu[b + 1]; ++t)
      for (int64_t h = 0; h < r.lse.size(1); ++h) {
        const double o = r.lse.at({t, h}), e = ref.lse_at(t, h);
        if (std::isnan(o) || std::isfinite(o) != std::isfinite(e) || (std::isinf(e) && o != e)) {
          ++mismatches;
        } else if (std::isfinite(e)) {
          max_abs = std::max(max_abs, std::fabs(o - e));
        }
      }
  EXPECT_EQ(mismatches, 0) << what << ": lse -inf/finite/NaN disagreements";
  EXPECT_LE(max_abs, 5e-2) << what << ": lse";
}

// The oracle of a check=false run with hostile tables / lengths: the naive fp64 reference over
// kv_len clamped to the table, with the keys whose table entry is not a block id in [0, num_blocks)
// masked (an explicit non-causal mask carries causality too). `cu` holds the sequences to compute
// (the well-formed prefix; the others get q_len 0).
RefOutput masked_oracle(const PagedCase& c, const std::vector<int32_t>& cu, bool causal) {
  const int64_t B = c.batch_size, width = c.max_blocks_per_seq, ps = c.spec.page_size;
  HostTensor table = c.block_tables;
  std::vector<int32_t> kv(B);
  std::vector<std::vector<uint8_t>> key_ok(B);
  for (int64_t b = 0; b < B; ++b) {
    kv[b] = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(c.kv_lens.ptr<int32_t>()[b], 0), width * ps));
    key_ok[b].assign(kv[b], 1);
    for (int32_t j = 0; j < kv[b]; ++j) {
      const int64_t id = static_cast<int64_t>(c.block_tables.at({b, j / ps}));
      if (id < 0 || id >= c.num_blocks) {
        key_ok[b][j] = 0;
        table.set({b, j / ps}, 0);  // any block: its keys are masked
      }
    }
  }
  std::vector<uint8_t> mask;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t ql = cu[b + 1] - cu[b];
    for (int64_t i = 0; i < ql; ++i)
      for (int32_t j = 0; j < kv[b]; ++j) {
        const int64_t pos = kv[b] - ql + i;
        mask.push_back(key_ok[b][j] && (!causal || j <= pos));
      }
  }
  HostTensor mask_t(DType::kUInt8, {static_cast<int64_t>(mask.size())});
  if (!mask.empty()) std::memcpy(mask_t.data(), mask.data(), mask.size());
  HostTensor kv_t = make_int32(kv), cu_t = make_int32(cu);
  PrefillArgs a = c.prefill_args();
  a.block_tables = table.view();
  a.kv_lens = kv_t.view();
  a.cu_q_lens = cu_t.view();
  a.mask = mask_t.view();
  a.mask_options.causal = false;
  return reference_prefill(a);
}

class HostilePrefill : public testing::TestWithParam<HPath> {
 protected:
  HPath path() const { return GetParam(); }
};

// ---- block ids ----

void block_id_case(HPath path, int32_t bad_id_or_offset, bool past) {
  PagedCase c = make_paged_case(base_spec(path, {24, 9}, {70, 40}, 101));
  const int32_t bad = past ? static_cast<int32_t>(c.num_blocks + bad_id_or_offset) : bad_id_or_offset;
  c.block_tables.set({0, 2}, bad);  // sequence 0, keys 32..47, inside its 70 keys
  const PrefillArgs host = c.prefill_args();
  expect_refused(run_prefill(c, host, path, true), "block_tables", cpu_refusal(host));
  const PrefillRun r = run_prefill(c, host, path, false);
  expect_matches(r, masked_oracle(c, c.cu_q_lens_host, true), c.cu_q_lens_host, "invalid block masked");
  EXPECT_EQ(count_written_outside(r.out, c.total_q), 0);
}

TEST_P(HostilePrefill, NegativeBlockIdIsMasked) { block_id_case(path(), -3, false); }

TEST_P(HostilePrefill, BlockIdPastNumBlocksIsMasked) { block_id_case(path(), 5, true); }

TEST_P(HostilePrefill, BlockIdNearInt32MaxIsMasked) { block_id_case(path(), INT32_MAX, false); }

// ---- kv_len past the table ----

TEST_P(HostilePrefill, KvLenPastTheTableIsClampedAndReturnsFast) {
  // kv_lens = [2^30] over a 2-entry table, 40 query tokens. Before the fix the
  // fused and dequant paths iterated 2^30 keys (no return within 45 s on an H200).
  PagedCase c = make_paged_case(base_spec(path(), {40}, {32}, 102));
  ASSERT_EQ(c.max_blocks_per_seq, 2);
  MaskOptions mo;
  mo.causal = false;
  // The valid problem (kv_len 32) first: it loads the kernels (under compute-sanitizer a kernel's
  // first launch is instrumented, seconds of work that once failed this test's time bound) and
  // says what a clamped run costs here.
  const PrefillRun base = run_prefill(c, c.prefill_args(mo), path(), false);
  c.kv_lens.ptr<int32_t>()[0] = 1 << 30;
  const PrefillArgs host = c.prefill_args(mo);
  expect_refused(run_prefill(c, host, path(), true), "kv_lens", cpu_refusal(host));
  const PrefillRun r = run_prefill(c, host, path(), false);
  EXPECT_LT(r.seconds, 5.0 + 20.0 * base.seconds)
      << "a hostile kv_len must not iterate past the table (the valid run took " << base.seconds << " s)";
  for (int64_t t = 0; t < 40; ++t)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t d = 0; d < 64; ++d) ASSERT_TRUE(std::isfinite(r.out.at({t, h, d}))) << t << " " << h << " " << d;
  expect_matches(r, masked_oracle(c, c.cu_q_lens_host, false), c.cu_q_lens_host, "kv_len clamped to 32");
}

TEST_P(HostilePrefill, CausalKvLenPastTheTableUsesTheClampedPositions) {
  PagedCase c = make_paged_case(base_spec(path(), {20, 5}, {48, 30}, 103));
  c.kv_lens.ptr<int32_t>()[0] = 1000;  // table: 3 pages of 16 -> clamped to 48
  const PrefillArgs host = c.prefill_args();
  expect_refused(run_prefill(c, host, path(), true), "kv_lens", cpu_refusal(host));
  const PrefillRun r = run_prefill(c, host, path(), false);
  expect_matches(r, masked_oracle(c, c.cu_q_lens_host, true), c.cu_q_lens_host, "causal, kv_len clamped to 48");
}

// ---- cu_q_lens ----

void cu_case(HPath path, std::vector<int32_t> cu, int64_t rows, std::vector<int32_t> computed_cu) {
  // A valid case of `rows` query rows in one sequence gives the tensors; cu_q_lens is then replaced.
  const int64_t B = static_cast<int64_t>(cu.size()) - 1;
  std::vector<int32_t> q_lens(B, 0), kv_lens(B, 40);
  q_lens[0] = static_cast<int32_t>(rows);
  PagedCaseSpec s = base_spec(path, q_lens, kv_lens, 104);
  PagedCase c = make_paged_case(s);
  for (int64_t b = 0; b <= B; ++b) c.cu_q_lens.ptr<int32_t>()[b] = cu[b];
  const PrefillArgs host = c.prefill_args();
  expect_refused(run_prefill(c, host, path, true), "cu_q_lens", cpu_refusal(host));
  const PrefillRun r = run_prefill(c, host, path, false);
  // Rows the well-formed prefix covers are computed; every other row is left as it was.
  const RefOutput ref = masked_oracle(c, computed_cu, true);
  expect_matches(r, ref, computed_cu, "well-formed prefix");
  std::vector<uint8_t> covered(rows, 0);
  for (size_t b = 0; b + 1 < computed_cu.size(); ++b)
    for (int32_t t = computed_cu[b]; t < computed_cu[b + 1]; ++t) covered[t] = 1;
  for (int64_t t = 0; t < rows; ++t)
    if (!covered[t]) EXPECT_TRUE(rows_untouched(r, t, t + 1)) << "row " << t << " belongs to no well-formed sequence";
}

TEST_P(HostilePrefill, CuQLensDecreasingSkipsTheRest) {
  // [0, 10, 4, 20]: sequence 1 runs backwards; 1 and 2 are skipped (2 would overlap 0's rows).
  cu_case(path(), {0, 10, 4, 20}, 20, {0, 10, 10, 10});
}

TEST_P(HostilePrefill, CuQLensNotStartingAtZeroLeavesTheRowsBefore) {
  cu_case(path(), {3, 8}, 8, {3, 8});
}

TEST_P(HostilePrefill, CuQLensPastTotalQSkipsThatSequence) {
  cu_case(path(), {0, 4, 100}, 10, {0, 4, 4});
}

TEST_P(HostilePrefill, CuQLensNegativeSkipsEverything) {
  cu_case(path(), {-5, 6}, 6, {0, 0});
}

// ---- lengths and windows the CPU backend also takes ----

// GPU vs the CPU backend (fp64) on the same call with check=false.
void expect_matches_cpu(PagedCase& c, const PrefillArgs& host, HPath path, const std::string& what) {
  const RefOutput ref = cpu_prefill(host, /*fp64=*/true);
  const PrefillRun r = run_prefill(c, host, path, false);
  expect_matches(r, ref, c.cu_q_lens_host, what);
}

TEST_P(HostilePrefill, CausalQLenAboveKvLenGivesEmptyRows) {
  PagedCase c = make_paged_case(base_spec(path(), {30, 4}, {12, 50}, 105));  // positions -18..11
  const PrefillArgs host = c.prefill_args();
  expect_refused(run_prefill(c, host, path(), true), "kv_lens", cpu_refusal(host));
  expect_matches_cpu(c, host, path(), "q_len > kv_len");
  const PrefillRun r = run_prefill(c, host, path(), false);
  for (int64_t i = 0; i < 18; ++i)
    for (int64_t h = 0; h < 4; ++h) {
      for (int64_t d = 0; d < 64; ++d) ASSERT_EQ(r.out.at({i, h, d}), 0.0) << "position " << i - 18;
      ASSERT_EQ(r.lse.at({i, h}), -kInf) << "position " << i - 18;
    }
}

TEST_P(HostilePrefill, HugeLocalWindowIsNoWindow) {
  PagedCase c = make_paged_case(base_spec(path(), {33, 7}, {200, 7}, 106));
  MaskOptions mo;
  mo.local_window = INT_MAX;
  expect_matches_cpu(c, c.prefill_args(mo), path(), "local_window INT_MAX");
  mo.global_window = INT_MAX;
  expect_matches_cpu(c, c.prefill_args(mo), path(), "local and global window INT_MAX");
}

TEST_P(HostilePrefill, HugeGlobalWindowSeesEverything) {
  PagedCase c = make_paged_case(base_spec(path(), {33, 7}, {200, 7}, 107));
  MaskOptions mo;
  mo.local_window = 3;
  mo.global_window = INT_MAX - 1;
  expect_matches_cpu(c, c.prefill_args(mo), path(), "global_window near INT_MAX");
  mo.global_window = 20;
  expect_matches_cpu(c, c.prefill_args(mo), path(), "an ordinary window (control)");
}

TEST_P(HostilePrefill, HugeSoftmaxScaleIsFiniteOrNaNPerRow) {
  // 1e30: scores stay finite, attention collapses on each row's best key (|out| <= max |v|). FLT_MAX:
  // scores overflow; a row is then NaN throughout (out and lse), never partly garbage or zeros.
  PagedCase c = make_paged_case(base_spec(path(), {16, 3}, {64, 20}, 108));
  double vmax = 0;
  for (int64_t i = 0; i < c.v_orig.storage_elements(); ++i) vmax = std::max(vmax, std::fabs(c.v_orig.load(i)));
  for (float scale : {1e30f, std::numeric_limits<float>::max()}) {
    PrefillArgs host = c.prefill_args();
    host.softmax_scale = scale;
    const PrefillRun r = run_prefill(c, host, path(), false);
    ASSERT_FALSE(r.threw) << r.what;
    for (int64_t t = 0; t < c.total_q; ++t)
      for (int64_t h = 0; h < 4; ++h) {
        const double l = r.lse.at({t, h});
        if (std::isnan(l)) {
          for (int64_t d = 0; d < 64; ++d) ASSERT_TRUE(std::isnan(r.out.at({t, h, d}))) << "scale " << scale << " row " << t;
          continue;
        }
        ASSERT_TRUE(std::isfinite(l) || scale == std::numeric_limits<float>::max()) << "scale " << scale << " row " << t;
        for (int64_t d = 0; d < 64; ++d) {
          const double o = r.out.at({t, h, d});
          ASSERT_TRUE(std::isfinite(o)) << "scale " << scale << " row " << t << " head " << h;
          ASSERT_LE(std::fabs(o), vmax * 1.05 + 1e-3) << "scale " << scale << " row " << t << " head " << h;
        }
      }
  }
}

// ---- non-finite values (docs/api.md "Non-finite values") ----

bool row_all_nan(const HostTensor& out, int64_t t, int64_t h) {
  for (int64_t d = 0; d < out.size(2); ++d)
    if (!std::isnan(out.at({t, h, d}))) return false;
  return true;
}
bool row_bits_equal(const PrefillRun& a, const PrefillRun& b, int64_t t, int64_t h) {
  for (int64_t d = 0; d < a.out.size(2); ++d) {
    const int64_t o = a.out.offset({t, h, d});
    if (std::memcmp(static_cast<const uint8_t*>(a.out.data()) + 2 * o, static_cast<const uint8_t*>(b.out.data()) + 2 * o, 2))
      return false;
  }
  const int64_t lo = a.lse.offset({t, h});
  return std::memcmp(a.lse.ptr<float>() + lo, b.lse.ptr<float>() + lo, 4) == 0;
}

TEST_P(HostilePrefill, NaNInQMakesItsRowNaN) {
  PagedCase c = make_paged_case(base_spec(path(), {24, 9}, {70, 40}, 109));
  const PrefillArgs host = c.prefill_args();
  const PrefillRun clean = run_prefill(c, host, path(), false);
  c.q.set({5, 2, 7}, kNaN);
  const PrefillRun r = run_prefill(c, host, path(), false);
  EXPECT_TRUE(row_all_nan(r.out, 5, 2));
  EXPECT_TRUE(std::isnan(r.lse.at({5, 2})));
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < 4; ++h)
      if (!(t == 5 && h == 2)) EXPECT_TRUE(row_bits_equal(clean, r, t, h)) << "row " << t << " head " << h;
}

TEST_P(HostilePrefill, InfInQMakesItsRowNaN) {
  PagedCase c = make_paged_case(base_spec(path(), {24, 9}, {70, 40}, 110));
  const PrefillArgs host = c.prefill_args();
  const PrefillRun clean = run_prefill(c, host, path(), false);
  c.q.set({30, 1, 0}, -kInf);
  const PrefillRun r = run_prefill(c, host, path(), false);
  EXPECT_TRUE(row_all_nan(r.out, 30, 1));
  EXPECT_TRUE(std::isnan(r.lse.at({30, 1})));
  EXPECT_TRUE(row_bits_equal(clean, r, 30, 0));
  EXPECT_TRUE(row_bits_equal(clean, r, 29, 1));
}

TEST_P(HostilePrefill, NaNKeyReachesOnlyTheRowsThatSeeIt) {
  // int8: a NaN per-channel K scale channel of kv head 0 (every row of its heads sees it); bf16: a
  // NaN in key 60 of sequence 0 (positions 46..69: rows 14.. see it, rows 0..13 mask it in the same
  // KV tile).
  PagedCaseSpec s = base_spec(path(), {24, 9}, {70, 40}, 111);
  PagedCase c = make_paged_case(s);
  const PrefillArgs host = c.prefill_args();
  const PrefillRun clean = run_prefill(c, host, path(), false);
  const int64_t j = 60;
  if (int8_cache(path()))
    c.k_scale.set({0, 11}, kNaN);
  else
    c.k_cache.store(cache_offset(c.k_cache.view(), s.layout, c.physical_block(0, j), 0, j % s.page_size, 11), kNaN);
  const PrefillRun r = run_prefill(c, host, path(), false);
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < 4; ++h) {
      const bool kv0 = h / 2 == 0;
      const bool sees = int8_cache(path()) ? kv0 : (kv0 && t < 24 && 70 - 24 + t >= j);
      if (sees) {
        EXPECT_TRUE(row_all_nan(r.out, t, h)) << "row " << t << " head " << h;
        EXPECT_TRUE(std::isnan(r.lse.at({t, h}))) << "row " << t << " head " << h;
      } else {
        EXPECT_TRUE(row_bits_equal(clean, r, t, h)) << "row " << t << " head " << h << " does not see the NaN key";
      }
    }
}

TEST_P(HostilePrefill, NaNPastKvLenInTheLastPageNeverReachesTheOutputs) {
  // The cache rows of the last, partly used page past kv_len (positions 70..79 and 40..47) are NaN
  // in K and V (bf16) or in their per-token scales (int8): no row sees them, so the outputs equal
  // the clean run's bit for bit. (A whole-page copy, e.g. a TMA box, lands those rows too.)
  PagedCaseSpec s = base_spec(path(), {24, 9}, {70, 40}, 118);
  if (int8_cache(path())) s.k_scale_mode = s.v_scale_mode = ScaleMode::kPerToken;
  PagedCase c = make_paged_case(s);
  const PrefillArgs host = c.prefill_args();
  const PrefillRun clean = run_prefill(c, host, path(), false);
  ASSERT_FALSE(clean.threw) << clean.what;
  int poisoned = 0;
  for (int b = 0; b < 2; ++b) {
    const int64_t kv = s.kv_lens[b];
    for (int64_t j = kv; j % s.page_size != 0; ++j)
      for (int64_t h = 0; h < s.num_kv_heads; ++h) {
        const int64_t blk = c.physical_block(b, j), pos = j % s.page_size;
        if (int8_cache(path())) {
          c.k_scale.store(token_scale_offset(c.k_scale.view(), s.layout, blk, h, pos), kNaN);
          c.v_scale.store(token_scale_offset(c.v_scale.view(), s.layout, blk, h, pos), kNaN);
        } else {
          for (int64_t d = 0; d < s.head_dim; ++d) {
            c.k_cache.store(cache_offset(c.k_cache.view(), s.layout, blk, h, pos, d), kNaN);
            c.v_cache.store(cache_offset(c.v_cache.view(), s.layout, blk, h, pos, d), kNaN);
          }
        }
        ++poisoned;
      }
  }
  ASSERT_EQ(poisoned, (10 + 8) * 2) << "the last pages are partly used";
  const PrefillRun r = run_prefill(c, host, path(), false);
  ASSERT_FALSE(r.threw) << r.what;
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < 4; ++h) EXPECT_TRUE(row_bits_equal(clean, r, t, h)) << "row " << t << " head " << h;
}

TEST_P(HostilePrefill, NonFiniteValueReachesTheOutputs) {
  // int8: a NaN per-channel V scale (kv head 1, dim 9): dim 9 of every row of heads 2, 3 is NaN, the
  // other dims and lse unchanged. bf16: +inf in value 0 of sequence 1 (kv head 1, dim 9): seen by
  // every row of sequence 1.
  PagedCaseSpec s = base_spec(path(), {24, 9}, {70, 40}, 112);
  PagedCase c = make_paged_case(s);
  const PrefillArgs host = c.prefill_args();
  const PrefillRun clean = run_prefill(c, host, path(), false);
  if (int8_cache(path()))
    c.v_scale.set({1, 9}, kNaN);
  else
    c.v_cache.store(cache_offset(c.v_cache.view(), s.layout, c.physical_block(1, 0), 1, 0, 9), kInf);
  const PrefillRun r = run_prefill(c, host, path(), false);
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < 4; ++h) {
      const bool reached = h / 2 == 1 && (int8_cache(path()) || t >= 24);
      if (!reached) {
        EXPECT_TRUE(row_bits_equal(clean, r, t, h)) << "row " << t << " head " << h;
        continue;
      }
      EXPECT_FALSE(std::isfinite(r.out.at({t, h, 9}))) << "row " << t << " head " << h;
      EXPECT_EQ(r.lse.at({t, h}), clean.lse.at({t, h})) << "a value does not change the scores";
      if (int8_cache(path()))
        for (int64_t d = 0; d < 64; ++d)
          if (d != 9) EXPECT_EQ(r.out.at({t, h, d}), clean.out.at({t, h, d})) << "row " << t << " dim " << d;
    }
}

TEST_P(HostilePrefill, EmptyRowsStayZeroWhateverTheData) {
  // Positions -10..-1 (causal, q_len 20 > kv_len 10, check=false) see no key: zeros and lse -inf,
  // even with NaN scales (int8) or NaN keys and values (bf16).
  PagedCaseSpec s = base_spec(path(), {20}, {10}, 113);
  PagedCase c = make_paged_case(s);
  if (int8_cache(path())) {
    c.k_scale.set({0, 3}, kNaN);
    c.v_scale.set({0, 4}, kNaN);
    c.v_scale.set({1, 4}, kNaN);
  } else {
    for (int64_t h = 0; h < 2; ++h) {
      c.k_cache.store(cache_offset(c.k_cache.view(), s.layout, c.physical_block(0, 2), h, 2, 3), kNaN);
      c.v_cache.store(cache_offset(c.v_cache.view(), s.layout, c.physical_block(0, 1), h, 1, 4), kNaN);
    }
  }
  const PrefillRun r = run_prefill(c, c.prefill_args(), path(), false);
  ASSERT_FALSE(r.threw) << r.what;
  for (int64_t i = 0; i < 10; ++i)
    for (int64_t h = 0; h < 4; ++h) {
      for (int64_t d = 0; d < 64; ++d) ASSERT_EQ(r.out.at({i, h, d}), 0.0) << "position " << i - 10 << " head " << h;
      ASSERT_EQ(r.lse.at({i, h}), -kInf) << "position " << i - 10 << " head " << h;
    }
}

TEST_P(HostilePrefill, AllVisibleScoresNegInfGiveNaN) {
  // K = +1 everywhere (int8 1 with a per-channel scale of 1, or bf16 1), q = -1, softmax_scale 1e38:
  // every score is -D * 1e38 = -inf. The keys are visible: 0/0 is NaN, not an empty row.
  PagedCaseSpec s = base_spec(path(), {12}, {40}, 114);
  PagedCase c = make_paged_case(s);
  for (int64_t i = 0; i < c.k_cache.storage_elements(); ++i) c.k_cache.store(i, 1.0);
  if (int8_cache(path()))
    for (int64_t i = 0; i < c.k_scale.storage_elements(); ++i) c.k_scale.store(i, 1.0);
  for (int64_t i = 0; i < c.q.storage_elements(); ++i) c.q.store(i, -1.0);
  PrefillArgs host = c.prefill_args();
  host.softmax_scale = 1e38f;
  const PrefillRun r = run_prefill(c, host, path(), false);
  for (int64_t t = 0; t < 12; ++t)
    for (int64_t h = 0; h < 4; ++h) {
      EXPECT_TRUE(row_all_nan(r.out, t, h)) << "row " << t << " head " << h;
      EXPECT_TRUE(std::isnan(r.lse.at({t, h}))) << "row " << t << " head " << h;
    }
}

TEST_P(HostilePrefill, NonFinitePatternAgreesWithTheCpuBackend) {
  // Several non-finite inputs at once; the GPU path and the CPU backend must agree on which rows
  // are NaN, and match within tolerance elsewhere.
  PagedCaseSpec s = base_spec(path(), {17, 1, 30}, {17, 60, 45}, 115);
  PagedCase c = make_paged_case(s);
  c.q.set({3, 0, 1}, kNaN);
  c.q.set({20, 3, 60}, kInf);
  if (int8_cache(path())) c.k_scale.set({1, 2}, kNaN);
  const PrefillArgs host = c.prefill_args();
  const RefOutput cpu = cpu_prefill(host, true);
  const PrefillRun r = run_prefill(c, host, path(), false);
  int64_t nan_rows = 0;
  for (int64_t t = 0; t < c.total_q; ++t)
    for (int64_t h = 0; h < 4; ++h) {
      const bool cpu_nan = std::isnan(cpu.lse_at(t, h));
      nan_rows += cpu_nan;
      EXPECT_EQ(std::isnan(r.lse.at({t, h})), cpu_nan) << "row " << t << " head " << h;
      EXPECT_EQ(row_all_nan(r.out, t, h), cpu_nan) << "row " << t << " head " << h;
    }
  EXPECT_GT(nan_rows, 0);
}

INSTANTIATE_TEST_SUITE_P(Paths, HostilePrefill,
                         testing::Values(HPath::kFusedInt8, HPath::kDequantInt8, HPath::kGenericInt8, HPath::kFusedBf16),
                         [](const testing::TestParamInfo<HPath>& i) { return std::string(hpath_name(i.param)); });

// ---- the generic kernel's mask: never read before it ----

// An all-zero (invisible) mask inside a larger buffer whose bytes before and after it are 1
// (visible). A read outside the mask sees a visible key and makes its row non-zero; every row the
// kernel writes must therefore be zeros (lse -inf), and rows of no well-formed sequence untouched.
void mask_canary_case(const std::vector<int32_t>& cu, const std::vector<int32_t>& kv_lens, int64_t mask_len,
                      int64_t rows, int64_t computed_rows) {
  const int64_t B = static_cast<int64_t>(kv_lens.size());
  std::vector<int32_t> q_lens(B, 0);
  q_lens[0] = static_cast<int32_t>(rows);
  PagedCaseSpec s = base_spec(HPath::kGenericInt8, q_lens, kv_lens, 116);
  PagedCase c = make_paged_case(s);
  for (int64_t b = 0; b <= B; ++b) c.cu_q_lens.ptr<int32_t>()[b] = cu[b];
  constexpr int64_t kCanary = 4096;
  HostTensor buf(DType::kUInt8, {kCanary + mask_len + kCanary});
  for (int64_t i = 0; i < buf.storage_elements(); ++i) buf.store(i, (i >= kCanary && i < kCanary + mask_len) ? 0 : 1);
  DeviceTensor dbuf(buf);
  c.poison_outputs();
  DeviceCase dc(c);
  MaskOptions mo;
  mo.causal = false;
  PrefillArgs a = dc.prefill_args(c.prefill_args(mo));
  a.mask = TensorView::make(static_cast<uint8_t*>(dbuf.data()) + kCanary, DType::kUInt8, {mask_len}, Device::kCUDA, 0);
  a.path = PrefillPath::kGeneric;
  a.check = false;
  ASSERT_NO_THROW(paged_prefill(a));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostTensor out = c.out, lse = c.lse;
  dc.out.download(out);
  dc.lse.download(lse);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t h = 0; h < s.num_qo_heads; ++h) {
      if (t < cu[0] || t >= computed_rows) {
        for (int64_t d = 0; d < s.head_dim; ++d) ASSERT_TRUE(out.is_poison(out.offset({t, h, d}))) << "row " << t;
        continue;
      }
      for (int64_t d = 0; d < s.head_dim; ++d)
        ASSERT_EQ(out.at({t, h, d}), 0.0) << "row " << t << " head " << h << " read a mask byte outside the mask";
      ASSERT_EQ(lse.at({t, h}), -kInf) << "row " << t << " head " << h;
    }
}

TEST(HostileGeneric, MaskIndexNeverBelowZeroWhenCuQLensStartsLate) {
  // cu_q_lens = [3, 8]: rows 0..2 belonged to no sequence; before the fix row 0 read mask[-3 * kv_len].
  mask_canary_case({3, 8}, {40}, 5 * 40, 8, 8);
}

TEST(HostileGeneric, MaskIndexNeverBelowZeroWhenCuQLensDecreases) {
  // [0, 10, 4, 20] with kv_lens [8, 100, 8]: sequence 2's mask offset was 10*8 - 6*100 = -520.
  mask_canary_case({0, 10, 4, 20}, {8, 100, 8}, 10 * 8, 20, 10);
}

TEST(HostileGeneric, MaskShorterThanTheBatchReadsNothingPast) {
  // check=false with a mask covering only part of the batch: the rest is invisible, never read.
  mask_canary_case({0, 6}, {50}, 2 * 50, 6, 6);
}

// ---- the fused path's precision with small per-token V scales ----

TEST(FusedPrecision, Fp16PerTokenVScalesWithSmallAmax) {
  // V token amax 3e-4 -> s_v = 2.4e-6, subnormal in fp16: rounding p * s_v to fp16 cost 13.7% on
  // an H200 (8k keys). The tile's largest V scale is factored out before rounding.
  for (double amax : {3e-3, 3e-4}) {
    PagedCaseSpec s;
    s.q_lens = {64, 64};
    s.kv_lens = {2048, 1024};
    s.num_qo_heads = 8;
    s.num_kv_heads = 2;
    s.head_dim = 128;
    s.page_size = 16;
    s.q_dtype = DType::kFloat16;
    s.v_scale_mode = ScaleMode::kPerToken;
    s.seed = 117;
    PagedCase c = make_paged_case(s);
    // Scale every token's V down so that its amax is ~`amax` (int8 payload unchanged).
    for (int64_t i = 0; i < c.v_scale.storage_elements(); ++i) c.v_scale.store(i, c.v_scale.load(i) * (amax / 3.0));
    const PrefillArgs host = c.prefill_args();
    const RefOutput ref = cpu_prefill(host, true);
    for (HPath p : {HPath::kFusedInt8, HPath::kDequantInt8, HPath::kGenericInt8}) {
      const PrefillRun r = run_prefill(c, host, p, false);
      ASSERT_FALSE(r.threw) << r.what;
      const ErrorStats st = compare_output(r.out.view(), ref, c.cu_q_lens_host);
      std::printf("[fp16 per-token V, amax %.0e] %-12s max_rel %.3e\n", amax, hpath_name(p), st.max_rel);
      EXPECT_TRUE(st.ok(kTol)) << hpath_name(p) << " amax " << amax << ": " << st.describe();
    }
  }
}

// ---- decode ----

// The decode tests run at head dim 64 (the tensor-core decode's cp.async variant for int8) and 128
// (its bulk-copy variant with int8 Q·Kᵀ on sm_90, and the shape most models use).
int g_decode_hd = 64;
class HostileDecode : public testing::TestWithParam<int> {
 protected:
  void SetUp() override { g_decode_hd = GetParam(); }
  void TearDown() override { g_decode_hd = 64; }
};
INSTANTIATE_TEST_SUITE_P(Hd, HostileDecode, testing::Values(64, 128),
                         [](const testing::TestParamInfo<int>& i) { return "hd" + std::to_string(i.param); });

PagedCaseSpec dspec(HPath path, std::vector<int32_t> q_lens, std::vector<int32_t> kv_lens, uint64_t seed) {
  PagedCaseSpec s = base_spec(path, std::move(q_lens), std::move(kv_lens), seed);
  s.head_dim = g_decode_hd;
  return s;
}

struct DecodeRun {
  bool threw = false;
  std::string arg, what;
  HostTensor out, lse;
};

// sentinel: out and lse start as a finite 7 instead of the (NaN) poison, so that a NaN read back
// proves the kernel wrote it.
DecodeRun run_decode(PagedCase& c, const DecodeArgs& host, bool check, bool sentinel = false) {
  c.poison_outputs();
  if (sentinel) {
    for (int64_t i = 0; i < c.out.storage_elements(); ++i) c.out.store(i, 7.0);
    for (int64_t i = 0; i < c.lse.storage_elements(); ++i) c.lse.store(i, 7.0);
  }
  DeviceCase dc(c);
  DecodeArgs a = dc.decode_args(host);
  a.check = check;
  DecodeRun r;
  try {
    const size_t bytes = decode_workspace_size(a);
    DeviceTensor ws = DeviceTensor::bytes(bytes);
    a.workspace = {ws.data(), bytes};
    paged_decode(a);
    if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error("kernel fault in paged_decode");
  } catch (const Error& e) {
    r.threw = true;
    r.arg = e.argument();
    r.what = e.what();
  }
  r.out = c.out;
  r.lse = c.lse;
  dc.out.download(r.out);
  dc.lse.download(r.lse);
  return r;
}

// Decode oracle for hostile tables: the masked prefill oracle with one query per sequence.
RefOutput decode_oracle(const PagedCase& c) { return masked_oracle(c, c.cu_q_lens_host, true); }

void decode_block_case(int32_t bad) {
  PagedCase c = make_paged_case(dspec(HPath::kFusedInt8, {1, 1, 1}, {70, 300, 16}, 120));
  c.block_tables.set({1, 4}, bad);  // sequence 1, keys 64..79
  const DecodeArgs host = c.decode_args();
  const DecodeRun refused = run_decode(c, host, true);
  EXPECT_TRUE(refused.threw);
  EXPECT_EQ(refused.arg, "block_tables") << refused.what;
  EXPECT_EQ(count_not_poison(refused.out), 0);
  const DecodeRun r = run_decode(c, host, false);
  ASSERT_FALSE(r.threw) << r.what;
  const ErrorStats st = compare_decode_output(r.out.view(), decode_oracle(c));
  EXPECT_TRUE(st.ok(kTol)) << st.describe();
}

TEST_P(HostileDecode, NegativeBlockIdIsMasked) { decode_block_case(-1); }

TEST_P(HostileDecode, BlockIdPastNumBlocksIsMasked) { decode_block_case(1 << 20); }

TEST_P(HostileDecode, KvLenPastTheTableIsClamped) {
  PagedCase c = make_paged_case(dspec(HPath::kFusedInt8, {1, 1}, {64, 33}, 121));
  c.kv_lens.ptr<int32_t>()[0] = INT32_MAX;
  const DecodeArgs host = c.decode_args();
  const DecodeRun refused = run_decode(c, host, true);
  EXPECT_TRUE(refused.threw);
  EXPECT_EQ(refused.arg, "kv_lens") << refused.what;
  const auto t0 = std::chrono::steady_clock::now();
  const DecodeRun r = run_decode(c, host, false);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  ASSERT_FALSE(r.threw) << r.what;
  const ErrorStats st = compare_decode_output(r.out.view(), decode_oracle(c));
  EXPECT_TRUE(st.ok(kTol)) << st.describe();
}

// ---- decode: non-finite values (docs/design.md §1 "Non-finite values"), every route ----
// Each case runs with the planner's split count and with 1 and several forced splits, so that the
// split partials and their merge carry NaN, "no visible key" and "visible keys, all -inf" apart.

const std::vector<int> kDecodeSplits = {0, 1, 5};

bool decode_rows_bits_equal(const DecodeRun& a, const DecodeRun& b, int64_t t, int64_t h) {
  for (int64_t d = 0; d < a.out.size(2); ++d) {
    const int64_t o = a.out.offset({t, h, d});
    if (std::memcmp(static_cast<const uint8_t*>(a.out.data()) + 2 * o, static_cast<const uint8_t*>(b.out.data()) + 2 * o, 2))
      return false;
  }
  const int64_t lo = a.lse.offset({t, h});
  return std::memcmp(a.lse.ptr<float>() + lo, b.lse.ptr<float>() + lo, 4) == 0;
}

// Runs the clean case and the case after `poison_inputs`; rows where nan_row(b, h) must be NaN (out
// and lse), every other row bit for bit the clean run's.
template <typename Poison, typename Pred>
void expect_nan_rows(PagedCase& c, Poison poison_inputs, Pred nan_row, const std::string& what) {
  for (int splits : kDecodeSplits) {
    SCOPED_TRACE(what + ", num_splits " + std::to_string(splits));
    DecodeArgs host = c.decode_args();
    host.num_splits = splits;
    const DecodeRun clean = run_decode(c, host, false, true);
    ASSERT_FALSE(clean.threw) << clean.what;
    PagedCase bad = c;
    poison_inputs(bad);
    DecodeArgs bad_host = bad.decode_args();
    bad_host.num_splits = splits;
    const DecodeRun r = run_decode(bad, bad_host, false, true);
    ASSERT_FALSE(r.threw) << r.what;
    int64_t nan_rows = 0;
    for (int64_t b = 0; b < c.batch_size; ++b)
      for (int64_t h = 0; h < c.spec.num_qo_heads; ++h) {
        if (nan_row(b, h)) {
          ++nan_rows;
          EXPECT_TRUE(row_all_nan(r.out, b, h)) << "sequence " << b << " head " << h << ": decode must not turn a NaN row into numbers";
          EXPECT_TRUE(std::isnan(r.lse.at({b, h}))) << "sequence " << b << " head " << h << ": lse " << r.lse.at({b, h});
        } else {
          EXPECT_TRUE(decode_rows_bits_equal(clean, r, b, h)) << "sequence " << b << " head " << h << " is not affected";
        }
      }
    EXPECT_GT(nan_rows, 0);
  }
}

PagedCase decode_case(DType kv_dtype, ScaleMode k_mode, uint64_t seed) {
  PagedCaseSpec s = dspec(kv_dtype == DType::kInt8 ? HPath::kFusedInt8 : HPath::kFusedBf16, {1, 1, 1}, {40, 700, 1500}, seed);
  s.kv_dtype = kv_dtype;
  s.k_scale_mode = k_mode;
  return make_paged_case(s);
}

TEST_P(HostileDecode, NaNInQMakesItsRowNaN) {
  PagedCase c = make_paged_case(dspec(HPath::kFusedInt8, {1, 1, 1}, {70, 300, 16}, 122));
  expect_nan_rows(c, [](PagedCase& x) { x.q.set({1, 3, 5}, kNaN); },
                  [](int64_t b, int64_t h) { return b == 1 && h == 3; }, "NaN in q");
}

TEST_P(HostileDecode, InfInQMakesItsRowNaN) {
  for (DType kv : {DType::kInt8, DType::kBFloat16}) {
    PagedCase c = decode_case(kv, ScaleMode::kPerChannel, 130);
    expect_nan_rows(c, [](PagedCase& x) { x.q.set({2, 1, 0}, -kInf); },
                    [](int64_t b, int64_t h) { return b == 2 && h == 1; }, std::string("-inf in q, ") + to_string(kv));
  }
}

TEST_P(HostileDecode, NaNKeyReachesEveryRowOfItsKvHead) {
  // int8: a NaN per-channel K scale of kv head 0; bf16: a NaN in key 1000 of sequence 2, kv head 0.
  for (DType kv : {DType::kInt8, DType::kBFloat16}) {
    PagedCase c = decode_case(kv, ScaleMode::kPerChannel, 131);
    const bool int8 = kv == DType::kInt8;
    expect_nan_rows(
        c,
        [int8](PagedCase& x) {
          if (int8)
            x.k_scale.set({0, 11}, kNaN);
          else
            x.k_cache.store(cache_offset(x.k_cache.view(), x.spec.layout, x.physical_block(2, 1000), 0, 1000 % x.spec.page_size, 11), kNaN);
        },
        [int8](int64_t b, int64_t h) { return h / 2 == 0 && (int8 || b == 2); }, std::string("NaN key, ") + to_string(kv));
  }
}

TEST_P(HostileDecode, NonFiniteValueReachesItsDims) {
  // int8: a NaN per-channel V scale (kv head 1, dim 9); bf16: +inf in value 600 of sequence 1 (kv
  // head 1, dim 9). That dim of the rows that see it is non-finite; the other dims and lse stay.
  for (DType kv : {DType::kInt8, DType::kBFloat16}) {
    PagedCase c = decode_case(kv, ScaleMode::kPerChannel, 132);
    const bool int8 = kv == DType::kInt8;
    for (int splits : kDecodeSplits) {
      SCOPED_TRACE(std::string(to_string(kv)) + ", num_splits " + std::to_string(splits));
      DecodeArgs host = c.decode_args();
      host.num_splits = splits;
      const DecodeRun clean = run_decode(c, host, false, true);
      PagedCase bad = c;
      if (int8)
        bad.v_scale.set({1, 9}, kNaN);
      else
        bad.v_cache.store(cache_offset(bad.v_cache.view(), bad.spec.layout, bad.physical_block(1, 600), 1, 600 % bad.spec.page_size, 9), kInf);
      DecodeArgs bad_host = bad.decode_args();
      bad_host.num_splits = splits;
      const DecodeRun r = run_decode(bad, bad_host, false, true);
      ASSERT_FALSE(r.threw) << r.what;
      for (int64_t b = 0; b < 3; ++b)
        for (int64_t h = 0; h < 4; ++h) {
          const bool reached = h / 2 == 1 && (int8 || b == 1);
          if (!reached) {
            EXPECT_TRUE(decode_rows_bits_equal(clean, r, b, h)) << "sequence " << b << " head " << h;
            continue;
          }
          EXPECT_FALSE(std::isfinite(r.out.at({b, h, 9}))) << "sequence " << b << " head " << h;
          EXPECT_EQ(r.lse.at({b, h}), clean.lse.at({b, h})) << "a value does not change the scores";
          for (int64_t d = 0; d < c.spec.head_dim; ++d)
            if (d != 9) EXPECT_EQ(r.out.at({b, h, d}), clean.out.at({b, h, d})) << "sequence " << b << " dim " << d;
        }
    }
  }
}

// Keys [j0, j1) of sequence b, kv head 0, score -inf for the q heads of kv head 0 of that sequence:
// int8 (per-token K): payload -1 in every dim and a K scale of +inf, q made positive (every dim);
// bf16: -inf in dim 5 of the key, q's dim 5 set to 1. No product is 0 * inf.
void make_scores_neg_inf(PagedCase& c, int64_t b, int64_t j0, int64_t j1) {
  const int64_t ps = c.spec.page_size, D = c.spec.head_dim, group = c.spec.num_qo_heads / c.spec.num_kv_heads;
  const bool int8 = c.spec.kv_dtype == DType::kInt8;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t blk = c.physical_block(b, j);
    if (int8) {
      for (int64_t d = 0; d < D; ++d) c.k_cache.store(cache_offset(c.k_cache.view(), c.spec.layout, blk, 0, j % ps, d), -1.0);
      c.k_scale.store(token_scale_offset(c.k_scale.view(), c.spec.layout, blk, 0, j % ps), kInf);
    } else {
      c.k_cache.store(cache_offset(c.k_cache.view(), c.spec.layout, blk, 0, j % ps, 5), -kInf);
    }
  }
  for (int64_t h = 0; h < group; ++h) {  // grouped layout: q heads 0 .. group-1 read kv head 0
    if (int8)
      for (int64_t d = 0; d < D; ++d) c.q.set({b, h, d}, std::fabs(c.q.at({b, h, d})));
    else
      c.q.set({b, h, 5}, 1.0);
  }
}

TEST_P(HostileDecode, AllVisibleScoresNegInfGiveNaN) {
  // Every key of sequence 0 (40 keys) scores -inf for heads 0, 1: 0/0, a NaN row (the CPU backend's
  // rule), not an empty one. Forced splits leave splits with no key at all next to it.
  for (DType kv : {DType::kInt8, DType::kBFloat16}) {
    PagedCase c = decode_case(kv, ScaleMode::kPerToken, 133);
    expect_nan_rows(c, [](PagedCase& x) { make_scores_neg_inf(x, 0, 0, 40); },
                    [](int64_t b, int64_t h) { return b == 0 && h < 2; }, std::string("all -inf, ") + to_string(kv));
    // The CPU backend agrees.
    PagedCase bad = c;
    make_scores_neg_inf(bad, 0, 0, 40);
    const RefOutput cpu = cpu_decode(bad.decode_args(), true);
    for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(std::isnan(cpu.lse_at(0, h)), h < 2) << "CPU backend, head " << h;
  }
}

TEST_P(HostileDecode, NegInfScoresAmongFiniteOnesWeighZero) {
  // Keys 256..1023 of sequence 2 (1500 keys) score -inf for heads 0, 1: weight exp(-inf) = 0, the
  // row is the softmax over the other keys. With 6 splits of 256 keys, three splits see only -inf
  // scores: their partials must weigh 0 in the merge, not make the row NaN or empty.
  for (DType kv : {DType::kInt8, DType::kBFloat16}) {
    PagedCase c = decode_case(kv, ScaleMode::kPerToken, 134);
    make_scores_neg_inf(c, 2, 256, 1024);
    for (int splits : {0, 1, 6}) {
      SCOPED_TRACE(std::string(to_string(kv)) + ", num_splits " + std::to_string(splits));
      DecodeArgs host = c.decode_args();
      host.num_splits = splits;
      const RefOutput ref = cpu_decode(host, true);
      ASSERT_TRUE(std::isfinite(ref.lse_at(2, 0))) << "the CPU backend weighs -inf scores 0";
      const DecodeRun r = run_decode(c, host, false, true);
      ASSERT_FALSE(r.threw) << r.what;
      const ErrorStats st = compare_decode_output(r.out.view(), ref);
      EXPECT_TRUE(st.ok(kTol)) << st.describe();
      const LseStats ls = compare_lse(r.lse.view(), ref, c.batch_size);
      EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
      EXPECT_LE(ls.max_abs, 2e-2) << ls.describe();
    }
  }
}

TEST_P(HostileDecode, EmptyRowsStayZeroWhateverTheData) {
  // Sequence 0: kv_len 0; sequence 1: every table entry -1 (check=false: its keys are masked). Both
  // are empty rows (zeros, lse -inf) even with NaN K and V scales.
  PagedCase c = decode_case(DType::kInt8, ScaleMode::kPerChannel, 135);
  c.kv_lens.ptr<int32_t>()[0] = 0;
  for (int64_t i = 0; i < c.max_blocks_per_seq; ++i) c.block_tables.set({1, i}, -1);
  c.k_scale.set({0, 3}, kNaN);
  c.v_scale.set({0, 4}, kNaN);
  c.v_scale.set({1, 4}, kNaN);
  for (int splits : kDecodeSplits) {
    SCOPED_TRACE("num_splits " + std::to_string(splits));
    DecodeArgs host = c.decode_args();
    host.num_splits = splits;
    const DecodeRun r = run_decode(c, host, false, true);
    ASSERT_FALSE(r.threw) << r.what;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t h = 0; h < 4; ++h) {
        for (int64_t d = 0; d < c.spec.head_dim; ++d) ASSERT_EQ(r.out.at({b, h, d}), 0.0) << "sequence " << b << " head " << h;
        ASSERT_EQ(r.lse.at({b, h}), -kInf) << "sequence " << b << " head " << h;
      }
  }
}

// Head dim 128, page 16: the shape the tensor-core decode's bulk-copy (TMA) variant serves on sm_90
// for int8 and bf16 caches. Invalid block ids (negative, past the cache, near INT32_MAX) are masked,
// and rows of the last page past kv_len holding NaN (bf16: never read as values, int8: NaN scales
// of per-token rows past the end) change nothing.
TEST_P(HostileDecode, BulkShapeInvalidBlocksAndNaNPastTheEnd) {
  for (DType kv : {DType::kInt8, DType::kBFloat16}) {
    for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
      if (kv != DType::kInt8 && mode == ScaleMode::kPerToken) continue;
      SCOPED_TRACE(std::string(to_string(kv)) + (mode == ScaleMode::kPerToken ? " per-token" : " per-channel"));
      PagedCaseSpec s = dspec(kv == DType::kInt8 ? HPath::kFusedInt8 : HPath::kFusedBf16, {1, 1, 1, 1},
                                  {70, 300, 37, 1000}, 141);
      s.head_dim = 128;
      s.num_qo_heads = 8;
      s.kv_dtype = kv;
      s.k_scale_mode = mode;
      s.v_scale_mode = mode;
      PagedCase c = make_paged_case(s);
      c.block_tables.set({1, 4}, -1);         // sequence 1, keys 64..79
      c.block_tables.set({1, 9}, 1 << 20);    // keys 144..159
      c.block_tables.set({3, 30}, INT32_MAX);  // sequence 3, keys 480..495
      // Sequence 2 (kv_len 37): rows 37..47 of its third page, every kv head.
      const int32_t last = c.block_ids[2][2];
      for (int64_t pos = 37 % 16; pos < 16; ++pos)
        for (int64_t h = 0; h < s.num_kv_heads; ++h)
          for (int64_t d = 0; d < s.head_dim; ++d) {
            if (kv == DType::kInt8) {
              if (mode == ScaleMode::kPerToken) {
                c.k_scale.store(token_scale_offset(c.k_scale.view(), s.layout, last, h, pos), kNaN);
                c.v_scale.store(token_scale_offset(c.v_scale.view(), s.layout, last, h, pos), kNaN);
              }
            } else {
              c.k_cache.store(cache_offset(c.k_cache.view(), s.layout, last, h, pos, d), kNaN);
              c.v_cache.store(cache_offset(c.v_cache.view(), s.layout, last, h, pos, d), kNaN);
            }
          }
      const RefOutput ref = decode_oracle(c);
      for (int splits : kDecodeSplits) {
        SCOPED_TRACE("num_splits " + std::to_string(splits));
        DecodeArgs host = c.decode_args();
        host.num_splits = splits;
        const DecodeRun r = run_decode(c, host, false);
        ASSERT_FALSE(r.threw) << r.what;
        const ErrorStats st = compare_decode_output(r.out.view(), ref);
        EXPECT_TRUE(st.ok(kTol)) << st.describe();
      }
    }
  }
}

// ---- decode: hostile kv_lens (check=false: clamped to [0, table width * page_size]) ----

TEST_P(HostileDecode, NegativeKvLenIsAnEmptyRow) {
  PagedCase c = make_paged_case(dspec(HPath::kFusedInt8, {1, 1, 1}, {30, 50, 300}, 136));
  c.kv_lens.ptr<int32_t>()[0] = -5;
  c.kv_lens.ptr<int32_t>()[1] = INT32_MIN;
  const DecodeArgs host = c.decode_args();
  const DecodeRun refused = run_decode(c, host, true);
  EXPECT_TRUE(refused.threw);
  EXPECT_EQ(refused.arg, "kv_lens") << refused.what;
  EXPECT_EQ(count_not_poison(refused.out), 0);
  PagedCase clamped = c;
  clamped.kv_lens.ptr<int32_t>()[0] = 0;
  clamped.kv_lens.ptr<int32_t>()[1] = 0;
  for (int splits : kDecodeSplits) {
    SCOPED_TRACE("num_splits " + std::to_string(splits));
    DecodeArgs a = host, ca = clamped.decode_args();
    a.num_splits = ca.num_splits = splits;
    const DecodeRun r = run_decode(c, a, false, true);
    ASSERT_FALSE(r.threw) << r.what;
    const RefOutput ref = cpu_decode(ca, true);
    const ErrorStats st = compare_decode_output(r.out.view(), ref);
    EXPECT_TRUE(st.ok(kTol)) << st.describe();
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(r.lse.at({b, h}), -kInf) << "sequence " << b;
  }
}

TEST_P(HostileDecode, KvLenPastTheTableUsesTheClampedPositionUnderWindows) {
  // kv_lens[0] = INT32_MAX over a 4-page table: the query sits at position 63 (the clamped length
  // minus one), which is what a local window counts from. Before the fix the CUDA-core kernel
  // counted from INT32_MAX - 1 and saw only the global window.
  PagedCase c = make_paged_case(dspec(HPath::kFusedInt8, {1, 1}, {64, 33}, 137));
  ASSERT_EQ(c.max_blocks_per_seq, 4);
  PagedCase clamped = c;
  c.kv_lens.ptr<int32_t>()[0] = INT32_MAX;
  for (const auto& [lw, gw] : std::vector<std::pair<int, int>>{{10, 0}, {10, 3}, {0, 0}, {40, 1}})
    for (int splits : {0, 1, 256}) {
      SCOPED_TRACE("local " + std::to_string(lw) + " global " + std::to_string(gw) + ", num_splits " + std::to_string(splits));
      DecodeArgs host = c.decode_args(lw, gw), ref_host = clamped.decode_args(lw, gw);
      host.num_splits = ref_host.num_splits = splits;
      const auto t0 = std::chrono::steady_clock::now();
      const DecodeRun r = run_decode(c, host, false, true);
      EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
      ASSERT_FALSE(r.threw) << r.what;
      const RefOutput ref = cpu_decode(ref_host, true);
      const ErrorStats st = compare_decode_output(r.out.view(), ref);
      EXPECT_TRUE(st.ok(kTol)) << st.describe();
      const LseStats ls = compare_lse(r.lse.view(), ref, c.batch_size);
      EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
      EXPECT_LE(ls.max_abs, 2e-2) << ls.describe();
    }
}

TEST_P(HostileDecode, HugeWindowsAreNoWindow) {
  PagedCase c = make_paged_case(dspec(HPath::kFusedInt8, {1, 1}, {500, 33}, 123));
  for (int lw : {INT_MAX, 0})
    for (int gw : {0, INT_MAX}) {
      if (lw == 0 && gw == 0) continue;
      const DecodeArgs host = c.decode_args(lw, gw);
      const RefOutput ref = cpu_decode(host, true);
      const DecodeRun r = run_decode(c, host, false);
      ASSERT_FALSE(r.threw) << r.what;
      const ErrorStats st = compare_decode_output(r.out.view(), ref);
      EXPECT_TRUE(st.ok(kTol)) << "local " << lw << " global " << gw << ": " << st.describe();
    }
}

// ---- append ----


struct AppendRun {
  bool threw = false;
  std::string arg, what;
  HostTensor k_cache, v_cache;
};

AppendRun run_append(const AppendSetup& s, bool check) {
  DeviceTensor k_new(s.k_new), v_new(s.v_new), slots(s.slots), kc(s.k_cache), vc(s.v_cache), ks(s.k_scale),
      vs(s.v_scale);
  AppendArgs a;
  a.k_new = k_new.view();
  a.v_new = v_new.view();
  a.slot_mapping = slots.view();
  a.kv.k_cache = kc.view();
  a.kv.v_cache = vc.view();
  a.kv.k_scale = ks.view();
  a.kv.v_scale = vs.view();
  a.check = check;
  AppendRun r;
  try {
    append(a);
  } catch (const Error& e) {
    r.threw = true;
    r.arg = e.argument();
    r.what = e.what();
  }
  if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error("kernel fault in append");
  r.k_cache = s.k_cache;
  r.v_cache = s.v_cache;
  kc.download(r.k_cache);
  vc.download(r.v_cache);
  return r;
}

void expect_append_refused(const AppendSetup& s, const std::string& arg) {
  const AppendRun r = run_append(s, true);
  EXPECT_TRUE(r.threw) << "check=true must refuse the call";
  EXPECT_EQ(r.arg, arg) << r.what;
  EXPECT_TRUE(same_bytes(r.k_cache, s.k_cache)) << "k_cache written although the call was refused";
  EXPECT_TRUE(same_bytes(r.v_cache, s.v_cache)) << "v_cache written although the call was refused";
}

TEST(HostileAppend, SlotPastTheCacheIsSkipped) {
  AppendSetup s = append_setup({3, 24, 1 << 30, 5});  // 24 slots
  expect_append_refused(s, "slot_mapping");
  // check=false: the out-of-range tokens are skipped; the others match the CPU backend's append.
  const AppendRun r = run_append(s, false);
  ASSERT_FALSE(r.threw) << r.what;
  AppendSetup cpu = append_setup({3, -1, -1, 5});
  append(cpu.host_args());
  EXPECT_TRUE(same_bytes(r.k_cache, cpu.k_cache));
  EXPECT_TRUE(same_bytes(r.v_cache, cpu.v_cache));
}

TEST(HostileAppend, DuplicateSlotsRefusedWithCheck) {
  AppendSetup s = append_setup({3, 9, 3});
  expect_append_refused(s, "slot_mapping");
}

TEST(HostileAppend, NonFiniteTokenRefusedWithCheck) {
  AppendSetup s = append_setup({3, 9, -1});
  s.v_new.set({1, 1, 30}, kInf);
  expect_append_refused(s, "v_new");
  s.v_new.set({1, 1, 30}, 0.5);
  s.k_new.set({0, 0, 0}, kNaN);
  expect_append_refused(s, "k_new");
  // A padding token (slot -1) is never read: garbage there is fine.
  s.k_new.set({0, 0, 0}, 0.5);
  s.k_new.set({2, 0, 0}, kNaN);
  const AppendRun r = run_append(s, true);
  EXPECT_FALSE(r.threw) << r.what;
}

TEST(HostileAppend, BadPerChannelScaleRefusedWithCheck) {
  for (double bad : {kNaN, 0.0, -0.01, kInf}) {
    AppendSetup s = append_setup({3, 9});
    s.k_scale.set({1, 7}, bad);
    SCOPED_TRACE(bad);
    expect_append_refused(s, "k_scale");
  }
}

// ---- caches of 2^31 blocks or more (int32 narrowing in append / dequant / generic addressing) ----

TEST(HostileHugeCache, AppendDequantAndGenericPrefillPast2p31Blocks) {
  // [2^31 + 64, 1, 1, 16] int8 K and V: 2 x 34 GiB would not fit, so head_dim 1: 2 x 2 GiB.
  const int64_t blocks = (int64_t{1} << 31) + 64;
  size_t free_b = 0, total_b = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
  if (free_b < size_t{6} << 30) GTEST_SKIP() << "needs 6 GiB of free device memory, has " << (free_b >> 20) << " MiB";
  DeviceTensor kc = DeviceTensor::bytes(static_cast<size_t>(blocks)), vc = DeviceTensor::bytes(static_cast<size_t>(blocks));
  kc.fill_bytes(0);
  vc.fill_bytes(0);
  const TensorView kv_k = TensorView::make(kc.data(), DType::kInt8, {blocks, 1, 1, 1}, Device::kCUDA, 0);
  const TensorView kv_v = TensorView::make(vc.data(), DType::kInt8, {blocks, 1, 1, 1}, Device::kCUDA, 0);
  HostTensor scale(DType::kFloat32, {1, 1});
  scale.store(0, 0.5);
  DeviceTensor ks(scale), vs(scale);
  // append: token 0 to slot 2^31 + 5 (block 2^31 + 5), token 1 to slot 2^31 - 1.
  HostTensor k_new(DType::kFloat32, {2, 1, 1}), slots(DType::kInt64, {2});
  k_new.store(0, 10.0);  // -> 20
  k_new.store(1, -3.0);  // -> -6
  slots.store(0, static_cast<double>((int64_t{1} << 31) + 5));
  slots.store(1, static_cast<double>((int64_t{1} << 31) - 1));
  DeviceTensor dk(k_new), dslots(slots);
  AppendArgs a;
  a.k_new = dk.view();
  a.v_new = dk.view();
  a.slot_mapping = dslots.view();
  a.kv.k_cache = kv_k;
  a.kv.v_cache = kv_v;
  a.kv.k_scale = ks.view();
  a.kv.v_scale = vs.view();
  a.check = true;
  ASSERT_NO_THROW(append(a));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  int8_t got[2] = {0, 0};
  ASSERT_EQ(cudaMemcpy(&got[0], static_cast<int8_t*>(kc.data()) + (int64_t{1} << 31) + 5, 1, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&got[1], static_cast<int8_t*>(vc.data()) + (int64_t{1} << 31) - 1, 1, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got[0], 20) << "slot 2^31 + 5 (block id past int32)";
  EXPECT_EQ(got[1], -6) << "slot 2^31 - 1";

  // dequantize_blocks, compact: block 2^31 - 1 (the largest int32 id) must be read.
  HostTensor table = make_int32({INT32_MAX}), kv_lens = make_int32({1});
  table = make_int32_2d({{INT32_MAX}}, 1, -1);
  DeviceTensor dtable(table), dkv(kv_lens);
  DeviceTensor dq_out = DeviceTensor::bytes(2), dq_table = DeviceTensor::bytes(4);
  dq_out.fill_bytes(0);
  DequantArgs d;
  d.cache = kv_v;
  d.scale = vs.view();
  d.block_tables = dtable.view();
  d.kv_lens = dkv.view();
  d.out = TensorView::make(dq_out.data(), DType::kBFloat16, {1, 1, 1, 1}, Device::kCUDA, 0);
  d.out_block_tables = TensorView::make(dq_table.data(), DType::kInt32, {1, 1}, Device::kCUDA, 0);
  d.check = true;
  ASSERT_NO_THROW(dequantize_blocks(d));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  uint16_t bits = 0;
  int32_t id = -2;
  ASSERT_EQ(cudaMemcpy(&bits, dq_out.data(), 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&id, dq_table.data(), 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(id, 0) << "the block is valid: compact id 0";
  EXPECT_EQ(bits, 0xc040) << "bf16 -3.0 = -6 * 0.5";

  // generic prefill (head_dim 1): one query over key 0 in block 2^31 - 1.
  HostTensor q(DType::kBFloat16, {1, 1, 1}), cu = make_int32({0, 1});
  q.store(0, 1.0);
  DeviceTensor dq(q), dcu(cu), dout = DeviceTensor::bytes(2);
  PrefillArgs p;
  p.q = dq.view();
  p.kv.k_cache = kv_k;
  p.kv.v_cache = kv_v;
  p.kv.k_scale = ks.view();
  p.kv.v_scale = vs.view();
  p.block_tables = dtable.view();
  p.cu_q_lens = dcu.view();
  p.kv_lens = dkv.view();
  p.out = TensorView::make(dout.data(), DType::kBFloat16, {1, 1, 1}, Device::kCUDA, 0);
  p.path = PrefillPath::kGeneric;
  ASSERT_NO_THROW(paged_prefill(p));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&bits, dout.data(), 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(bits, 0xc040) << "the only key's value, -3.0 (an empty row would give 0)";
}

// ---- dequantize_blocks ----

TEST(HostileDequant, InvalidSourceBlockGivesMinusOneAndWritesNothing) {
  PagedCase c = make_paged_case(base_spec(HPath::kFusedInt8, {1, 1}, {40, 20}, 124));
  c.block_tables.set({0, 1}, -4);
  c.block_tables.set({1, 0}, static_cast<int32_t>(c.num_blocks + 2));
  DeviceTensor cache(c.k_cache), scale(c.k_scale), table(c.block_tables), kv(c.kv_lens);
  const int64_t refs = 3 + 2;
  HostTensor out(DType::kBFloat16, {refs, c.spec.num_kv_heads, c.spec.page_size, c.spec.head_dim});
  out.poison();
  HostTensor out_table(DType::kInt32, {2, c.max_blocks_per_seq});
  out_table.poison();
  for (bool check : {true, false}) {
    DeviceTensor dout(out), dtab(out_table);
    DequantArgs d;
    d.cache = cache.view();
    d.scale = scale.view();
    d.block_tables = table.view();
    d.kv_lens = kv.view();
    d.out = dout.view();
    d.out_block_tables = dtab.view();
    d.check = check;
    bool threw = false;
    std::string arg;
    try {
      dequantize_blocks(d);
    } catch (const Error& e) {
      threw = true;
      arg = e.argument();
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    HostTensor got = out, got_table = out_table;
    dout.download(got);
    dtab.download(got_table);
    if (check) {
      EXPECT_TRUE(threw);
      EXPECT_EQ(arg, "block_tables");
      EXPECT_EQ(count_not_poison(got), 0);
      EXPECT_EQ(count_not_poison(got_table), 0);
      continue;
    }
    ASSERT_FALSE(threw);
    // Row-major references: (0,0) (0,1)* (0,2) (1,0)* (1,1); * = invalid source: -1, block not written.
    const int32_t expect_ids[2][2] = {{0, -1}, {-1, 4}};
    for (int b = 0; b < 2; ++b)
      for (int i = 0; i < 2; ++i) EXPECT_EQ(got_table.at({b, i}), expect_ids[b][i]) << "(" << b << ", " << i << ")";
    EXPECT_EQ(got_table.at({0, 2}), 2);
    for (int64_t e = 0; e < c.spec.num_kv_heads * c.spec.page_size * c.spec.head_dim; ++e) {
      ASSERT_TRUE(got.is_poison(1 * (out.storage_elements() / refs) + e)) << "out block 1 (invalid source) written";
      ASSERT_TRUE(got.is_poison(3 * (out.storage_elements() / refs) + e)) << "out block 3 (invalid source) written";
      ASSERT_FALSE(got.is_poison(0 * (out.storage_elements() / refs) + e)) << "out block 0 not written";
    }
  }
}

TEST(HostileDequant, KvLenPastTheTableIsClamped) {
  PagedCase c = make_paged_case(base_spec(HPath::kFusedInt8, {1}, {32}, 125));
  c.kv_lens.ptr<int32_t>()[0] = 1 << 30;
  DeviceTensor cache(c.k_cache), scale(c.k_scale), table(c.block_tables), kv(c.kv_lens);
  HostTensor out(DType::kBFloat16, {c.num_blocks, c.spec.num_kv_heads, c.spec.page_size, c.spec.head_dim});
  out.poison();
  for (bool check : {true, false}) {
    DeviceTensor dout(out);
    DequantArgs d;
    d.cache = cache.view();
    d.scale = scale.view();
    d.block_tables = table.view();
    d.kv_lens = kv.view();
    d.out = dout.view();
    d.check = check;
    bool threw = false;
    try {
      dequantize_blocks(d);
    } catch (const Error& e) {
      threw = true;
      EXPECT_EQ(e.argument(), "kv_lens");
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(threw, check);
    HostTensor got = out;
    dout.download(got);
    if (check) EXPECT_EQ(count_not_poison(got), 0);
    else EXPECT_EQ(count_not_poison(got), 2 * c.spec.num_kv_heads * c.spec.page_size * c.spec.head_dim)
        << "exactly the table's 2 blocks are written";
  }
}

}  // namespace
}  // namespace kvq::test
