// tests/api/other_errors_test.cpp — error paths of paged_decode, decode_workspace_size, append,
// dequantize_blocks and calibrate: the right kvq::Error, and no buffer touched.
#include "tests/api/api_fixture.h"

namespace kvq_api_test {
namespace {

// --- decode ---

TEST_F(ApiErrors, DecodeInt8QRefused) {
  kvq::DecodeArgs a = decode;
  a.q = TensorView::make(q_int8.data(), DType::kInt8, {kBatch, kHq, kD});
  expect_decode_rejected(a, kType, "q", "bf16 or fp16 [batch_size, num_qo_heads, head_dim]");
}

TEST_F(ApiErrors, DecodeKvLensLengthDiffersFromBatch) {
  kvq::DecodeArgs a = decode;
  a.kv_lens = TensorView::make(kv_lens.data(), DType::kInt32, {1});
  expect_decode_rejected(a, kValue, "kv_lens", "[2] ([batch_size], batch_size from q.size(0))");
}

TEST_F(ApiErrors, DecodeOutShapeDiffers) {
  kvq::DecodeArgs a = decode;
  a.out = TensorView::make(out_dec.data(), DType::kBFloat16, {kBatch, kHq / 2, kD});
  expect_decode_rejected(a, kValue, "out", "[2, 4, 16] (the shape of q)");
}

TEST_F(ApiErrors, DecodeOutAliasesQ) {
  kvq::DecodeArgs a = decode;
  a.out.data = q_dec.data();
  expect_decode_rejected(a, kValue, "out", "does not overlap q");
}

TEST_F(ApiErrors, DecodeNegativeNumSplits) {
  kvq::DecodeArgs a = decode;
  a.num_splits = -2;
  expect_decode_rejected(a, kValue, "num_splits", "num_splits >= 0");
}

TEST_F(ApiErrors, DecodeNegativeGlobalWindow) {
  kvq::DecodeArgs a = decode;
  a.local_window = 3;
  a.global_window = -4;
  expect_decode_rejected(a, kValue, "global_window", "global_window >= 0, got -4");
}

TEST_F(ApiErrors, DecodeHeadsNotMultipleOfKvHeads) {
  kvq::DecodeArgs a = decode;
  a.q = TensorView::make(q_dec.data(), DType::kBFloat16, {kBatch, 3, kD});
  a.out = TensorView::make(out_dec.data(), DType::kBFloat16, {kBatch, 3, kD});
  a.lse = TensorView{};
  expect_decode_rejected(a, kValue, "q", "multiple of num_kv_heads 2");
}

TEST_F(ApiErrors, DecodeBlockIdOutOfRange) {
  block_tables[3] = 99;  // sequence 1, block 0
  expect_decode_rejected(decode, kValue, "block_tables", "got block_tables[1][0] = 99");
}

TEST_F(ApiErrors, DecodeLseWrongShape) {
  kvq::DecodeArgs a = decode;
  a.lse = TensorView::make(lse_dec.data(), DType::kFloat32, {kBatch * kHq});
  expect_decode_rejected(a, kValue, "lse", "fp32 [batch_size, num_qo_heads]");
}

TEST_F(ApiErrors, DecodeWorkspaceSizeValidates) {
  kvq::DecodeArgs a = decode;
  a.kv.v_cache.dtype = DType::kFloat16;
  expect_rejected([&] { kvq::decode_workspace_size(a); }, kType, "decode_workspace_size",
                  "v_cache", "int8 (the dtype of k_cache)");
}

TEST_F(ApiErrors, DecodeCudaTensorsWithoutCuda) {
  if (kvq::cuda_built()) GTEST_SKIP() << "this build has the CUDA backend";
  kvq::DecodeArgs a = decode;
  on_cuda(a);
  expect_decode_rejected(a, kType, "device", "CUDA tensors need kvq built with CUDA");
}

TEST_F(ApiErrors, DecodeWorkspaceSizeCudaWithoutCuda) {
  if (kvq::cuda_built()) GTEST_SKIP() << "this build has the CUDA backend";
  kvq::DecodeArgs a = decode;
  on_cuda(a);
  expect_rejected([&] { kvq::decode_workspace_size(a); }, kType, "decode_workspace_size",
                  "device", "CUDA tensors need kvq built with CUDA");
}

// --- append ---

TEST_F(ApiErrors, AppendSlotMappingWrongDtype) {
  kvq::AppendArgs a = append;
  a.slot_mapping.dtype = DType::kFloat32;
  expect_append_rejected(a, kType, "slot_mapping", "int32 or int64 [num_tokens]");
}

TEST_F(ApiErrors, AppendSlotMappingWrongLength) {
  kvq::AppendArgs a = append;
  a.slot_mapping = TensorView::make(slots.data(), DType::kInt64, {kTokens - 1});
  expect_append_rejected(a, kValue, "slot_mapping", "[3] ([num_tokens], num_tokens from k_new)");
}

TEST_F(ApiErrors, AppendSlotOutOfRangeWithCheck) {
  kvq::AppendArgs a = append;
  a.check = true;
  slots[1] = kBlocks * kPage;  // one past the last slot
  expect_append_rejected(a, kValue, "slot_mapping",
                         "slots < num_blocks * page_size = 24 (or < 0 to skip a token), got "
                         "slot_mapping[1] = 24");
}

TEST_F(ApiErrors, AppendInt32SlotOutOfRange) {
  std::vector<int32_t> slots32 = {0, 1000, 2};
  kvq::AppendArgs a = append;
  a.check = true;
  a.slot_mapping = TensorView::make(slots32.data(), DType::kInt32, {kTokens});
  expect_append_rejected(a, kValue, "slot_mapping", "got slot_mapping[1] = 1000");
}

TEST_F(ApiErrors, AppendPerTokenScaleWrongShape) {
  kvq::AppendArgs a = append;
  a.kv.k_scale = TensorView::make(k_scale_tok.data(), DType::kFloat32, {kBlocks, kHkv, kPage - 1});
  expect_append_rejected(a, kValue, "k_scale",
                         "[6, 2, 4] ([num_blocks, num_kv_heads, page_size] per-token, HND)");
}

TEST_F(ApiErrors, AppendVNewDtypeDiffers) {
  kvq::AppendArgs a = append;
  a.v_new.dtype = DType::kBFloat16;
  expect_append_rejected(a, kType, "v_new", "fp32 (the dtype of k_new)");
}

TEST_F(ApiErrors, AppendKNewHeadsDifferFromCache) {
  kvq::AppendArgs a = append;
  a.k_new = TensorView::make(k_new.data(), DType::kFloat32, {kTokens, 1, 2 * kD});
  a.v_new = TensorView::make(v_new.data(), DType::kFloat32, {kTokens, 1, 2 * kD});
  expect_append_rejected(a, kValue, "k_new", "[3, 2, 16] ([num_tokens, num_kv_heads, head_dim] of k_cache)");
}

TEST_F(ApiErrors, AppendKNewWrongDtype) {
  kvq::AppendArgs a = append;
  a.k_new = TensorView::make(q_int8.data(), DType::kInt8, {kTokens, kHkv, kD});
  expect_append_rejected(a, kType, "k_new", "bf16, fp16 or fp32 [num_tokens, num_kv_heads, head_dim]");
}

TEST_F(ApiErrors, AppendCacheAliasesKNew) {
  kvq::AppendArgs a = append;
  a.k_new = TensorView::make(k_cache.data(), DType::kFloat32, {kTokens, kHkv, kD});
  expect_append_rejected(a, kValue, "k_cache", "does not overlap k_new");
}

TEST_F(ApiErrors, AppendDeviceMismatch) {
  kvq::AppendArgs a = append;
  a.slot_mapping.device = Device::kCUDA;
  expect_append_rejected(a, kType, "slot_mapping", "cpu:0 (the device of k_new)");
}

TEST_F(ApiErrors, AppendCudaTensorsWithoutCuda) {
  if (kvq::cuda_built()) GTEST_SKIP() << "this build has the CUDA backend";
  kvq::AppendArgs a = append;
  on_cuda(a);
  expect_append_rejected(a, kType, "device", "CUDA tensors need kvq built with CUDA");
}

// --- dequantize_blocks ---

TEST_F(ApiErrors, DequantCacheMustBeInt8) {
  std::vector<uint16_t> kb(kCacheElems, 0x3f80);
  kvq::DequantArgs a = dequant;
  a.cache = TensorView::make(kb.data(), DType::kBFloat16, {kBlocks, kHkv, kPage, kD});
  expect_dequant_rejected(a, kType, "cache", "int8 [num_blocks, num_kv_heads, page_size, head_dim] (HND)");
}

TEST_F(ApiErrors, DequantScaleMissing) {
  kvq::DequantArgs a = dequant;
  a.scale = TensorView{};
  expect_dequant_rejected(a, kValue, "scale", "fp32, bf16 or fp16 [num_kv_heads, head_dim]");
}

TEST_F(ApiErrors, DequantOutWrongDtype) {
  kvq::DequantArgs a = dequant;
  a.out.dtype = DType::kFloat32;
  expect_dequant_rejected(a, kType, "out", "bf16 or fp16 [num_blocks");
}

TEST_F(ApiErrors, DequantFullOutShapeDiffers) {
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make(dq_out.data(), DType::kBFloat16, {kBlocks - 1, kHkv, kPage, kD});
  expect_dequant_rejected(a, kValue, "out", "[6, 2, 4, 16] (full mode: the shape of cache)");
}

TEST_F(ApiErrors, DequantOutBlockTablesWrongShape) {
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make(dq_out_compact.data(), DType::kBFloat16, {4, kHkv, kPage, kD});
  a.out_block_tables = TensorView::make(out_block_tables.data(), DType::kInt32, {kBatch, 2});
  expect_dequant_rejected(a, kValue, "out_block_tables", "[2, 3] (the shape of block_tables)");
}

TEST_F(ApiErrors, DequantCompactOutTooSmall) {
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make(dq_out_compact.data(), DType::kBFloat16, {3, kHkv, kPage, kD});
  a.out_block_tables = TensorView::make(out_block_tables.data(), DType::kInt32, {kBatch, kMaxBlocks});
  expect_dequant_rejected(a, kValue, "out", "at least 4 blocks (compact mode: the referenced blocks)");
}

TEST_F(ApiErrors, DequantOutAliasesCache) {
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make(k_cache.data(), DType::kBFloat16, {kBlocks, kHkv, kPage, kD});
  expect_dequant_rejected(a, kValue, "out", "does not overlap cache");
}

TEST_F(ApiErrors, DequantBlockIdOutOfRange) {
  block_tables[0] = kBlocks + 3;
  expect_dequant_rejected(dequant, kValue, "block_tables", "got block_tables[0][0] = 9");
}

// --- calibrate ---

TEST_F(ApiErrors, CalibrateXWrongDtype) {
  const TensorView x = TensorView::make(q_int8.data(), DType::kInt8, {kCalibTokens, kHkv, kD});
  expect_calibrate_rejected(x, calib_scale_view, kType, "x",
                            "fp32, bf16 or fp16 [num_tokens, num_kv_heads, head_dim]");
}

TEST_F(ApiErrors, CalibrateXWrongRank) {
  const TensorView x = TensorView::make(calib_x.data(), DType::kFloat32, {kCalibTokens * kHkv, kD});
  expect_calibrate_rejected(x, calib_scale_view, kValue, "x", "(rank 3)");
}

TEST_F(ApiErrors, CalibrateScaleOutWrongDtype) {
  TensorView s = calib_scale_view;
  s.dtype = DType::kBFloat16;
  expect_calibrate_rejected(calib_x_view, s, kType, "scale_out", "fp32 [num_kv_heads, head_dim]");
}

TEST_F(ApiErrors, CalibrateScaleOutWrongShape) {
  const TensorView s = TensorView::make(calib_scale.data(), DType::kFloat32, {kD, kHkv});
  expect_calibrate_rejected(calib_x_view, s, kValue, "scale_out", "[2, 16]");
}

TEST_F(ApiErrors, CalibrateScaleOutAliasesX) {
  const TensorView s = TensorView::make(calib_x.data(), DType::kFloat32, {kHkv, kD});
  expect_calibrate_rejected(calib_x_view, s, kValue, "scale_out", "does not overlap x");
}

TEST_F(ApiErrors, CalibrateCudaTensorsWithoutCuda) {
  if (kvq::cuda_built()) GTEST_SKIP() << "this build has the CUDA backend";
  TensorView x = calib_x_view, s = calib_scale_view;
  x.device = s.device = Device::kCUDA;
  expect_calibrate_rejected(x, s, kType, "device", "CUDA tensors need kvq built with CUDA");
}

}  // namespace
}  // namespace kvq_api_test
