#include "tests/common/reference.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <thread>

#include "tests/common/half.h"
#include "tests/common/paged_cache.h"
#include "tests/common/tensor.h"

namespace kvq::test {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Everything the reference needs, normalised from PrefillArgs or DecodeArgs.
struct Problem {
  TensorView q, q_scale, k_cache, v_cache, k_scale, v_scale, block_tables, mask;
  KvLayout layout = KvLayout::kHND;
  GqaLayout gqa = GqaLayout::kGrouped;
  int64_t num_rows = 0, num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  std::vector<int64_t> row_start, q_len, kv_len, mask_offset;
  bool causal = true;
  int local_window = -1, global_window = 0;
  double softmax_scale = 0;
  int64_t row_stride = 1;
};

double resolve_softmax_scale(float given, int64_t head_dim) {
  // The float value the library resolves (1/sqrt(head_dim) in fp32 when not given).
  const float s = given > 0.f ? given : 1.0f / std::sqrt(static_cast<float>(head_dim));
  return static_cast<double>(s);
}

int64_t kv_head(const Problem& p, int64_t h) {
  const int64_t group = p.num_qo_heads / p.num_kv_heads;
  return p.gqa == GqaLayout::kGrouped ? h / group : h % p.num_kv_heads;
}

// docs/design.md §1: visible(i,j) = (!causal || j <= pos) && (local < 0 || pos - j <= local || j < global).
bool visible(const Problem& p, int64_t pos, int64_t j) {
  if (p.causal && j > pos) return false;
  if (p.local_window >= 0 && !(pos - j <= p.local_window || j < p.global_window)) return false;
  return true;
}

int threads_to_use() {
  if (const char* env = std::getenv("KVQ_TEST_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

template <typename F>
void parallel_for(int64_t n, F&& f) {
  const int nt = static_cast<int>(std::min<int64_t>(threads_to_use(), n));
  if (nt <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < nt; ++t)
    pool.emplace_back([&] {
      for (int64_t i = next++; i < n; i = next++) f(i);
    });
  for (auto& th : pool) th.join();
}

double dot(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t d = 0;
  for (; d + 4 <= n; d += 4) {
    s0 += a[d] * b[d];
    s1 += a[d + 1] * b[d + 1];
    s2 += a[d + 2] * b[d + 2];
    s3 += a[d + 3] * b[d + 3];
  }
  for (; d < n; ++d) s0 += a[d] * b[d];
  return (s0 + s1) + (s2 + s3);
}

// K/V of one (sequence, kv head), gathered through the block table.
struct SeqKv {
  int64_t kv_len = 0;
  std::vector<double> k, v;          // [kv_len, D] dequantized (exact in fp64)
  std::vector<double> k8, v8;        // [kv_len, D] raw int8 values (int8 caches only)
  std::vector<double> k_tok, v_tok;  // [kv_len] per-token scales (1 when per-channel)
  std::vector<double> k_ch, v_ch;    // [D] per-channel scales (1 when per-token)
  bool int8 = false;
  bool k_per_channel = false;
};

void gather(const Problem& p, int64_t b, int64_t kvh, SeqKv& s) {
  const int64_t D = p.head_dim, n = p.kv_len[static_cast<size_t>(b)];
  s.kv_len = n;
  s.int8 = p.k_cache.dtype == DType::kInt8;
  s.k.assign(static_cast<size_t>(n * D), 0.0);
  s.v.assign(static_cast<size_t>(n * D), 0.0);
  s.k8.assign(static_cast<size_t>(n * D), 0.0);
  s.v8.assign(static_cast<size_t>(n * D), 0.0);
  s.k_tok.assign(static_cast<size_t>(n), 1.0);
  s.v_tok.assign(static_cast<size_t>(n), 1.0);
  s.k_ch.assign(static_cast<size_t>(D), 1.0);
  s.v_ch.assign(static_cast<size_t>(D), 1.0);
  const ScaleMode km = scale_mode_of(p.k_scale), vm = scale_mode_of(p.v_scale);
  s.k_per_channel = km == ScaleMode::kPerChannel;
  for (int64_t d = 0; d < D; ++d) {
    if (km == ScaleMode::kPerChannel) s.k_ch[static_cast<size_t>(d)] = load_element(p.k_scale, offset_of(p.k_scale, {kvh, d}));
    if (vm == ScaleMode::kPerChannel) s.v_ch[static_cast<size_t>(d)] = load_element(p.v_scale, offset_of(p.v_scale, {kvh, d}));
  }
  for (int64_t j = 0; j < n; ++j) {
    const int64_t blk = static_cast<int64_t>(load_element(p.block_tables, offset_of(p.block_tables, {b, j / p.page_size})));
    const int64_t pos = j % p.page_size;
    if (km == ScaleMode::kPerToken) s.k_tok[static_cast<size_t>(j)] = load_element(p.k_scale, token_scale_offset(p.k_scale, p.layout, blk, kvh, pos));
    if (vm == ScaleMode::kPerToken) s.v_tok[static_cast<size_t>(j)] = load_element(p.v_scale, token_scale_offset(p.v_scale, p.layout, blk, kvh, pos));
    for (int64_t d = 0; d < D; ++d) {
      const size_t i = static_cast<size_t>(j * D + d);
      const double kraw = load_element(p.k_cache, cache_offset(p.k_cache, p.layout, blk, kvh, pos, d));
      const double vraw = load_element(p.v_cache, cache_offset(p.v_cache, p.layout, blk, kvh, pos, d));
      s.k8[i] = kraw;
      s.v8[i] = vraw;
      // Dequantized value: int8 * scale (exact in fp64); bf16/fp16 caches have unit scales.
      s.k[i] = kraw * s.k_tok[static_cast<size_t>(j)] * s.k_ch[static_cast<size_t>(d)];
      s.v[i] = vraw * s.v_tok[static_cast<size_t>(j)] * s.v_ch[static_cast<size_t>(d)];
    }
  }
}

// One query row against the gathered K/V, for each requested compute model.
// qv is q's real value (q8 * q_scale for an int8 q), qs the q_scale of an int8 q (1 otherwise).
void attend_row(const Problem& p, const SeqKv& s, const std::vector<double>& qv, double qs, int64_t pos,
                const uint8_t* row_mask, const std::vector<RefCompute>& computes, std::vector<RefOutput>& outs,
                int64_t t, int64_t h) {
  const int64_t D = p.head_dim, n = s.kv_len;
  std::vector<int64_t> vis;
  for (int64_t j = 0; j < n; ++j)
    if (visible(p, pos, j) && (row_mask == nullptr || row_mask[j] != 0)) vis.push_back(j);

  std::vector<double> score(vis.size());
  bool have_exact_scores = false;
  for (size_t c = 0; c < computes.size(); ++c) {
    double* o = &outs[c].out[static_cast<size_t>((t * p.num_qo_heads + h) * D)];
    double& lse = outs[c].lse[static_cast<size_t>(t * p.num_qo_heads + h)];
    if (vis.empty()) {
      std::fill(o, o + D, 0.0);
      lse = kNegInf;
      continue;
    }
    std::vector<double> acc(static_cast<size_t>(D), 0.0);
    if (computes[c] == RefCompute::kInt8) {
      // q' = q * k_scale (per-channel) split per (token, head) into two int8 parts with s_q =
      // max|q'|/127 (1 if < 1e-6): hi = clamp(round(q'/s_q), -127, 127) and lo = clamp(round((q'/s_q -
      // hi) * 128), -127, 127), q' / s_q in fp32; S from the exact integers hi·k8 + (lo·k8) / 128. An
      // int8 q with per-token K is taken as is: hi = q8, lo = 0, s_q = q_scale.
      std::vector<double> hi(static_cast<size_t>(D)), lo(static_cast<size_t>(D), 0.0);
      double sq = qs;
      if (p.q.dtype == DType::kInt8 && !s.k_per_channel) {
        for (int64_t d = 0; d < D; ++d) hi[static_cast<size_t>(d)] = qv[static_cast<size_t>(d)] / qs;  // exact
      } else {
        std::vector<float> qp(static_cast<size_t>(D));
        float amax = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          qp[static_cast<size_t>(d)] = static_cast<float>(qv[static_cast<size_t>(d)]) * static_cast<float>(s.k_ch[static_cast<size_t>(d)]);
          amax = std::max(amax, std::fabs(qp[static_cast<size_t>(d)]));
        }
        float sqf = amax / 127.f;
        if (sqf < 1e-6f) sqf = 1.f;
        sq = sqf;
        for (int64_t d = 0; d < D; ++d) {
          const float x = qp[static_cast<size_t>(d)] / sqf;
          const float h8 = std::min(127.f, std::max(-127.f, std::nearbyint(x)));
          hi[static_cast<size_t>(d)] = h8;
          lo[static_cast<size_t>(d)] = std::min(127.f, std::max(-127.f, std::nearbyint((x - h8) * 128.f)));
        }
      }
      std::vector<double> s8(vis.size());
      double m = kNegInf;
      for (size_t k = 0; k < vis.size(); ++k) {
        const int64_t j = vis[k];
        const double* k8 = &s.k8[static_cast<size_t>(j * D)];
        s8[k] = (dot(hi.data(), k8, D) + dot(lo.data(), k8, D) / 128) * sq * p.softmax_scale *
                s.k_tok[static_cast<size_t>(j)];
        m = std::max(m, s8[k]);
      }
      // P·V as in bf16 compute: p rounded to the query's float dtype (bf16 for an int8 q), the
      // per-token V scale on p, the per-channel one on O, l the unrounded sum.
      const DType p_dtype = p.q.dtype == DType::kFloat16 ? DType::kFloat16 : DType::kBFloat16;
      double l = 0;
      for (size_t k = 0; k < vis.size(); ++k) {
        const int64_t j = vis[k];
        const double pj = std::exp(s8[k] - m);
        l += pj;
        const double w = round_to_dtype(pj, p_dtype) * s.v_tok[static_cast<size_t>(j)];
        const double* v8 = &s.v8[static_cast<size_t>(j * D)];
        for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += w * v8[d];
      }
      for (int64_t d = 0; d < D; ++d) o[d] = acc[static_cast<size_t>(d)] * s.v_ch[static_cast<size_t>(d)] / l;
      lse = m + std::log(l);
      continue;
    }
    if (!have_exact_scores) {
      for (size_t k = 0; k < vis.size(); ++k) score[k] = p.softmax_scale * dot(qv.data(), &s.k[static_cast<size_t>(vis[k] * D)], D);
      have_exact_scores = true;
    }
    double m = kNegInf;
    for (double sc : score) m = std::max(m, sc);
    double l = 0;
    for (size_t k = 0; k < vis.size(); ++k) {
      const double pj = std::exp(score[k] - m);
      l += pj;
      const double w = computes[c] == RefCompute::kRoundP ? round_to_dtype(pj, p.q.dtype == DType::kFloat16 ? DType::kFloat16 : DType::kBFloat16) : pj;
      const double* vv = &s.v[static_cast<size_t>(vis[k] * D)];
      for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += w * vv[d];
    }
    for (int64_t d = 0; d < D; ++d) o[d] = acc[static_cast<size_t>(d)] / l;
    lse = m + std::log(l);
  }
}

std::vector<RefOutput> run(const Problem& p, const std::vector<RefCompute>& computes) {
  // Argument errors are thrown here, before any worker thread starts.
  for (RefCompute c : computes)
    if (c == RefCompute::kInt8 && p.k_cache.dtype != DType::kInt8)
      throw std::invalid_argument("reference: int8 compute needs an int8 cache");
  std::vector<RefOutput> outs(computes.size());
  for (auto& o : outs) {
    o.num_rows = p.num_rows;
    o.num_qo_heads = p.num_qo_heads;
    o.head_dim = p.head_dim;
    o.out.assign(static_cast<size_t>(p.num_rows * p.num_qo_heads * p.head_dim), 0.0);
    o.lse.assign(static_cast<size_t>(p.num_rows * p.num_qo_heads), kNegInf);
    if (p.row_stride > 1) {
      o.row_computed.assign(static_cast<size_t>(p.num_rows), 0);
      for (size_t b = 0; b < p.q_len.size(); ++b)
        for (int64_t i = 0; i < p.q_len[b]; ++i)
          if (i % p.row_stride == 0 || i == p.q_len[b] - 1) o.row_computed[static_cast<size_t>(p.row_start[b] + i)] = 1;
    }
  }
  const int64_t batch = static_cast<int64_t>(p.kv_len.size());
  parallel_for(batch * p.num_kv_heads, [&](int64_t item) {
    const int64_t b = item / p.num_kv_heads, kvh = item % p.num_kv_heads;
    const int64_t ql = p.q_len[static_cast<size_t>(b)], kl = p.kv_len[static_cast<size_t>(b)];
    if (ql == 0) return;
    SeqKv s;
    gather(p, b, kvh, s);
    std::vector<double> qv(static_cast<size_t>(p.head_dim));
    std::vector<uint8_t> row_mask(static_cast<size_t>(kl));
    for (int64_t h = 0; h < p.num_qo_heads; ++h) {
      if (kv_head(p, h) != kvh) continue;
      for (int64_t i = 0; i < ql; ++i) {
        if (p.row_stride > 1 && i % p.row_stride != 0 && i != ql - 1) continue;
        const int64_t t = p.row_start[static_cast<size_t>(b)] + i;
        const double qs = p.q_scale.defined() ? load_element(p.q_scale, offset_of(p.q_scale, {t, h})) : 1.0;
        for (int64_t d = 0; d < p.head_dim; ++d) qv[static_cast<size_t>(d)] = load_element(p.q, offset_of(p.q, {t, h, d})) * qs;
        const uint8_t* rm = nullptr;
        if (p.mask.defined()) {
          for (int64_t j = 0; j < kl; ++j)
            row_mask[static_cast<size_t>(j)] = load_element(p.mask, (p.mask_offset[static_cast<size_t>(b)] + i * kl + j) * p.mask.strides[0]) != 0.0;
          rm = row_mask.data();
        }
        attend_row(p, s, qv, qs, kl - ql + i, rm, computes, outs, t, h);
      }
    }
  });
  return outs;
}

void fill_common(Problem& p, const TensorView& q, const PagedKvCache& kv, const TensorView& block_tables) {
  p.q = q;
  p.k_cache = kv.k_cache;
  p.v_cache = kv.v_cache;
  p.k_scale = kv.k_scale;
  p.v_scale = kv.v_scale;
  p.layout = kv.layout;
  p.block_tables = block_tables;
  p.num_rows = q.shape[0];
  p.num_qo_heads = q.shape[1];
  p.head_dim = q.shape[2];
  p.num_kv_heads = kv.layout == KvLayout::kHND ? kv.k_cache.shape[1] : kv.k_cache.shape[2];
  p.page_size = kv.layout == KvLayout::kHND ? kv.k_cache.shape[2] : kv.k_cache.shape[1];
}

}  // namespace

std::vector<RefOutput> reference_prefill(const PrefillArgs& args, const std::vector<RefCompute>& computes,
                                         int64_t row_stride) {
  Problem p;
  p.row_stride = std::max<int64_t>(1, row_stride);
  fill_common(p, args.q, args.kv, args.block_tables);
  p.q_scale = args.q_scale;
  p.mask = args.mask;
  p.gqa = args.gqa_layout;
  p.causal = args.mask_options.causal;
  p.local_window = args.mask_options.local_window;
  p.global_window = args.mask_options.global_window;
  p.softmax_scale = resolve_softmax_scale(args.softmax_scale, p.head_dim);
  const int64_t batch = args.kv_lens.shape[0];
  int64_t mask_off = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t start = static_cast<int64_t>(load_element(args.cu_q_lens, b * args.cu_q_lens.strides[0]));
    const int64_t end = static_cast<int64_t>(load_element(args.cu_q_lens, (b + 1) * args.cu_q_lens.strides[0]));
    const int64_t kl = static_cast<int64_t>(load_element(args.kv_lens, b * args.kv_lens.strides[0]));
    p.row_start.push_back(start);
    p.q_len.push_back(end - start);
    p.kv_len.push_back(kl);
    p.mask_offset.push_back(mask_off);
    mask_off += (end - start) * kl;
  }
  return run(p, computes);
}

RefOutput reference_prefill(const PrefillArgs& args, RefCompute compute) {
  return std::move(reference_prefill(args, std::vector<RefCompute>{compute})[0]);
}

std::vector<RefOutput> reference_decode(const DecodeArgs& args, const std::vector<RefCompute>& computes) {
  Problem p;
  fill_common(p, args.q, args.kv, args.block_tables);
  p.gqa = args.gqa_layout;
  p.causal = true;
  p.local_window = args.local_window;
  p.global_window = args.global_window;
  p.softmax_scale = resolve_softmax_scale(args.softmax_scale, p.head_dim);
  const int64_t batch = args.kv_lens.shape[0];
  for (int64_t b = 0; b < batch; ++b) {
    p.row_start.push_back(b);
    p.q_len.push_back(1);
    p.kv_len.push_back(static_cast<int64_t>(load_element(args.kv_lens, b * args.kv_lens.strides[0])));
    p.mask_offset.push_back(0);
  }
  return run(p, computes);
}

RefOutput reference_decode(const DecodeArgs& args, RefCompute compute) {
  return std::move(reference_decode(args, std::vector<RefCompute>{compute})[0]);
}

void reference_append(const AppendArgs& args) {
  const PagedKvCache& kv = args.kv;
  const int64_t n_tokens = args.k_new.shape[0], H = args.k_new.shape[1], D = args.k_new.shape[2];
  const int64_t ps = kv.layout == KvLayout::kHND ? kv.k_cache.shape[2] : kv.k_cache.shape[1];
  const bool int8 = kv.k_cache.dtype == DType::kInt8;
  for (int64_t n = 0; n < n_tokens; ++n) {
    const int64_t slot = static_cast<int64_t>(load_element(args.slot_mapping, n * args.slot_mapping.strides[0]));
    if (slot < 0) continue;
    const int64_t blk = slot / ps, pos = slot % ps;
    for (int which = 0; which < 2; ++which) {
      const TensorView& src = which == 0 ? args.k_new : args.v_new;
      const TensorView& cache = which == 0 ? kv.k_cache : kv.v_cache;
      const TensorView& scale = which == 0 ? kv.k_scale : kv.v_scale;
      for (int64_t h = 0; h < H; ++h) {
        std::vector<float> x(static_cast<size_t>(D));
        float amax = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          x[static_cast<size_t>(d)] = static_cast<float>(load_element(src, offset_of(src, {n, h, d})));
          amax = std::max(amax, std::fabs(x[static_cast<size_t>(d)]));
        }
        float token_scale = 1.f;
        if (int8 && scale_mode_of(scale) == ScaleMode::kPerToken) {
          const int64_t soff = token_scale_offset(scale, kv.layout, blk, h, pos);
          store_element(scale, soff, ref_per_token_scale(amax));
          token_scale = static_cast<float>(load_element(scale, soff));
        }
        for (int64_t d = 0; d < D; ++d) {
          const int64_t off = cache_offset(cache, kv.layout, blk, h, pos, d);
          if (!int8) {
            store_element(cache, off, x[static_cast<size_t>(d)]);
            continue;
          }
          const float sc = scale_mode_of(scale) == ScaleMode::kPerToken
                               ? token_scale
                               : static_cast<float>(load_element(scale, offset_of(scale, {h, d})));
          const int8_t q = ref_quantize(x[static_cast<size_t>(d)], sc);
          static_cast<int8_t*>(cache.data)[off] = q;
        }
      }
    }
  }
}

