// tests/gpu/soak_test.cpp — a bounded serving soak: a few thousand steps (3050 over three caches)
// of a small scheduler over one shared paged cache (int8 or bf16), checked against the CPU backend.
//
// Per step: sequences arrive (prompt 1..kMaxPrompt tokens, 1..kMaxGen generated tokens) while the
// page pool can reserve their full length, and leave when done; their pages go back to a free list
// that is reshuffled, so later sequences get recycled pages in random order. Prompts are prefilled
// in chunks under a token budget (chunked prefill; a waiting prompt skips steps), generating
// sequences decode one token (some skip a step). The step's new tokens (prefill chunks and decode
// tokens, in shuffled order, plus padding tokens with slot -1) go through one append; then one
// paged_prefill over the prefill chunks (path cycling auto/fused/dequant/generic; on some steps
// the decode tokens ride along as q_len 1 rows, a mixed batch) and one paged_decode over the rest.
// Block tables are as wide as the longest sequence allowed, unused entries -1; q/out of the prefill
// get bucket-padding rows.
// Free pages are poisoned (from the start, and again when freed): their per-token scales (int8) or
// their K and V (bf16) are NaN, on the device and on the host mirror alike, so a kernel that reads
// a key past kv_len of a page's new owner makes a NaN row.
// Checked: every step, every output row finite and padding rows never written; every
// kCacheCheckEvery-th step (3; and the last), the device cache bit for bit against a host mirror
// kept with the CPU backend's append; every kOracleEvery-th step (14; and the last), out/lse
// against the CPU backend (fp64) over that mirror within the docs/design.md §5 bound. 14 is coprime
// with the 5 (int8) and 3 (bf16) prefill paths taken in turn, so every path meets the oracle, and
// gives about as many oracle steps (~218) as the 650-step version had at every third step: the
// oracle's cost stays bounded while the steps grew 4.7x. Step tensors are rows copied from a pool
// of random bf16 values at random offsets (not a normal draw per element), and the every-step
// checks scan raw bf16 bits, so the host work per step stays small.
// Run: kvq_gpu_tests --gtest_filter='ServingSoak*' (3050 steps: 1400 / 950 / 700). On a 2-core
// machine the CPU self-check below takes 16.5 s, 0.9 s of it the fp64 oracle (the 650-step
// version: 8.4 s, 0.9 s oracle): 5.4 ms a step with the CPU backend as the backend under test.
// The harness itself runs on the CPU backend (no GPU) when built with -DKVQ_SOAK_HARNESS_SELFTEST
// into a gtest_main binary: ServingSoakHarness.OnCpuBackend. With a CPU-only build in build-cpu:
//   g++ -std=c++17 -O2 -DKVQ_SOAK_HARNESS_SELFTEST -I. -Iinclude -Ibuild-cpu/generated -I/usr/local/cuda/include
//     tests/gpu/soak_test.cpp tests/gpu/gpu_util.cpp build-cpu/tests/libkvq_test_common.a build-cpu/libkvq.a
//     -lgtest_main -lgtest -L/usr/local/cuda/lib64 -lcudart_static -lpthread -ldl -lrt -o soak_selftest
//   ./soak_selftest --gtest_filter='ServingSoakHarness*'
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

constexpr int64_t kHq = 8, kHkv = 2, kD = 128, kPage = 16;
constexpr int64_t kNumBlocks = 400;
constexpr int64_t kMaxPrompt = 300, kMaxGen = 64;
constexpr int64_t kMaxLen = kMaxPrompt + kMaxGen;
constexpr int64_t kTableWidth = (kMaxLen + kPage - 1) / kPage;
constexpr int kMaxSeqs = 12;
constexpr int64_t kPrefillBudget = 256;  // prefill tokens per step
constexpr int kCacheCheckEvery = 3;   // the device cache against the CPU-append mirror, bit for bit
constexpr int kOracleEvery = 14;      // out/lse against the CPU backend (coprime with 3 and 5 paths)
constexpr double kTol = 1e-2;            // bf16 compute (docs/design.md §5)

struct SoakConfig {
  const char* name;
  DType kv_dtype;            // int8 (with k_mode / v_mode scales) or bf16
  ScaleMode k_mode, v_mode;  // int8 only
  int steps;
  uint64_t seed;
};

