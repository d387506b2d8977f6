// tests/api/api_fixture.h — one small, valid set of arguments for every entry point (CPU
// tensors), and the checks every error test makes.
//
// Geometry: batch_size 2, num_qo_heads 4, num_kv_heads 2, head_dim 16, page_size 4,
// num_blocks 6, max_blocks_per_seq 3. Prefill: q_lens {3, 2} packed in total_q = 6 rows (row 5
// is bucket padding), kv_lens {5, 8}, block_tables {{3, 0, -1}, {5, 1, -1}}: 4 referenced blocks.
// Every buffer holds a deterministic non-zero pattern; snapshot() concatenates the bytes of all
// of them, so an error test can assert that a failing call wrote nothing anywhere.
//
// The fixture owns its buffers and the args structs point into them: it is neither copied nor
// moved (gtest constructs it in place). use_int8_q / use_float_cache / on_cuda are the variations
// of the valid arguments that several error tests start from.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kvq/kvq.h"

namespace kvq_api_test {

// The names every api test uses.
using kvq::DType;
using kvq::Device;
using kvq::TensorView;
inline constexpr kvq::ErrorKind kType = kvq::ErrorKind::kType;
inline constexpr kvq::ErrorKind kValue = kvq::ErrorKind::kValue;

inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Deterministic values in [-1, 1), never exactly zero.
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : state_(seed) {}
  float next() {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    const float v = static_cast<float>((state_ >> 40) & 0xffffff) / 8388608.0f - 1.0f;
    return v == 0.f ? 0.5f : v;
  }

 private:
  uint64_t state_;
};

template <typename T>
void append_bytes(std::vector<uint8_t>& dst, const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  dst.insert(dst.end(), p, p + v.size() * sizeof(T));
}

class ApiFixture : public ::testing::Test {
 protected:
  static constexpr int64_t kBatch = 2, kHq = 4, kHkv = 2, kD = 16, kPage = 4, kBlocks = 6,
                           kMaxBlocks = 3, kTotalQ = 6, kTokens = 3, kCalibTokens = 5;
  static constexpr int64_t kCacheElems = kBlocks * kHkv * kPage * kD;

  ApiFixture();

  // Bytes of every buffer of the fixture, outputs and inputs alike.
  std::vector<uint8_t> snapshot() const;

  // Runs f, which must throw kvq::Error of `kind` from `func` naming `arg`, with what()
  // containing the argument, "expected" and `expect`; then checks that no buffer changed.
  template <typename F>
  void expect_rejected(F&& f, kvq::ErrorKind kind, const std::string& func, const std::string& arg,
                       const std::string& expect);

  void expect_prefill_rejected(const kvq::PrefillArgs& a, kvq::ErrorKind kind,
                               const std::string& arg, const std::string& expect) {
    expect_rejected([&] { kvq::paged_prefill(a); }, kind, "paged_prefill", arg, expect);
  }
  void expect_decode_rejected(const kvq::DecodeArgs& a, kvq::ErrorKind kind,
                              const std::string& arg, const std::string& expect) {
    expect_rejected([&] { kvq::paged_decode(a); }, kind, "paged_decode", arg, expect);
  }
  void expect_append_rejected(const kvq::AppendArgs& a, kvq::ErrorKind kind,
                              const std::string& arg, const std::string& expect) {
    expect_rejected([&] { kvq::append(a); }, kind, "append", arg, expect);
  }
  void expect_dequant_rejected(const kvq::DequantArgs& a, kvq::ErrorKind kind,
                               const std::string& arg, const std::string& expect) {
    expect_rejected([&] { kvq::dequantize_blocks(a); }, kind, "dequantize_blocks", arg, expect);
  }
  void expect_calibrate_rejected(const kvq::TensorView& x, const kvq::TensorView& s,
                                 kvq::ErrorKind kind, const std::string& arg,
                                 const std::string& expect) {
    expect_rejected([&] { kvq::calibrate(x, s); }, kind, "calibrate", arg, expect);
  }

