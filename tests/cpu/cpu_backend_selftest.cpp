// tests/cpu/cpu_backend_selftest.cpp — properties of the CPU backend's own implementation
// (src/cpu), beside the accuracy tests against the naive fp64 reference (prefill_*_test.cpp):
//
//   - Fp32Twin: the backend's fp32 numerics are exactly the recipe of docs/design.md §1, written
//     here as the most naive loops (per row: dot products summed over head_dim in order, exact
//     row max, p = expf(s - m), l summed in key order, P rounded to the query dtype, O summed
//     in key order; int8 compute: q split per (token, head) into two int8 parts, exact int8 products for S, the
//     per-token V scale on the rounded p, the per-channel one on O). The backend's tiled, threaded, vectorized code must
//     give the same bits (x86-64 without FMA; within 2 ulp where the compiler may contract).
//   - Invariance: bit-identical results for any thread count (KVQ_NUM_THREADS), for the SSE2
//     and AVX2 code paths (KVQ_CPU_SIMD=generic), for HND vs NHD copies of the same cache, and
//     decode vs a prefill of one query per sequence.
//   - fp64 mode is the oracle: it agrees with tests/common's fp64 reference to output rounding.
//   - Cache ops write exactly the int8 format: append (per-channel, per-token with the stored,
//     dtype-rounded scale, skipped slots), dequantize_blocks, calibrate, quantize_value.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kvq/kvq.h"
#include "src/core/backend.h"
#include "tests/common/compare.h"
#include "tests/common/half.h"
#include "tests/common/paged_cache.h"
#include "tests/common/reference.h"
#include "tests/common/rng.h"
#include "tests/common/tensor.h"

