// tests/api/reliability_errors_test.cpp — validation that guards against views and values a
// hostile or buggy caller can produce: absurd extents that wrap
// int64, outputs that overlap themselves, K and V caches that overlap each other, a negative
// softmax_scale, duplicate slots, and values an int8 cache cannot hold. Every rejected call must
// name the argument and write nothing (ApiFixture::expect_rejected).
#include <cmath>
#include <cstring>
#include <limits>

#include "tests/api/api_fixture.h"

namespace kvq_api_test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

class Reliability : public ApiFixture {
 protected:
  // Runs append into two separate caches and into (k, v) views of one combined buffer; the bytes
  // must agree. `interleaved`: [num_blocks, 2, Hkv, page, D] (K and V alternate block by block),
  // else [2, num_blocks, ...] (two halves).
  void expect_combined_buffer_works(bool interleaved);
};

// ---- item 4: overflow-checked extents ----

TEST_F(Reliability, NumelThrowsInsteadOfWrapping) {
  // 2^62 * 4 * 16 = 2^68 wraps int64 to 0 without the check.
  TensorView t = TensorView::make_strided(q.data(), DType::kBFloat16, {int64_t{1} << 62, 4, 16}, {64, 16, 1});
  try {
    (void)t.numel();
    ADD_FAILURE() << "numel() of a view of 2^68 elements returned instead of throwing";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "shape") << e.what();
    EXPECT_NE(std::string(e.what()).find("overflows int64"), std::string::npos) << e.what();
  }
  // A zero extent makes the count 0 whatever the others are.
  TensorView z = TensorView::make_strided(nullptr, DType::kBFloat16, {int64_t{1} << 62, 0, int64_t{1} << 62}, {0, 0, 1});
  EXPECT_EQ(z.numel(), 0);
}

TEST_F(Reliability, MakeRefusesStridesThatOverflow) {
  EXPECT_THROW(TensorView::make(q.data(), DType::kBFloat16, {4, int64_t{1} << 40, int64_t{1} << 40}), kvq::Error);
}

TEST_F(Reliability, PrefillAbsurdQWithNullDataRejected) {
  // [2^60, 16, 16] with null data: the element count wraps; before the fix the null check was
  // skipped and the CPU backend crashed.
  kvq::PrefillArgs a = prefill;
  a.q = TensorView::make(nullptr, DType::kBFloat16, {int64_t{1} << 60, kHq, kD});
  a.out = TensorView::make(nullptr, DType::kBFloat16, {int64_t{1} << 60, kHq, kD});
  a.lse = {};
  expect_prefill_rejected(a, kValue, "q", "absurd extents");
}

TEST_F(Reliability, PrefillAbsurdOutAliasingQRejected) {
  // out == q at [2^62, 4, 16]: the wrapped byte range was empty, so the alias check passed.
  kvq::PrefillArgs a = prefill;
  a.q = TensorView::make_strided(q.data(), DType::kBFloat16, {int64_t{1} << 62, kHq, kD}, {kHq * kD, kD, 1});
  a.out = a.q;
  a.lse = {};
  expect_prefill_rejected(a, kValue, "q", "absurd extents");
}

TEST_F(Reliability, PrefillStrideSpanOverflowRejected) {
  kvq::PrefillArgs a = prefill;
  a.q = TensorView::make_strided(q.data(), DType::kBFloat16, {kTotalQ, kHq, kD}, {int64_t{1} << 61, kD, 1});
  expect_prefill_rejected(a, kValue, "q", "at most 2^62 bytes");
}

// ---- item 8: outputs that overlap themselves ----

TEST_F(Reliability, PrefillOutStrideZeroRejected) {
  kvq::PrefillArgs a = prefill;
  a.out = TensorView::make_strided(out.data(), DType::kBFloat16, {kTotalQ, kHq, kD}, {kHq * kD, 0, 1});
  expect_prefill_rejected(a, kValue, "out", "do not overlap each other");
}

TEST_F(Reliability, PrefillOutInterleavedStridesRejected) {
  // Rows 8 elements apart with 16 elements each: row t's second half is row t+1's first half.
  kvq::PrefillArgs a = prefill;
  a.out = TensorView::make_strided(out.data(), DType::kBFloat16, {kTotalQ, kHq, kD}, {kHq * 8, 8, 1});
  expect_prefill_rejected(a, kValue, "out", "do not overlap each other");
}

