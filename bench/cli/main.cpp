
// bench/cli/main.cpp — the `kvq` command line: `kvq demo` (a realistic Llama-3-8B-shaped serving step
// through append, prefill and decode, checked against attention over the unquantized bf16 K/V) and
// `kvq bench` (configurable shapes, a table of timings per path). GPU when present, else the CPU backend.
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <sstream>

#include "bench/cli/util.h"
#include "bench/cli/workload.h"
#include "kvq/kvq.h"

using namespace kvq_cli;

namespace {

const char* kUsage =
    "kvq — paged attention over an int8-quantized KV cache\n"
    "\n"
    "usage:\n"
    "  kvq demo  [--cpu] [--seed N] [--k-scale per-channel|per-token] [--v-scale per-token|per-channel]\n"
    "            [--random-queries] [--json]\n"
    "      A Llama-3-8B attention step (Hq 32, Hkv 8, D 128, page 16): K/V written through append with\n"
    "      calibrated per-channel scales, a batch of prefill chunks with cached prefixes, decode rows.\n"
    "      Prints accuracy against attention over the unquantized bf16 K/V, memory saved, throughput.\n"
    "      Runs on the GPU when one is present (--cpu forces the CPU backend). Default scales: K static\n"
    "      per-channel (calibrated), V per-token (computed by append). --random-queries: near-uniform attention.\n"
    "  kvq bench [--mode prefill|decode] [--batch B] [--q-len Q] [--kv-len KV] [--num-qo-heads H]\n"
    "            [--num-kv-heads H] [--head-dim D] [--page-size P] [--layout HND|NHD]\n"
    "            [--path auto|fused|dequant|generic|all] [--kv-dtype int8|bf16] [--causal true|false]\n"
    "            [--iters N] [--cpu] [--json]\n"
    "      Times one shape; kv-len counts the cached prefix plus the q-len new tokens.\n"
    "  kvq --help\n"
    "\n"
    "With --json, the last line printed is one JSON object.\n";

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

kvq::KvLayout parse_layout(const std::string& s) {
  if (s == "HND") return kvq::KvLayout::kHND;
  if (s == "NHD") return kvq::KvLayout::kNHD;
  throw UsageError("layout: expected HND or NHD, got '" + s + "'");
}

kvq::PrefillPath parse_path(const std::string& s) {
  if (s == "auto") return kvq::PrefillPath::kAuto;
  if (s == "fused") return kvq::PrefillPath::kFused;
  if (s == "dequant") return kvq::PrefillPath::kDequant;
  if (s == "generic") return kvq::PrefillPath::kGeneric;
  throw UsageError("path: expected auto, fused, dequant, generic or all, got '" + s + "'");
}

std::vector<int64_t> cache_shape(const Shape& sh, int64_t num_blocks) {
  if (sh.layout == kvq::KvLayout::kHND) return {num_blocks, sh.num_kv_heads, sh.page_size, sh.head_dim};
  return {num_blocks, sh.page_size, sh.num_kv_heads, sh.head_dim};
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

int run_demo(const Flags& flags) {
  const bool json = flags.has("json");
  const bool gpu = !flags.has("cpu") && gpu_present();
  const uint32_t seed = static_cast<uint32_t>(flags.i64("seed", 0, 1 << 30));
  Shape sh;  // Llama-3-8B attention: Hq 32, Hkv 8, D 128, page 16
  std::mt19937 rng(seed);

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
            << decode.batch_size() << " decode rows over " << total_tokens << " cached tokens\n";

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
  const bool k_per_token = flags.str("k-scale") == "per-token";
  const bool v_per_token = flags.str("v-scale") == "per-token";
  for (const char* f : {"k-scale", "v-scale"})
    if (flags.str(f) != "per-token" && flags.str(f) != "per-channel")
      throw UsageError(std::string(f == std::string("k-scale") ? "k_scale" : "v_scale") +
                       ": expected per-channel or per-token, got '" + flags.str(f) + "'");
  auto scale_shape = [&](bool per_token) -> std::vector<int64_t> {
    if (!per_token) return {sh.num_kv_heads, sh.head_dim};
    if (sh.layout == kvq::KvLayout::kHND) return {num_blocks, sh.num_kv_heads, sh.page_size};
    return {num_blocks, sh.page_size, sh.num_kv_heads};
  };
  Buffer k_scale(kvq::DType::kFloat32, scale_shape(k_per_token), gpu);
  Buffer v_scale(kvq::DType::kFloat32, scale_shape(v_per_token), gpu);
  if (k_per_token) k_scale.fill_byte(0); else kvq::calibrate(k_new.view(), k_scale.view());
  if (v_per_token) v_scale.fill_byte(0); else kvq::calibrate(v_new.view(), v_scale.view());
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

  // Queries. Real attention heads are low-entropy: a query mostly attends to a few earlier tokens.
  // Each query here is noise plus the (outlier-free part of the) key of one earlier token (within the
  // last 64 positions for prefill rows, anywhere for decode rows), so its attention is concentrated
  // there with a broad tail; with purely random queries attention is nearly uniform over thousands
  // of keys, which no trained model does (the demo prints that case's error too, --random-queries).
  const bool random_queries = flags.has("random-queries");
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

  // Reference: the same attention over the unquantized bf16 K/V, on the CPU backend.
  std::vector<uint16_t> ref_pre(q_pre.size()), ref_dec(q_dec.size()), got_pre(q_pre.size()), got_dec(q_dec.size());
  {
    Progress bar("reference (bf16 K/V, CPU)", 2);
    kvq::PrefillArgs ra;
    ra.q = kvq::TensorView::make(q_pre.data(), kvq::DType::kBFloat16, {prefill.total_q(), sh.num_qo_heads, sh.head_dim});
    ra.kv = kv16;
    ra.block_tables = kvq::TensorView::make(prefill.table.data(), kvq::DType::kInt32, {prefill.batch_size(), prefill.max_blocks});
    ra.cu_q_lens = kvq::TensorView::make(prefill.cu_q_lens.data(), kvq::DType::kInt32, {prefill.batch_size() + 1});
    ra.kv_lens = kvq::TensorView::make(prefill.kv_lens.data(), kvq::DType::kInt32, {prefill.batch_size()});
    ra.out = kvq::TensorView::make(ref_pre.data(), kvq::DType::kBFloat16, {prefill.total_q(), sh.num_qo_heads, sh.head_dim});
    kvq::paged_prefill(ra);
    bar.step();
    kvq::DecodeArgs rd;
    rd.q = kvq::TensorView::make(q_dec.data(), kvq::DType::kBFloat16, {decode.batch_size(), sh.num_qo_heads, sh.head_dim});
    rd.kv = kv16;
    rd.block_tables = kvq::TensorView::make(decode.table.data(), kvq::DType::kInt32, {decode.batch_size(), decode.max_blocks});
    rd.kv_lens = kvq::TensorView::make(decode.kv_lens.data(), kvq::DType::kInt32, {decode.batch_size()});
    rd.out = kvq::TensorView::make(ref_dec.data(), kvq::DType::kBFloat16, {decode.batch_size(), sh.num_qo_heads, sh.head_dim});
    kvq::paged_decode(rd);
    bar.step();
    bar.done();
  }
  out_pre.download(got_pre.data());
  out_dec.download(got_dec.data());
  ErrorStats err_pre, err_dec, err_all;
  err_pre.add_rows(got_pre, ref_pre, prefill.total_q(), sh.num_qo_heads, sh.head_dim);
  err_dec.add_rows(got_dec, ref_dec, decode.batch_size(), sh.num_qo_heads, sh.head_dim);
  err_all.add_rows(got_pre, ref_pre, prefill.total_q(), sh.num_qo_heads, sh.head_dim);
  err_all.add_rows(got_dec, ref_dec, decode.batch_size(), sh.num_qo_heads, sh.head_dim);

  const int64_t cache_elems = 2 * num_blocks * sh.page_size * hd;
  const int64_t bytes_int8 = cache_elems + static_cast<int64_t>(k_scale.bytes() + v_scale.bytes());
  const int64_t bytes_bf16 = cache_elems * 2;
  const double flops = 4.0 * sh.num_qo_heads * sh.head_dim * visible_pairs(prefill, true);
  int64_t dec_tokens = 0;
  for (int32_t kv : dkv) dec_tokens += kv;
  const double dec_bytes = 2.0 * dec_tokens * hd + 2.0 * 2 * decode.batch_size() * sh.num_qo_heads * sh.head_dim;
  const double tflops = flops / (prefill_ms * 1e-3) / 1e12;
  const double gbps = dec_bytes / (decode_ms * 1e-3) / 1e9;

  std::cout << std::setprecision(3)
            << "accuracy vs attention over the unquantized bf16 K/V:\n"
            << "  prefill: rel_err " << err_pre.rel() << " (worst sequence-head " << err_pre.worst_rel
            << "), max_abs_err " << err_pre.max_abs << "\n"
            << "  decode:  rel_err " << err_dec.rel() << " (worst sequence-head " << err_dec.worst_rel
            << "), max_abs_err " << err_dec.max_abs << "\n"
            << "memory: int8 cache " << bytes_int8 / 1048576.0 << " MiB vs bf16 " << bytes_bf16 / 1048576.0
            << " MiB: saves " << (bytes_bf16 - bytes_int8) / 1048576.0 << " MiB ("
            << 100.0 * (bytes_bf16 - bytes_int8) / bytes_bf16 << "%)\n"
            << "throughput (" << (gpu ? gpu_name() : std::string("CPU")) << ", path "
            << kvq::to_string(plan.path) << "):\n"
            << "  prefill " << prefill_ms << " ms, " << tflops << " TFLOP/s (visible scores only)\n"
            << "  decode  " << decode_ms << " ms, " << gbps << " GB/s of int8 K/V\n";
  const bool ok = err_all.rel() <= 1e-2 && std::isfinite(err_all.rel());
  std::cout << (ok ? "PASS" : "FAIL") << ": relative error " << err_all.rel() << (ok ? " <= " : " > ")
            << "1e-2\n";
  if (json) {
    std::cout << std::setprecision(6) << "{\"command\":\"demo\",\"backend\":\"" << (gpu ? "cuda" : "cpu")
              << "\",\"device\":\"" << json_escape(gpu ? gpu_name() : "cpu") << "\",\"rel_err\":" << err_all.rel()
              << ",\"rel_err_prefill\":" << err_pre.rel() << ",\"rel_err_decode\":" << err_dec.rel()
              << ",\"max_abs_err\":" << err_all.max_abs << ",\"cache_bytes_int8\":" << bytes_int8
              << ",\"cache_bytes_bf16\":" << bytes_bf16 << ",\"prefill_ms\":" << prefill_ms
              << ",\"prefill_tflops\":" << tflops << ",\"decode_ms\":" << decode_ms
              << ",\"decode_gbps\":" << gbps << ",\"prefill_path\":\"" << kvq::to_string(plan.path)
              << "\",\"k_scale\":\"" << flags.str("k-scale") << "\",\"v_scale\":\"" << flags.str("v-scale")
              << "\",\"random_queries\":" << (random_queries ? "true" : "false")
              << ",\"pass\":" << (ok ? "true" : "false") << "}\n";
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

int run_bench(const Flags& flags) {
  const bool json = flags.has("json");
  const bool gpu = !flags.has("cpu") && gpu_present();
  const std::string mode = flags.str("mode");
  if (mode != "prefill" && mode != "decode") throw UsageError("mode: expected prefill or decode, got '" + mode + "'");
  Shape sh;
  const int64_t batch = flags.i64("batch", 1, 1 << 16);
  int64_t q_len = flags.i64("q-len", 0, 1 << 20);
  const int64_t kv_len = flags.i64("kv-len", 0, 1 << 22);
  sh.num_qo_heads = flags.i64("num-qo-heads", 1, 1024);
  sh.num_kv_heads = flags.i64("num-kv-heads", 1, 1024);
  sh.head_dim = flags.i64("head-dim", 1, 256);
  sh.page_size = flags.i64("page-size", 1, 1 << 20);
  sh.layout = parse_layout(flags.str("layout"));
  const int iters = static_cast<int>(flags.i64("iters", 1, 100000));
  const std::string kv_dtype_s = flags.str("kv-dtype");
  if (kv_dtype_s != "int8" && kv_dtype_s != "bf16") throw UsageError("kv_dtype: expected int8 or bf16, got '" + kv_dtype_s + "'");
  const bool int8 = kv_dtype_s == "int8";
  const std::string causal_s = flags.str("causal");
  if (causal_s != "true" && causal_s != "false") throw UsageError("causal: expected true or false, got '" + causal_s + "'");
  const bool causal = causal_s == "true";
  if (sh.num_qo_heads % sh.num_kv_heads != 0)
    throw UsageError("num_qo_heads: expected a multiple of num_kv_heads (" + std::to_string(sh.num_kv_heads) +
                     "), got " + std::to_string(sh.num_qo_heads));
  if (mode == "decode") q_len = 1;
  if (causal && q_len > kv_len)
    throw UsageError("kv_len: expected >= q_len (" + std::to_string(q_len) + ") when causal, got " + std::to_string(kv_len));
  std::vector<std::string> paths;
  if (mode == "decode") {
    paths = {"decode"};
  } else if (flags.str("path") == "all") {
    paths = {"fused", "dequant", "generic"};
    if (!int8) paths = {"fused", "generic"};
  } else {
    parse_path(flags.str("path"));
    paths = {flags.str("path")};
  }

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
  const int64_t rows = mode == "decode" ? batch : b.total_q();
  std::vector<uint16_t> qh = random_bf16(rows * sh.num_qo_heads * sh.head_dim, rng);
  Buffer q(kvq::DType::kBFloat16, {rows, sh.num_qo_heads, sh.head_dim}, gpu);
  Buffer out(kvq::DType::kBFloat16, {rows, sh.num_qo_heads, sh.head_dim}, gpu);
  q.upload(qh.data());

  const double flops = 4.0 * sh.num_qo_heads * sh.head_dim * visible_pairs(b, causal);
  const double kv_bytes = 2.0 * batch * kv_len * hd * (int8 ? 1 : 2) + (int8 ? 2.0 * hd * 4 : 0);
  const double io_bytes = kv_bytes + 2.0 * 2 * rows * sh.num_qo_heads * sh.head_dim;
  const std::string device = gpu ? gpu_name() : "cpu";
  std::cout << "kvq bench: " << mode << " on " << device << ", batch " << batch << ", q_len " << q_len << ", kv_len "
            << kv_len << ", heads " << sh.num_qo_heads << "/" << sh.num_kv_heads << ", head_dim " << sh.head_dim
            << ", page " << sh.page_size << ", " << kvq::to_string(sh.layout) << ", " << kv_dtype_s << " cache"
            << (mode == "prefill" ? (causal ? ", causal" : ", non-causal") : "") << "\n";
  std::cout << std::left << std::setw(18) << "path" << std::right << std::setw(12) << "time ms" << std::setw(12)
            << "TFLOP/s" << std::setw(12) << "GB/s" << "\n";
  std::ostringstream js;
  js << "{\"command\":\"bench\",\"mode\":\"" << mode << "\",\"device\":\"" << json_escape(device)
     << "\",\"backend\":\"" << (gpu ? "cuda" : "cpu") << "\",\"batch\":" << batch << ",\"q_len\":" << q_len
     << ",\"kv_len\":" << kv_len << ",\"num_qo_heads\":" << sh.num_qo_heads << ",\"num_kv_heads\":"
     << sh.num_kv_heads << ",\"head_dim\":" << sh.head_dim << ",\"page_size\":" << sh.page_size
     << ",\"layout\":\"" << kvq::to_string(sh.layout) << "\",\"kv_dtype\":\"" << kv_dtype_s << "\",\"results\":[";
  bool first = true;
  for (const std::string& path : paths) {
    double ms = 0;
    std::string resolved = path;
    if (mode == "decode") {
      kvq::DecodeArgs da;
      da.q = q.view();
      da.kv = kv;
      da.block_tables = db.table.view();
      da.kv_lens = db.kv_lens.view();
      da.out = out.view();
      size_t ws = kvq::decode_workspace_size(da);
      Buffer wsb(kvq::DType::kUInt8, {static_cast<int64_t>(ws)}, gpu);
      da.workspace = {wsb.data(), ws};
      validate_output(out, [&] { kvq::paged_decode(da); }, resolved);
      ms = time_ms(gpu, gpu ? 3 : 1, iters, [&] { kvq::paged_decode(da); });
    } else {
      kvq::PrefillArgs pa;
      pa.q = q.view();
      pa.kv = kv;
      pa.block_tables = db.table.view();
      pa.cu_q_lens = db.cu_q_lens.view();
      pa.kv_lens = db.kv_lens.view();
      pa.out = out.view();
      pa.mask_options.causal = causal;
      pa.path = parse_path(path);
      kvq::PrefillPlan plan;
      try {
        plan = kvq::plan_prefill(pa, b.cu_q_lens.data(), b.kv_lens.data());
      } catch (const kvq::Error& e) {
        std::cout << std::left << std::setw(10) << path << "  not served: " << e.what() << "\n";
        continue;
      }
      resolved = kvq::to_string(plan.path);
      if (resolved != path) resolved = path + "->" + resolved;  // e.g. the CPU backend serves every path
      Buffer wsb(kvq::DType::kUInt8, {static_cast<int64_t>(plan.workspace_bytes)}, gpu);
      pa.plan = &plan;
      pa.workspace = {wsb.data(), plan.workspace_bytes};
      validate_output(out, [&] { kvq::paged_prefill(pa); }, resolved);
      ms = time_ms(gpu, gpu ? 3 : 1, iters, [&] { kvq::paged_prefill(pa); });
    }
    const double tflops = mode == "decode" ? 0 : flops / (ms * 1e-3) / 1e12;
    const double gbps = io_bytes / (ms * 1e-3) / 1e9;
    std::cout << std::left << std::setw(18) << resolved << std::right << std::fixed << std::setprecision(4)
              << std::setw(12) << ms << std::setprecision(1) << std::setw(12) << tflops << std::setw(12) << gbps
              << "\n";
    js << (first ? "" : ",") << "{\"path\":\"" << resolved << "\",\"ms\":" << ms << ",\"tflops\":" << tflops
       << ",\"gbps\":" << gbps << "}";
    first = false;
  }
  js << "]}";
  if (json) std::cout << js.str() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd = argc > 1 ? argv[1] : "--help";
  try {
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::cout << kUsage;
      return argc > 1 ? 0 : 2;
    }
    if (cmd == "demo") {
      Flags f(argc, argv, 2, {{"cpu", "false"}, {"json", "false"}, {"seed", "0"},
                              {"k-scale", "per-channel"}, {"v-scale", "per-token"},
                              {"random-queries", "false"}});
      return run_demo(f);
    }
    if (cmd == "bench") {
      Flags f(argc, argv, 2,
              {{"mode", "prefill"}, {"batch", "1"}, {"q-len", "1024"}, {"kv-len", "1024"},
               {"num-qo-heads", "32"}, {"num-kv-heads", "8"}, {"head-dim", "128"}, {"page-size", "64"},
               {"layout", "HND"}, {"path", "auto"}, {"kv-dtype", "int8"}, {"causal", "true"},
               {"iters", "20"}, {"cpu", "false"}, {"json", "false"}});
      return run_bench(f);
    }
    std::cerr << "kvq: unknown command '" << cmd << "'\n\n" << kUsage;
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