namespace kvq::test {
namespace {

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

class ScopedFp64 {
 public:
  ScopedFp64() { cpu::set_fp64_accumulation(true); }
  ~ScopedFp64() { cpu::set_fp64_accumulation(false); }
};

float round_out(float v, DType dtype) {
  return dtype == DType::kFloat16 ? round_to_fp16(v) : dtype == DType::kBFloat16 ? round_to_bf16(v) : v;
}

// ---- the fp32 twin ----

struct TwinOut {
  std::vector<float> out;  // [rows, Hq, D], before rounding to the output dtype
  std::vector<float> lse;  // [rows, Hq]
};

float scale_at(const TensorView& s, KvLayout layout, int64_t blk, int64_t h, int64_t pos, int64_t d) {
  if (s.ndim == 2) return static_cast<float>(load_element(s, h * s.strides[0] + d * s.strides[1]));
  return static_cast<float>(load_element(s, token_scale_offset(s, layout, blk, h, pos)));
}

TwinOut fp32_twin(const PagedCase& c, const PrefillArgs& a, bool int8_mode) {
  const PagedCaseSpec& sp = c.spec;
  const int64_t hq = sp.num_qo_heads, hkv = sp.num_kv_heads, dim = sp.head_dim, group = hq / hkv;
  const float sm_scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const bool int8_cache = sp.kv_dtype == DType::kInt8;
  const ScaleMode km = int8_cache ? sp.k_scale_mode : ScaleMode::kNone;
  const ScaleMode vm = int8_cache ? sp.v_scale_mode : ScaleMode::kNone;
  const MaskOptions& mo = a.mask_options;
  TwinOut r;
  r.out.assign(static_cast<size_t>(c.num_rows * hq * dim), 0.f);
  r.lse.assign(static_cast<size_t>(c.num_rows * hq), -std::numeric_limits<float>::infinity());
  int64_t mask_off = 0;
  for (int64_t b = 0; b < c.batch_size; ++b) {
    const int64_t q_len = sp.q_lens[b], kv_len = sp.kv_lens[b];
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t hk = a.gqa_layout == GqaLayout::kGrouped ? h / group : h % hkv;
      std::vector<float> k8(kv_len * dim), v8(kv_len * dim), ks(kv_len * dim, 1.f), vs(kv_len * dim, 1.f);
      std::vector<float> k_channel(dim, 1.f), v_channel(dim, 1.f);
      for (int64_t d = 0; d < dim; ++d) {
        if (km == ScaleMode::kPerChannel) k_channel[d] = scale_at(a.kv.k_scale, sp.layout, 0, hk, 0, d);
        if (vm == ScaleMode::kPerChannel) v_channel[d] = scale_at(a.kv.v_scale, sp.layout, 0, hk, 0, d);
      }
      for (int64_t j = 0; j < kv_len; ++j) {
        const int64_t blk = c.physical_block(b, j), pos = j % sp.page_size;
        for (int64_t d = 0; d < dim; ++d) {
          k8[j * dim + d] = static_cast<float>(load_element(a.kv.k_cache, cache_offset(a.kv.k_cache, sp.layout, blk, hk, pos, d)));
          v8[j * dim + d] = static_cast<float>(load_element(a.kv.v_cache, cache_offset(a.kv.v_cache, sp.layout, blk, hk, pos, d)));
          if (km != ScaleMode::kNone) ks[j * dim + d] = scale_at(a.kv.k_scale, sp.layout, blk, hk, pos, d);
          if (vm != ScaleMode::kNone) vs[j * dim + d] = scale_at(a.kv.v_scale, sp.layout, blk, hk, pos, d);
        }
      }
      for (int64_t i = 0; i < q_len; ++i) {
        const int64_t t = c.cu_q_lens_host[b] + i, p = kv_len - q_len + i;
        std::vector<float> q(dim), q_lo(dim, 0.f);  // int8 mode: q's high and low parts
        for (int64_t d = 0; d < dim; ++d) q[d] = static_cast<float>(load_element(a.q, offset_of(a.q, {t, h, d})));
        float row_factor = 0.f;
        if (int8_mode) {
          float amax = 0.f;
          for (int64_t d = 0; d < dim; ++d) {
            if (km == ScaleMode::kPerChannel) q[d] *= k_channel[d];
            amax = std::fmax(amax, std::fabs(q[d]));
          }
          float s_q = amax / 127.f;
          if (s_q < 1e-6f) s_q = 1.f;
          for (int64_t d = 0; d < dim; ++d) {
            // hi = clamp(round(q'/s_q), -127, 127), lo = clamp(round((q'/s_q - hi) * 128), -127, 127)
            const float x = q[d] / s_q;
            q[d] = std::min(127.f, std::max(-127.f, std::nearbyint(x)));
            q_lo[d] = std::min(127.f, std::max(-127.f, std::nearbyint((x - q[d]) * 128.f)));
          }
          row_factor = s_q * sm_scale;
        }
        std::vector<float> s(kv_len, -std::numeric_limits<float>::infinity());
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < kv_len; ++j) {
          bool visible = (!mo.causal || j <= p) &&
                         (mo.local_window < 0 || p - j <= mo.local_window || j < mo.global_window);
          if (a.mask.defined()) visible = visible && load_element(a.mask, mask_off + i * kv_len + j) != 0;
          if (!visible) continue;
          float acc = 0.f, acc_lo = 0.f;
          for (int64_t d = 0; d < dim; ++d) {
            acc += q[d] * (int8_mode ? k8[j * dim + d] : k8[j * dim + d] * ks[j * dim + d]);
            acc_lo += q_lo[d] * k8[j * dim + d];
          }
          // int8 mode: hi·k8 + (lo·k8) / 128, both sums exact integers.
          float sj = int8_mode ? (acc + acc_lo * (1.f / 128.f)) * row_factor : acc * sm_scale;
          if (int8_mode && km == ScaleMode::kPerToken) sj *= ks[j * dim];
          s[j] = sj;
          m = std::max(m, sj);
        }
        if (m == -std::numeric_limits<float>::infinity()) continue;
        float l = 0.f;
        std::vector<float> o(dim, 0.f);
        for (int64_t j = 0; j < kv_len; ++j) {
          if (s[j] == -std::numeric_limits<float>::infinity()) continue;
          const float pj = std::exp(s[j] - m);
          l += pj;
          const float pr = round_out(pj, sp.q_dtype);
          if (int8_mode) {
            // The per-token V scale multiplies the rounded p; V stays the exact int8 value.
            const float w = vm == ScaleMode::kPerToken ? pr * vs[j * dim] : pr;
            for (int64_t d = 0; d < dim; ++d) o[d] += w * v8[j * dim + d];
          } else {
            for (int64_t d = 0; d < dim; ++d) o[d] += pr * (v8[j * dim + d] * vs[j * dim + d]);
          }
        }
        for (int64_t d = 0; d < dim; ++d) {
          float y;
          if (int8_mode) {
            float v = o[d];
            if (vm == ScaleMode::kPerChannel) v *= v_channel[d];
            y = v / l;
          } else {
            y = o[d] / l;
          }
          r.out[(t * hq + h) * dim + d] = y;
        }
        r.lse[t * hq + h] = m + std::log(l);
      }
    }
    mask_off += q_len * kv_len;
  }
  return r;
}

