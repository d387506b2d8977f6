// bench/tc_prefill_bench.cu — standalone correctness sweep and timing harness of the tensor-core
// prefill (src/cuda/prefill/tc_*). Builds without the rest of the CUDA backend:
//   nvcc -std=c++20 -O3 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -I. -Iinclude \
//     -I<build>/generated -Xcompiler -fopenmp bench/tc_prefill_bench.cu src/cuda/prefill/tc_prefill*.cu \
//     src/core/error.cpp src/core/views.cpp src/core/types.cpp -o tc_bench -lgomp
// Usage: tc_bench [--check] [--time] (default both).
//
// Correctness: random inputs (never zeros), shuffled block tables with unused entries -1, output
// poisoned (NaN) before each run, padding rows past cu_q_lens[B] checked untouched; reference in
// fp64 from the same stored q / cache / scale values (so only kernel error is measured); relative
// L2 error per (sequence, q head) must be <= 1e-2, no NaN, lse within 1e-2 (abs).
// Timing: CUDA events, warm-up, median of N; TFLOP/s = 4 * Hq * D * visible_pairs / t. The dequant
// path (the design of mojo_opset PR #361) is emulated by a compact int8 -> bf16 dequant kernel over the referenced
// blocks followed by the bf16 tensor-core kernel; both are timed together.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvq/views.h"
#include "src/core/problem.h"
#include "src/cuda/prefill/tc_prefill.h"

using namespace kvq;

#define CK(x)                                                                               \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, \
                   __LINE__, #x);                                                           \
      std::exit(2);                                                                         \
    }                                                                                       \
  } while (0)

