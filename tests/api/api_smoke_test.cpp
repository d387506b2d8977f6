// tests/api/api_smoke_test.cpp — valid calls pass validation and reach the backend, plans and
// basics (errors, views, enums) behave as kvq.h documents.
//
// ApiSmoke.* run the CPU backend and check only contract-level facts (what is written and what
// is not, bounds that hold for any correct result); the numerics are tests/cpu's job.
// ApiPlan.* and ApiBasics.* need no backend.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/api/api_fixture.h"

namespace kvq_api_test {
namespace {

constexpr uint16_t kOutPattern = 0xABCD;

// An attention output is a convex combination of value rows: |o| <= max |v|.
float max_abs_v(const std::vector<int8_t>& v_cache, const std::vector<float>& v_scale,
                int64_t num_kv_heads, int64_t page_size, int64_t head_dim) {
  float m = 0.f;
  for (size_t i = 0; i < v_cache.size(); ++i) {
    const int64_t d = static_cast<int64_t>(i) % head_dim;
    const int64_t h = static_cast<int64_t>(i) / (head_dim * page_size) % num_kv_heads;
    m = std::max(m, std::fabs(v_cache[i] * v_scale[h * head_dim + d]));
  }
  return m;
}

TEST_F(ApiSmoke, PrefillWritesRealRowsOnly) {
  kvq::PrefillArgs a = prefill;
  a.check = true;
  const std::vector<int8_t> k_before = k_cache, v_before = v_cache;
  ASSERT_NO_THROW(kvq::paged_prefill(a));
  const float bound = max_abs_v(v_cache, v_scale, kHkv, kPage, kD) * 1.01f + 1e-6f;
  const int64_t real_rows = cu_q_lens[kBatch];
  for (int64_t t = 0; t < kTotalQ; ++t)
    for (int64_t h = 0; h < kHq; ++h) {
      const uint16_t* row = &out[(t * kHq + h) * kD];
      const float l = lse[t * kHq + h];
      if (t >= real_rows) {
        for (int64_t d = 0; d < kD; ++d) EXPECT_EQ(row[d], kOutPattern) << "padding row " << t;
        EXPECT_EQ(l, -12345.f) << "padding row " << t;
        continue;
      }
      bool written = false;
      for (int64_t d = 0; d < kD; ++d) {
        const float o = from_bf16(row[d]);
        EXPECT_TRUE(std::isfinite(o)) << "t " << t << " h " << h << " d " << d;
        EXPECT_LE(std::fabs(o), bound) << "t " << t << " h " << h << " d " << d;
        written = written || row[d] != kOutPattern;
      }
      EXPECT_TRUE(written) << "row t " << t << " h " << h << " still holds the pattern";
      EXPECT_TRUE(std::isfinite(l)) << "lse t " << t << " h " << h;
    }
  EXPECT_EQ(k_before, k_cache);
  EXPECT_EQ(v_before, v_cache);
}

TEST_F(ApiSmoke, PrefillWithPlanMatchesWithout) {
  ASSERT_NO_THROW(kvq::paged_prefill(prefill));
  const std::vector<uint16_t> first = out;
  out.assign(out.size(), kOutPattern);
  const kvq::PrefillPlan plan = kvq::plan_prefill(prefill, cu_q_lens.data(), kv_lens.data());
  kvq::PrefillArgs a = prefill;
  a.plan = &plan;
  ASSERT_NO_THROW(kvq::paged_prefill(a));
  EXPECT_EQ(first, out);
}

TEST_F(ApiSmoke, DecodeWritesEveryRow) {
  kvq::DecodeArgs a = decode;
  a.check = true;
  EXPECT_EQ(kvq::decode_workspace_size(a), 0u);
  ASSERT_NO_THROW(kvq::paged_decode(a));
  const float bound = max_abs_v(v_cache, v_scale, kHkv, kPage, kD) * 1.01f + 1e-6f;
  for (int64_t i = 0; i < kBatch * kHq; ++i) {
    bool written = false;
    for (int64_t d = 0; d < kD; ++d) {
      const float o = from_bf16(out_dec[i * kD + d]);
      EXPECT_TRUE(std::isfinite(o));
      EXPECT_LE(std::fabs(o), bound);
      written = written || out_dec[i * kD + d] != kOutPattern;
    }
    EXPECT_TRUE(written) << "row " << i;
    EXPECT_TRUE(std::isfinite(lse_dec[i])) << "lse " << i;
  }
}

// Slot s lands in block s / page_size at offset s % page_size; slot -1 is skipped.
TEST_F(ApiSmoke, AppendPerChannelWritesItsSlotsOnly) {
  std::vector<int8_t> k_expect = k_cache, v_expect = v_cache;
  for (int64_t n = 0; n < kTokens; ++n) {
    if (slots[n] < 0) continue;
    const int64_t blk = slots[n] / kPage, off = slots[n] % kPage;
    for (int64_t h = 0; h < kHkv; ++h)
      for (int64_t d = 0; d < kD; ++d) {
        const int64_t dst = ((blk * kHkv + h) * kPage + off) * kD + d;
        const int64_t src = (n * kHkv + h) * kD + d;
        k_expect[dst] = kvq::quantize_value(k_new[src], k_scale[h * kD + d]);
        v_expect[dst] = kvq::quantize_value(v_new[src], v_scale[h * kD + d]);
      }
  }
  kvq::AppendArgs a = append;
  a.check = true;
  ASSERT_NO_THROW(kvq::append(a));
  EXPECT_EQ(k_expect, k_cache);
  EXPECT_EQ(v_expect, v_cache);
}

TEST_F(ApiSmoke, AppendPerTokenStoresScales) {
  kvq::AppendArgs a = append;
  a.kv.k_scale = TensorView::make(k_scale_tok.data(), DType::kFloat32, {kBlocks, kHkv, kPage});
  a.kv.v_scale = TensorView::make(v_scale_tok.data(), DType::kFloat32, {kBlocks, kHkv, kPage});
  std::vector<float> ks_expect = k_scale_tok;
  std::vector<int8_t> k_expect = k_cache;
  for (int64_t n = 0; n < kTokens; ++n) {
    if (slots[n] < 0) continue;
    const int64_t blk = slots[n] / kPage, off = slots[n] % kPage;
    for (int64_t h = 0; h < kHkv; ++h) {
      float amax = 0.f;
      for (int64_t d = 0; d < kD; ++d) amax = std::max(amax, std::fabs(k_new[(n * kHkv + h) * kD + d]));
      const float s = kvq::per_token_scale(amax);
      ks_expect[(blk * kHkv + h) * kPage + off] = s;
      for (int64_t d = 0; d < kD; ++d)
        k_expect[((blk * kHkv + h) * kPage + off) * kD + d] =
            kvq::quantize_value(k_new[(n * kHkv + h) * kD + d], s);
    }
  }
  ASSERT_NO_THROW(kvq::append(a));
  EXPECT_EQ(ks_expect, k_scale_tok);
  EXPECT_EQ(k_expect, k_cache);
}

TEST_F(ApiSmoke, DequantFullWritesReferencedBlocksOnly) {
  ASSERT_NO_THROW(kvq::dequantize_blocks(dequant));
  const int64_t block_elems = kHkv * kPage * kD;
  for (int64_t blk = 0; blk < kBlocks; ++blk) {
    const bool referenced = blk == 3 || blk == 0 || blk == 5 || blk == 1;
    for (int64_t i = 0; i < block_elems; ++i) {
      const int64_t e = blk * block_elems + i;
      if (!referenced) {
        EXPECT_EQ(dq_out[e], kOutPattern) << "block " << blk << " is not referenced";
        continue;
      }
      const int64_t h = i / (kPage * kD), d = i % kD;
      EXPECT_EQ(dq_out[e], to_bf16(k_cache[e] * k_scale[h * kD + d])) << "block " << blk << " i " << i;
    }
  }
}

TEST_F(ApiSmoke, DequantCompactRemapsTable) {
  kvq::DequantArgs a = dequant;
  a.out = TensorView::make(dq_out_compact.data(), DType::kBFloat16, {4, kHkv, kPage, kD});
  a.out_block_tables = TensorView::make(out_block_tables.data(), DType::kInt32, {kBatch, kMaxBlocks});
  ASSERT_NO_THROW(kvq::dequantize_blocks(a));
  EXPECT_EQ(out_block_tables, (std::vector<int32_t>{0, 1, -1, 2, 3, -1}));
  const int64_t block_elems = kHkv * kPage * kD;
  const int64_t source[4] = {3, 0, 5, 1};
  for (int64_t c = 0; c < 4; ++c)
    for (int64_t i = 0; i < block_elems; ++i) {
      const int64_t h = i / (kPage * kD), d = i % kD;
      EXPECT_EQ(dq_out_compact[c * block_elems + i],
                to_bf16(k_cache[source[c] * block_elems + i] * k_scale[h * kD + d]))
          << "compact block " << c << " i " << i;
    }
}

TEST_F(ApiSmoke, CalibrateGivesAmaxOver127) {
  ASSERT_NO_THROW(kvq::calibrate(calib_x_view, calib_scale_view));
  for (int64_t h = 0; h < kHkv; ++h)
    for (int64_t d = 0; d < kD; ++d) {
      float amax = 0.f;
      for (int64_t n = 0; n < kCalibTokens; ++n)
        amax = std::max(amax, std::fabs(calib_x[(n * kHkv + h) * kD + d]));
      EXPECT_FLOAT_EQ(calib_scale[h * kD + d], std::max(amax / 127.f, 1e-5f)) << "h " << h << " d " << d;
    }
}

// --- planning (no backend) ---

class ApiPlan : public ApiFixture {};

TEST_F(ApiPlan, CpuPlanFromHostLengths) {
  const kvq::PrefillPlan plan = kvq::plan_prefill(prefill, cu_q_lens.data(), kv_lens.data());
  EXPECT_EQ(plan.path, kvq::PrefillPath::kGeneric);
  EXPECT_EQ(plan.device, Device::kCPU);
  EXPECT_EQ(plan.batch_size, 2);
  EXPECT_EQ(plan.total_q, 6);
  EXPECT_EQ(plan.max_q_len, 3);
  EXPECT_EQ(plan.max_kv_len, 8);
  EXPECT_EQ(plan.num_referenced_blocks, 4);  // ceil(5/4) + ceil(8/4)
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.workspace_bytes, 0u);
  EXPECT_EQ(plan.kernel, kvq::PrefillKernel::kPath);  // the CPU backend serves every call itself
}

TEST_F(ApiPlan, UpperBoundsWithoutLengths) {
  const kvq::PrefillPlan plan = kvq::plan_prefill(prefill, nullptr, nullptr);
  EXPECT_EQ(plan.max_q_len, kTotalQ);
  EXPECT_EQ(plan.max_kv_len, kMaxBlocks * kPage);
  EXPECT_EQ(plan.num_referenced_blocks, kBatch * kMaxBlocks);
}

TEST_F(ApiPlan, CpuServesEveryPath) {
  kvq::PrefillArgs a = prefill;
  a.path = kvq::PrefillPath::kDequant;
  const kvq::PrefillPlan plan = kvq::plan_prefill(a, cu_q_lens.data(), kv_lens.data());
  EXPECT_EQ(plan.path, kvq::PrefillPath::kGeneric);
  EXPECT_EQ(plan.workspace_bytes, 0u);
}

// CUDA-device views over host buffers: planning reads shapes only, never the data.
class ApiPlanCuda : public ::testing::Test {
 protected:
  static constexpr int64_t kB = 3, kHq = 8, kHkv = 2, kPage = 16, kBlocks = 40, kMaxBlocks = 10;
  static constexpr int64_t kT = 50;