#if defined(__x86_64__) && !defined(__FMA__)
constexpr bool kExpectBitExact = true;
#else
constexpr bool kExpectBitExact = false;
#endif

// Counts out/lse values that differ from the twin (bit-exactly, or by more than 2 ulp of the
// output dtype / 1e-6 relative for lse where the compiler may fuse multiply-adds).
void expect_matches_twin(const PagedCase& c, const PrefillArgs& a, const TwinOut& tw, const char* what) {
  const PagedCaseSpec& sp = c.spec;
  const DType odt = a.out.dtype;
  const double ulp = odt == DType::kFloat16 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7);
  int64_t bad_out = 0, bad_lse = 0;
  std::string first;
  for (int64_t t = 0; t < c.total_q; ++t) {
    for (int64_t h = 0; h < sp.num_qo_heads; ++h) {
      for (int64_t d = 0; d < sp.head_dim; ++d) {
        const float got = static_cast<float>(load_element(a.out, offset_of(a.out, {t, h, d})));
        const float want = round_out(tw.out[(t * sp.num_qo_heads + h) * sp.head_dim + d], odt);
        const bool same = kExpectBitExact ? std::memcmp(&got, &want, sizeof(float)) == 0
                                          : std::fabs(got - want) <= 2 * ulp * std::max(1.0f, std::fabs(want));
        if (!same && bad_out++ == 0)
          first = "out[" + std::to_string(t) + "," + std::to_string(h) + "," + std::to_string(d) +
                  "] = " + std::to_string(got) + ", twin " + std::to_string(want);
      }
      if (a.lse.defined()) {
        const float got = static_cast<float>(load_element(a.lse, offset_of(a.lse, {t, h})));
        const float want = tw.lse[t * sp.num_qo_heads + h];
        const bool same = kExpectBitExact ? std::memcmp(&got, &want, sizeof(float)) == 0
                                          : (got == want || std::fabs(got - want) <= 1e-6f * std::fabs(want));
        if (!same) ++bad_lse;
      }
    }
  }
  EXPECT_EQ(bad_out, 0) << what << ": " << first;
  EXPECT_EQ(bad_lse, 0) << what;
}

struct TwinCase {
  std::string name;
  PagedCaseSpec spec;
  MaskOptions mask_options;
  GqaLayout gqa = GqaLayout::kGrouped;
  ComputeMode compute = ComputeMode::kNative;
  double mask_p = -1;  // >= 0: non-causal with a random mask of this density
};

PagedCaseSpec base_spec(uint64_t seed) {
  PagedCaseSpec s;
  s.q_lens = {37, 1, 0, 70};
  s.kv_lens = {37, 50, 9, 100};
  s.num_qo_heads = 8;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.page_size = 16;
  s.padding_rows = 3;
  s.with_lse = true;
  s.seed = seed;
  return s;
}

