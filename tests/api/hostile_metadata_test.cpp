// tests/api/hostile_metadata_test.cpp — hostile metadata on the CPU backend, one test
// per case, each with check=true and check=false. docs/api.md "Hostile metadata" is the contract:
// on CPU tensors the metadata is host memory, so every check that guards memory (block ids, kv_len
// against the table, cu_q_lens, slots) runs whatever `check` says: the call is refused with a
// kvq::Error naming the argument and nothing is written. The cases that cannot send an access out
// of bounds (causal q_len > kv_len, huge windows, a huge softmax_scale) run under check=false with
// the documented result; check=true refuses the first of them.
#include <climits>
#include <cmath>
#include <limits>

#include "tests/api/api_fixture.h"
#include "tests/common/compare.h"
#include "tests/common/reference.h"

namespace kvq_api_test {
namespace {

class HostileCpu : public ApiFixture {
 protected:
  // Both check modes refuse `a` naming `arg` (message containing `expect`), nothing written.
  void expect_prefill_refused_both(kvq::PrefillArgs a, const std::string& arg, const std::string& expect) {
    for (bool check : {true, false}) {
      SCOPED_TRACE(check ? "check=true" : "check=false");
      a.check = check;
      expect_prefill_rejected(a, kValue, arg, expect);
    }
  }
  void expect_decode_refused_both(kvq::DecodeArgs a, const std::string& arg, const std::string& expect) {
    for (bool check : {true, false}) {
      SCOPED_TRACE(check ? "check=true" : "check=false");
      a.check = check;
      expect_decode_rejected(a, kValue, arg, expect);
    }
  }
  void expect_dequant_refused_both(kvq::DequantArgs a, const std::string& arg, const std::string& expect) {
    for (bool check : {true, false}) {
      SCOPED_TRACE(check ? "check=true" : "check=false");
      a.check = check;
      expect_dequant_rejected(a, kValue, arg, expect);
    }
  }
  std::vector<uint16_t> run_prefill(kvq::PrefillArgs a) {
    out.assign(out.size(), 0xABCD);
    kvq::paged_prefill(a);
    return out;
  }
  std::vector<uint16_t> run_decode(kvq::DecodeArgs a) {
    out_dec.assign(out_dec.size(), 0xABCD);
    kvq::paged_decode(a);
    return out_dec;
  }
};

// ---- paged_prefill ----

TEST_F(HostileCpu, PrefillNegativeBlockIdInUsedRange) {
  block_tables[1] = -2;  // sequence 0 (kv_len 5, page 4) reads pages 0 and 1
  expect_prefill_refused_both(prefill, "block_tables", "got block_tables[0][1] = -2");
}

TEST_F(HostileCpu, PrefillBlockIdPastNumBlocksInUsedRange) {
  block_tables[3] = kBlocks;  // sequence 1, page 0
  expect_prefill_refused_both(prefill, "block_tables", "got block_tables[1][0] = 6");
}

TEST_F(HostileCpu, PrefillKvLenPastTable) {
  kv_lens[1] = 1 << 30;
  expect_prefill_refused_both(prefill, "kv_lens", "max_blocks_per_seq * page_size = 3 * 4 = 12");
}

TEST_F(HostileCpu, PrefillCuQLensDecreasing) {
  cu_q_lens = {0, 4, 3};
  expect_prefill_refused_both(prefill, "cu_q_lens", "non-decreasing");
}

TEST_F(HostileCpu, PrefillCuQLensNotStartingAtZero) {
  cu_q_lens = {1, 3, 5};
  expect_prefill_refused_both(prefill, "cu_q_lens", "cu_q_lens[0] = 0, got 1");
}

TEST_F(HostileCpu, PrefillCuQLensPastTotalQ) {
  cu_q_lens = {0, 3, 7};  // q has 6 rows
  expect_prefill_refused_both(prefill, "cu_q_lens", "<= total_q = 6");
}

TEST_F(HostileCpu, PrefillCausalQLenAboveKvLen) {
  kv_lens = {2, 8};  // sequence 0: q_len 3 > kv_len 2
  kvq::PrefillArgs a = prefill;
  a.check = true;
  expect_prefill_rejected(a, kValue, "kv_lens", "kv_lens[0] >= q_len = 3");
  // check=false: query i sits at kv_len - q_len + i; position -1 sees no key (an empty row:
  // zeros, lse -inf); the others match the reference.
  a.check = false;
  ASSERT_NO_THROW(kvq::paged_prefill(a));
  for (int64_t h = 0; h < kHq; ++h) {
    for (int64_t d = 0; d < kD; ++d) EXPECT_EQ(out[h * kD + d], 0) << "row 0 head " << h;
    EXPECT_EQ(lse[h], -std::numeric_limits<float>::infinity()) << "row 0 head " << h;
  }
  const kvq::test::RefOutput ref = kvq::test::reference_prefill(a);
  const kvq::test::ErrorStats st = kvq::test::compare_output(a.out, ref, cu_q_lens);
  EXPECT_TRUE(st.ok(1e-2)) << st.describe();
}

TEST_F(HostileCpu, PrefillHugeLocalWindowIsNoWindow) {
  kvq::PrefillArgs a = prefill;
  const std::vector<uint16_t> none = run_prefill(a);
  for (bool check : {true, false}) {
    a.check = check;
    a.mask_options.local_window = INT_MAX;
    EXPECT_EQ(run_prefill(a), none) << (check ? "check=true" : "check=false");
    a.mask_options.global_window = INT_MAX;
    EXPECT_EQ(run_prefill(a), none) << (check ? "check=true" : "check=false") << ", global_window INT_MAX too";
  }
}

TEST_F(HostileCpu, PrefillHugeGlobalWindowSeesEverything) {
  kvq::PrefillArgs a = prefill;
  const std::vector<uint16_t> none = run_prefill(a);
  for (bool check : {true, false}) {
    a.check = check;
    a.mask_options.local_window = 1;
    a.mask_options.global_window = INT_MAX;
    EXPECT_EQ(run_prefill(a), none) << (check ? "check=true" : "check=false");
  }
}

TEST_F(HostileCpu, PrefillHugeSoftmaxScaleIsExactAndFinite) {
  // 1e30 * scores (|score| ~ 1e-2..1) stays finite in fp32: attention collapses on each row's
  // best key, exactly as the formula says; no NaN, no crash.
  kvq::PrefillArgs a = prefill;
  a.softmax_scale = 1e30f;
  for (bool check : {true, false}) {
    a.check = check;
    ASSERT_NO_THROW(kvq::paged_prefill(a));
    const kvq::test::RefOutput ref = kvq::test::reference_prefill(a);
    const kvq::test::ErrorStats st = kvq::test::compare_output(a.out, ref, cu_q_lens);
    EXPECT_TRUE(st.ok(1e-2)) << st.describe();
    for (int64_t i = 0; i < cu_q_lens[kBatch] * kHq; ++i) EXPECT_TRUE(std::isfinite(lse[i])) << i;
  }
}

// ---- paged_decode ----

TEST_F(HostileCpu, DecodeNegativeBlockIdInUsedRange) {
  block_tables[4] = -1;  // sequence 1 (kv_len 8) reads pages 0 and 1
  expect_decode_refused_both(decode, "block_tables", "got block_tables[1][1] = -1");
}

TEST_F(HostileCpu, DecodeBlockIdPastNumBlocksInUsedRange) {
  block_tables[0] = 1000;
  expect_decode_refused_both(decode, "block_tables", "got block_tables[0][0] = 1000");
}

TEST_F(HostileCpu, DecodeKvLenPastTable) {
  kv_lens[0] = INT_MAX;
  expect_decode_refused_both(decode, "kv_lens", "<= max_blocks_per_seq * page_size");
}

TEST_F(HostileCpu, DecodeHugeWindows) {
  kvq::DecodeArgs a = decode;
  const std::vector<uint16_t> none = run_decode(a);
  for (bool check : {true, false}) {
    a.check = check;
    a.local_window = INT_MAX;
    a.global_window = 0;
    EXPECT_EQ(run_decode(a), none) << "local_window INT_MAX";
    a.local_window = 0;
    a.global_window = INT_MAX;
    EXPECT_EQ(run_decode(a), none) << "global_window INT_MAX";
  }
}

// ---- dequantize_blocks ----

TEST_F(HostileCpu, DequantNegativeBlockIdInUsedRange) {
  block_tables[0] = -7;
  expect_dequant_refused_both(dequant, "block_tables", "got block_tables[0][0] = -7");
}

TEST_F(HostileCpu, DequantBlockIdPastNumBlocksInUsedRange) {
  block_tables[4] = kBlocks + 1;
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make(dq_out_compact.data(), DType::kBFloat16, {4, kHkv, kPage, kD});
  a.out_block_tables = TensorView::make(out_block_tables.data(), DType::kInt32, {kBatch, kMaxBlocks});
  expect_dequant_refused_both(a, "block_tables", "got block_tables[1][1] = 7");
}

TEST_F(HostileCpu, DequantKvLenPastTable) {
  kv_lens[1] = 13;
  expect_dequant_refused_both(dequant, "kv_lens", "<= max_blocks_per_seq * page_size = 3 * 4 = 12");
}

// ---- append ----

TEST_F(HostileCpu, AppendSlotPastTheCache) {
  slots = {0, kBlocks * kPage, -1};
  for (bool check : {true, false}) {
    SCOPED_TRACE(check ? "check=true" : "check=false");
    kvq::AppendArgs a = append;
    a.check = check;
    expect_append_rejected(a, kValue, "slot_mapping", "slots < num_blocks * page_size = 24");
  }
}

TEST_F(HostileCpu, AppendHugeNegativeSlotIsPadding) {
  slots = {INT64_MIN, 5, -1};
  kvq::AppendArgs a = append;
  a.check = true;
  const std::vector<int8_t> k_before = k_cache;
  ASSERT_NO_THROW(kvq::append(a));
  int64_t changed = 0;
  for (size_t i = 0; i < k_cache.size(); ++i) changed += k_cache[i] != k_before[i];
  // Only slot 5 (block 1, position 1) may change: 2 heads x 16 dims.
  EXPECT_LE(changed, 2 * kD);
  for (size_t i = 0; i < k_cache.size(); ++i) {
    const int64_t blk = static_cast<int64_t>(i) / (kHkv * kPage * kD), pos = static_cast<int64_t>(i) / kD % kPage;
    if (!(blk == 1 && pos == 1)) ASSERT_EQ(k_cache[i], k_before[i]) << "element " << i;
  }
}

}  // namespace
}  // namespace kvq_api_test