TEST_F(Reliability, PrefillLseStrideZeroRejected) {
  kvq::PrefillArgs a = prefill;
  a.lse = TensorView::make_strided(lse.data(), DType::kFloat32, {kTotalQ, kHq}, {0, 1});
  expect_prefill_rejected(a, kValue, "lse", "do not overlap each other");
}

TEST_F(Reliability, DecodeOutStrideZeroRejected) {
  kvq::DecodeArgs a = decode;
  a.out = TensorView::make_strided(out_dec.data(), DType::kBFloat16, {kBatch, kHq, kD}, {0, kD, 1});
  expect_decode_rejected(a, kValue, "out", "do not overlap each other");
}

TEST_F(Reliability, DecodeLseStrideZeroRejected) {
  kvq::DecodeArgs a = decode;
  a.lse = TensorView::make_strided(lse_dec.data(), DType::kFloat32, {kBatch, kHq}, {0, 1});
  expect_decode_rejected(a, kValue, "lse", "do not overlap each other");
}

TEST_F(Reliability, AppendKCacheStrideZeroRejected) {
  kvq::AppendArgs a = append;
  a.kv.k_cache = TensorView::make_strided(k_cache.data(), DType::kInt8, {kBlocks, kHkv, kPage, kD},
                                          {0, kPage * kD, kD, 1});
  expect_append_rejected(a, kValue, "k_cache", "do not overlap each other");
}

TEST_F(Reliability, AppendVCacheStrideZeroRejected) {
  kvq::AppendArgs a = append;
  a.kv.v_cache = TensorView::make_strided(v_cache.data(), DType::kInt8, {kBlocks, kHkv, kPage, kD},
                                          {kHkv * kPage * kD, kPage * kD, 0, 1});
  expect_append_rejected(a, kValue, "v_cache", "do not overlap each other");
}

TEST_F(Reliability, AppendPerTokenScaleStrideZeroRejected) {
  kvq::AppendArgs a = append;
  a.kv.k_scale = TensorView::make_strided(k_scale_tok.data(), DType::kFloat32, {kBlocks, kHkv, kPage}, {kHkv * kPage, 0, 1});
  a.kv.v_scale = TensorView::make(v_scale_tok.data(), DType::kFloat32, {kBlocks, kHkv, kPage});
  expect_append_rejected(a, kValue, "k_scale", "do not overlap each other");
}

TEST_F(Reliability, DequantOutStrideZeroRejected) {
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make_strided(dq_out.data(), DType::kBFloat16, {kBlocks, kHkv, kPage, kD}, {0, kPage * kD, kD, 1});
  expect_dequant_rejected(a, kValue, "out", "do not overlap each other");
}

TEST_F(Reliability, DequantOutBlockTablesStrideZeroRejected) {
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make(dq_out_compact.data(), DType::kBFloat16, {4, kHkv, kPage, kD});
  a.out_block_tables = TensorView::make_strided(out_block_tables.data(), DType::kInt32, {kBatch, kMaxBlocks}, {0, 1});
  expect_dequant_rejected(a, kValue, "out_block_tables", "do not overlap each other");
}

TEST_F(Reliability, CalibrateScaleOutStrideZeroRejected) {
  const TensorView s = TensorView::make_strided(calib_scale.data(), DType::kFloat32, {kHkv, kD}, {0, 1});
  expect_calibrate_rejected(calib_x_view, s, kValue, "scale_out", "do not overlap each other");
}

TEST_F(Reliability, BroadcastInputWithStrideZeroStillAccepted) {
  // Inputs may be broadcast: one per-channel scale row for every kv head.
  kvq::PrefillArgs a = prefill;
  a.kv.k_scale = TensorView::make_strided(k_scale.data(), DType::kFloat32, {kHkv, kD}, {0, 1});
  EXPECT_NO_THROW(kvq::paged_prefill(a));
}

// ---- item 3: append's K and V caches by byte interval ----

TEST_F(Reliability, AppendVCacheEqualToKCacheRejected) {
  kvq::AppendArgs a = append;
  a.kv.v_cache = a.kv.k_cache;
  expect_append_rejected(a, kValue, "v_cache", "does not overlap k_cache");
}