std::vector<TwinCase> twin_cases() {
  std::vector<TwinCase> v;
  auto add = [&](std::string name, auto&& edit) {
    TwinCase tc;
    tc.name = std::move(name);
    tc.spec = base_spec(1000 + v.size());
    edit(tc);
    v.push_back(tc);
  };
  add("native_hnd", [](TwinCase&) {});
  add("native_nhd_interleaved", [](TwinCase& t) { t.spec.layout = KvLayout::kNHD; t.gqa = GqaLayout::kInterleaved; });
  add("native_pertoken_bf16scale", [](TwinCase& t) {
    t.spec.k_scale_mode = t.spec.v_scale_mode = ScaleMode::kPerToken;
    t.spec.scale_dtype = DType::kBFloat16;
  });
  add("native_fp16q_ktok_fp16scale", [](TwinCase& t) {
    t.spec.q_dtype = DType::kFloat16;
    t.spec.k_scale_mode = ScaleMode::kPerToken;
    t.spec.scale_dtype = DType::kFloat16;
  });
  add("native_bf16cache", [](TwinCase& t) { t.spec.kv_dtype = DType::kBFloat16; });
  add("native_fp16cache", [](TwinCase& t) { t.spec.kv_dtype = DType::kFloat16; t.spec.q_dtype = DType::kFloat16; });
  add("native_window", [](TwinCase& t) { t.mask_options.local_window = 8; });
  add("native_window_global", [](TwinCase& t) { t.mask_options.local_window = 5; t.mask_options.global_window = 3; });
  add("native_mask", [](TwinCase& t) { t.mask_options.causal = false; t.mask_p = 0.7; });
  add("native_ps1_d3", [](TwinCase& t) { t.spec.page_size = 1; t.spec.head_dim = 3; t.spec.num_qo_heads = 6; t.spec.num_kv_heads = 3; });
  add("native_ps7_d100_g1", [](TwinCase& t) { t.spec.page_size = 7; t.spec.head_dim = 100; t.spec.num_qo_heads = t.spec.num_kv_heads = 4; });
  add("native_ps48_d256_g8", [](TwinCase& t) { t.spec.page_size = 48; t.spec.head_dim = 256; t.spec.num_qo_heads = 8; t.spec.num_kv_heads = 1; });
  add("native_strided", [](TwinCase& t) { t.spec.q_pad = {0, 3, 0}; t.spec.out_pad = {0, 1, 0}; });
  add("int8_perchannel", [](TwinCase& t) { t.compute = ComputeMode::kInt8; });
  add("int8_pertoken", [](TwinCase& t) {
    t.compute = ComputeMode::kInt8;
    t.spec.k_scale_mode = t.spec.v_scale_mode = ScaleMode::kPerToken;
  });
  add("int8_ktok_vch_nhd", [](TwinCase& t) {
    t.compute = ComputeMode::kInt8;
    t.spec.k_scale_mode = ScaleMode::kPerToken;
    t.spec.layout = KvLayout::kNHD;
  });
  add("int8_fp16q_kch_vtok_bf16scale", [](TwinCase& t) {  // P rounded to fp16; s_v on the rounded p
    t.compute = ComputeMode::kInt8;
    t.spec.q_dtype = DType::kFloat16;
    t.spec.v_scale_mode = ScaleMode::kPerToken;
    t.spec.scale_dtype = DType::kBFloat16;
  });
  add("int8_kch_outliers_d256", [](TwinCase& t) {  // q' spans 30x (hi small, lo carrying)
    t.compute = ComputeMode::kInt8;
    t.spec.head_dim = 256;
    t.spec.num_outlier_channels = 4;
    t.spec.outlier_scale = 30;
  });
  add("int8_long_kv", [](TwinCase& t) {  // > 256 keys: P·V runs over several key tiles
    t.compute = ComputeMode::kInt8;
    t.spec.q_lens = {40, 3};
    t.spec.kv_lens = {2600, 1500};
    t.spec.page_size = 32;
  });
  add("native_chunked_jobs", [](TwinCase& t) {  // long kv: several position chunks per (seq, kv head)
    t.spec.q_lens = {20};
    t.spec.kv_lens = {40000};
    t.spec.num_qo_heads = 8;
    t.spec.num_kv_heads = 1;
    t.spec.page_size = 64;
  });
  return v;
}

class Fp32Twin : public ::testing::TestWithParam<TwinCase> {};

TEST_P(Fp32Twin, BackendComputesExactlyTheRecipe) {
  const TwinCase& tc = GetParam();
  PagedCase c = make_paged_case(tc.spec);
  if (tc.mask_p >= 0) {
    Rng rng(tc.spec.seed + 7);
    c.set_random_mask(rng, tc.mask_p, 5);
  }
  const PrefillArgs a = c.prefill_args(tc.mask_options, tc.gqa, tc.compute);
  c.poison_outputs();
  paged_prefill(a);
  EXPECT_EQ(count_written_outside(c.out, c.total_q), 0);
  EXPECT_EQ(count_written_outside(c.lse, c.total_q), 0);
  const TwinOut tw = fp32_twin(c, a, tc.compute == ComputeMode::kInt8);
  expect_matches_twin(c, a, tw, tc.name.c_str());
}

INSTANTIATE_TEST_SUITE_P(CpuBackend, Fp32Twin, ::testing::ValuesIn(twin_cases()),
                         [](const ::testing::TestParamInfo<TwinCase>& info) { return info.param.name; });

// ---- invariance ----

std::vector<uint8_t> snapshot(const HostTensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.data());
  return std::vector<uint8_t>(p, p + t.nbytes());
}