  kvq::PrefillArgs make(int64_t head_dim, DType cache_dtype) {
    const int64_t cache_elems = kBlocks * kHkv * kPage * head_dim;
    q_.assign(kT * kHq * head_dim, 0);
    out_.assign(kT * kHq * head_dim, 0);
    k_.assign(cache_elems * 2, 0);
    v_.assign(cache_elems * 2, 0);
    ks_.assign(kHkv * head_dim, 1.f);
    vs_.assign(kHkv * head_dim, 1.f);
    bt_.assign(kB * kMaxBlocks, 0);
    cu_.assign(kB + 1, 0);
    kvl_.assign(kB, 0);
    const Device cuda = Device::kCUDA;
    kvq::PrefillArgs a;
    a.q = TensorView::make(q_.data(), DType::kBFloat16, {kT, kHq, head_dim}, cuda);
    a.out = TensorView::make(out_.data(), DType::kBFloat16, {kT, kHq, head_dim}, cuda);
    a.kv.k_cache = TensorView::make(k_.data(), cache_dtype, {kBlocks, kHkv, kPage, head_dim}, cuda);
    a.kv.v_cache = TensorView::make(v_.data(), cache_dtype, {kBlocks, kHkv, kPage, head_dim}, cuda);
    if (cache_dtype == DType::kInt8) {
      a.kv.k_scale = TensorView::make(ks_.data(), DType::kFloat32, {kHkv, head_dim}, cuda);
      a.kv.v_scale = TensorView::make(vs_.data(), DType::kFloat32, {kHkv, head_dim}, cuda);
    }
    a.block_tables = TensorView::make(bt_.data(), DType::kInt32, {kB, kMaxBlocks}, cuda);
    a.cu_q_lens = TensorView::make(cu_.data(), DType::kInt32, {kB + 1}, cuda);
    a.kv_lens = TensorView::make(kvl_.data(), DType::kInt32, {kB}, cuda);
    return a;
  }