TEST_F(Reliability, AppendVCachePartlyOverlappingKCacheRejected) {
  // V starts half a block into K: their byte ranges share 5.5 blocks.
  std::vector<int8_t> both(2 * kCacheElems, 1);
  kvq::AppendArgs a = append;
  a.kv.k_cache = TensorView::make(both.data(), DType::kInt8, {kBlocks, kHkv, kPage, kD});
  a.kv.v_cache = TensorView::make(both.data() + kHkv * kPage * kD / 2, DType::kInt8, {kBlocks, kHkv, kPage, kD});
  const std::vector<int8_t> before = both;
  expect_append_rejected(a, kValue, "v_cache", "does not overlap k_cache");
  EXPECT_EQ(before, both);
}

void Reliability::expect_combined_buffer_works(bool interleaved) {
  const kvq::AppendArgs base = append;
  constexpr int64_t B = kBlocks, H = kHkv, P = kPage, D = kD;
  const int64_t block = H * P * D;
  std::vector<int8_t> k_sep(B * block, 0), v_sep(B * block, 0), both(2 * B * block, 0);
  kvq::AppendArgs sep = base;
  sep.kv.k_cache = TensorView::make(k_sep.data(), DType::kInt8, {B, H, P, D});
  sep.kv.v_cache = TensorView::make(v_sep.data(), DType::kInt8, {B, H, P, D});
  ASSERT_NO_THROW(kvq::append(sep));
  kvq::AppendArgs comb = base;
  if (interleaved) {
    comb.kv.k_cache = TensorView::make_strided(both.data(), DType::kInt8, {B, H, P, D}, {2 * block, P * D, D, 1});
    comb.kv.v_cache = TensorView::make_strided(both.data() + block, DType::kInt8, {B, H, P, D}, {2 * block, P * D, D, 1});
  } else {
    comb.kv.k_cache = TensorView::make(both.data(), DType::kInt8, {B, H, P, D});
    comb.kv.v_cache = TensorView::make(both.data() + B * block, DType::kInt8, {B, H, P, D});
  }
  ASSERT_NO_THROW(kvq::append(comb)) << "two disjoint views of one buffer must stay legal";
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < block; ++e) {
      const int64_t kk = interleaved ? (2 * b) * block + e : b * block + e;
      const int64_t vv = interleaved ? (2 * b + 1) * block + e : (B + b) * block + e;
      ASSERT_EQ(both[kk], k_sep[b * block + e]) << "K block " << b << " element " << e;
      ASSERT_EQ(both[vv], v_sep[b * block + e]) << "V block " << b << " element " << e;
    }
}

TEST_F(Reliability, AppendKVHalvesOfOneBufferAccepted) { expect_combined_buffer_works(false); }

TEST_F(Reliability, AppendKVInterleavedInOneBufferAccepted) { expect_combined_buffer_works(true); }

// ---- item 8: softmax_scale ----

TEST_F(Reliability, PrefillNegativeSoftmaxScaleRejected) {
  kvq::PrefillArgs a = prefill;
  a.softmax_scale = -0.25f;
  expect_prefill_rejected(a, kValue, "softmax_scale", "got -0.25");
}

TEST_F(Reliability, DecodeNegativeSoftmaxScaleRejected) {
  kvq::DecodeArgs a = decode;
  a.softmax_scale = -1.f;
  expect_decode_rejected(a, kValue, "softmax_scale", "a finite value > 0");
}

TEST_F(Reliability, ZeroSoftmaxScaleStillSelectsTheDefault) {
  kvq::PrefillArgs a = prefill;
  a.softmax_scale = 0.f;
  ASSERT_NO_THROW(kvq::paged_prefill(a));
  const std::vector<uint16_t> by_default = out;
  a.softmax_scale = 1.f / std::sqrt(static_cast<float>(kD));
  ASSERT_NO_THROW(kvq::paged_prefill(a));
  EXPECT_EQ(by_default, out);
}

// ---- item 8: duplicate slots ----

TEST_F(Reliability, AppendDuplicateSlotsRejectedWithCheck) {
  slots = {9, 2, 9};
  kvq::AppendArgs a = append;
  a.check = true;
  expect_append_rejected(a, kValue, "slot_mapping", "got slot 9 at tokens 0 and 2");
}

