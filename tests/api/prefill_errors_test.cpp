// tests/api/prefill_errors_test.cpp — every host-side error path of paged_prefill and
// plan_prefill: the right kvq::Error (kind, function, argument, expectation in the message) and
// no buffer touched. None of these calls reaches a backend.
#include <cmath>
#include <limits>

#include "tests/api/api_fixture.h"

namespace kvq_api_test {
namespace {

// --- q ---

TEST_F(ApiErrors, PrefillQWrongRank) {
  kvq::PrefillArgs a = prefill;
  a.q = TensorView::make(q.data(), DType::kBFloat16, {kTotalQ * kHq, kD});
  expect_prefill_rejected(a, kValue, "q", "[total_q, num_qo_heads, head_dim]");
}

TEST_F(ApiErrors, PrefillQWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.q.dtype = DType::kFloat32;
  expect_prefill_rejected(a, kType, "q", "bf16, fp16 or int8");
}

TEST_F(ApiErrors, PrefillQNullData) {
  kvq::PrefillArgs a = prefill;
  a.q.data = nullptr;
  expect_prefill_rejected(a, kValue, "q", "non-null data pointer");
}

TEST_F(ApiErrors, PrefillQLastDimNotContiguous) {
  kvq::PrefillArgs a = prefill;
  // Every other element of a buffer twice as wide: the last dim has stride 2.
  a.q = TensorView::make_strided(q.data(), DType::kBFloat16, {kTotalQ / 2, kHq, kD / 2},
                                 {kHq * kD, kD, 2});
  a.out = TensorView::make(out.data(), DType::kBFloat16, {kTotalQ / 2, kHq, kD / 2});
  expect_prefill_rejected(a, kValue, "q", "contiguous last dimension (stride 1)");
}

TEST_F(ApiErrors, PrefillHeadDimOutOfRange) {
  std::vector<uint16_t> big_q(kTotalQ * kHq * 300, 0x3f80), big_out(kTotalQ * kHq * 300, 0x3f80);
  kvq::PrefillArgs a = prefill;
  a.q = TensorView::make(big_q.data(), DType::kBFloat16, {kTotalQ, kHq, 300});
  a.out = TensorView::make(big_out.data(), DType::kBFloat16, {kTotalQ, kHq, 300});
  const std::vector<uint16_t> out_before = big_out;
  expect_prefill_rejected(a, kValue, "q", "head_dim in 1..256");
  EXPECT_EQ(out_before, big_out);
}

TEST_F(ApiErrors, PrefillHeadsNotMultipleOfKvHeads) {
  kvq::PrefillArgs a = prefill;
  a.q = TensorView::make(q.data(), DType::kBFloat16, {kTotalQ, 3, kD});
  a.out = TensorView::make(out.data(), DType::kBFloat16, {kTotalQ, 3, kD});
  a.lse = TensorView::make(lse.data(), DType::kFloat32, {kTotalQ, 3});
  expect_prefill_rejected(a, kValue, "q", "multiple of num_kv_heads 2");
}

TEST_F(ApiErrors, PrefillInt8QNeedsQScale) {
  kvq::PrefillArgs a = prefill;
  a.q = TensorView::make(q_int8.data(), DType::kInt8, {kTotalQ, kHq, kD});
  expect_prefill_rejected(a, kValue, "q_scale", "fp32 [total_q, num_qo_heads]");
}

TEST_F(ApiErrors, PrefillQScaleWithFloatQ) {
  kvq::PrefillArgs a = prefill;
  a.q_scale = TensorView::make(q_scale.data(), DType::kFloat32, {kTotalQ, kHq});
  expect_prefill_rejected(a, kValue, "q_scale", "absent (q_scale goes only with int8 q)");
}

TEST_F(ApiErrors, PrefillQScaleWrongShape) {
  kvq::PrefillArgs a = prefill;
  use_int8_q(a);
  a.q_scale = TensorView::make(q_scale.data(), DType::kFloat32, {kTotalQ, kHq - 1});
  expect_prefill_rejected(a, kValue, "q_scale", "[6, 4]");
}

TEST_F(ApiErrors, PrefillInt8QWithBf16Cache) {
  kvq::PrefillArgs a = prefill;
  use_int8_q(a);
  use_float_cache(a, DType::kBFloat16);
  expect_prefill_rejected(a, kType, "q", "int8 q needs an int8 cache");
}

// --- caches and scales ---

TEST_F(ApiErrors, PrefillKCacheWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_cache.dtype = DType::kFloat32;
  expect_prefill_rejected(a, kType, "k_cache",
                          "expected int8, bf16 or fp16 [num_blocks, num_kv_heads, page_size, "
                          "head_dim] (HND), got fp32 [6, 2, 4, 16]");
}

TEST_F(ApiErrors, PrefillKCacheWrongRank) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_cache = TensorView::make(k_cache.data(), DType::kInt8, {kBlocks * kHkv, kPage, kD});
  expect_prefill_rejected(a, kValue, "k_cache", "rank 4");
}

TEST_F(ApiErrors, PrefillNhdNamesItsLayout) {
  kvq::PrefillArgs a = prefill;
  a.kv.layout = kvq::KvLayout::kNHD;
  a.kv.k_cache.dtype = DType::kFloat32;
  expect_prefill_rejected(a, kType, "k_cache", "[num_blocks, page_size, num_kv_heads, head_dim] (NHD)");
}

TEST_F(ApiErrors, PrefillVCacheDtypeDiffers) {
  std::vector<uint16_t> vb(kCacheElems, 0x3f80);
  kvq::PrefillArgs a = prefill;
  a.kv.v_cache = TensorView::make(vb.data(), DType::kBFloat16, {kBlocks, kHkv, kPage, kD});
  expect_prefill_rejected(a, kType, "v_cache", "int8 (the dtype of k_cache)");
}

TEST_F(ApiErrors, PrefillVCacheShapeDiffers) {
  kvq::PrefillArgs a = prefill;
  a.kv.v_cache = TensorView::make(v_cache.data(), DType::kInt8, {kBlocks - 1, kHkv, kPage, kD});
  expect_prefill_rejected(a, kValue, "v_cache", "[6, 2, 4, 16] (the shape of k_cache)");
}

TEST_F(ApiErrors, PrefillCacheHeadDimDiffersFromQ) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_cache = TensorView::make(k_cache.data(), DType::kInt8, {kBlocks, kHkv, kPage * 2, kD / 2});
  a.kv.v_cache = TensorView::make(v_cache.data(), DType::kInt8, {kBlocks, kHkv, kPage * 2, kD / 2});
  a.kv.k_scale = TensorView::make(k_scale.data(), DType::kFloat32, {kHkv, kD / 2});
  a.kv.v_scale = TensorView::make(v_scale.data(), DType::kFloat32, {kHkv, kD / 2});
  expect_prefill_rejected(a, kValue, "k_cache", "head_dim 16 (from q)");
}