// A persistent tensor of the backend under test: device memory (CUDA) or the host tensor itself
// (the CPU self-check). `host` is the download buffer in the CUDA case.
struct SideTensor {
  bool cuda = false;
  HostTensor host;
  DeviceTensor dev;
  SideTensor(bool on_cuda, const HostTensor& h) : cuda(on_cuda), host(h) {
    if (cuda) dev = DeviceTensor(h);
  }
  TensorView view() const { return cuda ? dev.view() : host.view(); }
  void download() {
    if (cuda) dev.download(host);
  }
  // Writes storage elements [off, off + n) of `host` to the backend.
  void write_range(int64_t off, int64_t n) {
    if (!cuda || n <= 0) return;
    const size_t es = dtype_size(host.dtype());
    if (cudaMemcpy(static_cast<char*>(dev.data()) + off * es, static_cast<const char*>(host.data()) + off * es, n * es,
                   cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("cudaMemcpy H2D (write_range)");
  }
};

// Per-call tensors of the backend under test: uploaded copies (CUDA) or the host tensors.
class Placement {
 public:
  explicit Placement(bool cuda) : cuda_(cuda) {}
  TensorView put(const HostTensor& h) {
    if (!cuda_) return h.view();
    held_.push_back(std::make_unique<DeviceTensor>(h));
    return held_.back()->view();
  }
  // h := what the backend holds for v (no-op on the CPU: v is h).
  void get(const TensorView& v, HostTensor& h) const {
    if (!cuda_) return;
    for (const auto& d : held_)
      if (d->data() == v.data) return d->download(h);
    throw std::runtime_error("Placement::get: view not placed");
  }
  void* scratch(size_t bytes) {
    if (bytes == 0) return nullptr;
    if (cuda_) {
      held_.push_back(std::make_unique<DeviceTensor>(DeviceTensor::bytes(bytes)));
      return held_.back()->data();
    }
    host_scratch_.emplace_back(bytes);
    return host_scratch_.back().data();
  }
  void clear() {
    held_.clear();
    host_scratch_.clear();
  }

 private:
  bool cuda_;
  std::vector<std::unique_ptr<DeviceTensor>> held_;
  std::vector<std::vector<uint8_t>> host_scratch_;
};

struct Seq {
  int64_t id = 0;
  int64_t prompt = 0, total = 0;  // total = prompt + generated tokens
  int64_t len = 0;                // tokens in the cache
  std::vector<int32_t> pages;
};

int64_t pages_for(int64_t tokens) { return (tokens + kPage - 1) / kPage; }

HostTensor random_bf16(Rng& rng, std::vector<int64_t> shape) {
  HostTensor t(DType::kBFloat16, std::move(shape));
  for (int64_t i = 0; i < t.storage_elements(); ++i) {
    double x = rng.normal();
    if (x == 0) x = 0.25;
    t.store(i, x);
  }
  return t;
}

// A pool of random bf16 values (randn, never 0), drawn once; a step's tensors take their rows
// from it at random offsets (a memcpy per row), so no two rows are alike in practice.
class Bf16Pool {
 public:
  Bf16Pool(Rng& rng, int64_t n) : pool_(random_bf16(rng, {n})) {}
  HostTensor take(Rng& rng, std::vector<int64_t> shape) const {
    HostTensor t(DType::kBFloat16, std::move(shape));
    const int64_t rows = t.size(0), row = rows > 0 ? t.numel() / rows : 0;
    const int64_t n = pool_.numel();
    if (row > n) throw std::runtime_error("Bf16Pool: row larger than the pool");
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(t.ptr<uint16_t>() + r * row, pool_.ptr<uint16_t>() + rng.randint(0, n - row + 1),
                  static_cast<size_t>(row) * sizeof(uint16_t));
    return t;
  }

 private:
  HostTensor pool_;
};

bool contiguous(const HostTensor& t) {
  int64_t expect = 1;
  for (int d = t.ndim() - 1; d >= 0; --d) {
    if (t.size(d) > 1 && t.strides()[static_cast<size_t>(d)] != expect) return false;
    expect *= t.size(d);
  }
  return t.storage_elements() == t.numel();
}

// Rows [0, rows) of `out` holding a non-finite value (bf16: scanned as raw bits).
int64_t count_nonfinite_rows(const HostTensor& out, int64_t rows) {
  int64_t n = 0;
  if (out.dtype() == DType::kBFloat16 && contiguous(out)) {
    const int64_t row = out.size(1) * out.size(2);
    const uint16_t* p = out.ptr<uint16_t>();
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t e = 0; e < row; ++e)
        if ((p[t * row + e] & 0x7f80) == 0x7f80) {  // exponent all ones: Inf or NaN
          ++n;
          break;
        }
    return n;
  }
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t h = 0; h < out.size(1); ++h)
      for (int64_t d = 0; d < out.size(2); ++d)
        if (!std::isfinite(out.at({t, h, d}))) {
          ++n;
          break;
        }
  return n;
}