namespace {

uint16_t f2h16(float x, bool fp16) {
  if (fp16) {
    __half h = __float2half_rn(x);
    uint16_t b;
    std::memcpy(&b, &h, 2);
    return b;
  }
  __nv_bfloat16 h = __float2bfloat16_rn(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float h162f(uint16_t b, bool fp16) {
  if (fp16) {
    __half h;
    std::memcpy(&h, &b, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, &b, 2);
  return __bfloat162float(h);
}

struct Cfg {
  std::string name;
  int B = 1, Hq = 8, Hkv = 2, D = 128, page = 16;
  std::vector<int> q_lens, kv_lens;
  bool kv_int8 = false, q_fp16 = false, nhd = false, causal = true, interleaved = false, lse = true;
  int lw = -1, gw = 0;
  ScaleMode km = ScaleMode::kPerChannel, vm = ScaleMode::kPerChannel;
  DType scale_dtype = DType::kFloat32;
  int pad_rows = 3;
  int sample_tokens = 0;  // 0: check every row; else this many random tokens (all heads)
  int q_head_pad = 0;     // extra elements between q heads (strided q), multiple of 8
  bool time = false;
  bool time_dequant = false;
};

struct Data {
  Cfg c;
  int total_q = 0, rows = 0, num_blocks = 0, width = 0;
  int64_t q_sn = 0, q_sh = 0;
  std::vector<uint16_t> q;        // [rows, Hq, D] with strides
  std::vector<uint8_t> kc, vc;    // cache bytes
  std::vector<float> ks, vs;      // scales as stored (rounded to scale dtype), logical layout = cache layout
  std::vector<int32_t> bt, cu, kvl;
  int64_t cache_elems = 0, ps_elems = 0;
};

int64_t cache_index(const Cfg& c, int64_t blk, int h, int off, int d) {
  return c.nhd ? ((blk * c.page + off) * c.Hkv + h) * c.D + d : ((blk * c.Hkv + h) * c.page + off) * c.D + d;
}
int64_t tok_scale_index(const Cfg& c, int64_t blk, int h, int off) {
  return c.nhd ? (blk * c.page + off) * c.Hkv + h : (blk * c.Hkv + h) * c.page + off;
}
float round_scale(float x, DType dt) {
  if (dt == DType::kBFloat16) return __bfloat162float(__float2bfloat16_rn(x));
  if (dt == DType::kFloat16) return __half2float(__float2half_rn(x));
  return x;
}

Data make_data(const Cfg& c, uint64_t seed) {
  Data d;
  d.c = c;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  d.total_q = std::accumulate(c.q_lens.begin(), c.q_lens.end(), 0);
  d.rows = d.total_q + c.pad_rows;
  d.q_sh = c.D + c.q_head_pad;
  d.q_sn = c.Hq * d.q_sh;
  d.q.assign(static_cast<size_t>(d.rows) * d.q_sn, f2h16(0.5f, c.q_fp16));
  for (int t = 0; t < d.rows; ++t)
    for (int h = 0; h < c.Hq; ++h)
      for (int k = 0; k < c.D; ++k) d.q[t * d.q_sn + h * d.q_sh + k] = f2h16(nd(rng), c.q_fp16);
  int pages_total = 0;
  d.width = 1;
  for (int b = 0; b < c.B; ++b) {
    const int np = (c.kv_lens[b] + c.page - 1) / c.page;
    pages_total += np;
    d.width = std::max(d.width, np + 1);
  }
  d.num_blocks = pages_total + 3;
  std::vector<int> perm(d.num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  d.bt.assign(static_cast<size_t>(c.B) * d.width, -1);
  int next = 0;
  for (int b = 0; b < c.B; ++b) {
    const int np = (c.kv_lens[b] + c.page - 1) / c.page;
    for (int i = 0; i < np; ++i) d.bt[b * d.width + i] = perm[next++];
  }
  d.cu.assign(c.B + 1, 0);
  for (int b = 0; b < c.B; ++b) d.cu[b + 1] = d.cu[b] + c.q_lens[b];
  d.kvl = c.kv_lens;
  d.cache_elems = static_cast<int64_t>(d.num_blocks) * c.Hkv * c.page * c.D;
  const int esz = c.kv_int8 ? 1 : 2;
  d.kc.resize(d.cache_elems * esz);
  d.vc.resize(d.cache_elems * esz);
  for (int which = 0; which < 2; ++which) {
    uint8_t* dst = which ? d.vc.data() : d.kc.data();
    for (int64_t i = 0; i < d.cache_elems; ++i) {
      if (c.kv_int8) {
        int v = static_cast<int>(std::lround(nd(rng) * 45.f));
        v = std::max(-128, std::min(127, v));
        reinterpret_cast<int8_t*>(dst)[i] = static_cast<int8_t>(v);
      } else {
        reinterpret_cast<uint16_t*>(dst)[i] = f2h16(nd(rng), c.q_fp16);
      }
    }
  }
  if (c.kv_int8) {
    auto make_scales = [&](ScaleMode m, std::vector<float>& s) {
      const int64_t n = m == ScaleMode::kPerChannel ? int64_t{c.Hkv} * c.D : int64_t{d.num_blocks} * c.Hkv * c.page;
      s.resize(n);
      for (auto& x : s) x = round_scale(0.004f + 0.03f * ud(rng), c.scale_dtype);
    };
    make_scales(c.km, d.ks);
    make_scales(c.vm, d.vs);
  }
  return d;
}

float cache_val(const Data& d, const std::vector<uint8_t>& cache, const std::vector<float>& sc, ScaleMode m,
                int64_t blk, int h, int off, int k) {
  const Cfg& c = d.c;
  const int64_t idx = cache_index(c, blk, h, off, k);
  if (!c.kv_int8) return h162f(reinterpret_cast<const uint16_t*>(cache.data())[idx], c.q_fp16);
  float v = static_cast<float>(reinterpret_cast<const int8_t*>(cache.data())[idx]);
  return v * (m == ScaleMode::kPerChannel ? sc[h * c.D + k] : sc[tok_scale_index(c, blk, h, off)]);
}

bool visible(const Cfg& c, int pos, int j) {
  if (c.causal && j > pos) return false;
  if (c.lw >= 0 && !(pos - j <= c.lw || j < c.gw)) return false;
  return true;
}

int64_t visible_pairs(const Cfg& c) {
  int64_t n = 0;
  for (int b = 0; b < c.B; ++b)
    for (int i = 0; i < c.q_lens[b]; ++i) {
      const int pos = c.kv_lens[b] - c.q_lens[b] + i;
      for (int j = 0; j < c.kv_lens[b]; ++j) n += visible(c, pos, j);
    }
  return n;
}

struct Dev {
  void *q = nullptr, *out = nullptr, *kc = nullptr, *vc = nullptr, *ks = nullptr, *vs = nullptr;
  float* lse = nullptr;
  int32_t *bt = nullptr, *cu = nullptr, *kvl = nullptr;
};

template <typename T>
void* upload(const std::vector<T>& v) {
  void* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(v.size() * sizeof(T), 16)));
  if (!v.empty()) CK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}
void* upload_scales(const std::vector<float>& s, DType dt) {
  if (dt == DType::kFloat32) return upload(s);
  std::vector<uint16_t> h(s.size());
  for (size_t i = 0; i < s.size(); ++i) h[i] = f2h16(s[i], dt == DType::kFloat16);
  return upload(h);
}

struct Launch {
  PrefillArgs args;
  detail::AttnProblem p;
  PrefillPlan plan;
};

Launch make_launch(const Data& d, const Dev& dv) {
  const Cfg& c = d.c;
  Launch L;
  auto& a = L.args;
  const DType qdt = c.q_fp16 ? DType::kFloat16 : DType::kBFloat16;
  a.q = TensorView::make_strided(dv.q, qdt, {d.rows, c.Hq, c.D}, {d.q_sn, d.q_sh, 1}, Device::kCUDA);
  a.out = TensorView::make(dv.out, qdt, {d.rows, c.Hq, c.D}, Device::kCUDA);
  if (c.lse) a.lse = TensorView::make(dv.lse, DType::kFloat32, {d.rows, c.Hq}, Device::kCUDA);
  const DType kdt = c.kv_int8 ? DType::kInt8 : qdt;
  if (c.nhd) {
    a.kv.k_cache = TensorView::make(dv.kc, kdt, {d.num_blocks, c.page, c.Hkv, c.D}, Device::kCUDA);
    a.kv.v_cache = TensorView::make(dv.vc, kdt, {d.num_blocks, c.page, c.Hkv, c.D}, Device::kCUDA);
  } else {
    a.kv.k_cache = TensorView::make(dv.kc, kdt, {d.num_blocks, c.Hkv, c.page, c.D}, Device::kCUDA);
    a.kv.v_cache = TensorView::make(dv.vc, kdt, {d.num_blocks, c.Hkv, c.page, c.D}, Device::kCUDA);
  }
  a.kv.layout = c.nhd ? KvLayout::kNHD : KvLayout::kHND;
  auto scale_view = [&](ScaleMode m, void* ptr) {
    if (m == ScaleMode::kPerChannel) return TensorView::make(ptr, c.scale_dtype, {c.Hkv, c.D}, Device::kCUDA);
    if (c.nhd) return TensorView::make(ptr, c.scale_dtype, {d.num_blocks, c.page, c.Hkv}, Device::kCUDA);
    return TensorView::make(ptr, c.scale_dtype, {d.num_blocks, c.Hkv, c.page}, Device::kCUDA);
  };
  if (c.kv_int8) {
    a.kv.k_scale = scale_view(c.km, dv.ks);
    a.kv.v_scale = scale_view(c.vm, dv.vs);
  }
  a.block_tables = TensorView::make(dv.bt, DType::kInt32, {c.B, d.width}, Device::kCUDA);
  a.cu_q_lens = TensorView::make(dv.cu, DType::kInt32, {c.B + 1}, Device::kCUDA);
  a.kv_lens = TensorView::make(dv.kvl, DType::kInt32, {c.B}, Device::kCUDA);
  a.mask_options.causal = c.causal;
  a.mask_options.local_window = c.lw;
  a.mask_options.global_window = c.gw;
  a.gqa_layout = c.interleaved ? GqaLayout::kInterleaved : GqaLayout::kGrouped;
  L.plan.max_q_len = *std::max_element(c.q_lens.begin(), c.q_lens.end());
  a.plan = &L.plan;
  auto& p = L.p;
  p.batch_size = c.B;
  p.num_qo_heads = c.Hq;
  p.num_kv_heads = c.Hkv;
  p.group_size = c.Hq / c.Hkv;
  p.head_dim = c.D;
  p.page_size = c.page;
  p.num_blocks = d.num_blocks;
  p.max_blocks_per_seq = d.width;
  p.total_q = d.rows;
  p.q_dtype = qdt;
  p.kv_dtype = kdt;
  p.out_dtype = qdt;
  p.k_scale_mode = c.kv_int8 ? c.km : ScaleMode::kNone;
  p.v_scale_mode = c.kv_int8 ? c.vm : ScaleMode::kNone;
  p.layout = a.kv.layout;
  p.gqa_layout = a.gqa_layout;
  p.softmax_scale = 1.f / std::sqrt(static_cast<float>(c.D));
  p.causal = c.causal;
  p.local_window = c.lw;
  p.global_window = c.gw;
  p.has_lse = c.lse;
  return L;
}

Dev upload_all(const Data& d) {
  const Cfg& c = d.c;
  Dev dv;
  dv.q = upload(d.q);
  CK(cudaMalloc(&dv.out, static_cast<size_t>(d.rows) * c.Hq * c.D * 2));
  CK(cudaMalloc(reinterpret_cast<void**>(&dv.lse), static_cast<size_t>(d.rows) * c.Hq * 4));
  dv.kc = upload(d.kc);
  dv.vc = upload(d.vc);
  if (c.kv_int8) {
    dv.ks = upload_scales(d.ks, c.scale_dtype);
    dv.vs = upload_scales(d.vs, c.scale_dtype);
  }
  dv.bt = static_cast<int32_t*>(upload(d.bt));
  dv.cu = static_cast<int32_t*>(upload(d.cu));
  dv.kvl = static_cast<int32_t*>(upload(d.kvl));
  return dv;
}
void free_all(Dev& dv) {
  for (void* p : {dv.q, dv.out, dv.kc, dv.vc, dv.ks, dv.vs, static_cast<void*>(dv.lse), static_cast<void*>(dv.bt),
                  static_cast<void*>(dv.cu), static_cast<void*>(dv.kvl)})
    if (p) cudaFree(p);
}

struct CheckResult {
  double max_rel = 0, max_lse = 0;
  bool nan = false, pad_touched = false, ok = false;
};

// Reference over (b, h) for the selected tokens; returns per-(b,h) relative errors.
CheckResult check(const Data& d, const std::vector<uint16_t>& out, const std::vector<float>& lse, uint64_t seed) {
  const Cfg& c = d.c;
  const int group = c.Hq / c.Hkv;
  const double sm = 1.0 / std::sqrt(static_cast<double>(c.D));
  CheckResult r;
  // Selected tokens per sequence.
  std::vector<std::vector<int>> sel(c.B);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (int b = 0; b < c.B; ++b) {
    if (c.sample_tokens == 0 || c.sample_tokens >= c.q_lens[b]) {
      for (int i = 0; i < c.q_lens[b]; ++i) sel[b].push_back(i);
    } else {
      for (int k = 0; k < c.sample_tokens; ++k) sel[b].push_back(static_cast<int>(rng() % c.q_lens[b]));
      sel[b].push_back(0);
      sel[b].push_back(c.q_lens[b] - 1);
    }
  }
  std::vector<double> errs(static_cast<size_t>(c.B) * c.Hq, 0), lerr(static_cast<size_t>(c.B) * c.Hq, 0);
  std::vector<int> nan(static_cast<size_t>(c.B) * c.Hq, 0);
#pragma omp parallel for schedule(dynamic)
  for (int bh = 0; bh < c.B * c.Hkv; ++bh) {
    const int b = bh / c.Hkv, kvh = bh % c.Hkv;
    const int kv_len = c.kv_lens[b], q_len = c.q_lens[b];
    std::vector<double> K(static_cast<size_t>(kv_len) * c.D), V(static_cast<size_t>(kv_len) * c.D);
    for (int j = 0; j < kv_len; ++j) {
      const int blk = d.bt[b * d.width + j / c.page], off = j % c.page;
      for (int k = 0; k < c.D; ++k) {
        K[static_cast<size_t>(j) * c.D + k] = cache_val(d, d.kc, d.ks, c.km, blk, kvh, off, k);
        V[static_cast<size_t>(j) * c.D + k] = cache_val(d, d.vc, d.vs, c.vm, blk, kvh, off, k);
      }
    }
    std::vector<double> s(kv_len), o(c.D), qv(c.D);
    for (int hin = 0; hin < group; ++hin) {
      const int h = c.interleaved ? hin * c.Hkv + kvh : kvh * group + hin;
      double num = 0, den = 0, lmax = 0;
      for (int i : sel[b]) {
        const int t = d.cu[b] + i;
        const int pos = kv_len - q_len + i;
        for (int k = 0; k < c.D; ++k) qv[k] = h162f(d.q[t * d.q_sn + h * d.q_sh + k], c.q_fp16);
        double mx = -INFINITY;
        for (int j = 0; j < kv_len; ++j) {
          if (!visible(c, pos, j)) {
            s[j] = -INFINITY;
            continue;
          }
          double acc = 0;
          const double* kr = &K[static_cast<size_t>(j) * c.D];
          for (int k = 0; k < c.D; ++k) acc += qv[k] * kr[k];
          s[j] = acc * sm;
          mx = std::max(mx, s[j]);
        }
        std::fill(o.begin(), o.end(), 0.0);
        double l = 0;
        if (mx > -INFINITY) {
          for (int j = 0; j < kv_len; ++j) {
            if (s[j] == -INFINITY) continue;
            const double pj = std::exp(s[j] - mx);
            l += pj;
            const double* vr = &V[static_cast<size_t>(j) * c.D];
            for (int k = 0; k < c.D; ++k) o[k] += pj * vr[k];
          }
          for (int k = 0; k < c.D; ++k) o[k] /= l;
        }
        const double ref_lse = mx > -INFINITY ? mx + std::log(l) : -INFINITY;
        for (int k = 0; k < c.D; ++k) {
          const float g = h162f(out[(static_cast<size_t>(t) * c.Hq + h) * c.D + k], c.q_fp16);
          if (!std::isfinite(g)) nan[b * c.Hq + h] = 1;
          num += (g - o[k]) * (g - o[k]);
          den += o[k] * o[k];
        }
        if (c.lse) {
          const float gl = lse[static_cast<size_t>(t) * c.Hq + h];
          if (ref_lse == -INFINITY) {
            if (!(gl == -INFINITY)) lmax = std::max(lmax, 1e9);
          } else {
            lmax = std::max(lmax, std::fabs(gl - ref_lse));
          }
        }
      }
      errs[b * c.Hq + h] = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
      lerr[b * c.Hq + h] = lmax;
    }
  }
  for (size_t i = 0; i < errs.size(); ++i) {
    r.max_rel = std::max(r.max_rel, errs[i]);
    r.max_lse = std::max(r.max_lse, lerr[i]);
    if (nan[i] || std::isnan(errs[i])) r.nan = true;
  }
  for (int t = d.total_q; t < d.rows; ++t)
    for (int k = 0; k < c.Hq * c.D; ++k)
      if (out[static_cast<size_t>(t) * c.Hq * c.D + k] != 0xFFFFu) r.pad_touched = true;
  r.ok = !r.nan && !r.pad_touched && r.max_rel <= 1e-2 && r.max_lse <= 1e-2;
  return r;
}

// The mojo_opset PR #361 design for comparison: dequantize the referenced blocks into a compact bf16 cache
// (HND) with a remapped table, then run the bf16 kernel on it.
__global__ void dequant_compact_kernel(const int8_t* __restrict__ cache, const float* __restrict__ scale,
                                       const int32_t* __restrict__ src_blocks, __nv_bfloat16* __restrict__ out,
                                       int page, int Hkv, int D) {
  const int nb = blockIdx.x, h = blockIdx.y;
  const int64_t src = (static_cast<int64_t>(src_blocks[nb]) * Hkv + h) * page * D;
  const int64_t dst = (static_cast<int64_t>(nb) * Hkv + h) * page * D;
  for (int i = threadIdx.x * 8; i < page * D; i += blockDim.x * 8) {
    const uint2 w = *reinterpret_cast<const uint2*>(cache + src + i);
    const int8_t* b = reinterpret_cast<const int8_t*>(&w);
    const int d0 = i % D;
    __align__(16) __nv_bfloat16 r[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) r[e] = __float2bfloat16_rn(static_cast<float>(b[e]) * scale[h * D + d0 + e]);
    *reinterpret_cast<uint4*>(out + dst + i) = *reinterpret_cast<uint4*>(r);
  }
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
float time_ms(F&& f, int warmup, int iters) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) f();
  std::vector<float> ts;
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return median(ts);
}

std::vector<int> fill(int B, int v) { return std::vector<int>(B, v); }

}  // namespace

int main(int argc, char** argv) {
  bool do_check = true, do_time = true;
  size_t only = 0;  // --only N: the first N correctness cases, no timing (for compute-sanitizer)
  int tcase = -1;   // --tcase I: only timing case I (for ncu)
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--check")) do_time = false;
    if (!std::strcmp(argv[i], "--time")) do_check = false;
    if (!std::strcmp(argv[i], "--tcase") && i + 1 < argc) {
      tcase = std::atoi(argv[++i]);
      do_check = false;
      iters = 1;
    }
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only = std::strtoul(argv[++i], nullptr, 10);
      do_time = false;
    }
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  std::vector<Cfg> cases;
  auto add = [&](Cfg c) { cases.push_back(std::move(c)); };
  // ---- correctness grid ----
  for (int D : {64, 80, 96, 128, 192, 256, 40, 136}) {
    for (int kv8 = 0; kv8 < 2; ++kv8) {
      if (kv8 && D % 16) continue;
      Cfg c;
      c.name = "hd" + std::to_string(D) + (kv8 ? "_i8" : "_bf16") + "_ps7_g4_var";
      c.B = 3; c.Hq = 8; c.Hkv = 2; c.D = D; c.page = 7;
      c.q_lens = {97, 1, 130}; c.kv_lens = {97, 200, 300};
      c.kv_int8 = kv8;
      add(c);
    }
  }
  for (int ps : {1, 16, 48, 64, 256, 1000}) {
    Cfg c;
    c.name = "hd128_i8_ps" + std::to_string(ps) + "_g4";
    c.B = 2; c.Hq = 8; c.Hkv = 2; c.D = 128; c.page = ps;
    c.q_lens = {129, 63}; c.kv_lens = {ps + 129, 1025};
    c.kv_int8 = true;
    add(c);
    c.name = "hd128_bf16_ps" + std::to_string(ps) + "_g4_nhd";
    c.kv_int8 = false; c.nhd = true;
    add(c);
  }
  for (int g : {1, 2, 3, 8, 16}) {
    Cfg c;
    c.name = "hd128_bf16_g" + std::to_string(g) + "_interleaved";
    c.B = 2; c.Hkv = 2; c.Hq = 2 * g; c.D = 128; c.page = 16;
    c.q_lens = {77, 150}; c.kv_lens = {300, 150};
    c.interleaved = true;
    add(c);
    c.name = "hd64_i8_g" + std::to_string(g) + "_grouped_fp16";
    c.D = 64; c.interleaved = false; c.kv_int8 = true; c.q_fp16 = true;
    add(c);
  }
  {
    Cfg c;
    c.B = 2; c.Hq = 8; c.Hkv = 2; c.D = 128; c.page = 16; c.kv_int8 = true;
    c.q_lens = {200, 33}; c.kv_lens = {700, 64};
    for (auto km : {ScaleMode::kPerChannel, ScaleMode::kPerToken})
      for (auto vm : {ScaleMode::kPerChannel, ScaleMode::kPerToken})
        for (auto sd : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
          c.km = km; c.vm = vm; c.scale_dtype = sd;
          c.nhd = sd == DType::kFloat16;
          c.name = std::string("hd128_i8_k") + to_string(km) + "_v" + to_string(vm) + "_" + to_string(sd) +
                   (c.nhd ? "_nhd" : "_hnd");
          add(c);
        }
    c.km = ScaleMode::kPerToken; c.vm = ScaleMode::kPerToken; c.scale_dtype = DType::kFloat32; c.nhd = false;
    c.q_fp16 = true; c.name = "hd128_i8_fp16_pertoken"; add(c);
    c.q_fp16 = false;
    c.km = c.vm = ScaleMode::kPerChannel;
    c.lw = 50; c.gw = 0; c.name = "hd128_i8_window50"; add(c);
    c.lw = 37; c.gw = 70; c.name = "hd128_i8_window37_global70"; add(c);
    c.lw = 200; c.gw = 5; c.kv_int8 = false; c.name = "hd128_bf16_window200_global5"; add(c);
    c.lw = -1; c.causal = false; c.kv_int8 = false;
    c.q_lens = {100, 40}; c.kv_lens = {30, 0}; c.name = "hd128_bf16_noncausal_kv0"; add(c);
    c.q_lens = {0, 40}; c.kv_lens = {0, 513}; c.name = "hd128_bf16_noncausal_emptyq"; add(c);
    c.causal = true; c.q_lens = {300, 40}; c.kv_lens = {300, 40}; c.q_head_pad = 8;
    c.name = "hd128_bf16_strided_q"; add(c);
    c.q_head_pad = 0;
    c.lse = false; c.name = "hd128_bf16_nolse"; add(c);
  }
  {
    Cfg c;  // mojo_opset-like larger: M_BF16_H24_VARLEN analogue
    c.name = "mojo_h24_varlen_i8"; c.B = 2; c.Hq = 24; c.Hkv = 6; c.D = 128; c.page = 32;
    c.q_lens = {255, 17}; c.kv_lens = {255 + 129, 17 + 100}; c.kv_int8 = true; c.scale_dtype = DType::kBFloat16;
    add(c);
    c.name = "mojo_d192_blk256_i8"; c.B = 2; c.Hq = 20; c.Hkv = 5; c.D = 192; c.page = 256;
    c.q_lens = {193, 77}; c.kv_lens = {193 + 769, 77 + 400}; add(c);
    c.name = "mojo_d80_blk64_bf16"; c.Hq = 24; c.Hkv = 6; c.D = 80; c.page = 64; c.kv_int8 = false; add(c);
  }