TEST(CpuBackendInvariance, ThreadCountAndSimdPathGiveIdenticalBits) {
  for (ComputeMode compute : {ComputeMode::kNative, ComputeMode::kInt8}) {
    for (bool fp64 : {false, true}) {
      PagedCaseSpec s = base_spec(77);
      s.q_lens = {130, 5, 64};
      s.kv_lens = {300, 77, 64};
      PagedCase c = make_paged_case(s);
      const PrefillArgs a = c.prefill_args({}, GqaLayout::kGrouped, compute);
      std::unique_ptr<ScopedFp64> fp64_mode;
      if (fp64) fp64_mode = std::make_unique<ScopedFp64>();
      c.poison_outputs();
      {
        ScopedEnv env("KVQ_NUM_THREADS", "1");
        paged_prefill(a);
      }
      const std::vector<uint8_t> out1 = snapshot(c.out), lse1 = snapshot(c.lse);
      for (const char* threads : {"2", "3", "7"}) {
        ScopedEnv env("KVQ_NUM_THREADS", threads);
        c.poison_outputs();
        paged_prefill(a);
        EXPECT_TRUE(snapshot(c.out) == out1 && snapshot(c.lse) == lse1)
            << "threads=" << threads << " compute=" << to_string(compute) << " fp64=" << fp64;
      }
      ScopedEnv env("KVQ_CPU_SIMD", "generic");
      c.poison_outputs();
      paged_prefill(a);
      EXPECT_TRUE(snapshot(c.out) == out1 && snapshot(c.lse) == lse1)
          << "generic SIMD path, compute=" << to_string(compute) << " fp64=" << fp64;
    }
  }
}

// An NHD copy of an HND case's cache (and per-token scales) gives the same bits.
TEST(CpuBackendInvariance, HndAndNhdCopiesAgree) {
  for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
    PagedCaseSpec s = base_spec(91);
    s.k_scale_mode = mode;
    s.v_scale_mode = mode;
    PagedCase c = make_paged_case(s);
    const int64_t nb = c.num_blocks, hkv = s.num_kv_heads, ps = s.page_size, dim = s.head_dim;
    auto to_nhd = [&](const HostTensor& src, bool is_cache) {
      HostTensor dst = is_cache ? HostTensor(src.dtype(), {nb, ps, hkv, dim}) : HostTensor(src.dtype(), {nb, ps, hkv});
      for (int64_t b = 0; b < nb; ++b)
        for (int64_t h = 0; h < hkv; ++h)
          for (int64_t p = 0; p < ps; ++p) {
            if (is_cache) {
              for (int64_t d = 0; d < dim; ++d) dst.set({b, p, h, d}, src.at({b, h, p, d}));
            } else {
              dst.set({b, p, h}, src.at({b, h, p}));
            }
          }
      return dst;
    };
    PrefillArgs a = c.prefill_args();
    c.poison_outputs();
    paged_prefill(a);
    const std::vector<uint8_t> out_hnd = snapshot(c.out), lse_hnd = snapshot(c.lse);

    const HostTensor kc = to_nhd(c.k_cache, true), vc = to_nhd(c.v_cache, true);
    HostTensor ks, vs;
    a.kv.layout = KvLayout::kNHD;
    a.kv.k_cache = kc.view();
    a.kv.v_cache = vc.view();
    if (mode == ScaleMode::kPerToken) {
      ks = to_nhd(c.k_scale, false);
      vs = to_nhd(c.v_scale, false);
      a.kv.k_scale = ks.view();
      a.kv.v_scale = vs.view();
    }
    c.poison_outputs();
    paged_prefill(a);
    EXPECT_TRUE(snapshot(c.out) == out_hnd && snapshot(c.lse) == lse_hnd) << to_string(mode);
  }
}

TEST(CpuBackendInvariance, DecodeEqualsPrefillOfOneQueryPerSequence) {
  PagedCaseSpec s = base_spec(5);
  s.q_lens = {1, 1, 1, 1, 1};
  s.kv_lens = {1, 17, 64, 200, 33};
  s.padding_rows = 0;
  PagedCase c = make_paged_case(s);
  for (int window : {-1, 10}) {
    MaskOptions mo;
    mo.local_window = window;
    mo.global_window = window > 0 ? 2 : 0;
    c.poison_outputs();
    paged_prefill(c.prefill_args(mo));
    const std::vector<uint8_t> out_p = snapshot(c.out), lse_p = snapshot(c.lse);
    c.poison_outputs();
    paged_decode(c.decode_args(mo.local_window, mo.global_window));
    EXPECT_TRUE(snapshot(c.out) == out_p && snapshot(c.lse) == lse_p) << "window " << window;
  }
}

// ---- fp64 mode is the oracle ----

