// tests/gpu/data_check_wording_test.cpp — check=true on CUDA tensors refuses bad metadata values
// with exactly the CPU backend's message. Both backends run src/core's device-data checks
// (src/core/validate.h), the CUDA backend over host copies of the device tensors, so a negative
// kv_len, a block id past num_blocks, a kv_len past the table, a malformed cu_q_lens, a compact
// dequant output too small, a slot past the cache, duplicate slots and a bad per-channel scale read
// the same on either device. Each case runs the call on the host tensors (CPU backend, check=true)
// and on device copies of them (CUDA backend, check=true), compares Error::what(), and checks that
// the refused CUDA call wrote nothing.
// Run: kvq_gpu_tests --gtest_filter='DataCheckWording*'
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "tests/gpu/append_setup.h"
#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

// What a call threw: the kvq::Error's argument and what(), or threw = false.
struct Refusal {
  bool threw = false;
  std::string arg, what;
};

Refusal refusal_of(const std::function<void()>& f) {
  Refusal r;
  try {
    f();
  } catch (const Error& e) {
    r.threw = true;
    r.arg = e.argument();
    r.what = e.what();
  }
  return r;
}

// The CPU backend refuses naming `arg`; the CUDA backend refuses with the same what().
void expect_same_refusal(const Refusal& cpu, const Refusal& gpu, const std::string& arg) {
  ASSERT_TRUE(cpu.threw) << "the CPU backend accepted the call";
  EXPECT_EQ(cpu.arg, arg) << cpu.what;
  ASSERT_TRUE(gpu.threw) << "check=true on CUDA tensors must refuse the call";
  EXPECT_EQ(gpu.what, cpu.what) << "CUDA and CPU backends word the same bad input alike";
}

int64_t count_not_poison(const HostTensor& t) {
  int64_t n = 0;
  for (int64_t i = 0; i < t.storage_elements(); ++i) n += !t.is_poison(i);
  return n;
}

