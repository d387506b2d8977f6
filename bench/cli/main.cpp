// bench/cli/main.cpp — the `kvq` command line: `kvq demo` (a realistic Llama-3-8B-shaped serving step
// through append, prefill and decode; the kernels checked against fp64 attention over the same int8
// cache, the int8 quantization error measured against attention over the unquantized bf16 K/V) and
// `kvq bench` (configurable shapes, a table of timings per path). GPU when present, else the CPU
// backend. Flags, usage text and number formatting: options.h.
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <sstream>

#include "bench/cli/options.h"
#include "bench/cli/util.h"
#include "bench/cli/workload.h"
#include "kvq/kvq.h"
#include "src/core/backend.h"  // kvq::cpu::set_fp64_accumulation: the CPU backend's fp64 oracle mode

using namespace kvq_cli;

namespace {

std::vector<int64_t> cache_shape(const Shape& sh, int64_t num_blocks) {
  if (sh.layout == kvq::KvLayout::kHND) return {num_blocks, sh.num_kv_heads, sh.page_size, sh.head_dim};
  return {num_blocks, sh.page_size, sh.num_kv_heads, sh.head_dim};
}

// A contiguous host view of a shape known at run time (TensorView::make takes an initializer list).
kvq::TensorView host_view(void* data, kvq::DType dtype, const std::vector<int64_t>& shape) {
  kvq::TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = kvq::Device::kCPU;
  v.ndim = static_cast<int>(shape.size());
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.shape[d] = shape[d];
    v.strides[d] = stride;
    stride *= shape[d];
  }
  return v;
}

struct DeviceBatch {
  Buffer cu_q_lens, kv_lens, table;
  DeviceBatch(const Batch& b, bool gpu)
      : cu_q_lens(kvq::DType::kInt32, {b.batch_size() + 1}, gpu),
        kv_lens(kvq::DType::kInt32, {b.batch_size()}, gpu),
        table(kvq::DType::kInt32, {b.batch_size(), b.max_blocks}, gpu) {
    cu_q_lens.upload(b.cu_q_lens.data());
    kv_lens.upload(b.kv_lens.data());
    table.upload(b.table.data());
  }
};

// ---------------------------------------------------------------------------------------------- demo

struct ErrorStats {
  double sq_diff = 0, sq_ref = 0, max_abs = 0, worst_rel = 0;
  void add_rows(const std::vector<uint16_t>& out, const std::vector<uint16_t>& ref, int64_t rows,
                int64_t heads, int64_t dim) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < heads; ++h) {
        double d2 = 0, r2 = 0;
        for (int64_t d = 0; d < dim; ++d) {
          size_t i = (r * heads + h) * dim + d;
          double o = bf16_to_float(out[i]), e = bf16_to_float(ref[i]);
          double diff = std::isnan(o) ? INFINITY : o - e;
          d2 += diff * diff;
          r2 += e * e;
          max_abs = std::max(max_abs, std::fabs(diff));
        }
        sq_diff += d2;
        sq_ref += r2;
        if (r2 > 0) worst_rel = std::max(worst_rel, std::sqrt(d2 / r2));
      }
  }
  double rel() const { return sq_ref > 0 ? std::sqrt(sq_diff / sq_ref) : 0; }
};

// K's outlier channels: a large, nearly constant magnitude (as in real K), absorbed by per-channel scales.
const std::vector<int64_t> kOutlierChannels = {5, 37, 70, 111};


// The CPU backend's fp64 mode (the oracle of the test suites): attention in double end to end, no
// rounding of P: exact attention over the cache it is given (dequantized when int8).
struct Fp64Reference {
  Fp64Reference() { kvq::cpu::set_fp64_accumulation(true); }
  ~Fp64Reference() { kvq::cpu::set_fp64_accumulation(false); }
  Fp64Reference(const Fp64Reference&) = delete;
  Fp64Reference& operator=(const Fp64Reference&) = delete;
};

// Host copy of an int8 cache (values and scales) with the dequantization of one element.
struct HostInt8Cache {
  Shape sh;
  int64_t num_blocks = 0;
  bool k_per_token = false, v_per_token = false;
  std::vector<int8_t> k, v;
  std::vector<float> ks, vs;
  std::vector<int64_t> value_shape, k_scale_shape, v_scale_shape;

  int64_t value_index(int64_t slot, int64_t h, int64_t d) const {
    const int64_t blk = slot / sh.page_size, off = slot % sh.page_size;
    if (sh.layout == kvq::KvLayout::kHND) return ((blk * sh.num_kv_heads + h) * sh.page_size + off) * sh.head_dim + d;
    return ((blk * sh.page_size + off) * sh.num_kv_heads + h) * sh.head_dim + d;
  }
  int64_t scale_index(bool per_token, int64_t slot, int64_t h, int64_t d) const {
    if (!per_token) return h * sh.head_dim + d;
    const int64_t blk = slot / sh.page_size, off = slot % sh.page_size;
    if (sh.layout == kvq::KvLayout::kHND) return (blk * sh.num_kv_heads + h) * sh.page_size + off;
    return (blk * sh.page_size + off) * sh.num_kv_heads + h;
  }
  double k_at(int64_t slot, int64_t h, int64_t d) const {
    return double(k[value_index(slot, h, d)]) * double(ks[scale_index(k_per_token, slot, h, d)]);
  }
  double v_at(int64_t slot, int64_t h, int64_t d) const {
    return double(v[value_index(slot, h, d)]) * double(vs[scale_index(v_per_token, slot, h, d)]);
  }
  kvq::PagedKvCache view() {
    return {host_view(k.data(), kvq::DType::kInt8, value_shape), host_view(v.data(), kvq::DType::kInt8, value_shape),
            host_view(ks.data(), kvq::DType::kFloat32, k_scale_shape),
            host_view(vs.data(), kvq::DType::kFloat32, v_scale_shape), sh.layout};
  }
};