TEST(CpuBackendFp64, AgreesWithTheFp64ReferenceToOutputRounding) {
  for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
    PagedCaseSpec s = base_spec(13);
    s.k_scale_mode = s.v_scale_mode = mode;
    s.head_dim = 128;
    PagedCase c = make_paged_case(s);
    const PrefillArgs a = c.prefill_args();
    const RefOutput ref = reference_prefill(a, RefCompute::kExact);
    {
      ScopedFp64 fp64;
      c.poison_outputs();
      paged_prefill(a);
    }
    // Only the final rounding to bf16 separates them: relative rms ~ 2^-9 / sqrt(3).
    const ErrorStats e = compare_output(a.out, ref, c.cu_q_lens_host);
    EXPECT_TRUE(e.ok(2.5e-3)) << e.describe();
    const LseStats l = compare_lse(a.lse, ref, c.total_q);
    EXPECT_LE(l.max_abs, 1e-5) << l.describe();
    EXPECT_EQ(l.num_mismatch, 0) << l.describe();
    // And the fp32 native mode is within docs/design.md's bf16 tolerance of it.
    c.poison_outputs();
    paged_prefill(a);
    const ErrorStats en = compare_output(a.out, ref, c.cu_q_lens_host);
    EXPECT_TRUE(en.ok(1e-2)) << en.describe();
  }
}

TEST(CpuBackendEmptyRows, FullyMaskedRowsAndEmptyCachesGiveZerosAndNegInfLse) {
  PagedCaseSpec s = base_spec(21);
  s.q_lens = {6, 4};
  s.kv_lens = {9, 0};
  PagedCase c = make_paged_case(s);
  Rng rng(3);
  c.set_random_mask(rng, 0.5, 2);  // every 2nd row of each sequence fully masked
  MaskOptions mo;
  mo.causal = false;
  const PrefillArgs a = c.prefill_args(mo);
  c.poison_outputs();
  paged_prefill(a);
  int64_t empty_rows = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < s.q_lens[b]; ++i) {
      const int64_t t = c.cu_q_lens_host[b] + i;
      bool any = false;
      for (int64_t j = 0; j < s.kv_lens[b]; ++j)
        any = any || load_element(a.mask, (b == 0 ? 0 : s.q_lens[0] * s.kv_lens[0]) + i * s.kv_lens[b] + j) != 0;
      for (int64_t h = 0; h < s.num_qo_heads; ++h) {
        const double lse = c.lse.at({t, h});
        if (any) {
          EXPECT_TRUE(std::isfinite(lse)) << "t=" << t;
          continue;
        }
        ++empty_rows;
        EXPECT_TRUE(std::isinf(lse) && lse < 0) << "t=" << t << " h=" << h << " lse=" << lse;
        for (int64_t d = 0; d < s.head_dim; ++d) EXPECT_EQ(c.out.at({t, h, d}), 0.0) << "t=" << t;
      }
    }
  }
  EXPECT_GT(empty_rows, 0);
}

// ---- cache ops ----

TEST(CpuBackendCacheOps, QuantizeValueIsRoundHalfEvenClampedAndNanIsZero) {
  EXPECT_EQ(quantize_value(2.5f, 1.f), 2);
  EXPECT_EQ(quantize_value(3.5f, 1.f), 4);
  EXPECT_EQ(quantize_value(-2.5f, 1.f), -2);
  EXPECT_EQ(quantize_value(0.3f, 0.1f), static_cast<int8_t>(std::nearbyint(0.3f / 0.1f)));
  EXPECT_EQ(quantize_value(1000.f, 1.f), 127);
  EXPECT_EQ(quantize_value(-1000.f, 1.f), -128);
  EXPECT_EQ(quantize_value(std::numeric_limits<float>::infinity(), 1.f), 127);
  EXPECT_EQ(quantize_value(std::numeric_limits<float>::quiet_NaN(), 1.f), 0);
  EXPECT_EQ(per_token_scale(0.f), 1e-8f);
  EXPECT_EQ(per_token_scale(127.f), 1.f);
  EXPECT_EQ(per_token_scale(std::numeric_limits<float>::quiet_NaN()), 1e-8f);
}