void reference_dequantize_blocks(const DequantArgs& args) {
  const TensorView& c = args.cache;
  const int64_t H = args.layout == KvLayout::kHND ? c.shape[1] : c.shape[2];
  const int64_t ps = args.layout == KvLayout::kHND ? c.shape[2] : c.shape[1];
  const int64_t D = c.shape[3];
  const bool compact = args.out_block_tables.defined();
  const ScaleMode mode = scale_mode_of(args.scale);
  const int64_t batch = args.kv_lens.shape[0];
  int64_t next_out = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t kl = static_cast<int64_t>(load_element(args.kv_lens, b * args.kv_lens.strides[0]));
    const int64_t used = (kl + ps - 1) / ps;
    if (compact)
      for (int64_t i = 0; i < args.out_block_tables.shape[1]; ++i)
        store_element(args.out_block_tables, offset_of(args.out_block_tables, {b, i}), i < used ? static_cast<double>(next_out + i) : -1.0);
    for (int64_t i = 0; i < used; ++i) {
      const int64_t src = static_cast<int64_t>(load_element(args.block_tables, offset_of(args.block_tables, {b, i})));
      const int64_t dst = compact ? next_out + i : src;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t pos = 0; pos < ps; ++pos)
          for (int64_t d = 0; d < D; ++d) {
            const float sc = mode == ScaleMode::kPerToken
                                 ? static_cast<float>(load_element(args.scale, token_scale_offset(args.scale, args.layout, src, h, pos)))
                                 : static_cast<float>(load_element(args.scale, offset_of(args.scale, {h, d})));
            const float v = static_cast<float>(load_element(c, cache_offset(c, args.layout, src, h, pos, d))) * sc;
            store_element(args.out, cache_offset(args.out, args.layout, dst, h, pos, d), v);
          }
    }
    if (compact) next_out += used;
  }
}

void reference_calibrate(const TensorView& x, const TensorView& scale_out) {
  const int64_t N = x.shape[0], H = x.shape[1], D = x.shape[2];
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d) {
      float amax = 0.f;
      for (int64_t n = 0; n < N; ++n) amax = std::max(amax, std::fabs(static_cast<float>(load_element(x, offset_of(x, {n, h, d})))));
      store_element(scale_out, offset_of(scale_out, {h, d}), ref_per_channel_scale(amax));
    }
}

}  // namespace kvq::test