// What int8 rounding of this cache predicts for the output's relative error, to first order:
//   V: the output is a p-weighted sum of V rows, so V's relative rounding error eps_v (rms over the
//      cache) passes through at its own size (the weights average error and signal alike);
//   K: rounding K shifts each logit by softmax_scale * <q, k8*s - k>, of rms eps_s over (query,
//      visible key) pairs; a logit noise of rms eps_s changes the output by at most about eps_s in
//      relative terms (exactly that for near-uniform attention; less when attention concentrates
//      on a few keys, whose weights a small logit shift barely moves).
// The two are independent: predicted = sqrt(eps_v^2 + eps_s^2).
struct QuantModel {
  double eps_v = 0, eps_s = 0;
  double predicted() const { return std::sqrt(eps_v * eps_v + eps_s * eps_s); }
};

int run_demo(const DemoOptions& opt) {
  const bool gpu = !opt.cpu && gpu_present();
  Shape sh;  // Llama-3-8B attention: Hq 32, Hkv 8, D 128, page 16
  std::mt19937 rng(opt.seed);

  // A serving step: prefill chunks (some with cached prefixes), then decode rows.
  std::vector<int32_t> pq, pkv, dkv;
  if (gpu) {
    pq = {2048, 1024, 512, 1500, 256};
    pkv = {4096, 1024, 3584, 1500, 8192};
    for (int i = 0; i < 48; ++i) dkv.push_back(512 + static_cast<int32_t>((i * 2654435761u) % 7680));
  } else {
    pq = {256, 192, 64};
    pkv = {768, 192, 1064};
    dkv = {100, 517, 1024, 2047, 33, 800, 1500, 64};
  }
  int64_t total_tokens = 0, needed_blocks = 0;
  for (int32_t kv : pkv) total_tokens += kv, needed_blocks += (kv + sh.page_size - 1) / sh.page_size;
  for (int32_t kv : dkv) total_tokens += kv, needed_blocks += (kv + sh.page_size - 1) / sh.page_size;
  const int64_t num_blocks = needed_blocks + 16;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  size_t next = 0;
  Batch prefill = make_batch(pq, pkv, sh.page_size, perm, &next);
  Batch decode = make_batch(std::vector<int32_t>(dkv.size(), 1), dkv, sh.page_size, perm, &next);

  std::cout << "kvq demo: backend " << (gpu ? "cuda (" + gpu_name() + ")" : std::string("cpu"))
            << ", Llama-3-8B attention (Hq " << sh.num_qo_heads << ", Hkv " << sh.num_kv_heads << ", D "
            << sh.head_dim << ", page " << sh.page_size << ")\n"
            << "  " << prefill.batch_size() << " prefill chunks (" << prefill.total_q() << " query tokens) and "
            << decode.batch_size() << " decode rows over " << total_tokens << " cached tokens; K scales "
            << opt.k_scale << ", V scales " << opt.v_scale
            << (opt.random_queries ? ", random queries" : "") << "\n";

  // K/V of every token, bf16; K with a few outlier channels per head as real K has.
  const int64_t hd = sh.num_kv_heads * sh.head_dim;
  std::vector<uint16_t> k_tok = random_bf16(total_tokens * hd, rng), v_tok = random_bf16(total_tokens * hd, rng);
  for (int64_t t = 0; t < total_tokens; ++t)
    for (int64_t h = 0; h < sh.num_kv_heads; ++h)
      for (int64_t d : kOutlierChannels) {
        uint16_t& x = k_tok[(t * sh.num_kv_heads + h) * sh.head_dim + d];
        x = float_to_bf16(bf16_to_float(x) * 1.5f + 10.f);
      }
  std::vector<int64_t> slots(total_tokens);
  {
    int64_t t = 0;
    auto add = [&](const Batch& b) {
      for (int64_t s = 0; s < b.batch_size(); ++s)
        for (int64_t j = 0; j < b.kv_lens[s]; ++j)
          slots[t++] = b.table[s * b.max_blocks + j / sh.page_size] * sh.page_size + j % sh.page_size;
    };
    add(prefill);
    add(decode);
  }

  // Calibrate per-channel scales, then write the int8 cache through append (on the run's device) and
  // the bf16 reference cache (on the CPU).
  Buffer k_new(kvq::DType::kBFloat16, {total_tokens, sh.num_kv_heads, sh.head_dim}, gpu);
  Buffer v_new(kvq::DType::kBFloat16, {total_tokens, sh.num_kv_heads, sh.head_dim}, gpu);
  Buffer slot_buf(kvq::DType::kInt64, {total_tokens}, gpu);
  k_new.upload(k_tok.data());
  v_new.upload(v_tok.data());
  slot_buf.upload(slots.data());
  // K: static per-channel scales calibrated offline (they absorb K's outlier channels). V: per-token
  // scales computed when each token is written (default), or static per-channel (--v-scale per-channel).
  auto scale_shape = [&](bool per_token) -> std::vector<int64_t> {
    if (!per_token) return {sh.num_kv_heads, sh.head_dim};
    if (sh.layout == kvq::KvLayout::kHND) return {num_blocks, sh.num_kv_heads, sh.page_size};
    return {num_blocks, sh.page_size, sh.num_kv_heads};
  };
  Buffer k_scale(kvq::DType::kFloat32, scale_shape(opt.k_per_token), gpu);
  Buffer v_scale(kvq::DType::kFloat32, scale_shape(opt.v_per_token), gpu);
  if (opt.k_per_token) k_scale.fill_byte(0); else kvq::calibrate(k_new.view(), k_scale.view());
  if (opt.v_per_token) v_scale.fill_byte(0); else kvq::calibrate(v_new.view(), v_scale.view());
  Buffer k_cache(kvq::DType::kInt8, cache_shape(sh, num_blocks), gpu);
  Buffer v_cache(kvq::DType::kInt8, cache_shape(sh, num_blocks), gpu);
  k_cache.fill_byte(0x55);  // unreferenced slots hold garbage, as in a real cache
  v_cache.fill_byte(0x55);
  kvq::PagedKvCache kv8{k_cache.view(), v_cache.view(), k_scale.view(), v_scale.view(), sh.layout};

  Buffer k_ref_cache(kvq::DType::kBFloat16, cache_shape(sh, num_blocks), false);
  Buffer v_ref_cache(kvq::DType::kBFloat16, cache_shape(sh, num_blocks), false);
  k_ref_cache.fill_byte(0);
  v_ref_cache.fill_byte(0);
  kvq::PagedKvCache kv16{k_ref_cache.view(), v_ref_cache.view(), {}, {}, sh.layout};
  {
    Progress bar("append", total_tokens);
    const int64_t chunk = 4096;
    for (int64_t t0 = 0; t0 < total_tokens; t0 += chunk) {
      int64_t n = std::min(chunk, total_tokens - t0);
      auto slice = [&](const Buffer& b, int64_t elems_per_token, kvq::DType dt) {
        kvq::TensorView v = b.view();
        v.data = static_cast<char*>(b.data()) + t0 * elems_per_token * kvq::dtype_size(dt);
        v.shape[0] = n;
        return v;
      };
      kvq::AppendArgs a;
      a.k_new = slice(k_new, hd, kvq::DType::kBFloat16);
      a.v_new = slice(v_new, hd, kvq::DType::kBFloat16);
      a.slot_mapping = slice(slot_buf, 1, kvq::DType::kInt64);
      a.kv = kv8;
      kvq::append(a);
      kvq::AppendArgs r;
      r.k_new = kvq::TensorView::make(k_tok.data() + t0 * hd, kvq::DType::kBFloat16, {n, sh.num_kv_heads, sh.head_dim});
      r.v_new = kvq::TensorView::make(v_tok.data() + t0 * hd, kvq::DType::kBFloat16, {n, sh.num_kv_heads, sh.head_dim});
      r.slot_mapping = kvq::TensorView::make(slots.data() + t0, kvq::DType::kInt64, {n});
      r.kv = kv16;
      kvq::append(r);
      bar.step(n);
    }
    if (gpu) gpu_sync();
    bar.done();
  }
  // A host copy of the int8 cache as append wrote it (values and scales): the kernels' reference.
  HostInt8Cache host8;
  host8.sh = sh;
  host8.num_blocks = num_blocks;
  host8.k_per_token = opt.k_per_token;
  host8.v_per_token = opt.v_per_token;
  host8.value_shape = cache_shape(sh, num_blocks);
  host8.k_scale_shape = scale_shape(opt.k_per_token);
  host8.v_scale_shape = scale_shape(opt.v_per_token);
  host8.k.resize(k_cache.bytes());
  host8.v.resize(v_cache.bytes());
  host8.ks.resize(k_scale.bytes() / 4);
  host8.vs.resize(v_scale.bytes() / 4);
  k_cache.download(host8.k.data());
  v_cache.download(host8.v.data());
  k_scale.download(host8.ks.data());
  v_scale.download(host8.vs.data());

  // Queries. Real attention heads are low-entropy: a query mostly attends to a few earlier tokens.
  // Each query here is noise plus the (outlier-free part of the) key of one earlier token (within the
  // last 64 positions for prefill rows, anywhere for decode rows), so its attention is concentrated
  // there with a broad tail; with purely random queries attention is nearly uniform over thousands
  // of keys, which no trained model does (--random-queries shows that case).
  const bool random_queries = opt.random_queries;
  auto make_queries = [&](const Batch& b, int64_t first_token, int64_t window) {
    std::vector<uint16_t> q = random_bf16(b.total_q() * sh.num_qo_heads * sh.head_dim, rng, random_queries ? 1.f : 0.5f);
    if (random_queries) return q;
    int64_t seq_token = first_token;
    for (int64_t s = 0; s < b.batch_size(); ++s) {
      for (int64_t i = 0; i < b.q_lens[s]; ++i) {
        const int64_t pos = b.kv_lens[s] - b.q_lens[s] + i;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window) : 0;
        for (int64_t h = 0; h < sh.num_qo_heads; ++h) {
          const int64_t target = lo + static_cast<int64_t>(rng() % static_cast<uint32_t>(pos - lo + 1));
          const int64_t kvh = h / (sh.num_qo_heads / sh.num_kv_heads);
          const uint16_t* k = &k_tok[((seq_token + target) * sh.num_kv_heads + kvh) * sh.head_dim];
          uint16_t* qr = &q[((b.cu_q_lens[s] + i) * sh.num_qo_heads + h) * sh.head_dim];
          for (int64_t d = 0; d < sh.head_dim; ++d)
            if (std::find(kOutlierChannels.begin(), kOutlierChannels.end(), d) == kOutlierChannels.end())
              qr[d] = float_to_bf16(bf16_to_float(qr[d]) + bf16_to_float(k[d]));
        }
      }
      seq_token += b.kv_lens[s];
    }
    return q;
  };
  int64_t prefill_tokens = 0;
  for (int32_t kv : pkv) prefill_tokens += kv;
  std::vector<uint16_t> q_pre = make_queries(prefill, 0, 64);
  std::vector<uint16_t> q_dec = make_queries(decode, prefill_tokens, 0);
  Buffer q_pre_buf(kvq::DType::kBFloat16, {prefill.total_q(), sh.num_qo_heads, sh.head_dim}, gpu);
  Buffer q_dec_buf(kvq::DType::kBFloat16, {decode.batch_size(), sh.num_qo_heads, sh.head_dim}, gpu);
  Buffer out_pre(kvq::DType::kBFloat16, {prefill.total_q(), sh.num_qo_heads, sh.head_dim}, gpu);
  Buffer out_dec(kvq::DType::kBFloat16, {decode.batch_size(), sh.num_qo_heads, sh.head_dim}, gpu);
  q_pre_buf.upload(q_pre.data());
  q_dec_buf.upload(q_dec.data());
  DeviceBatch pb(prefill, gpu), db(decode, gpu);

  kvq::PrefillArgs pa;
  pa.q = q_pre_buf.view();
  pa.kv = kv8;
  pa.block_tables = pb.table.view();
  pa.cu_q_lens = pb.cu_q_lens.view();
  pa.kv_lens = pb.kv_lens.view();
  pa.out = out_pre.view();
  kvq::PrefillPlan plan = kvq::plan_prefill(pa, prefill.cu_q_lens.data(), prefill.kv_lens.data());
  Buffer pws(kvq::DType::kUInt8, {static_cast<int64_t>(plan.workspace_bytes)}, gpu);
  pa.plan = &plan;
  pa.workspace = {pws.data(), plan.workspace_bytes};

  kvq::DecodeArgs da;
  da.q = q_dec_buf.view();
  da.kv = kv8;
  da.block_tables = db.table.view();
  da.kv_lens = db.kv_lens.view();
  da.out = out_dec.view();
  size_t dws_bytes = kvq::decode_workspace_size(da);
  Buffer dws(kvq::DType::kUInt8, {static_cast<int64_t>(dws_bytes)}, gpu);
  da.workspace = {dws.data(), dws_bytes};

  int iters = gpu ? 20 : 2;
  double prefill_ms = 0, decode_ms = 0;
  {
    Progress bar("prefill + decode", 2 * (iters + 1));
    prefill_ms = time_ms(gpu, 1, iters, [&] { kvq::paged_prefill(pa); bar.step(); });
    decode_ms = time_ms(gpu, 1, iters, [&] { kvq::paged_decode(da); bar.step(); });
    bar.done();
  }

  // References, on the CPU backend in fp64: the same attention over (1) the int8 cache as written
  // (dequantized exactly): what the kernels must match; (2) the unquantized bf16 K/V: what int8 costs.
  const std::vector<int64_t> q_pre_shape{prefill.total_q(), sh.num_qo_heads, sh.head_dim};
  const std::vector<int64_t> q_dec_shape{decode.batch_size(), sh.num_qo_heads, sh.head_dim};
  auto reference = [&](const kvq::PagedKvCache& kv, std::vector<uint16_t>& ref_pre, std::vector<uint16_t>& ref_dec) {
    Fp64Reference fp64;
    kvq::PrefillArgs ra;
    ra.q = host_view(q_pre.data(), kvq::DType::kBFloat16, q_pre_shape);
    ra.kv = kv;
    ra.block_tables = kvq::TensorView::make(prefill.table.data(), kvq::DType::kInt32, {prefill.batch_size(), prefill.max_blocks});
    ra.cu_q_lens = kvq::TensorView::make(prefill.cu_q_lens.data(), kvq::DType::kInt32, {prefill.batch_size() + 1});
    ra.kv_lens = kvq::TensorView::make(prefill.kv_lens.data(), kvq::DType::kInt32, {prefill.batch_size()});
    ra.out = host_view(ref_pre.data(), kvq::DType::kBFloat16, q_pre_shape);
    kvq::paged_prefill(ra);
    kvq::DecodeArgs rd;
    rd.q = host_view(q_dec.data(), kvq::DType::kBFloat16, q_dec_shape);
    rd.kv = kv;
    rd.block_tables = kvq::TensorView::make(decode.table.data(), kvq::DType::kInt32, {decode.batch_size(), decode.max_blocks});
    rd.kv_lens = kvq::TensorView::make(decode.kv_lens.data(), kvq::DType::kInt32, {decode.batch_size()});
    rd.out = host_view(ref_dec.data(), kvq::DType::kBFloat16, q_dec_shape);
    kvq::paged_decode(rd);
  };
  std::vector<uint16_t> ref8_pre(q_pre.size()), ref8_dec(q_dec.size()), ref16_pre(q_pre.size()),
      ref16_dec(q_dec.size()), got_pre(q_pre.size()), got_dec(q_dec.size());
  {
    Progress bar("fp64 references (CPU)", 2);
    reference(host8.view(), ref8_pre, ref8_dec);
    bar.step();
    reference(kv16, ref16_pre, ref16_dec);
    bar.step();
    bar.done();
  }
  out_pre.download(got_pre.data());
  out_dec.download(got_dec.data());
  auto compare = [&](const std::vector<uint16_t>& a_pre, const std::vector<uint16_t>& b_pre,
                     const std::vector<uint16_t>& a_dec, const std::vector<uint16_t>& b_dec,
                     ErrorStats* pre, ErrorStats* dec, ErrorStats* all) {
    pre->add_rows(a_pre, b_pre, prefill.total_q(), sh.num_qo_heads, sh.head_dim);
    dec->add_rows(a_dec, b_dec, decode.batch_size(), sh.num_qo_heads, sh.head_dim);
    all->add_rows(a_pre, b_pre, prefill.total_q(), sh.num_qo_heads, sh.head_dim);
    all->add_rows(a_dec, b_dec, decode.batch_size(), sh.num_qo_heads, sh.head_dim);
  };
  ErrorStats kern_pre, kern_dec, kern_all, quant_pre, quant_dec, quant_all, e2e_pre, e2e_dec, e2e_all;
  compare(got_pre, ref8_pre, got_dec, ref8_dec, &kern_pre, &kern_dec, &kern_all);
  compare(ref8_pre, ref16_pre, ref8_dec, ref16_dec, &quant_pre, &quant_dec, &quant_all);
  compare(got_pre, ref16_pre, got_dec, ref16_dec, &e2e_pre, &e2e_dec, &e2e_all);

  // The error int8 rounding of this cache predicts (QuantModel), from the cache itself.
  QuantModel model;
  {
    double dv2 = 0, v2 = 0;
    for (int64_t t = 0; t < total_tokens; ++t)
      for (int64_t h = 0; h < sh.num_kv_heads; ++h)
        for (int64_t d = 0; d < sh.head_dim; ++d) {
          const double v = bf16_to_float(v_tok[(t * sh.num_kv_heads + h) * sh.head_dim + d]);
          const double e = host8.v_at(slots[t], h, d) - v;
          dv2 += e * e;
          v2 += v * v;
        }
    model.eps_v = std::sqrt(dv2 / v2);
    // Logit shifts over (query row, head, visible key) samples: 4 keys per query row and head.
    std::mt19937 srng(opt.seed + 7);
    const double softmax_scale = 1.0 / std::sqrt(static_cast<double>(sh.head_dim));
    double ds2 = 0;
    int64_t n = 0;
    auto sample = [&](const Batch& b, const std::vector<uint16_t>& q, int64_t first_token) {
      int64_t seq_token = first_token;
      for (int64_t s = 0; s < b.batch_size(); ++s) {
        for (int64_t i = 0; i < b.q_lens[s]; ++i) {
          const int64_t pos = b.kv_lens[s] - b.q_lens[s] + i;  // causal: keys 0..pos
          for (int64_t h = 0; h < sh.num_qo_heads; ++h) {
            const int64_t kvh = h / (sh.num_qo_heads / sh.num_kv_heads);
            const uint16_t* qr = &q[((b.cu_q_lens[s] + i) * sh.num_qo_heads + h) * sh.head_dim];
            for (int r = 0; r < 4; ++r) {
              const int64_t t = seq_token + static_cast<int64_t>(srng() % static_cast<uint32_t>(pos + 1));
              const uint16_t* kr = &k_tok[(t * sh.num_kv_heads + kvh) * sh.head_dim];
              double dot = 0;
              for (int64_t d = 0; d < sh.head_dim; ++d)
                dot += double(bf16_to_float(qr[d])) * (host8.k_at(slots[t], kvh, d) - bf16_to_float(kr[d]));
              ds2 += (softmax_scale * dot) * (softmax_scale * dot);
              ++n;
            }
          }
        }
        seq_token += b.kv_lens[s];
      }
    };
    sample(prefill, q_pre, 0);
    sample(decode, q_dec, prefill_tokens);
    model.eps_s = n > 0 ? std::sqrt(ds2 / n) : 0;
  }
  const double kernel_bar = 1e-2;
  // The quantization error is informational; its bar is what the model predicts for this cache,
  // with a 25% margin for the model's first-order approximations and the sampling of eps_s.
  const double quant_bar = 1.25 * model.predicted();
  const bool quant_ok = quant_all.rel() <= quant_bar;

  const int64_t cache_elems = 2 * num_blocks * sh.page_size * hd;
  const int64_t bytes_int8 = cache_elems + static_cast<int64_t>(k_scale.bytes() + v_scale.bytes());
  const int64_t bytes_bf16 = cache_elems * 2;
  const double flops = 4.0 * sh.num_qo_heads * sh.head_dim * visible_pairs(prefill, true);
  int64_t dec_tokens = 0;
  for (int32_t kv : dkv) dec_tokens += kv;
  const double dec_bytes = 2.0 * dec_tokens * hd + 2.0 * 2 * decode.batch_size() * sh.num_qo_heads * sh.head_dim;
  const double flop_per_s = flops / (prefill_ms * 1e-3);
  const double bytes_per_s = dec_bytes / (decode_ms * 1e-3);

  auto line = [](const char* name, const ErrorStats& e) {
    std::ostringstream o;
    o << "  " << name << " rel_err " << sig3(e.rel()) << " (worst query row " << sig3(e.worst_rel)
      << "), max_abs_err " << sig3(e.max_abs) << "\n";
    return o.str();
  };
  std::cout << "kernel accuracy: kvq's output vs fp64 attention over the same int8 cache (bar 1e-2):\n"
            << line("prefill:", kern_pre) << line("decode: ", kern_dec)
            << "int8 quantization error (informational): fp64 attention over the int8 cache vs over the\n"
            << "unquantized bf16 K/V:\n"
            << line("prefill:", quant_pre) << line("decode: ", quant_dec)
            << "  expected from this cache's int8 rounding: <= " << sig3(model.predicted()) << " = sqrt(V "
            << sig3(model.eps_v) << "^2 + logits " << sig3(model.eps_s) << "^2); bar " << sig3(quant_bar)
            << " (x1.25): " << (quant_ok ? "within" : "EXCEEDED: check the scales") << " (README, \"Accuracy\")\n"
            << "end to end: kvq's output vs attention over the unquantized bf16 K/V: rel_err " << sig3(e2e_all.rel())
            << "\n"
            << "memory: int8 cache " << sig3(bytes_int8 / 1048576.0) << " MiB vs bf16 " << sig3(bytes_bf16 / 1048576.0)
            << " MiB: saves " << sig3((bytes_bf16 - bytes_int8) / 1048576.0) << " MiB ("
            << sig3(100.0 * (bytes_bf16 - bytes_int8) / bytes_bf16) << "%)\n"
            << "throughput (" << (gpu ? gpu_name() : std::string("CPU")) << ", path "
            << kvq::to_string(plan.path) << "):\n"
            << "  prefill " << sig3(prefill_ms) << " ms, " << flops_rate(flop_per_s) << " (visible scores only)\n"
            << "  decode  " << sig3(decode_ms) << " ms, " << bytes_rate(bytes_per_s) << " of int8 K/V\n";
  const bool ok = kern_all.rel() <= kernel_bar && std::isfinite(kern_all.rel());
  std::cout << (ok ? "PASS" : "FAIL") << ": kernel relative error " << sig3(kern_all.rel())
            << (ok ? " <= " : " > ") << "1e-2 (int8 quantization error " << sig3(quant_all.rel())
            << ", informational)\n";
  if (opt.json) {
    // Fields up to "pass" as before (rel_err: end to end vs the unquantized K/V); "pass" is the
    // kernel check; the kernel_* and quant_* fields are the two errors.
    std::cout << "{\"command\":\"demo\",\"backend\":\"" << (gpu ? "cuda" : "cpu") << "\",\"device\":\""
              << json_escape(gpu ? gpu_name() : "cpu") << "\",\"rel_err\":" << json_number(e2e_all.rel())
              << ",\"rel_err_prefill\":" << json_number(e2e_pre.rel()) << ",\"rel_err_decode\":"
              << json_number(e2e_dec.rel()) << ",\"max_abs_err\":" << json_number(e2e_all.max_abs)
              << ",\"cache_bytes_int8\":" << bytes_int8 << ",\"cache_bytes_bf16\":" << bytes_bf16
              << ",\"prefill_ms\":" << json_number(prefill_ms) << ",\"prefill_tflops\":"
              << json_number(flop_per_s / 1e12) << ",\"decode_ms\":" << json_number(decode_ms)
              << ",\"decode_gbps\":" << json_number(bytes_per_s / 1e9) << ",\"prefill_path\":\""
              << kvq::to_string(plan.path) << "\",\"k_scale\":\"" << opt.k_scale << "\",\"v_scale\":\""
              << opt.v_scale << "\",\"random_queries\":" << (random_queries ? "true" : "false")
              << ",\"pass\":" << (ok ? "true" : "false")
              << ",\"kernel_rel_err\":" << json_number(kern_all.rel())
              << ",\"kernel_rel_err_prefill\":" << json_number(kern_pre.rel())
              << ",\"kernel_rel_err_decode\":" << json_number(kern_dec.rel())
              << ",\"kernel_max_abs_err\":" << json_number(kern_all.max_abs)
              << ",\"kernel_bar\":" << json_number(kernel_bar)
              << ",\"quant_rel_err\":" << json_number(quant_all.rel())
              << ",\"quant_rel_err_prefill\":" << json_number(quant_pre.rel())
              << ",\"quant_rel_err_decode\":" << json_number(quant_dec.rel())
              << ",\"quant_predicted\":" << json_number(model.predicted())
              << ",\"quant_eps_v\":" << json_number(model.eps_v) << ",\"quant_eps_logits\":"
              << json_number(model.eps_s) << ",\"quant_bar\":" << json_number(quant_bar)
              << ",\"quant_within_bar\":" << (quant_ok ? "true" : "false") << "}\n";
  }
  return ok ? 0 : 1;
}