// append: every written element equals quantize(x, scale) with the scale as stored; per-token
// scales are per_token_scale(amax) rounded to the scale dtype; skipped and unaddressed slots untouched.
TEST(CpuBackendCacheOps, AppendWritesTheFormat) {
  struct Mode {
    ScaleMode k, v;
    DType scale_dtype;
    DType cache_dtype;
    KvLayout layout;
    DType new_dtype;
  };
  for (const Mode m : {Mode{ScaleMode::kPerToken, ScaleMode::kPerToken, DType::kBFloat16, DType::kInt8, KvLayout::kHND, DType::kBFloat16},
                       Mode{ScaleMode::kPerToken, ScaleMode::kPerChannel, DType::kFloat32, DType::kInt8, KvLayout::kNHD, DType::kFloat32},
                       Mode{ScaleMode::kPerChannel, ScaleMode::kPerToken, DType::kFloat16, DType::kInt8, KvLayout::kHND, DType::kFloat16},
                       Mode{ScaleMode::kNone, ScaleMode::kNone, DType::kFloat32, DType::kBFloat16, KvLayout::kNHD, DType::kFloat32}}) {
    const int64_t n = 23, hkv = 3, dim = 40, ps = 5, nb = 9;
    Rng rng(11);
    HostTensor k_new = HostTensor::padded(m.new_dtype, {n, hkv, dim}, {0, 1, 0});
    HostTensor v_new(m.new_dtype, {n, hkv, dim});
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < hkv; ++h)
        for (int64_t d = 0; d < dim; ++d) {
          k_new.set({t, h, d}, rng.normal() * (d == 3 ? 20.0 : 1.0));
          v_new.set({t, h, d}, rng.normal());
        }
    k_new.set({4, 1, 7}, 0.0);
    for (int64_t d = 0; d < dim; ++d) v_new.set({6, 2, d}, 0.0);  // amax 0: the 1e-8 floor
    const std::vector<int64_t> cache_shape =
        m.layout == KvLayout::kHND ? std::vector<int64_t>{nb, hkv, ps, dim} : std::vector<int64_t>{nb, ps, hkv, dim};
    const std::vector<int64_t> tok_shape =
        m.layout == KvLayout::kHND ? std::vector<int64_t>{nb, hkv, ps} : std::vector<int64_t>{nb, ps, hkv};
    HostTensor kc(m.cache_dtype, cache_shape), vc(m.cache_dtype, cache_shape);
    kc.poison();
    vc.poison();
    auto make_scale = [&](ScaleMode mode) {
      if (mode == ScaleMode::kNone) return HostTensor();
      if (mode == ScaleMode::kPerToken) {
        HostTensor t(m.scale_dtype, tok_shape);
        t.poison();
        return t;
      }
      HostTensor t(m.scale_dtype, {hkv, dim});
      for (int64_t h = 0; h < hkv; ++h)
        for (int64_t d = 0; d < dim; ++d) t.set({h, d}, rng.uniform(0.005, 0.05));
      return t;
    };
    HostTensor ks = make_scale(m.k), vs = make_scale(m.v);
    std::vector<int64_t> slots(n);
    const std::vector<int32_t> perm = rng.permutation(nb * ps);
    for (int64_t t = 0; t < n; ++t) slots[t] = t % 5 == 2 ? -1 : perm[t];
    HostTensor slot_t(DType::kInt64, {n});
    for (int64_t t = 0; t < n; ++t) slot_t.set({t}, static_cast<double>(slots[t]));

    AppendArgs a;
    a.k_new = k_new.view();
    a.v_new = v_new.view();
    a.slot_mapping = slot_t.view();
    a.kv.k_cache = kc.view();
    a.kv.v_cache = vc.view();
    a.kv.k_scale = ks.view();
    a.kv.v_scale = vs.view();
    a.kv.layout = m.layout;
    append(a);

    std::vector<char> written(nb * ps, 0);
    int64_t bad = 0;
    auto check = [&](const HostTensor& x, const HostTensor& cache, const HostTensor& scale, ScaleMode mode,
                     int64_t t, int64_t h, int64_t blk, int64_t pos) {
      float s = 0.f;
      if (mode == ScaleMode::kPerToken) {
        float amax = 0.f;
        for (int64_t d = 0; d < dim; ++d) amax = std::fmax(amax, std::fabs(static_cast<float>(x.at({t, h, d}))));
        s = static_cast<float>(round_to_dtype(ref_per_token_scale(amax), m.scale_dtype));
        const double stored = load_element(scale.view(), token_scale_offset(scale.view(), m.layout, blk, h, pos));
        if (stored != s) ++bad;
      }
      for (int64_t d = 0; d < dim; ++d) {
        const float xv = static_cast<float>(x.at({t, h, d}));
        const double got = load_element(cache.view(), cache_offset(cache.view(), m.layout, blk, h, pos, d));
        double want;
        if (mode == ScaleMode::kNone)
          want = round_to_dtype(xv, m.cache_dtype);
        else {
          // A per-token scale stored in fp16 underflows to 0 below amax ~ 3.8e-6 (the 1e-8 floor is
          // not an fp16 value); x / 0 then clamps, and 0 / 0 = NaN quantizes to 0 (as
          // __float2int_rn does on the GPU).
          const float sc = mode == ScaleMode::kPerToken ? s : static_cast<float>(scale.at({h, d}));
          want = std::isnan(xv / sc) ? 0 : ref_quantize(xv, sc);
        }
        if (got != want) ++bad;
      }
    };
    for (int64_t t = 0; t < n; ++t) {
      if (slots[t] < 0) continue;
      const int64_t blk = slots[t] / ps, pos = slots[t] % ps;
      written[slots[t]] = 1;
      for (int64_t h = 0; h < hkv; ++h) {
        check(k_new, kc, ks, m.k, t, h, blk, pos);
        check(v_new, vc, vs, m.v, t, h, blk, pos);
      }
    }
    int64_t touched = 0;
    for (int64_t slot = 0; slot < nb * ps; ++slot) {
      if (written[slot]) continue;
      for (int64_t h = 0; h < hkv; ++h)
        for (int64_t d = 0; d < dim; ++d)
          touched += !kc.is_poison(cache_offset(kc.view(), m.layout, slot / ps, h, slot % ps, d)) +
                     !vc.is_poison(cache_offset(vc.view(), m.layout, slot / ps, h, slot % ps, d));
    }
    EXPECT_EQ(bad, 0) << to_string(m.k) << "/" << to_string(m.v) << " " << to_string(m.scale_dtype);
    EXPECT_EQ(touched, 0) << "slots that no token addressed were written";
  }
}