  static int64_t fast_dim() { return kvq::fast_head_dims().front(); }
  static int64_t slow_dim() {
    const std::vector<int> fast = kvq::fast_head_dims();
    for (int d = 1; d <= 256; ++d)
      if (std::find(fast.begin(), fast.end(), d) == fast.end()) return d;
    return -1;
  }

  std::vector<uint16_t> q_, out_, k_, v_;
  std::vector<float> ks_, vs_;
  std::vector<int32_t> bt_, cu_, kvl_;
  std::vector<uint8_t> mask_;
  const int32_t cu_host_[kB + 1] = {0, 17, 17, 45};
  const int32_t kv_host_[kB] = {17, 0, 160};
};

TEST_F(ApiPlanCuda, AutoTakesFusedForFastHeadDims) {
  for (DType dt : {DType::kInt8, DType::kBFloat16}) {
    const kvq::PrefillArgs a = make(fast_dim(), dt);
    const kvq::PrefillPlan plan = kvq::plan_prefill(a, cu_host_, kv_host_);
    EXPECT_EQ(plan.path, kvq::PrefillPath::kFused) << kvq::to_string(dt);
    EXPECT_EQ(plan.device, Device::kCUDA);
    EXPECT_EQ(plan.workspace_bytes, 0u);
    EXPECT_EQ(plan.max_q_len, 28);
    EXPECT_EQ(plan.max_kv_len, 160);
    EXPECT_EQ(plan.num_referenced_blocks, 2 + 0 + 10);
  }
}

TEST_F(ApiPlanCuda, AutoTakesGenericForOtherHeadDims) {
  const int64_t d = slow_dim();
  ASSERT_GT(d, 0);
  const kvq::PrefillPlan plan = kvq::plan_prefill(make(d, DType::kInt8), cu_host_, kv_host_);
  EXPECT_EQ(plan.path, kvq::PrefillPath::kGeneric);
}

TEST_F(ApiPlanCuda, AutoTakesGenericWithMask) {
  kvq::PrefillArgs a = make(fast_dim(), DType::kInt8);
  mask_.assign(17 * 17 + 28 * 160, 1);
  a.mask = TensorView::make(mask_.data(), DType::kBool, {static_cast<int64_t>(mask_.size())},
                            Device::kCUDA);
  a.mask_options.causal = false;
  EXPECT_EQ(kvq::plan_prefill(a, cu_host_, kv_host_).path, kvq::PrefillPath::kGeneric);
}

TEST_F(ApiPlanCuda, DequantWorkspaceFollowsTheDocumentedLayout) {
  const int64_t d = fast_dim();
  kvq::PrefillArgs a = make(d, DType::kInt8);
  a.path = kvq::PrefillPath::kDequant;
  auto round256 = [](size_t x) { return (x + 255) / 256 * 256; };
  const kvq::PrefillPlan plan = kvq::plan_prefill(a, cu_host_, kv_host_);
  EXPECT_EQ(plan.path, kvq::PrefillPath::kDequant);
  const size_t kv_part = round256(static_cast<size_t>(12 * kPage * kHkv * d * 2));
  const size_t table_part = round256(static_cast<size_t>(kB * kMaxBlocks * 4));
  EXPECT_EQ(plan.workspace_bytes, 2 * kv_part + table_part);
  const kvq::PrefillPlan bound = kvq::plan_prefill(a, nullptr, nullptr);
  EXPECT_EQ(bound.num_referenced_blocks, kB * kMaxBlocks);
  EXPECT_EQ(bound.workspace_bytes,
            2 * round256(static_cast<size_t>(kB * kMaxBlocks * kPage * kHkv * d * 2)) + table_part);
}

TEST_F(ApiPlanCuda, RequestedPathIsKept) {
  kvq::PrefillArgs a = make(slow_dim(), DType::kInt8);
  a.path = kvq::PrefillPath::kFused;
  EXPECT_EQ(kvq::plan_prefill(a, cu_host_, kv_host_).path, kvq::PrefillPath::kFused);
  a.path = kvq::PrefillPath::kGeneric;
  EXPECT_EQ(kvq::plan_prefill(a, cu_host_, kv_host_).path, kvq::PrefillPath::kGeneric);
}

// Short chunks (q_len <= 8) go to the tensor-core decode kernel only from real host lengths, and
// never with KVQ_SMALL_Q_DECODE=0; whether a CUDA device is there does not matter for either.
TEST_F(ApiPlanCuda, ShortChunksKeepThePathKernelWithoutHostLengthsOrWithTheSwitchOff) {
  const int32_t cu_short[kB + 1] = {0, 4, 4, 7};
  const kvq::PrefillArgs a = make(128, DType::kInt8);
  const kvq::PrefillPlan bound = kvq::plan_prefill(a, nullptr, kv_host_);
  EXPECT_EQ(bound.kernel, kvq::PrefillKernel::kPath);
  EXPECT_EQ(bound.num_splits, 1);
  EXPECT_EQ(bound.workspace_bytes, 0u);
  const char* old = std::getenv("KVQ_SMALL_Q_DECODE");
  const std::string saved = old ? old : "";
  setenv("KVQ_SMALL_Q_DECODE", "0", 1);
  const kvq::PrefillPlan off = kvq::plan_prefill(a, cu_short, kv_host_);
  if (old) {
    setenv("KVQ_SMALL_Q_DECODE", saved.c_str(), 1);
  } else {
    unsetenv("KVQ_SMALL_Q_DECODE");
  }
  EXPECT_EQ(off.kernel, kvq::PrefillKernel::kPath);
  EXPECT_EQ(off.max_q_len, 4);
  EXPECT_EQ(off.workspace_bytes, 0u);
  EXPECT_STREQ(kvq::to_string(kvq::PrefillKernel::kPath), "path");
  EXPECT_STREQ(kvq::to_string(kvq::PrefillKernel::kMmaDecode), "mma_decode");
}

// --- basics ---

TEST(ApiBasics, ErrorMessageFormat) {
  const kvq::Error e(kvq::ErrorKind::kType, "paged_prefill", "k_cache", "expected int8, got fp32");
  EXPECT_STREQ(e.what(), "paged_prefill: k_cache: expected int8, got fp32");
  EXPECT_EQ(e.function(), "paged_prefill");
  EXPECT_EQ(e.argument(), "k_cache");
  EXPECT_EQ(e.kind(), kvq::ErrorKind::kType);
}

TEST(ApiBasics, CheckMacroThrowsValueError) {
  try {
    KVQ_CHECK(1 + 1 == 3, "f", "x", "expected 3, got " << 2);
    FAIL() << "KVQ_CHECK did not throw";
  } catch (const kvq::Error& e) {
    EXPECT_STREQ(e.what(), "f: x: expected 3, got 2");
    EXPECT_EQ(e.kind(), kvq::ErrorKind::kValue);
  }
}

TEST(ApiBasics, TensorViewMake) {
  int8_t buf[1];
  const TensorView t = TensorView::make(buf, DType::kBFloat16, {12, 8, 16, 128});
  EXPECT_EQ(t.ndim, 4);
  EXPECT_EQ(t.numel(), 12 * 8 * 16 * 128);
  EXPECT_EQ(t.stride(0), 8 * 16 * 128);
  EXPECT_EQ(t.stride(-1), 1);
  EXPECT_EQ(t.size(-2), 16);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.describe(), "bf16 [12, 8, 16, 128]");
  EXPECT_EQ(TensorView{}.describe(), "absent");
  EXPECT_FALSE(TensorView{}.defined());
  EXPECT_EQ(TensorView{}.numel(), 0);
  const TensorView s = TensorView::make_strided(buf, DType::kInt8, {4, 3}, {8, 1});
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_TRUE(TensorView::make_strided(buf, DType::kInt8, {1, 3}, {99, 1}).is_contiguous());
  EXPECT_THROW(TensorView::make_strided(buf, DType::kInt8, {4, 3}, {1}), kvq::Error);
  EXPECT_THROW(TensorView::make(buf, DType::kInt8, {1, 2, 3, 4, 5, 6, 7}), kvq::Error);
}