PagedCaseSpec spec_of(std::vector<int32_t> q_lens, std::vector<int32_t> kv_lens, uint64_t seed) {
  PagedCaseSpec s;
  s.q_lens = std::move(q_lens);
  s.kv_lens = std::move(kv_lens);
  s.num_qo_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.page_size = 16;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

// ---- paged_prefill ----

// Sequences of kv_len 40 and 20 over 16-token pages (3 and 2 referenced blocks).
PagedCase prefill_case() { return make_paged_case(spec_of({5, 3}, {40, 20}, 301)); }

void expect_prefill_refusal_matches(PagedCase& c, const std::string& arg) {
  PrefillArgs host = c.prefill_args();
  host.check = true;
  c.poison_outputs();
  const Refusal cpu = refusal_of([&] { paged_prefill(host); });
  c.poison_outputs();
  DeviceCase dc(c);
  PrefillArgs a = dc.prefill_args(host);
  a.check = true;
  const PrefillPlan plan = plan_prefill(a, nullptr, nullptr);  // no host lengths: they would be checked
  DeviceTensor ws = DeviceTensor::bytes(plan.workspace_bytes);
  a.plan = &plan;
  a.workspace = {ws.data(), plan.workspace_bytes};
  const Refusal gpu = refusal_of([&] { paged_prefill(a); });
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_same_refusal(cpu, gpu, arg);
  HostTensor out = c.out, lse = c.lse;
  dc.out.download(out);
  dc.lse.download(lse);
  EXPECT_EQ(count_not_poison(out), 0) << "out written although the call was refused";
  EXPECT_EQ(count_not_poison(lse), 0) << "lse written although the call was refused";
}

TEST(DataCheckWording, PrefillNegativeKvLen) {
  PagedCase c = prefill_case();
  c.kv_lens.ptr<int32_t>()[1] = -1;
  expect_prefill_refusal_matches(c, "kv_lens");
}

TEST(DataCheckWording, PrefillBlockIdPastNumBlocks) {
  PagedCase c = prefill_case();
  c.block_tables.set({0, 1}, static_cast<double>(c.num_blocks + 3));  // sequence 0 reads pages 0..2
  expect_prefill_refusal_matches(c, "block_tables");
}

TEST(DataCheckWording, PrefillKvLenPastTheTable) {
  PagedCase c = prefill_case();
  c.kv_lens.ptr<int32_t>()[0] = static_cast<int32_t>(c.max_blocks_per_seq * c.spec.page_size + 1);
  expect_prefill_refusal_matches(c, "kv_lens");
}

TEST(DataCheckWording, PrefillCuQLensDecreasing) {
  PagedCase c = prefill_case();
  c.cu_q_lens.ptr<int32_t>()[2] = 4;  // {0, 5, 8} -> {0, 5, 4}
  expect_prefill_refusal_matches(c, "cu_q_lens");
}

// ---- paged_decode ----

void expect_decode_refusal_matches(PagedCase& c, const std::string& arg) {
  DecodeArgs host = c.decode_args();
  host.check = true;
  c.poison_outputs();
  const Refusal cpu = refusal_of([&] { paged_decode(host); });
  c.poison_outputs();
  DeviceCase dc(c);
  DecodeArgs a = dc.decode_args(host);
  a.check = true;
  const size_t bytes = decode_workspace_size(a);
  DeviceTensor ws = DeviceTensor::bytes(bytes);
  a.workspace = {ws.data(), bytes};
  const Refusal gpu = refusal_of([&] { paged_decode(a); });
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_same_refusal(cpu, gpu, arg);
  HostTensor out = c.out;
  dc.out.download(out);
  EXPECT_EQ(count_not_poison(out), 0) << "out written although the call was refused";
}

PagedCase decode_case() { return make_paged_case(spec_of({1, 1}, {40, 20}, 302)); }

TEST(DataCheckWording, DecodeNegativeKvLen) {
  PagedCase c = decode_case();
  c.kv_lens.ptr<int32_t>()[0] = -1;
  expect_decode_refusal_matches(c, "kv_lens");
}

TEST(DataCheckWording, DecodeBlockIdPastNumBlocks) {
  PagedCase c = decode_case();
  c.block_tables.set({1, 1}, static_cast<double>(c.num_blocks));  // sequence 1 reads pages 0, 1
  expect_decode_refusal_matches(c, "block_tables");
}

// ---- dequantize_blocks ----

// Dequantizes c's K cache into a poisoned output: full mode (out like the cache) or compact mode
// (out of `compact_blocks` blocks, out_block_tables like block_tables).
void expect_dequant_refusal_matches(const PagedCase& c, bool compact, int64_t compact_blocks, const std::string& arg) {
  const int64_t H = c.spec.num_kv_heads, ps = c.spec.page_size, D = c.spec.head_dim;
  HostTensor out(DType::kBFloat16, {compact ? compact_blocks : c.num_blocks, H, ps, D});
  out.poison();
  HostTensor out_table(DType::kInt32, {c.batch_size, c.max_blocks_per_seq});
  out_table.poison();
  DequantArgs host;
  host.cache = c.k_cache.view();
  host.scale = c.k_scale.view();
  host.block_tables = c.block_tables.view();
  host.kv_lens = c.kv_lens.view();
  host.layout = c.spec.layout;
  host.check = true;
  HostTensor cpu_out = out, cpu_table = out_table;
  host.out = cpu_out.view();
  if (compact) host.out_block_tables = cpu_table.view();
  const Refusal cpu = refusal_of([&] { dequantize_blocks(host); });

  DeviceTensor cache(c.k_cache), scale(c.k_scale), table(c.block_tables), kv(c.kv_lens), dout(out), dtab(out_table);
  DequantArgs a = host;
  a.cache = cache.view();
  a.scale = scale.view();
  a.block_tables = table.view();
  a.kv_lens = kv.view();
  a.out = dout.view();
  a.out_block_tables = compact ? dtab.view() : TensorView{};
  const Refusal gpu = refusal_of([&] { dequantize_blocks(a); });
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_same_refusal(cpu, gpu, arg);
  HostTensor got = out, got_table = out_table;
  dout.download(got);
  dtab.download(got_table);
  EXPECT_EQ(count_not_poison(got), 0) << "out written although the call was refused";
  EXPECT_EQ(count_not_poison(got_table), 0) << "out_block_tables written although the call was refused";
}

constexpr int64_t kReferenced = 3 + 2;  // prefill_case(): ceil(40 / 16) + ceil(20 / 16)

TEST(DataCheckWording, DequantNegativeKvLen) {
  PagedCase c = prefill_case();
  c.kv_lens.ptr<int32_t>()[1] = -1;
  for (bool compact : {false, true}) {
    SCOPED_TRACE(compact ? "compact" : "full");
    expect_dequant_refusal_matches(c, compact, kReferenced, "kv_lens");
  }
}

TEST(DataCheckWording, DequantBlockIdPastNumBlocks) {
  PagedCase c = prefill_case();
  c.block_tables.set({1, 0}, static_cast<double>(c.num_blocks));
  for (bool compact : {false, true}) {
    SCOPED_TRACE(compact ? "compact" : "full");
    expect_dequant_refusal_matches(c, compact, kReferenced, "block_tables");
  }
}

TEST(DataCheckWording, DequantKvLenPastTheTable) {
  PagedCase c = prefill_case();
  c.kv_lens.ptr<int32_t>()[0] = 1 << 30;
  expect_dequant_refusal_matches(c, false, 0, "kv_lens");
}

TEST(DataCheckWording, DequantCompactOutTooSmall) {
  PagedCase c = prefill_case();
  expect_dequant_refusal_matches(c, true, kReferenced - 1, "out");
}

// ---- append ----

void expect_append_refusal_matches(const AppendSetup& s, const std::string& arg) {
  AppendSetup cpu_copy = s;  // the CPU call would write into the host caches if it went through
  AppendArgs host = cpu_copy.host_args();
  host.check = true;
  const Refusal cpu = refusal_of([&] { append(host); });

  DeviceTensor k_new(s.k_new), v_new(s.v_new), slots(s.slots), kc(s.k_cache), vc(s.v_cache), ks(s.k_scale),
      vs(s.v_scale);
  AppendArgs a = host;
  a.k_new = k_new.view();
  a.v_new = v_new.view();
  a.slot_mapping = slots.view();
  a.kv.k_cache = kc.view();
  a.kv.v_cache = vc.view();
  a.kv.k_scale = ks.view();
  a.kv.v_scale = vs.view();
  const Refusal gpu = refusal_of([&] { append(a); });
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_same_refusal(cpu, gpu, arg);
  HostTensor got_k = s.k_cache, got_v = s.v_cache;
  kc.download(got_k);
  vc.download(got_v);
  EXPECT_TRUE(same_bytes(got_k, s.k_cache)) << "k_cache written although the call was refused";
  EXPECT_TRUE(same_bytes(got_v, s.v_cache)) << "v_cache written although the call was refused";
}

TEST(DataCheckWording, AppendSlotPastTheCache) {
  expect_append_refusal_matches(append_setup({3, 24, 5}), "slot_mapping");
}

TEST(DataCheckWording, AppendDuplicateSlots) {
  expect_append_refusal_matches(append_setup({3, 9, 3}), "slot_mapping");
}

TEST(DataCheckWording, AppendBadPerChannelScale) {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), 0.0, -0.01, std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(bad);
    AppendSetup s = append_setup({3, 9});
    s.v_scale.set({1, 7}, bad);
    expect_append_refusal_matches(s, "v_scale");
  }
}

}  // namespace
}  // namespace kvq::test