TEST(CpuBackendCacheOps, DequantizeBlocksAndCalibrateMatchTheNaiveReference) {
  for (bool compact : {false, true}) {
    for (ScaleMode mode : {ScaleMode::kPerChannel, ScaleMode::kPerToken}) {
      PagedCaseSpec s = base_spec(31);
      s.k_scale_mode = s.v_scale_mode = mode;
      s.layout = mode == ScaleMode::kPerToken ? KvLayout::kNHD : KvLayout::kHND;
      PagedCase c = make_paged_case(s);
      const int64_t referenced = [&] {
        int64_t r = 0;
        for (int32_t kv : s.kv_lens) r += (kv + s.page_size - 1) / s.page_size;
        return r;
      }();
      std::vector<int64_t> shape = c.k_cache.shape();
      if (compact) shape[0] = referenced + 2;
      HostTensor out(DType::kBFloat16, shape), out_ref(DType::kBFloat16, shape);
      out.poison();
      out_ref.poison();
      HostTensor table(DType::kInt32, {c.batch_size, c.max_blocks_per_seq}),
          table_ref(DType::kInt32, {c.batch_size, c.max_blocks_per_seq});
      DequantArgs a;
      a.cache = c.k_cache.view();
      a.scale = c.k_scale.view();
      a.block_tables = c.block_tables.view();
      a.kv_lens = c.kv_lens.view();
      a.layout = s.layout;
      a.out = out.view();
      if (compact) a.out_block_tables = table.view();
      dequantize_blocks(a);
      a.out = out_ref.view();
      if (compact) a.out_block_tables = table_ref.view();
      reference_dequantize_blocks(a);
      EXPECT_TRUE(snapshot(out) == snapshot(out_ref)) << "compact=" << compact << " " << to_string(mode);
      if (compact) EXPECT_TRUE(snapshot(table) == snapshot(table_ref));
    }
  }
  Rng rng(41);
  HostTensor x = HostTensor::padded(DType::kFloat16, {50, 3, 24}, {0, 2, 0});
  for (int64_t t = 0; t < 50; ++t)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t d = 0; d < 24; ++d) x.set({t, h, d}, d == 5 ? 0.0 : rng.normal() * 3);
  HostTensor scale(DType::kFloat32, {3, 24}), scale_ref(DType::kFloat32, {3, 24});
  calibrate(x.view(), scale.view());
  reference_calibrate(x.view(), scale_ref.view());
  EXPECT_TRUE(snapshot(scale) == snapshot(scale_ref));
  EXPECT_EQ(scale.at({1, 5}), static_cast<double>(1e-5f));
}

}  // namespace
}  // namespace kvq::test
