// tests/api/data_check_wording_test.cpp — one wording for bad metadata values. The checks of what
// lengths, block tables, cu_q_lens and slots hold live once, in src/core/validate.h; the dispatcher,
// the CPU backend (its own re-checks) and the CUDA backend (over host copies, tests/gpu) all call
// them. Each test builds the message the shared function gives for a bad input and asserts that the
// public entry point and the CPU backend called directly throw exactly it, with nothing written.
#include <functional>
#include <string>

#include "src/core/backend.h"
#include "src/core/validate.h"
#include "tests/api/api_fixture.h"

namespace kvq_api_test {
namespace {

namespace detail = kvq::detail;

// what() of the kvq::Error `f` throws, or a note that it threw none.
std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kvq::Error& e) {
    return e.what();
  }
  return "(no kvq::Error thrown)";
}

class DataCheckWording : public ApiFixture {
 protected:
  // The shared function's message for the fixture's current kv_lens and block_tables.
  std::string lens_and_table_message(const char* func) const {
    return what_of([&] {
      detail::check_lens_and_table_values(func, kv_lens.data(), kBatch, block_tables.data(),
                                          kMaxBlocks, kMaxBlocks, kPage, kBlocks);
    });
  }

  // The entry point throws `expected` under check=true and check=false (on CPU tensors the bounds
  // checks always run) and writes nothing; the CPU backend, handed the validated call directly,
  // throws it too.
  void expect_prefill_says(const std::string& expected) {
    for (bool check : {true, false}) {
      SCOPED_TRACE(check ? "check=true" : "check=false");
      kvq::PrefillArgs a = prefill;
      a.check = check;
      const std::vector<uint8_t> before = snapshot();
      EXPECT_EQ(what_of([&] { kvq::paged_prefill(a); }), expected);
      EXPECT_TRUE(snapshot() == before) << "a refused call wrote";
    }
    const detail::AttnProblem p = detail::validate_prefill(prefill, "paged_prefill");
    EXPECT_EQ(what_of([&] { kvq::cpu::paged_prefill(prefill, p); }), expected) << "the CPU backend's re-check";
  }
  void expect_decode_says(const std::string& expected) {
    for (bool check : {true, false}) {
      SCOPED_TRACE(check ? "check=true" : "check=false");
      kvq::DecodeArgs a = decode;
      a.check = check;
      const std::vector<uint8_t> before = snapshot();
      EXPECT_EQ(what_of([&] { kvq::paged_decode(a); }), expected);
      EXPECT_TRUE(snapshot() == before) << "a refused call wrote";
    }
    const detail::AttnProblem p = detail::validate_decode(decode, "paged_decode");
    EXPECT_EQ(what_of([&] { kvq::cpu::paged_decode(decode, p); }), expected) << "the CPU backend's re-check";
  }
  void expect_dequant_says(const kvq::DequantArgs& base, const std::string& expected) {
    for (bool check : {true, false}) {
      SCOPED_TRACE(check ? "check=true" : "check=false");
      kvq::DequantArgs a = base;
      a.check = check;
      const std::vector<uint8_t> before = snapshot();
      EXPECT_EQ(what_of([&] { kvq::dequantize_blocks(a); }), expected);
      EXPECT_TRUE(snapshot() == before) << "a refused call wrote";
    }
    const detail::DequantProblem dp = detail::validate_dequant(base, "dequantize_blocks");
    const detail::CacheInfo& c = dp.cache;
    EXPECT_EQ(what_of([&] {
                kvq::cpu::dequantize_blocks(base, c.num_kv_heads, c.page_size, c.head_dim, c.k_mode);
              }),
              expected)
        << "the CPU backend's re-check";
  }
  kvq::DequantArgs compact_dequant() {
    kvq::DequantArgs a = dequant;
    a.out = kvq::TensorView::make(dq_out_compact.data(), kvq::DType::kBFloat16, {4, kHkv, kPage, kD});
    a.out_block_tables =
        kvq::TensorView::make(out_block_tables.data(), kvq::DType::kInt32, {kBatch, kMaxBlocks});
    return a;
  }
};