TEST_F(ApiErrors, PrefillPageSizeZero) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_cache = TensorView::make(k_cache.data(), DType::kInt8, {kBlocks, kHkv, 0, kD});
  a.kv.v_cache = TensorView::make(v_cache.data(), DType::kInt8, {kBlocks, kHkv, 0, kD});
  expect_prefill_rejected(a, kValue, "k_cache", "page_size >= 1");
}

TEST_F(ApiErrors, PrefillInt8CacheNeedsKScale) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_scale = TensorView{};
  expect_prefill_rejected(a, kValue, "k_scale", "[num_kv_heads, head_dim] (per-channel)");
}

TEST_F(ApiErrors, PrefillScaleWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_scale.dtype = DType::kInt32;
  expect_prefill_rejected(a, kType, "k_scale", "fp32, bf16 or fp16");
}

TEST_F(ApiErrors, PrefillPerChannelScaleWrongShape) {
  kvq::PrefillArgs a = prefill;
  a.kv.v_scale = TensorView::make(v_scale.data(), DType::kFloat32, {kHkv, kD - 1});
  expect_prefill_rejected(a, kValue, "v_scale", "[2, 16] ([num_kv_heads, head_dim] per-channel)");
}

TEST_F(ApiErrors, PrefillPerTokenScaleWrongShape) {
  kvq::PrefillArgs a = prefill;
  // NHD-shaped per-token scales for an HND cache.
  a.kv.k_scale = TensorView::make(k_scale_tok.data(), DType::kFloat32, {kBlocks, kPage, kHkv});
  expect_prefill_rejected(a, kValue, "k_scale", "[6, 2, 4] ([num_blocks, num_kv_heads, page_size]");
}

TEST_F(ApiErrors, PrefillScaleWithBf16Cache) {
  kvq::PrefillArgs a = prefill;
  use_float_cache(a, DType::kBFloat16, /*keep_scales=*/true);
  expect_prefill_rejected(a, kValue, "k_scale", "absent for a bf16 cache");
}