// count_written_outside (tests/common) for a contiguous tensor: only the storage past the valid
// rows is scanned.
int64_t written_past_rows(const HostTensor& t, int64_t rows) {
  if (!contiguous(t) || t.ndim() == 0) return count_written_outside(t, rows);
  const int64_t row = t.size(0) > 0 ? t.numel() / t.size(0) : 0;
  int64_t written = 0;
  for (int64_t off = rows * row; off < t.storage_elements(); ++off) written += !t.is_poison(off);
  return written;
}

struct SoakStats {
  int64_t steps = 0, checks = 0, arrived = 0, finished = 0, prefill_calls = 0, decode_calls = 0,
          mixed_calls = 0, chunked = 0, recycled_pages = 0, tokens = 0, path_refusals = 0, oracle_checks = 0;
  // Per prefill path (PrefillPath as an index): calls it served, and those checked by the oracle.
  int64_t path_served[8] = {}, path_oracle[8] = {};
  double seconds = 0, oracle_seconds = 0;
};

void run_soak(const SoakConfig& cfg, bool cuda, SoakStats& stats) {
  const auto t_start = std::chrono::steady_clock::now();
  Rng rng(cfg.seed);
  const bool int8 = cfg.kv_dtype == DType::kInt8;
  const bool k_tok = int8 && cfg.k_mode == ScaleMode::kPerToken, v_tok = int8 && cfg.v_mode == ScaleMode::kPerToken;
  const double kNaN = std::numeric_limits<double>::quiet_NaN();

  // The pool: int8 pages holding garbage of earlier use (per-token scales NaN: every page is free),
  // or bf16 pages of NaN.
  HostTensor k_cache(cfg.kv_dtype, {kNumBlocks, kHkv, kPage, kD}), v_cache(cfg.kv_dtype, {kNumBlocks, kHkv, kPage, kD});
  for (int64_t i = 0; i < k_cache.storage_elements(); ++i) {
    k_cache.store(i, int8 ? static_cast<double>(rng.randint(-127, 128)) : kNaN);
    v_cache.store(i, int8 ? static_cast<double>(rng.randint(-127, 128)) : kNaN);
  }
  auto make_scale = [&](bool tok) {
    if (!int8) return HostTensor();
    if (tok) {
      HostTensor s(DType::kFloat32, {kNumBlocks, kHkv, kPage});
      for (int64_t i = 0; i < s.storage_elements(); ++i) s.store(i, kNaN);
      return s;
    }
    HostTensor s(DType::kFloat32, {kHkv, kD});  // static scales for values of amax ~3.5 (larger ones clamp)
    for (int64_t i = 0; i < s.storage_elements(); ++i) s.store(i, 3.5 / 127 * rng.uniform(0.8, 1.25));
    return s;
  };
  HostTensor k_scale = make_scale(k_tok), v_scale = make_scale(v_tok);
  // The host mirror (written by the CPU backend's append; the oracle reads it) and the backend's copy.
  HostTensor mk = k_cache, mv = v_cache, mks = k_scale, mvs = v_scale;
  SideTensor sk(cuda, k_cache), sv(cuda, v_cache), sks(cuda, k_scale), svs(cuda, v_scale);
  auto mirror_kv = [&] {
    PagedKvCache kv;
    kv.k_cache = mk.view();
    kv.v_cache = mv.view();
    kv.k_scale = mks.view();
    kv.v_scale = mvs.view();
    return kv;
  };
  auto side_kv = [&] {
    PagedKvCache kv;
    kv.k_cache = sk.view();
    kv.v_cache = sv.view();
    kv.k_scale = sks.view();
    kv.v_scale = svs.view();
    return kv;
  };

  std::vector<int32_t> free_pages = rng.permutation(kNumBlocks);
  std::vector<uint8_t> ever_used(kNumBlocks, 0);
  int64_t reserved = 0;  // pages promised to running sequences, not yet taken from free_pages
  std::vector<Seq> running;
  int64_t next_id = 0;
  Placement place(cuda);
  const Bf16Pool pool(rng, 1 << 20);
  // Prefill paths in turn (the dequant path reads int8 caches only).
  const std::vector<PrefillPath> paths =
      int8 ? std::vector<PrefillPath>{PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kAuto, PrefillPath::kDequant,
                                      PrefillPath::kGeneric}
           : std::vector<PrefillPath>{PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kGeneric};

  for (int step = 0; step < cfg.steps; ++step) {
    SCOPED_TRACE(std::string(cfg.name) + " step " + std::to_string(step));
    const bool cache_check = step % kCacheCheckEvery == 0 || step == cfg.steps - 1;
    const bool oracle = step % kOracleEvery == 0 || step == cfg.steps - 1;
    place.clear();

    // ---- arrivals ----
    for (int tries = 0; tries < 2 && static_cast<int>(running.size()) < kMaxSeqs; ++tries) {
      if (!rng.bernoulli(0.45)) continue;
      Seq s;
      s.id = next_id;
      const int64_t edge[] = {1, kPage - 1, kPage, kPage + 1, kMaxPrompt};
      s.prompt = rng.bernoulli(0.2) ? edge[rng.randint(0, 5)] : rng.randint(1, kMaxPrompt + 1);
      s.total = s.prompt + rng.randint(1, kMaxGen + 1);
      const int64_t need = pages_for(s.total);
      if (static_cast<int64_t>(free_pages.size()) - reserved < need) continue;  // the pool is full: not admitted
      reserved += need;
      ++next_id;
      ++stats.arrived;
      running.push_back(s);
    }

    // ---- this step's work: (sequence index, new tokens) for prefill and decode ----
    std::vector<std::pair<size_t, int64_t>> pre, dec;
    int64_t budget = kPrefillBudget;
    for (size_t i = 0; i < running.size(); ++i) {
      Seq& s = running[i];
      if (s.len < s.prompt) {
        if (budget <= 0) continue;
        const int64_t cap = std::vector<int64_t>{16, 37, 64, 128}[rng.randint(0, 4)];
        const int64_t n = std::min({s.prompt - s.len, cap, budget});
        budget -= n;
        if (s.len > 0 || n < s.prompt) ++stats.chunked;
        pre.push_back({i, n});
      } else if (!rng.bernoulli(0.1)) {
        dec.push_back({i, 1});
      }
    }
    if (pre.empty() && dec.empty()) continue;
    const bool mixed = !pre.empty() && !dec.empty() && rng.bernoulli(0.3);
    if (mixed) {
      pre.insert(pre.end(), dec.begin(), dec.end());
      dec.clear();
      ++stats.mixed_calls;
    }

    // ---- pages and the append of every new token ----
    std::vector<int64_t> slots;
    auto add_tokens = [&](size_t i, int64_t n) {
      Seq& s = running[i];
      for (int64_t pos = s.len; pos < s.len + n; ++pos) {
        if (pos / kPage >= static_cast<int64_t>(s.pages.size())) {
          const int32_t blk = free_pages.back();
          free_pages.pop_back();
          --reserved;
          stats.recycled_pages += ever_used[blk];
          ever_used[blk] = 1;
          s.pages.push_back(blk);
        }
        slots.push_back(static_cast<int64_t>(s.pages[pos / kPage]) * kPage + pos % kPage);
      }
    };
    for (const auto& [i, n] : pre) add_tokens(i, n);
    for (const auto& [i, n] : dec) add_tokens(i, n);
    for (int p = static_cast<int>(rng.randint(0, 3)); p > 0; --p) slots.push_back(-1);  // padding tokens
    {
      const std::vector<int32_t> order = rng.permutation(static_cast<int64_t>(slots.size()));
      std::vector<int64_t> shuffled(slots.size());
      for (size_t t = 0; t < slots.size(); ++t) shuffled[t] = slots[order[t]];
      slots = shuffled;
    }
    const int64_t N = static_cast<int64_t>(slots.size());
    stats.tokens += N;
    HostTensor k_new = pool.take(rng, {N, kHkv, kD}), v_new = pool.take(rng, {N, kHkv, kD});
    HostTensor slot_t(DType::kInt64, {N});
    for (int64_t t = 0; t < N; ++t) slot_t.store(t, static_cast<double>(slots[t]));
    {
      AppendArgs m;
      m.k_new = k_new.view();
      m.v_new = v_new.view();
      m.slot_mapping = slot_t.view();
      m.kv = mirror_kv();
      append(m);  // the CPU backend: the mirror
      AppendArgs a;
      a.k_new = place.put(k_new);
      a.v_new = place.put(v_new);
      a.slot_mapping = place.put(slot_t);
      a.kv = side_kv();
      append(a);
    }

    // ---- batches ----
    struct Batch {
      std::vector<std::pair<size_t, int64_t>> items;
      HostTensor q, out, lse, cu, kv, bt;
      std::vector<int32_t> cu_host, kv_host;
      int64_t rows = 0, pad = 0;
    };
    auto build = [&](const std::vector<std::pair<size_t, int64_t>>& items, bool prefill) {
      Batch b;
      b.items = items;
      const int64_t B = static_cast<int64_t>(items.size());
      b.cu_host.push_back(0);
      for (const auto& [i, n] : items) {
        b.cu_host.push_back(b.cu_host.back() + static_cast<int32_t>(n));
        b.kv_host.push_back(static_cast<int32_t>(running[i].len + n));
      }
      b.rows = b.cu_host.back();
      b.pad = prefill ? rng.randint(0, 4) : 0;
      b.q = pool.take(rng, {b.rows + b.pad, kHq, kD});
      b.out = HostTensor(DType::kBFloat16, {b.rows + b.pad, kHq, kD});
      b.lse = HostTensor(DType::kFloat32, {b.rows + b.pad, kHq});
      b.out.poison();
      b.lse.poison();
      b.cu = make_int32(b.cu_host);
      b.kv = make_int32(b.kv_host);
      b.bt = HostTensor(DType::kInt32, {B, kTableWidth});
      for (int64_t r = 0; r < B; ++r) {
        const Seq& s = running[items[r].first];
        for (int64_t c = 0; c < kTableWidth; ++c)
          b.bt.set({r, c}, c < static_cast<int64_t>(s.pages.size()) ? s.pages[c] : -1);
      }
      return b;
    };

    if (!pre.empty()) {
      Batch b = build(pre, true);
      PrefillArgs host;
      host.q = b.q.view();
      host.kv = mirror_kv();
      host.block_tables = b.bt.view();
      host.cu_q_lens = b.cu.view();
      host.kv_lens = b.kv.view();
      host.out = b.out.view();
      host.lse = b.lse.view();
      PrefillArgs a = host;
      a.q = place.put(b.q);
      a.kv = side_kv();
      a.block_tables = place.put(b.bt);
      a.cu_q_lens = place.put(b.cu);
      a.kv_lens = place.put(b.kv);
      a.out = place.put(b.out);
      a.lse = place.put(b.lse);
      a.path = cuda ? paths[step % paths.size()] : PrefillPath::kAuto;
      PrefillPlan plan;
      try {
        plan = plan_prefill(a, b.cu_host.data(), b.kv_host.data());
      } catch (const Error& e) {
        ASSERT_TRUE(e.argument() == "path" && a.path != PrefillPath::kAuto) << e.what();
        ++stats.path_refusals;  // a forced path that does not serve this batch: the planner's choice
        a.path = PrefillPath::kAuto;
        plan = plan_prefill(a, b.cu_host.data(), b.kv_host.data());
      }
      a.plan = &plan;
      a.workspace = {place.scratch(plan.workspace_bytes), plan.workspace_bytes};
      ASSERT_NO_THROW(paged_prefill(a)) << "path " << to_string(a.path);
      if (cuda) {
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      }
      HostTensor out = b.out, lse = b.lse;
      place.get(a.out, out);
      place.get(a.lse, lse);
      ++stats.prefill_calls;
      EXPECT_EQ(count_nonfinite_rows(out, b.rows), 0) << "prefill, path " << to_string(a.path);
      EXPECT_EQ(written_past_rows(out, b.rows), 0) << "prefill padding rows written";
      EXPECT_EQ(written_past_rows(lse, b.rows), 0) << "prefill padding lse written";
      const size_t pi = static_cast<size_t>(a.path);
      if (pi < 8) ++stats.path_served[pi];
      if (oracle) {
        if (pi < 8) ++stats.path_oracle[pi];
        const auto t0 = std::chrono::steady_clock::now();
        const RefOutput ref = cpu_prefill(host, true);
        stats.oracle_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const ErrorStats st = compare_output(out.view(), ref, b.cu_host);
        EXPECT_TRUE(st.ok(kTol)) << "prefill, path " << to_string(a.path) << ": " << st.describe();
        const LseStats ls = compare_lse(lse.view(), ref, b.rows);
        EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
        EXPECT_LE(ls.max_abs, 2e-2) << ls.describe();
      }
    }
    if (!dec.empty()) {
      Batch b = build(dec, false);
      DecodeArgs host;
      host.q = b.q.view();
      host.kv = mirror_kv();
      host.block_tables = b.bt.view();
      host.kv_lens = b.kv.view();
      host.out = b.out.view();
      host.lse = b.lse.view();
      DecodeArgs a = host;
      a.q = place.put(b.q);
      a.kv = side_kv();
      a.block_tables = place.put(b.bt);
      a.kv_lens = place.put(b.kv);
      a.out = place.put(b.out);
      a.lse = place.put(b.lse);
      const size_t ws = decode_workspace_size(a);
      a.workspace = {place.scratch(ws), ws};
      ASSERT_NO_THROW(paged_decode(a));
      if (cuda) {
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      }
      HostTensor out = b.out, lse = b.lse;
      place.get(a.out, out);
      place.get(a.lse, lse);
      ++stats.decode_calls;
      EXPECT_EQ(count_nonfinite_rows(out, b.rows), 0) << "decode";
      if (oracle) {
        const auto t0 = std::chrono::steady_clock::now();
        const RefOutput ref = cpu_decode(host, true);
        stats.oracle_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const ErrorStats st = compare_decode_output(out.view(), ref);
        EXPECT_TRUE(st.ok(kTol)) << "decode: " << st.describe();
        const LseStats ls = compare_lse(lse.view(), ref, b.rows);
        EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
        EXPECT_LE(ls.max_abs, 2e-2) << ls.describe();
      }
    }
    if (oracle) ++stats.oracle_checks;
    if (cache_check) {
      // The backend's cache (appends of every step so far) equals the CPU backend's, bit for bit.
      ++stats.checks;
      sk.download();
      sv.download();
      sks.download();
      svs.download();
      EXPECT_TRUE(same_bytes(sk.host, mk)) << "k_cache differs from the CPU backend's append";
      EXPECT_TRUE(same_bytes(sv.host, mv)) << "v_cache differs from the CPU backend's append";
      EXPECT_TRUE(same_bytes(sks.host, mks)) << "k_scale differs from the CPU backend's append";
      EXPECT_TRUE(same_bytes(svs.host, mvs)) << "v_scale differs from the CPU backend's append";
    }
    if (testing::Test::HasFatalFailure()) return;

    // ---- advance; finished sequences free their pages (poisoned, then reshuffled) ----
    for (const auto& [i, n] : pre) running[i].len += n;
    for (const auto& [i, n] : dec) running[i].len += n;
    std::vector<Seq> still;
    for (Seq& s : running) {
      if (s.len < s.total) {
        still.push_back(std::move(s));
        continue;
      }
      ++stats.finished;
      reserved -= pages_for(s.total) - static_cast<int64_t>(s.pages.size());
      // A block's entries are contiguous in the HND cache and per-token scales.
      auto poison_block = [&](HostTensor& mirror, SideTensor& side, int32_t blk) {
        const int64_t off = blk * mirror.strides()[0], n = mirror.strides()[0];
        for (int64_t e = 0; e < n; ++e) {
          mirror.store(off + e, kNaN);
          side.host.store(off + e, kNaN);
        }
        side.write_range(off, n);
      };
      for (int32_t blk : s.pages) {
        if (k_tok) poison_block(mks, sks, blk);
        if (v_tok) poison_block(mvs, svs, blk);
        if (!int8) {
          poison_block(mk, sk, blk);
          poison_block(mv, sv, blk);
        }
        free_pages.push_back(blk);
      }
      const std::vector<int32_t> order = rng.permutation(static_cast<int64_t>(free_pages.size()));
      std::vector<int32_t> shuffled(free_pages.size());
      for (size_t t = 0; t < free_pages.size(); ++t) shuffled[t] = free_pages[order[t]];
      free_pages = shuffled;
    }
    running = std::move(still);
    ++stats.steps;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
}

void expect_soak_exercised(const SoakConfig& cfg, const SoakStats& st) {
  std::printf("[%s] %lld steps, %lld cache checks, %lld oracle steps, %lld sequences (%lld finished), %lld prefill / %lld decode calls "
              "(%lld mixed, %lld forced paths refused), %lld chunked prefills, %lld recycled pages, %lld tokens, "
              "%.1f s (oracle %.1f s)\n",
              cfg.name, static_cast<long long>(st.steps), static_cast<long long>(st.checks),
              static_cast<long long>(st.oracle_checks),
              static_cast<long long>(st.arrived), static_cast<long long>(st.finished),
              static_cast<long long>(st.prefill_calls), static_cast<long long>(st.decode_calls),
              static_cast<long long>(st.mixed_calls), static_cast<long long>(st.path_refusals),
              static_cast<long long>(st.chunked),
              static_cast<long long>(st.recycled_pages), static_cast<long long>(st.tokens), st.seconds,
              st.oracle_seconds);
  for (int p = 0; p < 4; ++p)
    if (st.path_served[p] > 0)
      std::printf("[%s]   prefill path %s: %lld calls, %lld checked by the oracle\n", cfg.name,
                  to_string(static_cast<PrefillPath>(p)), static_cast<long long>(st.path_served[p]),
                  static_cast<long long>(st.path_oracle[p]));
  EXPECT_GT(st.finished, cfg.steps / 30) << "sequences must come and go";
  EXPECT_GT(st.recycled_pages, cfg.steps / 2) << "freed pages must be reused";
  EXPECT_GT(st.mixed_calls, cfg.steps / 20);
  EXPECT_GT(st.chunked, cfg.steps / 20);
  EXPECT_GT(st.decode_calls, cfg.steps / 3);
  EXPECT_GE(st.oracle_checks, cfg.steps / kOracleEvery / 2);  // steps without work are not checked
  EXPECT_GE(st.checks, cfg.steps / kCacheCheckEvery / 2);
  // Every path that served a fair share of the calls met the oracle (kOracleEvery is coprime with
  // the number of paths taken in turn).
  for (int p = 0; p < 4; ++p) {
    if (st.path_served[p] >= 3 * kOracleEvery) {
      EXPECT_GT(st.path_oracle[p], 0) << to_string(static_cast<PrefillPath>(p));
    }
  }
}

const SoakConfig kConfigs[] = {
    {"Int8PerTokenKV", DType::kInt8, ScaleMode::kPerToken, ScaleMode::kPerToken, 1400, 9001},
    {"Int8PerChannelKPerTokenV", DType::kInt8, ScaleMode::kPerChannel, ScaleMode::kPerToken, 950, 9002},
    {"Bf16Cache", DType::kBFloat16, ScaleMode::kNone, ScaleMode::kNone, 700, 9003},
};
constexpr int kNumConfigs = static_cast<int>(sizeof(kConfigs) / sizeof(kConfigs[0]));

class ServingSoak : public testing::TestWithParam<int> {};

TEST_P(ServingSoak, MixedPrefillDecodeAppendMatchesCpu) {
  const SoakConfig& cfg = kConfigs[GetParam()];
  SoakStats st;
  run_soak(cfg, /*cuda=*/true, st);
  expect_soak_exercised(cfg, st);
}

INSTANTIATE_TEST_SUITE_P(Configs, ServingSoak, testing::Range(0, kNumConfigs),
                         [](const testing::TestParamInfo<int>& info) { return std::string(kConfigs[info.param].name); });

#ifdef KVQ_SOAK_HARNESS_SELFTEST
TEST(ServingSoakHarness, OnCpuBackend) {
  for (const SoakConfig& cfg : kConfigs) {
    SoakStats st;
    run_soak(cfg, /*cuda=*/false, st);
    expect_soak_exercised(cfg, st);
  }
}
#endif

}  // namespace
}  // namespace kvq::test