TEST(ApiBasics, DtypesAndNames) {
  EXPECT_EQ(kvq::dtype_size(DType::kFloat32), 4u);
  EXPECT_EQ(kvq::dtype_size(DType::kBFloat16), 2u);
  EXPECT_EQ(kvq::dtype_size(DType::kFloat16), 2u);
  EXPECT_EQ(kvq::dtype_size(DType::kInt8), 1u);
  EXPECT_EQ(kvq::dtype_size(DType::kInt64), 8u);
  EXPECT_STREQ(kvq::to_string(DType::kBFloat16), "bf16");
  EXPECT_STREQ(kvq::to_string(Device::kCUDA), "cuda");
  EXPECT_STREQ(kvq::to_string(kvq::KvLayout::kNHD), "NHD");
  EXPECT_STREQ(kvq::to_string(kvq::GqaLayout::kInterleaved), "interleaved");
  EXPECT_STREQ(kvq::to_string(kvq::ScaleMode::kPerToken), "per_token");
  EXPECT_STREQ(kvq::to_string(kvq::PrefillPath::kDequant), "dequant");
}

TEST(ApiBasics, BuildQueries) {
  if (!kvq::cuda_built()) EXPECT_FALSE(kvq::cuda_available());
  const std::vector<int> dims = kvq::fast_head_dims();
  ASSERT_FALSE(dims.empty());
  for (int d : dims) {
    EXPECT_GE(d, 1);
    EXPECT_LE(d, 256);
  }
}

}  // namespace
}  // namespace kvq_api_test