TEST_F(ApiErrors, PrefillFloatCacheDtypeDiffersFromQ) {
  kvq::PrefillArgs a = prefill;
  use_float_cache(a, DType::kFloat16);
  expect_prefill_rejected(a, kType, "k_cache", "int8 or bf16 (a bf16/fp16 cache has the dtype of q)");
}

// --- metadata ---

TEST_F(ApiErrors, PrefillBlockTablesWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.block_tables.dtype = DType::kInt64;
  expect_prefill_rejected(a, kType, "block_tables", "int32 [batch_size, max_blocks_per_seq]");
}

TEST_F(ApiErrors, PrefillBlockTablesWrongRows) {
  kvq::PrefillArgs a = prefill;
  a.block_tables = TensorView::make(block_tables.data(), DType::kInt32, {1, kMaxBlocks});
  expect_prefill_rejected(a, kValue, "block_tables", "2 rows");
}

TEST_F(ApiErrors, PrefillCuQLensWrongLength) {
  kvq::PrefillArgs a = prefill;
  a.cu_q_lens = TensorView::make(cu_q_lens.data(), DType::kInt32, {kBatch});
  expect_prefill_rejected(a, kValue, "cu_q_lens", "[3] ([batch_size + 1]");
}

TEST_F(ApiErrors, PrefillKvLensWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.kv_lens.dtype = DType::kInt64;
  expect_prefill_rejected(a, kType, "kv_lens", "int32 [batch_size]");
}

TEST_F(ApiErrors, PrefillKvLensWrongRank) {
  kvq::PrefillArgs a = prefill;
  a.kv_lens = TensorView::make(kv_lens.data(), DType::kInt32, {kBatch, 1});
  expect_prefill_rejected(a, kValue, "kv_lens", "int32 [batch_size]");
}

// --- out, lse, mask ---

TEST_F(ApiErrors, PrefillOutWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.out.dtype = DType::kFloat16;
  expect_prefill_rejected(a, kType, "out", "bf16 (the dtype of q)");
}

TEST_F(ApiErrors, PrefillOutMustBeBf16ForInt8Q) {
  kvq::PrefillArgs a = prefill;
  use_int8_q(a);
  a.out.dtype = DType::kFloat16;
  expect_prefill_rejected(a, kType, "out", "bf16 (bf16 for int8 q)");
}

TEST_F(ApiErrors, PrefillOutShapeDiffers) {
  kvq::PrefillArgs a = prefill;
  a.out = TensorView::make(out.data(), DType::kBFloat16, {kTotalQ - 1, kHq, kD});
  expect_prefill_rejected(a, kValue, "out", "[6, 4, 16] (the shape of q)");
}

TEST_F(ApiErrors, PrefillOutMissing) {
  kvq::PrefillArgs a = prefill;
  a.out = TensorView{};
  expect_prefill_rejected(a, kValue, "out", "got absent");
}

TEST_F(ApiErrors, PrefillLseWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.lse.dtype = DType::kBFloat16;
  expect_prefill_rejected(a, kType, "lse", "fp32 [total_q, num_qo_heads]");
}

TEST_F(ApiErrors, PrefillLseWrongShape) {
  kvq::PrefillArgs a = prefill;
  a.lse = TensorView::make(lse.data(), DType::kFloat32, {kTotalQ, kHq - 1});
  expect_prefill_rejected(a, kValue, "lse", "[6, 4]");
}

TEST_F(ApiErrors, PrefillMaskWithCausal) {
  kvq::PrefillArgs a = prefill;
  a.mask = TensorView::make(mask.data(), DType::kBool, {static_cast<int64_t>(mask.size())});
  expect_prefill_rejected(a, kValue, "mask", "absent with causal=true");
}

TEST_F(ApiErrors, PrefillMaskWrongDtype) {
  kvq::PrefillArgs a = prefill;
  a.mask_options.causal = false;
  a.mask = TensorView::make(mask.data(), DType::kInt32, {static_cast<int64_t>(mask.size()) / 4});
  expect_prefill_rejected(a, kType, "mask", "bool or uint8");
}

TEST_F(ApiErrors, PrefillMaskWrongLength) {
  kvq::PrefillArgs a = prefill;
  a.mask_options.causal = false;
  a.mask = TensorView::make(mask.data(), DType::kBool, {static_cast<int64_t>(mask.size()) - 1});
  expect_prefill_rejected(a, kValue, "mask", "31 elements (sum_b q_len_b * kv_len_b)");
}