// --------------------------------------------------------------------------------------------- bench

// Validate before timing: poison the output (NaN bytes), run once, and require every element to be
// written and finite (the accuracy of every path is the test suites' job; this catches a path that
// silently writes nothing or NaN at a shape the suites do not cover).
void validate_output(Buffer& out, const std::function<void()>& run, const std::string& path) {
  out.fill_byte(0xFF);
  run();
  std::vector<uint16_t> h(out.bytes() / 2);
  out.download(h.data());
  int64_t bad = 0;
  for (uint16_t x : h) bad += !std::isfinite(bf16_to_float(x));
  if (bad > 0)
    throw std::runtime_error("path " + path + ": " + std::to_string(bad) + " of " + std::to_string(h.size()) +
                             " output elements unwritten or not finite; not timed");
}

int run_bench(const BenchOptions& o) {
  const bool gpu = !o.cpu && gpu_present();
  const bool decode = o.mode == "decode";
  Shape sh;
  sh.num_qo_heads = o.num_qo_heads;
  sh.num_kv_heads = o.num_kv_heads;
  sh.head_dim = o.head_dim;
  sh.page_size = o.page_size;
  sh.layout = o.layout;
  const int64_t batch = o.batch, q_len = o.q_len, kv_len = o.kv_len;
  const bool int8 = o.int8, causal = o.causal;

  std::ostringstream shape_name;
  shape_name << o.mode << " B" << batch << (decode ? "" : " q" + std::to_string(q_len)) << " kv" << kv_len << " H"
             << sh.num_qo_heads << "/" << sh.num_kv_heads << " D" << sh.head_dim << " page" << sh.page_size << " "
             << kvq::to_string(sh.layout) << " " << o.kv_dtype << (decode ? "" : causal ? " causal" : " non-causal")
             << (o.compute == "int8" ? " int8-compute" : "");
  std::cerr << "kvq bench: " << shape_name.str() << ": preparing the cache\n";

  std::mt19937 rng(1234);
  const int64_t blocks_per_seq = (kv_len + sh.page_size - 1) / sh.page_size;
  const int64_t num_blocks = std::max<int64_t>(batch * blocks_per_seq, 1) + 4;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  size_t next = 0;
  Batch b = make_batch(std::vector<int32_t>(batch, q_len), std::vector<int32_t>(batch, kv_len), sh.page_size, perm, &next);
  DeviceBatch db(b, gpu);

  const kvq::DType kv_dt = int8 ? kvq::DType::kInt8 : kvq::DType::kBFloat16;
  const std::vector<int64_t> cshape = cache_shape(sh, num_blocks);
  Buffer k_cache(kv_dt, cshape, gpu), v_cache(kv_dt, cshape, gpu);
  {
    const size_t n = k_cache.bytes() / kvq::dtype_size(kv_dt);
    Progress bar("filling the cache", 2);
    for (Buffer* c : {&k_cache, &v_cache}) {
      if (int8) {
        std::vector<int8_t> h(n);
        std::uniform_int_distribution<int> dist(-127, 127);
        for (auto& x : h) x = static_cast<int8_t>(dist(rng));
        c->upload(h.data());
      } else {
        std::vector<uint16_t> h = random_bf16(n, rng);
        c->upload(h.data());
      }
      bar.step();
    }
    bar.done();
  }
  const int64_t hd = sh.num_kv_heads * sh.head_dim;
  std::vector<float> scales(hd);
  std::uniform_real_distribution<float> sdist(0.005f, 0.03f);
  for (auto& s : scales) s = sdist(rng);
  Buffer k_scale(kvq::DType::kFloat32, {sh.num_kv_heads, sh.head_dim}, gpu);
  Buffer v_scale(kvq::DType::kFloat32, {sh.num_kv_heads, sh.head_dim}, gpu);
  k_scale.upload(scales.data());
  v_scale.upload(scales.data());
  kvq::PagedKvCache kv{k_cache.view(), v_cache.view(), int8 ? k_scale.view() : kvq::TensorView{},
                       int8 ? v_scale.view() : kvq::TensorView{}, sh.layout};
  const int64_t rows = decode ? batch : b.total_q();
  std::vector<uint16_t> qh = random_bf16(rows * sh.num_qo_heads * sh.head_dim, rng);
  Buffer q(kvq::DType::kBFloat16, {rows, sh.num_qo_heads, sh.head_dim}, gpu);
  Buffer out(kvq::DType::kBFloat16, {rows, sh.num_qo_heads, sh.head_dim}, gpu);
  q.upload(qh.data());

  // FLOP of the visible score entries only; bytes that must move: K/V of the referenced tokens,
  // the scales, Q and O.
  const double flops = 4.0 * sh.num_qo_heads * sh.head_dim * visible_pairs(b, causal || decode);
  const double kv_bytes = 2.0 * batch * kv_len * hd * (int8 ? 1 : 2) + (int8 ? 2.0 * hd * 4 : 0);
  const double io_bytes = kv_bytes + 2.0 * 2 * rows * sh.num_qo_heads * sh.head_dim;
  const std::string device = gpu ? gpu_name() : "cpu";
  std::cout << "kvq bench: " << o.mode << " on " << device << ", batch " << batch << ", q_len " << q_len << ", kv_len "
            << kv_len << ", heads " << sh.num_qo_heads << "/" << sh.num_kv_heads << ", head_dim " << sh.head_dim
            << ", page " << sh.page_size << ", " << kvq::to_string(sh.layout) << ", " << o.kv_dtype << " cache"
            << (decode ? "" : (causal ? ", causal" : ", non-causal")) << ", median of " << o.iters << " runs\n";
  std::cout << std::left << std::setw(18) << "path" << std::right << std::setw(12) << "time" << std::setw(16)
            << "compute" << std::setw(14) << "bandwidth" << "\n";
  std::ostringstream js, not_served;
  js << "{\"command\":\"bench\",\"mode\":\"" << o.mode << "\",\"device\":\"" << json_escape(device)
     << "\",\"backend\":\"" << (gpu ? "cuda" : "cpu") << "\",\"batch\":" << batch << ",\"q_len\":" << q_len
     << ",\"kv_len\":" << kv_len << ",\"num_qo_heads\":" << sh.num_qo_heads << ",\"num_kv_heads\":"
     << sh.num_kv_heads << ",\"head_dim\":" << sh.head_dim << ",\"page_size\":" << sh.page_size
     << ",\"layout\":\"" << kvq::to_string(sh.layout) << "\",\"kv_dtype\":\"" << o.kv_dtype << "\",\"causal\":"
     << (causal ? "true" : "false") << ",\"compute\":\"" << o.compute << "\",\"iters\":" << o.iters
     << ",\"results\":[";
  int served = 0, index = 0;
  const int warmup = gpu ? 3 : 1;
  for (const std::string& path : o.paths) {
    ++index;
    std::cerr << "kvq bench: [" << index << "/" << o.paths.size() << "] " << shape_name.str() << ", path " << path
              << ": check, " << warmup << " warmup + " << o.iters << " timed runs\n";
    double ms = 0;
    std::string resolved = path, served_path = path;
    Progress bar("path " + path, warmup + o.iters);
    if (decode) {
      kvq::DecodeArgs da;
      da.q = q.view();
      da.kv = kv;
      da.block_tables = db.table.view();
      da.kv_lens = db.kv_lens.view();
      da.out = out.view();
      da.num_splits = o.num_splits;
      size_t ws = kvq::decode_workspace_size(da);
      Buffer wsb(kvq::DType::kUInt8, {static_cast<int64_t>(ws)}, gpu);
      da.workspace = {wsb.data(), ws};
      validate_output(out, [&] { kvq::paged_decode(da); }, resolved);
      ms = time_ms(gpu, warmup, o.iters, [&] { kvq::paged_decode(da); bar.step(); });
    } else {
      kvq::PrefillArgs pa;
      pa.q = q.view();
      pa.kv = kv;
      pa.block_tables = db.table.view();
      pa.cu_q_lens = db.cu_q_lens.view();
      pa.kv_lens = db.kv_lens.view();
      pa.out = out.view();
      pa.mask_options.causal = causal;
      pa.compute = o.compute == "int8" ? kvq::ComputeMode::kInt8 : kvq::ComputeMode::kNative;
      pa.path = parse_path("path", path);
      kvq::PrefillPlan plan;
      try {
        plan = kvq::plan_prefill(pa, b.cu_q_lens.data(), b.kv_lens.data());
      } catch (const kvq::Error& e) {
        std::cout << std::left << std::setw(18) << path << "  not served: " << e.what() << "\n";
        std::cerr << "kvq bench: [" << index << "/" << o.paths.size() << "] path " << path << " not served: "
                  << e.what() << "\n";
        not_served << (not_served.tellp() > 0 ? "," : "") << "{\"path\":\"" << path << "\",\"reason\":\""
                   << json_escape(e.what()) << "\"}";
        continue;
      }
      served_path = kvq::to_string(plan.path);
      if (served_path != path) resolved = path + "->" + served_path;  // e.g. the CPU backend serves every path
      // Short chunks planned onto the tensor-core decode kernel: auto->fused/mma_decode.
      if (plan.kernel != kvq::PrefillKernel::kPath) resolved += std::string("/") + kvq::to_string(plan.kernel);
      Buffer wsb(kvq::DType::kUInt8, {static_cast<int64_t>(plan.workspace_bytes)}, gpu);
      pa.plan = &plan;
      pa.workspace = {wsb.data(), plan.workspace_bytes};
      validate_output(out, [&] { kvq::paged_prefill(pa); }, resolved);
      ms = time_ms(gpu, warmup, o.iters, [&] { kvq::paged_prefill(pa); bar.step(); });
    }
    bar.done();
    const double flop_per_s = flops / (ms * 1e-3);
    const double bytes_per_s = io_bytes / (ms * 1e-3);
    std::cout << std::left << std::setw(18) << resolved << std::right << std::setw(12) << (sig3(ms) + " ms")
              << std::setw(16) << flops_rate(flop_per_s) << std::setw(14) << bytes_rate(bytes_per_s) << "\n";
    js << (served ? "," : "") << "{\"path\":\"" << resolved << "\",\"requested\":\"" << path << "\",\"served\":\""
       << served_path << "\",\"ms\":" << json_number(ms) << ",\"tflops\":" << json_number(flop_per_s / 1e12)
       << ",\"gbps\":" << json_number(bytes_per_s / 1e9) << "}";
    ++served;
  }
  js << "],\"not_served\":[" << not_served.str() << "]}";
  if (o.json) std::cout << js.str() << "\n";
  if (served == 0) {
    std::cerr << "kvq bench: error: no requested path (--path " << o.path << ") could serve this shape\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << usage("");
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::cout << usage("");
      return 0;
    }
    if (cmd == "demo" || cmd == "bench") {
      Flags f(argc, argv, 2, cmd == "demo" ? demo_flags() : bench_flags());
      if (f.help()) {
        std::cout << usage(cmd);
        return 0;
      }
      return cmd == "demo" ? run_demo(parse_demo(f)) : run_bench(parse_bench(f));
    }
    std::cerr << "kvq: unknown command '" << cmd << "' (expected demo or bench)\n\n" << usage("");
    return 2;
  } catch (const UsageError& e) {
    std::cerr << "kvq " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const kvq::Error& e) {
    std::cerr << "kvq " << cmd << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "kvq " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