TEST_F(Reliability, AppendDuplicateSlotsKeepTheLastTokenWithoutCheck) {
  // check=false on the CPU: tokens are written in order, so the last one wins (documented).
  slots = {9, 2, 9};
  kvq::AppendArgs a = append;
  ASSERT_NO_THROW(kvq::append(a));
  std::vector<int8_t> k_ref(kCacheElems, 0), v_ref(kCacheElems, 0);
  std::vector<int64_t> only_last = {-1, 2, 9};
  kvq::AppendArgs b = append;
  b.slot_mapping = TensorView::make(only_last.data(), DType::kInt64, {kTokens});
  b.kv.k_cache = TensorView::make(k_ref.data(), DType::kInt8, {kBlocks, kHkv, kPage, kD});
  b.kv.v_cache = TensorView::make(v_ref.data(), DType::kInt8, {kBlocks, kHkv, kPage, kD});
  ASSERT_NO_THROW(kvq::append(b));
  const int64_t blk = 9 / kPage, off = 9 % kPage;
  for (int64_t h = 0; h < kHkv; ++h)
    for (int64_t d = 0; d < kD; ++d) {
      const int64_t e = ((blk * kHkv + h) * kPage + off) * kD + d;
      EXPECT_EQ(k_cache[e], k_ref[e]) << "h " << h << " d " << d;
      EXPECT_EQ(v_cache[e], v_ref[e]) << "h " << h << " d " << d;
    }
}

TEST_F(Reliability, AppendPaddingSlotsMayRepeat) {
  slots = {-1, 4, -1};
  kvq::AppendArgs a = append;
  a.check = true;
  EXPECT_NO_THROW(kvq::append(a));
}

// ---- item 8: values an int8 append cannot take ----

TEST_F(Reliability, AppendNaNPerChannelScaleRejected) {
  k_scale[5] = kNaN;
  expect_append_rejected(append, kValue, "k_scale", "k_scale[0][5] = nan");
}

TEST_F(Reliability, AppendZeroPerChannelScaleRejected) {
  v_scale[kD + 2] = 0.f;
  expect_append_rejected(append, kValue, "v_scale", "v_scale[1][2] = 0");
}

TEST_F(Reliability, AppendNegativePerChannelScaleRejected) {
  k_scale[1] = -0.01f;
  expect_append_rejected(append, kValue, "k_scale", "finite and > 0");
}

TEST_F(Reliability, AppendBf16NaNScaleRejected) {
  std::vector<uint16_t> ks(kHkv * kD, to_bf16(0.02f));
  ks[3] = 0x7fc0;  // bf16 NaN
  kvq::AppendArgs a = append;
  a.kv.k_scale = TensorView::make(ks.data(), DType::kBFloat16, {kHkv, kD});
  expect_append_rejected(a, kValue, "k_scale", "k_scale[0][3] = nan");
}

TEST_F(Reliability, AppendInfTokenRejected) {
  k_new[(1 * kHkv + 1) * kD + 7] = kInf;  // token 1, head 1, dim 7 (slot 9)
  expect_append_rejected(append, kValue, "k_new", "k_new[1][1][7] = inf");
}

TEST_F(Reliability, AppendNaNTokenRejected) {
  v_new[3] = kNaN;  // token 0
  expect_append_rejected(append, kValue, "v_new", "v_new[0][0][3] = nan");
}

TEST_F(Reliability, AppendNaNInPaddingTokenAccepted) {
  // Token 2 has slot -1: it is never read, so garbage there is fine.
  k_new[(2 * kHkv) * kD] = kNaN;
  kvq::AppendArgs a = append;
  a.check = true;
  EXPECT_NO_THROW(kvq::append(a));
}

TEST_F(Reliability, AppendInfIntoBf16CacheAccepted) {
  // A bf16 cache holds Inf as it is; attention then propagates it (docs/design.md §1).
  std::vector<uint16_t> kc(kCacheElems, 0), vc(kCacheElems, 0);
  kvq::AppendArgs a = append;
  a.kv.k_cache = TensorView::make(kc.data(), DType::kBFloat16, {kBlocks, kHkv, kPage, kD});
  a.kv.v_cache = TensorView::make(vc.data(), DType::kBFloat16, {kBlocks, kHkv, kPage, kD});
  a.kv.k_scale = {};
  a.kv.v_scale = {};
  k_new[0] = kInf;
  ASSERT_NO_THROW(kvq::append(a));
  EXPECT_EQ(kc[0], 0x7f80) << "slot 0, head 0, dim 0 holds +inf";
}

}  // namespace
}  // namespace kvq_api_test