// --- options ---

TEST_F(ApiErrors, PrefillSoftmaxScaleNaN) {
  kvq::PrefillArgs a = prefill;
  a.softmax_scale = std::numeric_limits<float>::quiet_NaN();
  expect_prefill_rejected(a, kValue, "softmax_scale", "a finite value");
}

TEST_F(ApiErrors, PrefillSoftmaxScaleInf) {
  kvq::PrefillArgs a = prefill;
  a.softmax_scale = std::numeric_limits<float>::infinity();
  expect_prefill_rejected(a, kValue, "softmax_scale", "a finite value");
}

TEST_F(ApiErrors, PrefillLocalWindowWithoutCausal) {
  kvq::PrefillArgs a = prefill;
  a.mask_options.causal = false;
  a.mask_options.local_window = 4;
  expect_prefill_rejected(a, kValue, "local_window", "with causal=false");
}

TEST_F(ApiErrors, PrefillNegativeGlobalWindow) {
  kvq::PrefillArgs a = prefill;
  a.mask_options.local_window = 4;
  a.mask_options.global_window = -1;
  expect_prefill_rejected(a, kValue, "global_window", "global_window >= 0, got -1");
}

TEST_F(ApiErrors, PrefillInt8ComputeNeedsInt8Cache) {
  kvq::PrefillArgs a = prefill;
  use_float_cache(a, DType::kBFloat16);
  a.compute = kvq::ComputeMode::kInt8;
  expect_prefill_rejected(a, kValue, "compute", "int8 compute needs an int8 cache");
}

TEST_F(ApiErrors, PrefillDequantPathNeedsInt8Cache) {
  kvq::PrefillArgs a = prefill;
  use_float_cache(a, DType::kBFloat16);
  a.path = kvq::PrefillPath::kDequant;
  expect_prefill_rejected(a, kValue, "path", "dequant needs an int8 cache");
}

// --- devices and aliasing ---

TEST_F(ApiErrors, PrefillDeviceMismatch) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_cache.device = Device::kCUDA;
  expect_prefill_rejected(a, kType, "k_cache", "cpu:0 (the device of q), got int8 [6, 2, 4, 16] on cuda:0");
}

TEST_F(ApiErrors, PrefillDeviceIndexMismatch) {
  kvq::PrefillArgs a = prefill;
  on_cuda(a);
  a.out.device_index = 1;
  expect_prefill_rejected(a, kType, "out", "cuda:0 (the device of q)");
}

TEST_F(ApiErrors, PrefillOutAliasesQ) {
  kvq::PrefillArgs a = prefill;
  a.out.data = q.data();
  expect_prefill_rejected(a, kValue, "out", "does not overlap q");
}

TEST_F(ApiErrors, PrefillOutAliasesKCache) {
  kvq::PrefillArgs a = prefill;
  a.out = TensorView::make(k_cache.data() + 64, DType::kBFloat16, {kTotalQ, kHq, kD});
  expect_prefill_rejected(a, kValue, "out", "does not overlap k_cache");
}

TEST_F(ApiErrors, PrefillLseAliasesQScaleOfInt8Q) {
  kvq::PrefillArgs a = prefill;
  use_int8_q(a);
  a.lse = TensorView::make(q_scale.data(), DType::kFloat32, {kTotalQ, kHq});
  expect_prefill_rejected(a, kValue, "lse", "does not overlap q_scale");
}

// --- data checks on CPU metadata (always on: they keep the backend in bounds) ---

TEST_F(ApiErrors, PrefillBlockIdOutOfRange) {
  block_tables[4] = static_cast<int32_t>(kBlocks);  // sequence 1, block 1: read (kv_len 8)
  expect_prefill_rejected(prefill, kValue, "block_tables",
                          "block ids in [0, 6) for the 2 blocks sequence 1 reads, got "
                          "block_tables[1][1] = 6");
}

TEST_F(ApiErrors, PrefillNegativeBlockId) {
  block_tables[1] = -1;
  expect_prefill_rejected(prefill, kValue, "block_tables", "got block_tables[0][1] = -1");
}

TEST_F(ApiErrors, PrefillKvLenPastTableWidth) {
  kv_lens[1] = static_cast<int32_t>(kMaxBlocks * kPage + 1);
  expect_prefill_rejected(prefill, kValue, "kv_lens", "kv_lens[1] <= max_blocks_per_seq * page_size");
}