TEST_F(DataCheckWording, NegativeKvLen) {
  kv_lens[1] = -1;
  // The documented wording, once; every other expectation below is the shared function's.
  EXPECT_EQ(lens_and_table_message("paged_prefill"),
            "paged_prefill: kv_lens: expected kv_lens[1] >= 0, got -1");
  expect_prefill_says(lens_and_table_message("paged_prefill"));
  expect_decode_says(lens_and_table_message("paged_decode"));
  expect_dequant_says(dequant, lens_and_table_message("dequantize_blocks"));
  expect_dequant_says(compact_dequant(), lens_and_table_message("dequantize_blocks"));
}

TEST_F(DataCheckWording, BlockIdPastNumBlocks) {
  block_tables[3] = kBlocks;  // sequence 1 (kv_len 8), page 0
  EXPECT_EQ(lens_and_table_message("paged_prefill"),
            "paged_prefill: block_tables: expected block ids in [0, 6) for the 2 blocks sequence 1 "
            "reads, got block_tables[1][0] = 6");
  expect_prefill_says(lens_and_table_message("paged_prefill"));
  expect_decode_says(lens_and_table_message("paged_decode"));
  expect_dequant_says(dequant, lens_and_table_message("dequantize_blocks"));
  expect_dequant_says(compact_dequant(), lens_and_table_message("dequantize_blocks"));
}

TEST_F(DataCheckWording, KvLenPastTheTable) {
  kv_lens[0] = 13;  // 3 blocks of 4
  EXPECT_EQ(lens_and_table_message("paged_prefill"),
            "paged_prefill: kv_lens: expected kv_lens[0] <= max_blocks_per_seq * page_size = 3 * 4 = "
            "12, got 13");
  expect_prefill_says(lens_and_table_message("paged_prefill"));
  expect_decode_says(lens_and_table_message("paged_decode"));
  expect_dequant_says(dequant, lens_and_table_message("dequantize_blocks"));
}

TEST_F(DataCheckWording, CuQLensDecreasing) {
  cu_q_lens = {0, 4, 3};
  const std::string expected = what_of([&] {
    detail::check_cu_q_lens_values("paged_prefill", "cu_q_lens", cu_q_lens.data(), kBatch, kTotalQ);
  });
  EXPECT_EQ(expected,
            "paged_prefill: cu_q_lens: expected non-decreasing values, got cu_q_lens[2] = 3 < "
            "cu_q_lens[1] = 4");
  expect_prefill_says(expected);
}

TEST_F(DataCheckWording, SlotPastTheCache) {
  slots[1] = kBlocks * kPage;  // 24 slots
  const std::string expected = what_of([&] {
    detail::check_slot_values("append", slots.data(), kTokens, kBlocks * kPage, /*distinct=*/false);
  });
  EXPECT_EQ(expected,
            "append: slot_mapping: expected slots < num_blocks * page_size = 24 (or < 0 to skip a "
            "token), got slot_mapping[1] = 24");
  for (bool check : {true, false}) {
    SCOPED_TRACE(check ? "check=true" : "check=false");
    kvq::AppendArgs a = append;
    a.check = check;
    const std::vector<uint8_t> before = snapshot();
    EXPECT_EQ(what_of([&] { kvq::append(a); }), expected);
    EXPECT_TRUE(snapshot() == before) << "a refused call wrote";
  }
  const detail::AppendProblem ap = detail::validate_append(append, "append");
  const detail::CacheInfo& c = ap.cache;
  EXPECT_EQ(what_of([&] {
              kvq::cpu::append(append, ap.num_tokens, c.num_kv_heads, c.head_dim, c.page_size,
                               c.num_blocks, c.k_mode, c.v_mode);
            }),
            expected)
      << "the CPU backend's re-check";
}

// plan_prefill's host lengths read as the call's own, under their names.
TEST_F(DataCheckWording, PlanPrefillHostLengths) {
  const int32_t kvl[] = {5, -1};
  EXPECT_EQ(what_of([&] { kvq::plan_prefill(prefill, cu_q_lens.data(), kvl); }),
            "plan_prefill: kv_lens_host: expected kv_lens_host[1] >= 0, got -1");
  const int32_t cu[] = {0, 4, 3};
  EXPECT_EQ(what_of([&] { kvq::plan_prefill(prefill, cu, kv_lens.data()); }),
            "plan_prefill: cu_q_lens_host: expected non-decreasing values, got cu_q_lens_host[2] = 3 "
            "< cu_q_lens_host[1] = 4");
}

}  // namespace
}  // namespace kvq_api_test