  if (only > 0 && only < cases.size()) cases.resize(only);
  int failed = 0, passed = 0;
  if (do_check) {
    std::printf("%-44s %10s %10s %s\n", "case", "rel_err", "lse_err", "status");
    uint64_t seed = 1234;
    for (const Cfg& c : cases) {
      Data d = make_data(c, ++seed);
      Dev dv = upload_all(d);
      Launch L = make_launch(d, dv);
      CK(cudaMemset(dv.out, 0xFF, static_cast<size_t>(d.rows) * c.Hq * c.D * 2));
      CK(cudaMemset(dv.lse, 0xFF, static_cast<size_t>(d.rows) * c.Hq * 4));
      bool supported = cuda::tc_prefill_supports_views(L.args, L.p, L.args.kv, L.args.block_tables);
      if (!supported) {
        std::printf("%-44s %10s %10s %s\n", c.name.c_str(), "-", "-", "unsupported (generic)");
        free_all(dv);
        continue;
      }
      try {
        cuda::launch_tc_prefill(L.args, L.p, L.args.kv, L.args.block_tables, nullptr);
        CK(cudaDeviceSynchronize());
      } catch (const std::exception& e) {
        std::printf("%-44s exception: %s\n", c.name.c_str(), e.what());
        ++failed;
        free_all(dv);
        continue;
      }
      std::vector<uint16_t> out(static_cast<size_t>(d.rows) * c.Hq * c.D);
      std::vector<float> lse(static_cast<size_t>(d.rows) * c.Hq);
      CK(cudaMemcpy(out.data(), dv.out, out.size() * 2, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(lse.data(), dv.lse, lse.size() * 4, cudaMemcpyDeviceToHost));
      CheckResult r = check(d, out, lse, seed);
      std::printf("%-44s %10.3e %10.3e %s%s%s\n", c.name.c_str(), r.max_rel, r.max_lse, r.ok ? "ok" : "FAIL",
                  r.nan ? " NaN" : "", r.pad_touched ? " PAD-WRITTEN" : "");
      (r.ok ? passed : failed)++;
      free_all(dv);
    }
    std::printf("correctness: %d passed, %d failed\n", passed, failed);
  }

  if (do_time) {
    std::vector<Cfg> tcases;
    auto base = [](std::string name, int B, int q, int kv, int D, int page, bool i8) {
      Cfg c;
      c.name = std::move(name); c.B = B; c.Hq = 32; c.Hkv = 8; c.D = D; c.page = page;
      c.q_lens = fill(B, q); c.kv_lens = fill(B, kv); c.kv_int8 = i8; c.pad_rows = 0; c.sample_tokens = 6;
      c.lse = false;
      return c;
    };
    tcases.push_back(base("B1 q8192 kv8192 D128 p64 bf16", 1, 8192, 8192, 128, 64, false));
    tcases.push_back(base("B1 q8192 kv8192 D128 p64 int8 fused", 1, 8192, 8192, 128, 64, true));
    tcases.back().time_dequant = true;
    tcases.push_back(base("B1 q8192 kv8192 D128 p1 bf16", 1, 8192, 8192, 128, 1, false));
    tcases.push_back(base("B1 q8192 kv8192 D128 p256 int8 fused", 1, 8192, 8192, 128, 256, true));
    tcases.push_back(base("B1 q8192 kv8192 D64 p64 bf16", 1, 8192, 8192, 64, 64, false));
    tcases.push_back(base("B1 q8192 kv8192 D256 p64 bf16", 1, 8192, 8192, 256, 64, false));
    tcases.push_back(base("B1 q8192 kv8192 D256 p64 int8 fused", 1, 8192, 8192, 256, 64, true));
    tcases.push_back(base("B4 q512 kv16384 D128 p64 bf16 (chunked)", 4, 512, 16384, 128, 64, false));
    tcases.push_back(base("B4 q512 kv16384 D128 p64 int8 fused", 4, 512, 16384, 128, 64, true));
    tcases.back().time_dequant = true;
    tcases.push_back(base("B16 q1024 kv1024 D128 p16 int8 fused", 16, 1024, 1024, 128, 16, true));
    tcases.back().time_dequant = true;

    std::printf("\n%-44s %9s %9s %9s %8s\n", "timing (median of 20)", "ms", "TFLOP/s", "rel_err", "check");
    for (size_t ti = 0; ti < tcases.size(); ++ti) {
      const Cfg& c = tcases[ti];
      if (tcase >= 0 && static_cast<int>(ti) != tcase) continue;
      Data d = make_data(c, 99);
      Dev dv = upload_all(d);
      Launch L = make_launch(d, dv);
      CK(cudaMemset(dv.out, 0xFF, static_cast<size_t>(d.rows) * c.Hq * c.D * 2));
      auto run = [&] { cuda::launch_tc_prefill(L.args, L.p, L.args.kv, L.args.block_tables, nullptr); };
      try {
        run();
      } catch (const std::exception& e) {
        std::printf("%-44s not run: %s\n", c.name.c_str(), e.what());
        free_all(dv);
        continue;
      }
      CK(cudaDeviceSynchronize());
      std::vector<uint16_t> out(static_cast<size_t>(d.rows) * c.Hq * c.D);
      std::vector<float> lse;
      CK(cudaMemcpy(out.data(), dv.out, out.size() * 2, cudaMemcpyDeviceToHost));
      CheckResult r = check(d, out, lse, 7);
      const float ms = time_ms(run, iters == 1 ? 0 : 3, iters);
      const double flops = 4.0 * c.Hq * c.D * static_cast<double>(visible_pairs(c));
      std::printf("%-44s %9.3f %9.1f %9.2e %8s\n", c.name.c_str(), ms, flops / ms * 1e-9, r.max_rel,
                  r.ok ? "ok" : "FAIL");
      if (c.time_dequant && tcase < 0) {
        // Compact bf16 copy of the referenced blocks + remapped table, then the bf16 kernel.
        std::vector<int32_t> src_blocks, new_bt(d.bt.size(), -1);
        for (int b = 0; b < c.B; ++b)
          for (int i = 0; i < d.width; ++i)
            if (d.bt[b * d.width + i] >= 0) {
              new_bt[b * d.width + i] = static_cast<int32_t>(src_blocks.size());
              src_blocks.push_back(d.bt[b * d.width + i]);
            }
        const int nref = static_cast<int>(src_blocks.size());
        void* d_src = upload(src_blocks);
        void* d_bt2 = upload(new_bt);
        void *kb = nullptr, *vb = nullptr;
        const size_t bytes = static_cast<size_t>(nref) * c.Hkv * c.page * c.D * 2;
        CK(cudaMalloc(&kb, bytes));
        CK(cudaMalloc(&vb, bytes));
        Launch L2 = L;
        L2.args.plan = &L2.plan;
        PagedKvCache kv2;
        kv2.k_cache = TensorView::make(kb, DType::kBFloat16, {nref, c.Hkv, c.page, c.D}, Device::kCUDA);
        kv2.v_cache = TensorView::make(vb, DType::kBFloat16, {nref, c.Hkv, c.page, c.D}, Device::kCUDA);
        kv2.layout = KvLayout::kHND;
        TensorView bt2 = TensorView::make(d_bt2, DType::kInt32, {c.B, d.width}, Device::kCUDA);
        L2.p.kv_dtype = DType::kBFloat16;
        L2.p.k_scale_mode = L2.p.v_scale_mode = ScaleMode::kNone;
        L2.p.num_blocks = nref;
        auto run2 = [&] {
          dequant_compact_kernel<<<dim3(nref, c.Hkv), 256>>>(static_cast<const int8_t*>(dv.kc),
                                                             static_cast<const float*>(dv.ks),
                                                             static_cast<const int32_t*>(d_src),
                                                             static_cast<__nv_bfloat16*>(kb), c.page, c.Hkv, c.D);
          dequant_compact_kernel<<<dim3(nref, c.Hkv), 256>>>(static_cast<const int8_t*>(dv.vc),
                                                             static_cast<const float*>(dv.vs),
                                                             static_cast<const int32_t*>(d_src),
                                                             static_cast<__nv_bfloat16*>(vb), c.page, c.Hkv, c.D);
          cuda::launch_tc_prefill(L2.args, L2.p, kv2, bt2, nullptr);
        };
        CK(cudaMemset(dv.out, 0xFF, static_cast<size_t>(d.rows) * c.Hq * c.D * 2));
        run2();
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(out.data(), dv.out, out.size() * 2, cudaMemcpyDeviceToHost));
        CheckResult r2 = check(d, out, lse, 7);
        const float ms2 = time_ms(run2, iters == 1 ? 0 : 3, iters);
        std::printf("%-44s %9.3f %9.1f %9.2e %8s  fused speedup %.2fx\n", "  ... dequant path (dequant + bf16 tc)",
                    ms2, flops / ms2 * 1e-9, r2.max_rel, r2.ok ? "ok" : "FAIL", ms2 / ms);
        cudaFree(d_src); cudaFree(d_bt2); cudaFree(kb); cudaFree(vb);
      }
      free_all(dv);
    }
  }
  return failed ? 1 : 0;
}