  // --- variations of the valid arguments ---
  // a's q as int8 [total_q, num_qo_heads, head_dim] (q_int8) with its fp32 q_scale [total_q, num_qo_heads].
  void use_int8_q(kvq::PrefillArgs& a) {
    a.q = TensorView::make(q_int8.data(), DType::kInt8, {kTotalQ, kHq, kD});
    a.q_scale = TensorView::make(q_scale.data(), DType::kFloat32, {kTotalQ, kHq});
  }
  // a's K/V caches replaced by bf16 or fp16 ones of the same shape, every element 1.0 (held in
  // k_float and v_float, which snapshot() leaves out), their scales dropped unless keep_scales.
  void use_float_cache(kvq::PrefillArgs& a, DType dtype, bool keep_scales = false) {
    const uint16_t one = dtype == DType::kBFloat16 ? 0x3f80 : 0x3c00;
    k_float.assign(kCacheElems, one);
    v_float.assign(kCacheElems, one);
    a.kv.k_cache = TensorView::make(k_float.data(), dtype, {kBlocks, kHkv, kPage, kD});
    a.kv.v_cache = TensorView::make(v_float.data(), dtype, {kBlocks, kHkv, kPage, kD});
    if (!keep_scales) {
      a.kv.k_scale = TensorView{};
      a.kv.v_scale = TensorView{};
    }
  }
  // Every tensor of the valid arguments marked as a CUDA tensor (cuda:0).
  static void on_cuda(kvq::PrefillArgs& a) {
    for (TensorView* t : {&a.q, &a.out, &a.lse, &a.kv.k_cache, &a.kv.v_cache, &a.kv.k_scale,
                          &a.kv.v_scale, &a.block_tables, &a.cu_q_lens, &a.kv_lens})
      t->device = Device::kCUDA;
  }
  static void on_cuda(kvq::DecodeArgs& a) {
    for (TensorView* t : {&a.q, &a.out, &a.lse, &a.kv.k_cache, &a.kv.v_cache, &a.kv.k_scale,
                          &a.kv.v_scale, &a.block_tables, &a.kv_lens})
      t->device = Device::kCUDA;
  }
  static void on_cuda(kvq::AppendArgs& a) {
    for (TensorView* t : {&a.k_new, &a.v_new, &a.slot_mapping, &a.kv.k_cache, &a.kv.v_cache,
                          &a.kv.k_scale, &a.kv.v_scale})
      t->device = Device::kCUDA;
  }

  // --- buffers ---
  std::vector<uint16_t> q, out, q_dec, out_dec, dq_out, dq_out_compact;
  std::vector<int8_t> k_cache, v_cache, q_int8;
  std::vector<float> k_scale, v_scale, lse, lse_dec, q_scale, k_scale_tok, v_scale_tok;
  std::vector<float> k_new, v_new, calib_x, calib_scale;
  std::vector<int32_t> block_tables, cu_q_lens, kv_lens, out_block_tables;
  std::vector<int64_t> slots;
  std::vector<uint8_t> mask;
  std::vector<uint16_t> k_float, v_float;  // use_float_cache's caches (not in snapshot())

  // --- valid arguments ---
  kvq::PagedKvCache kv;  // int8 HND, per-channel scales
  kvq::PrefillArgs prefill;
  kvq::DecodeArgs decode;
  kvq::AppendArgs append;
  kvq::DequantArgs dequant;
  kvq::TensorView calib_x_view, calib_scale_view;
};

inline ApiFixture::ApiFixture() {
  using kvq::DType;
  using kvq::TensorView;
  Lcg rng(20261125);
  auto fill_bf16 = [&](std::vector<uint16_t>& v, size_t n) {
    v.resize(n);
    for (auto& x : v) x = to_bf16(rng.next());
  };
  auto fill_f32 = [&](std::vector<float>& v, size_t n, float lo, float span) {
    v.resize(n);
    for (auto& x : v) x = lo + span * (0.5f + 0.5f * rng.next());
  };
  auto fill_i8 = [&](std::vector<int8_t>& v, size_t n) {
    v.resize(n);
    for (auto& x : v) x = static_cast<int8_t>(static_cast<int>(rng.next() * 127.f));
  };

  fill_bf16(q, kTotalQ * kHq * kD);
  out.assign(kTotalQ * kHq * kD, 0xABCD);  // a pattern, not zeros, so writes show
  fill_bf16(q_dec, kBatch * kHq * kD);
  out_dec.assign(kBatch * kHq * kD, 0xABCD);
  fill_i8(k_cache, kCacheElems);
  fill_i8(v_cache, kCacheElems);
  fill_i8(q_int8, kTotalQ * kHq * kD);
  fill_f32(k_scale, kHkv * kD, 0.01f, 0.02f);
  fill_f32(v_scale, kHkv * kD, 0.01f, 0.02f);
  fill_f32(k_scale_tok, kBlocks * kHkv * kPage, 0.01f, 0.02f);
  fill_f32(v_scale_tok, kBlocks * kHkv * kPage, 0.01f, 0.02f);
  fill_f32(q_scale, kTotalQ * kHq, 0.01f, 0.02f);
  lse.assign(kTotalQ * kHq, -12345.f);
  lse_dec.assign(kBatch * kHq, -12345.f);
  fill_f32(k_new, kTokens * kHkv * kD, -1.f, 2.f);
  fill_f32(v_new, kTokens * kHkv * kD, -1.f, 2.f);
  fill_f32(calib_x, kCalibTokens * kHkv * kD, -2.f, 4.f);
  calib_scale.assign(kHkv * kD, -7.f);
  dq_out.assign(kCacheElems, 0xABCD);
  dq_out_compact.assign(4 * kHkv * kPage * kD, 0xABCD);
  block_tables = {3, 0, -1, 5, 1, -1};
  out_block_tables.assign(kBatch * kMaxBlocks, 77);
  cu_q_lens = {0, 3, 5};
  kv_lens = {5, 8};
  slots = {0, 9, -1};
  mask.assign(3 * 5 + 2 * 8, 1);

  kv.k_cache = TensorView::make(k_cache.data(), DType::kInt8, {kBlocks, kHkv, kPage, kD});
  kv.v_cache = TensorView::make(v_cache.data(), DType::kInt8, {kBlocks, kHkv, kPage, kD});
  kv.k_scale = TensorView::make(k_scale.data(), DType::kFloat32, {kHkv, kD});
  kv.v_scale = TensorView::make(v_scale.data(), DType::kFloat32, {kHkv, kD});
  kv.layout = kvq::KvLayout::kHND;
  const TensorView bt = TensorView::make(block_tables.data(), DType::kInt32, {kBatch, kMaxBlocks});
  const TensorView kvl = TensorView::make(kv_lens.data(), DType::kInt32, {kBatch});

  prefill.q = TensorView::make(q.data(), DType::kBFloat16, {kTotalQ, kHq, kD});
  prefill.kv = kv;
  prefill.block_tables = bt;
  prefill.cu_q_lens = TensorView::make(cu_q_lens.data(), DType::kInt32, {kBatch + 1});
  prefill.kv_lens = kvl;
  prefill.out = TensorView::make(out.data(), DType::kBFloat16, {kTotalQ, kHq, kD});
  prefill.lse = TensorView::make(lse.data(), DType::kFloat32, {kTotalQ, kHq});

  decode.q = TensorView::make(q_dec.data(), DType::kBFloat16, {kBatch, kHq, kD});
  decode.kv = kv;
  decode.block_tables = bt;
  decode.kv_lens = kvl;
  decode.out = TensorView::make(out_dec.data(), DType::kBFloat16, {kBatch, kHq, kD});
  decode.lse = TensorView::make(lse_dec.data(), DType::kFloat32, {kBatch, kHq});

  append.k_new = TensorView::make(k_new.data(), DType::kFloat32, {kTokens, kHkv, kD});
  append.v_new = TensorView::make(v_new.data(), DType::kFloat32, {kTokens, kHkv, kD});
  append.slot_mapping = TensorView::make(slots.data(), DType::kInt64, {kTokens});
  append.kv = kv;

  dequant.cache = kv.k_cache;
  dequant.scale = kv.k_scale;
  dequant.block_tables = bt;
  dequant.kv_lens = kvl;
  dequant.out = TensorView::make(dq_out.data(), DType::kBFloat16, {kBlocks, kHkv, kPage, kD});
  dequant.layout = kvq::KvLayout::kHND;

  calib_x_view = TensorView::make(calib_x.data(), DType::kFloat32, {kCalibTokens, kHkv, kD});
  calib_scale_view = TensorView::make(calib_scale.data(), DType::kFloat32, {kHkv, kD});
}