TEST_F(ApiErrors, PrefillNegativeKvLen) {
  kv_lens[0] = -3;
  expect_prefill_rejected(prefill, kValue, "kv_lens", "kv_lens[0] >= 0, got -3");
}

TEST_F(ApiErrors, PrefillCuQLensNotStartingAtZero) {
  cu_q_lens[0] = 1;
  expect_prefill_rejected(prefill, kValue, "cu_q_lens", "cu_q_lens[0] = 0, got 1");
}

TEST_F(ApiErrors, PrefillCuQLensDecreasing) {
  cu_q_lens = {0, 4, 2};
  expect_prefill_rejected(prefill, kValue, "cu_q_lens", "non-decreasing");
}

TEST_F(ApiErrors, PrefillCuQLensPastTotalQ) {
  cu_q_lens = {0, 3, 7};
  expect_prefill_rejected(prefill, kValue, "cu_q_lens", "cu_q_lens[2] <= total_q = 6");
}

TEST_F(ApiErrors, PrefillCausalKvShorterThanQWithCheck) {
  kvq::PrefillArgs a = prefill;
  a.check = true;
  kv_lens[0] = 2;  // q_len 3
  expect_prefill_rejected(a, kValue, "kv_lens", "kv_lens[0] >= q_len = 3");
}

// --- plans and workspace ---

TEST_F(ApiErrors, PrefillWorkspaceSmallerThanPlan) {
  kvq::PrefillPlan plan = kvq::plan_prefill(prefill, cu_q_lens.data(), kv_lens.data());
  plan.workspace_bytes = 4096;
  kvq::PrefillArgs a = prefill;
  a.plan = &plan;
  std::vector<uint8_t> ws(1024);
  a.workspace = {ws.data(), ws.size()};
  expect_prefill_rejected(a, kValue, "workspace", "at least 4096 bytes");
}

TEST_F(ApiErrors, PrefillWorkspaceOverlapsOut) {
  kvq::PrefillArgs a = prefill;
  a.workspace = {out.data(), 256};
  expect_prefill_rejected(a, kValue, "workspace", "does not overlap out");
}

TEST_F(ApiErrors, PrefillPlanForAnotherDevice) {
  kvq::PrefillPlan plan = kvq::plan_prefill(prefill, cu_q_lens.data(), kv_lens.data());
  plan.device = Device::kCUDA;
  kvq::PrefillArgs a = prefill;
  a.plan = &plan;
  expect_prefill_rejected(a, kValue, "plan", "a plan for cpu tensors");
}

TEST_F(ApiErrors, PrefillPlanForAnotherBatch) {
  kvq::PrefillPlan plan = kvq::plan_prefill(prefill, cu_q_lens.data(), kv_lens.data());
  plan.batch_size = 3;
  kvq::PrefillArgs a = prefill;
  a.plan = &plan;
  expect_prefill_rejected(a, kValue, "plan", "batch_size 2");
}

TEST_F(ApiErrors, PlanPrefillValidatesArgs) {
  kvq::PrefillArgs a = prefill;
  a.kv.k_cache.dtype = DType::kFloat32;
  expect_rejected([&] { kvq::plan_prefill(a, nullptr, nullptr); }, kType, "plan_prefill",
                  "k_cache", "int8, bf16 or fp16");
}

TEST_F(ApiErrors, PlanPrefillHostCuQLensDecreasing) {
  const int32_t cu[] = {0, 4, 3};
  expect_rejected([&] { kvq::plan_prefill(prefill, cu, kv_lens.data()); }, kValue,
                  "plan_prefill", "cu_q_lens_host", "non-decreasing");
}

TEST_F(ApiErrors, PlanPrefillHostKvLenTooLong) {
  const int32_t kvl[] = {5, 13};
  expect_rejected([&] { kvq::plan_prefill(prefill, cu_q_lens.data(), kvl); }, kValue,
                  "plan_prefill", "kv_lens_host",
                  "expected kv_lens_host[1] <= max_blocks_per_seq * page_size = 3 * 4 = 12, got 13");
}

// CUDA tensors in a build without CUDA: validation passes, then the stub refuses.
TEST_F(ApiErrors, PrefillCudaTensorsWithoutCuda) {
  if (kvq::cuda_built()) GTEST_SKIP() << "this build has the CUDA backend";
  kvq::PrefillArgs a = prefill;
  on_cuda(a);
  expect_prefill_rejected(a, kType, "device", "CUDA tensors need kvq built with CUDA");
}

}  // namespace
}  // namespace kvq_api_test