inline std::vector<uint8_t> ApiFixture::snapshot() const {
  std::vector<uint8_t> s;
  append_bytes(s, q);
  append_bytes(s, out);
  append_bytes(s, q_dec);
  append_bytes(s, out_dec);
  append_bytes(s, dq_out);
  append_bytes(s, dq_out_compact);
  append_bytes(s, k_cache);
  append_bytes(s, v_cache);
  append_bytes(s, q_int8);
  append_bytes(s, k_scale);
  append_bytes(s, v_scale);
  append_bytes(s, lse);
  append_bytes(s, lse_dec);
  append_bytes(s, q_scale);
  append_bytes(s, k_scale_tok);
  append_bytes(s, v_scale_tok);
  append_bytes(s, k_new);
  append_bytes(s, v_new);
  append_bytes(s, calib_x);
  append_bytes(s, calib_scale);
  append_bytes(s, block_tables);
  append_bytes(s, cu_q_lens);
  append_bytes(s, kv_lens);
  append_bytes(s, out_block_tables);
  append_bytes(s, slots);
  append_bytes(s, mask);
  return s;
}

template <typename F>
void ApiFixture::expect_rejected(F&& f, kvq::ErrorKind kind, const std::string& func,
                                 const std::string& arg, const std::string& expect) {
  const std::vector<uint8_t> before = snapshot();
  bool thrown = false;
  try {
    f();
  } catch (const kvq::Error& e) {
    thrown = true;
    const std::string what = e.what();
    EXPECT_EQ(e.argument(), arg) << what;
    EXPECT_EQ(e.function(), func) << what;
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << what;
    EXPECT_NE(what.find(func + ": " + arg + ": "), std::string::npos) << what;
    EXPECT_NE(what.find("expected"), std::string::npos) << what;
    EXPECT_NE(what.find(expect), std::string::npos) << "missing \"" << expect << "\" in: " << what;
  } catch (const std::exception& e) {
    thrown = true;
    ADD_FAILURE() << "expected kvq::Error naming " << arg << ", got another exception: "
                  << e.what();
  }
  EXPECT_TRUE(thrown) << "expected kvq::Error naming " << arg << ", nothing was thrown";
  EXPECT_TRUE(before == snapshot()) << "a buffer changed although the call was rejected";
}

// One fixture class per suite name (gtest requires it across translation units).
class ApiErrors : public ApiFixture {};  // rejected calls: tests/api/*_errors_test.cpp
class ApiSmoke : public ApiFixture {};   // valid calls run on the CPU backend

}  // namespace kvq_api_test
