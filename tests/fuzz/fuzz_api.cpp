// tests/fuzz/fuzz_api.cpp — libFuzzer target over validation and the CPU backend.
//
// Each input decodes (FuzzedDataProvider) into one call of a public entry point — paged_prefill
// (with or without a plan), paged_decode, append, dequantize_blocks or calibrate — with arbitrary
// shapes, dtypes, strides, layouts, options and metadata: mostly well-formed, with hostile
// mutations (block ids out of range, kv_len past the table, malformed cu_q_lens, huge windows and
// scales, NaN/Inf data, stride 0 and negative strides, outputs aliasing inputs, absurd extents,
// null data, wrong ranks, dtypes and devices, invalid enum values). An all-zero or exhausted input
// decodes to a valid call, so mutations start from working problems.
//
// Every tensor gets its own heap allocation of exactly the bytes its view addresses, so ASan flags
// any access outside a view; an absurd view (its extents overflow int64) points at a tiny buffer
// and must be refused before anything reads it. The properties checked:
//   - no crash, no sanitizer report, no exception other than kvq::Error;
//   - every kvq::Error names its function and a non-empty argument, and its message reads
//     "<function>: <argument>: expected ..." (docs/design.md §3);
//   - a refused call writes nothing: the outputs' bytes are unchanged.
// Built by tools/sanitize.sh (clang -fsanitize=fuzzer,address,undefined); seeds in tests/fuzz/corpus.txt.
#include <fuzzer/FuzzedDataProvider.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kvq/kvq.h"

namespace {

using kvq::DType;
using kvq::TensorView;

size_t elem_size(DType d) {
  switch (d) {
    case DType::kFloat32: case DType::kInt32: return 4;
    case DType::kFloat16: case DType::kBFloat16: return 2;
    case DType::kInt64: return 8;
    default: return 1;
  }
}

bool is_float(DType d) { return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16; }

uint16_t f32_to_half_bits(float f, bool bf16) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (bf16) return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  // fp16 by truncation is enough for fuzz data (NaN/Inf preserved, rest approximate).
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((u >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = (u >> 13) & 0x3ffu;
  if (((u >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | mant);
}

class Gen {
 public:
  Gen(const uint8_t* data, size_t size) : fdp_(data, size) {}

  template <typename T>
  T in(T lo, T hi) {
    return fdp_.ConsumeIntegralInRange<T>(lo, hi);
  }
  bool flag() { return fdp_.ConsumeBool(); }
  // A rare event: true for 1 in `n` of the byte's values (never on exhausted input).
  bool rare(int n) { return in<uint8_t>(0, 255) >= 256 - 256 / n; }
  uint32_t bits() { return fdp_.ConsumeIntegral<uint32_t>(); }

  // A hostile variant of an integer: mostly `v`, sometimes an arbitrary or extreme value.
  int32_t mutate(int32_t v) {
    switch (in<uint8_t>(0, 15)) {
      case 1: return -1;
      case 2: return static_cast<int32_t>(static_cast<int64_t>(v) + in<int32_t>(-3, 3));  // wraps (C++20)
      case 3: return INT32_MAX;
      case 4: return INT32_MIN;
      case 5: return 1 << 30;
      case 6: return static_cast<int32_t>(bits());
      default: return v;
    }
  }

  // A float value of the data: mostly ordinary, sometimes NaN, +-Inf, huge, tiny or zero.
  float value() {
    switch (in<uint8_t>(0, 31)) {
      case 1: return std::numeric_limits<float>::quiet_NaN();
      case 2: return std::numeric_limits<float>::infinity();
      case 3: return -std::numeric_limits<float>::infinity();
      case 4: return 3e38f;
      case 5: return 1e-30f;
      case 6: return 0.f;
      case 7: {
        float f;
        const uint32_t u = bits();
        std::memcpy(&f, &u, 4);
        return f;
      }
      default: return static_cast<float>(in<int32_t>(-1000, 1000)) / 256.f;
    }
  }

  // The dtype `want` (mostly), or any of the eight (a wrong one must be refused).
  DType dtype(DType want) { return rare(24) ? static_cast<DType>(in<int>(0, 7)) : want; }

  // One tensor with its own allocation. Kinds: contiguous; padded strides (gaps); stride 0 on a
  // dimension; a negative stride; absurd extents; null data; absent; wrong rank; CUDA device.
  TensorView tensor(DType dt, std::vector<int64_t> shape, bool metadata = false, int32_t lo = 0, int32_t hi = 0) {
    TensorView t;
    t.dtype = dt;
    const uint8_t kind = rare(8) ? in<uint8_t>(1, 9) : 0;
    if (kind == 1) return TensorView{};  // absent
    if (kind == 2 && !shape.empty()) shape.pop_back();  // wrong rank
    if (kind == 3) shape.push_back(1);
    t.ndim = static_cast<int>(shape.size());
    for (int d = 0; d < t.ndim; ++d) t.shape[d] = shape[d];
    int64_t stride = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      t.strides[d] = stride;
      int64_t grow = std::max<int64_t>(shape[d], 1);
      if (kind == 4 && d == t.ndim - 1) grow += in<int64_t>(1, 3);  // gaps between rows
      stride *= grow;
    }
    if (kind == 5 && t.ndim > 0) t.strides[in<int>(0, t.ndim - 1)] = 0;
    bool negative = false;
    if (kind == 6 && t.ndim > 0) {
      const int d = in<int>(0, t.ndim - 1);
      t.strides[d] = -t.strides[d];
      negative = true;
    }
    const bool absurd = kind == 7 && t.ndim >= 2;
    if (absurd) {  // the extents overflow int64
      t.shape[0] = int64_t{1} << in<int>(40, 62);
      t.shape[1] = int64_t{1} << in<int>(40, 62);
    }
    if (kind == 9) t.device = kvq::Device::kCUDA;
    // Bytes the view addresses.
    int64_t span = 1;
    bool empty = false;
    for (int d = 0; d < t.ndim; ++d) {
      if (t.shape[d] <= 0) empty = true;  // a negative size must be refused: no buffer behind it
      if (!absurd && t.shape[d] > 0) span += (t.shape[d] - 1) * std::llabs(t.strides[d]);
    }
    const size_t bytes = absurd ? 16 : (empty ? 0 : static_cast<size_t>(span) * elem_size(dt));
    bufs_.push_back(std::make_unique<std::vector<uint8_t>>(bytes));
    std::vector<uint8_t>& b = *bufs_.back();
    // Values.
    const size_t n = bytes / std::max<size_t>(elem_size(dt), 1);
    for (size_t i = 0; i < n; ++i) {
      uint8_t* p = b.data() + i * elem_size(dt);
      if (metadata && (dt == DType::kInt32 || dt == DType::kInt64)) {
        const int64_t v = in<int32_t>(lo, std::max(lo, hi));
        if (dt == DType::kInt32) {
          const int32_t w = static_cast<int32_t>(v);
          std::memcpy(p, &w, 4);
        } else {
          std::memcpy(p, &v, 8);
        }
      } else if (is_float(dt)) {
        const float f = value();
        if (dt == DType::kFloat32) {
          std::memcpy(p, &f, 4);
        } else {
          const uint16_t h = f32_to_half_bits(f, dt == DType::kBFloat16);
          std::memcpy(p, &h, 2);
        }
      } else {
        for (size_t k = 0; k < elem_size(dt); ++k) p[k] = in<uint8_t>(0, 255);
      }
    }
    t.data = (kind == 8 || bytes == 0) ? nullptr : b.data();
    if (negative && bytes > 0) t.data = b.data();  // a negative stride would walk before the buffer
    if (std::getenv("KVQ_FUZZ_DEBUG")) {  // replaying a finding: what each view is
      std::fprintf(stderr, "tensor %zu: %s kind %d bytes %zu strides", bufs_.size() - 1, t.describe().c_str(), kind, bytes);
      for (int d = 0; d < t.ndim; ++d) std::fprintf(stderr, " %lld", static_cast<long long>(t.strides[d]));
      std::fprintf(stderr, "\n");
    }
    return t;
  }

  // Bytes of every buffer, to check that a refused call wrote nothing.
  std::vector<uint8_t> snapshot() const {
    std::vector<uint8_t> s;
    for (const auto& b : bufs_) s.insert(s.end(), b->begin(), b->end());
    return s;
  }

  // The int32 at element offset `off` of view t, or null when t is no int32 view or the element
  // lies outside t's buffer (a mutated view: wrong rank, absurd extents, null data...).
  int32_t* i32_at(const TensorView& t, int64_t off) const {
    if (t.data == nullptr || t.dtype != DType::kInt32 || off < 0) return nullptr;
    for (const auto& b : bufs_)
      if (b->data() == t.data)
        return static_cast<size_t>(off) * 4 + 4 <= b->size() ? static_cast<int32_t*>(t.data) + off : nullptr;
    return nullptr;
  }
  // Element i of a 1-D int32 metadata view, when it is one.
  void set_i32(const TensorView& t, int64_t i, int32_t v) {
    if (t.ndim != 1) return;
    if (int32_t* p = i32_at(t, i * t.strides[0])) *p = v;
  }

 private:
  FuzzedDataProvider fdp_;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> bufs_;
};

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_api: %s: %s\n", what, detail.c_str());
  std::abort();
}

// Calls that ran / were refused, per entry point (printed at exit with KVQ_FUZZ_STATS=1).
struct Stats {
  std::string names[8];
  long ran[8] = {}, refused[8] = {};
  int index(const char* func) {
    for (int i = 0; i < 8; ++i) {
      if (names[i].empty()) names[i] = func;
      if (names[i] == func) return i;
    }
    return 7;
  }
  ~Stats() {
    if (!std::getenv("KVQ_FUZZ_STATS")) return;
    for (int i = 0; i < 8 && !names[i].empty(); ++i)
      std::fprintf(stderr, "fuzz_api: %-28s ran %ld, refused %ld\n", names[i].c_str(), ran[i], refused[i]);
  }
} stats;

// Runs f; a kvq::Error must be well formed and leave every buffer as it was.
template <typename F>
void call(Gen& g, const char* func, F&& f) {
  const std::vector<uint8_t> before = g.snapshot();
  const int slot = stats.index(func);
  try {
    f();
    ++stats.ran[slot];
  } catch (const kvq::Error& e) {
    ++stats.refused[slot];
    const std::string what = e.what();
    if (e.argument().empty()) finding("a kvq::Error names no argument", what);
    if (e.function().empty()) finding("a kvq::Error names no function", what);
    if (what.find(e.function() + ": " + e.argument() + ": ") != 0)
      finding("message does not start with \"<function>: <argument>: \"", what);
    if (what.find("expected") == std::string::npos && what.find("not implemented") == std::string::npos)
      finding("message says nothing about what was expected", what);
    if (g.snapshot() != before) finding("a refused call wrote to a buffer", std::string(func) + ": " + what);
  } catch (const std::exception& e) {
    finding("an exception other than kvq::Error escaped", std::string(func) + ": " + e.what());
  }
}

struct Geometry {
  int64_t batch, hkv, group, hq, dim, page, blocks, width;
  kvq::KvLayout layout;
};

Geometry geometry(Gen& g) {
  Geometry x;
  x.batch = g.in<int64_t>(1, 4) - (g.rare(16) ? 1 : 0);
  x.hkv = g.in<int64_t>(1, 3) - (g.rare(32) ? 1 : 0);
  x.group = g.in<int64_t>(1, 3);
  x.hq = x.hkv * x.group + (g.rare(32) ? 1 : 0);
  x.dim = g.rare(32) ? (g.flag() ? 0 : 300) : g.in<int64_t>(1, 40);
  x.page = g.in<int64_t>(1, 8) - (g.rare(32) ? 1 : 0);
  x.width = g.in<int64_t>(1, 4) - (g.rare(16) ? 1 : 0);
  x.blocks = g.in<int64_t>(1, 10);
  x.layout = g.rare(4) ? kvq::KvLayout::kNHD : kvq::KvLayout::kHND;
  if (g.rare(64)) x.layout = static_cast<kvq::KvLayout>(5);
  return x;
}

std::vector<int64_t> cache_shape(const Geometry& x, int64_t blocks) {
  if (x.layout == kvq::KvLayout::kNHD) return {blocks, x.page, x.hkv, x.dim};
  return {blocks, x.hkv, x.page, x.dim};
}

// A paged cache: int8 with per-channel or per-token scales, or bf16/fp16 without.
kvq::PagedKvCache cache(Gen& g, const Geometry& x, DType q_dtype) {
  kvq::PagedKvCache kv;
  kv.layout = x.layout;
  const uint8_t kind = g.in<uint8_t>(0, 3);
  const DType cdt = kind == 3 ? (q_dtype == DType::kFloat16 ? DType::kFloat16 : DType::kBFloat16) : DType::kInt8;
  kv.k_cache = g.tensor(g.dtype(cdt), cache_shape(x, x.blocks));
  kv.v_cache = g.rare(32) ? kv.k_cache : g.tensor(g.dtype(cdt), cache_shape(x, x.blocks));
  if (cdt == DType::kInt8 || g.rare(32)) {
    const DType sdt = g.rare(3) ? (g.flag() ? DType::kBFloat16 : DType::kFloat16) : DType::kFloat32;
    auto scale = [&](bool per_token) {
      if (!per_token) return g.tensor(g.dtype(sdt), {x.hkv, x.dim});
      return g.tensor(g.dtype(sdt), x.layout == kvq::KvLayout::kNHD ? std::vector<int64_t>{x.blocks, x.page, x.hkv}
                                                                   : std::vector<int64_t>{x.blocks, x.hkv, x.page});
    };
    kv.k_scale = scale(kind == 1);
    kv.v_scale = scale(kind == 2);
  }
  return kv;
}

struct Lengths {
  std::vector<int32_t> q_lens, kv_lens, cu;
  int64_t total_q = 0;
};

Lengths lengths(Gen& g, const Geometry& x, bool decode) {
  Lengths l;
  l.cu.push_back(0);
  for (int64_t b = 0; b < x.batch; ++b) {
    const int32_t kv = g.in<int32_t>(0, static_cast<int32_t>(std::max<int64_t>(0, x.width * x.page)));
    const int32_t q = decode ? 1 : std::min(kv, g.in<int32_t>(0, 6));
    l.q_lens.push_back(q);
    l.kv_lens.push_back(kv);
    l.cu.push_back(l.cu.back() + q);
  }
  l.total_q = l.cu.back() + g.in<int64_t>(0, 2);
  if (decode) l.total_q = x.batch;
  return l;
}

// The table, lengths and cu_q_lens tensors, written from `l` then (rarely) mutated in place.
void metadata(Gen& g, const Geometry& x, const Lengths& l, TensorView& table, TensorView& kv_lens,
              TensorView* cu_q_lens) {
  table = g.tensor(g.dtype(DType::kInt32), {x.batch, x.width}, true, 0, static_cast<int32_t>(x.blocks - 1));
  for (int64_t b = 0; b < x.batch; ++b)
    for (int64_t i = 0; i < x.width; ++i)
      if (g.rare(4) && table.ndim == 2)
        if (int32_t* p = g.i32_at(table, b * table.strides[0] + i * table.strides[1])) *p = g.mutate(*p);
  kv_lens = g.tensor(g.dtype(DType::kInt32), {x.batch}, true, 0, 0);
  for (int64_t b = 0; b < x.batch; ++b) g.set_i32(kv_lens, b, g.rare(6) ? g.mutate(l.kv_lens[b]) : l.kv_lens[b]);
  if (cu_q_lens == nullptr) return;
  *cu_q_lens = g.tensor(g.dtype(DType::kInt32), {x.batch + 1}, true, 0, 0);
  for (int64_t b = 0; b <= x.batch; ++b)
    g.set_i32(*cu_q_lens, b, g.rare(8) ? g.mutate(l.cu[b]) : l.cu[b]);
}

int window(Gen& g, int absent) {
  if (!g.rare(4)) return absent;
  switch (g.in<uint8_t>(0, 3)) {
    case 0: return g.in<int>(0, 12);
    case 1: return INT_MAX;
    case 2: return INT_MAX - 1;
    default: return static_cast<int>(g.bits());
  }
}

float softmax_scale(Gen& g) {
  if (!g.rare(4)) return 0.f;
  switch (g.in<uint8_t>(0, 3)) {
    case 0: return 1e30f;
    case 1: return -0.5f;
    case 2: return std::numeric_limits<float>::quiet_NaN();
    default: {
      float f;
      const uint32_t u = g.bits();
      std::memcpy(&f, &u, 4);
      return f;
    }
  }
}

void fuzz_prefill(Gen& g) {
  const Geometry x = geometry(g);
  const Lengths l = lengths(g, x, false);
  kvq::PrefillArgs a;
  const uint8_t qkind = g.in<uint8_t>(0, 5);
  const DType qdt = qkind == 4 ? DType::kFloat16 : (qkind == 5 ? DType::kInt8 : DType::kBFloat16);
  a.q = g.tensor(g.dtype(qdt), {l.total_q, x.hq, x.dim});
  if (qdt == DType::kInt8 || g.rare(32)) a.q_scale = g.tensor(g.dtype(DType::kFloat32), {l.total_q, x.hq});
  a.kv = cache(g, x, qdt);
  metadata(g, x, l, a.block_tables, a.kv_lens, &a.cu_q_lens);
  const DType odt = qdt == DType::kFloat16 ? DType::kFloat16 : DType::kBFloat16;
  a.out = g.rare(32) ? a.q : g.tensor(g.dtype(odt), {l.total_q, x.hq, x.dim});
  if (g.flag()) a.lse = g.tensor(g.dtype(DType::kFloat32), {l.total_q, x.hq});
  a.mask_options.causal = !g.rare(4);
  if (!a.mask_options.causal && g.flag()) {
    int64_t n = 0;
    for (int64_t b = 0; b < x.batch; ++b) n += int64_t{l.q_lens[b]} * l.kv_lens[b];
    a.mask = g.tensor(g.flag() ? DType::kBool : DType::kUInt8, {n + (g.rare(8) ? g.in<int64_t>(-2, 2) : 0)});
  }
  a.mask_options.local_window = window(g, -1);
  a.mask_options.global_window = window(g, 0);
  a.softmax_scale = softmax_scale(g);
  a.gqa_layout = g.rare(32) ? static_cast<kvq::GqaLayout>(3) : (g.flag() ? kvq::GqaLayout::kInterleaved : kvq::GqaLayout::kGrouped);
  a.compute = g.rare(4) ? kvq::ComputeMode::kInt8 : kvq::ComputeMode::kNative;
  if (g.rare(64)) a.compute = static_cast<kvq::ComputeMode>(9);
  a.path = static_cast<kvq::PrefillPath>(g.rare(8) ? g.in<int>(0, 5) : 0);
  a.check = g.flag();
  if (g.rare(4)) {
    call(g, "plan_prefill+paged_prefill", [&] {
      const kvq::PrefillPlan plan = kvq::plan_prefill(a, l.cu.data(), l.kv_lens.data());
      a.plan = &plan;
      kvq::paged_prefill(a);
    });
  } else {
    call(g, "paged_prefill", [&] { kvq::paged_prefill(a); });
  }
}

void fuzz_decode(Gen& g) {
  const Geometry x = geometry(g);
  const Lengths l = lengths(g, x, true);
  kvq::DecodeArgs a;
  const DType qdt = g.rare(4) ? DType::kFloat16 : DType::kBFloat16;
  a.q = g.tensor(g.dtype(qdt), {x.batch, x.hq, x.dim});
  a.kv = cache(g, x, qdt);
  metadata(g, x, l, a.block_tables, a.kv_lens, nullptr);
  a.out = g.rare(32) ? a.q : g.tensor(g.dtype(qdt), {x.batch, x.hq, x.dim});
  if (g.flag()) a.lse = g.tensor(g.dtype(DType::kFloat32), {x.batch, x.hq});
  a.local_window = window(g, -1);
  a.global_window = window(g, 0);
  a.softmax_scale = softmax_scale(g);
  a.gqa_layout = g.flag() ? kvq::GqaLayout::kInterleaved : kvq::GqaLayout::kGrouped;
  a.num_splits = g.rare(16) ? g.in<int>(-2, 9) : 0;
  a.check = g.flag();
  call(g, "paged_decode", [&] { kvq::paged_decode(a); });
}

void fuzz_append(Gen& g) {
  const Geometry x = geometry(g);
  const int64_t n = g.in<int64_t>(0, 6);
  kvq::AppendArgs a;
  const uint8_t in_kind = g.in<uint8_t>(0, 2);
  const DType idt = in_kind == 1 ? DType::kFloat32 : (in_kind == 2 ? DType::kFloat16 : DType::kBFloat16);
  a.k_new = g.tensor(g.dtype(idt), {n, x.hkv, x.dim});
  a.v_new = g.tensor(g.dtype(idt), {n, x.hkv, x.dim});
  const DType sdt = g.flag() ? DType::kInt64 : DType::kInt32;
  const int32_t slots = static_cast<int32_t>(x.blocks * std::max<int64_t>(x.page, 0));
  a.slot_mapping = g.tensor(g.dtype(sdt), {n}, true, -2, slots + 1);
  a.kv = cache(g, x, DType::kBFloat16);
  a.check = g.flag();
  call(g, "append", [&] { kvq::append(a); });
}

void fuzz_dequant(Gen& g) {
  const Geometry x = geometry(g);
  const Lengths l = lengths(g, x, true);
  kvq::DequantArgs a;
  a.layout = x.layout;
  a.cache = g.tensor(g.dtype(DType::kInt8), cache_shape(x, x.blocks));
  const bool per_token = g.flag();
  a.scale = per_token ? g.tensor(g.dtype(DType::kFloat32), x.layout == kvq::KvLayout::kNHD
                                                                ? std::vector<int64_t>{x.blocks, x.page, x.hkv}
                                                                : std::vector<int64_t>{x.blocks, x.hkv, x.page})
                      : g.tensor(g.dtype(DType::kFloat32), {x.hkv, x.dim});
  metadata(g, x, l, a.block_tables, a.kv_lens, nullptr);
  const DType odt = g.flag() ? DType::kFloat16 : DType::kBFloat16;
  if (g.flag()) {
    a.out = g.tensor(g.dtype(odt), cache_shape(x, x.batch * x.width + (g.rare(4) ? -1 : 0)));
    a.out_block_tables = g.tensor(g.dtype(DType::kInt32), {x.batch, x.width});
  } else {
    a.out = g.rare(32) ? a.cache : g.tensor(g.dtype(odt), cache_shape(x, x.blocks));
  }
  a.check = g.flag();
  call(g, "dequantize_blocks", [&] { kvq::dequantize_blocks(a); });
}

void fuzz_calibrate(Gen& g) {
  const Geometry x = geometry(g);
  const int64_t n = g.in<int64_t>(0, 6);
  const uint8_t k = g.in<uint8_t>(0, 2);
  const DType xdt = k == 1 ? DType::kFloat32 : (k == 2 ? DType::kFloat16 : DType::kBFloat16);
  const TensorView xv = g.tensor(g.dtype(xdt), {n, x.hkv, x.dim});
  const TensorView s = g.rare(32) ? xv : g.tensor(g.dtype(DType::kFloat32), {x.hkv, x.dim});
  call(g, "calibrate", [&] { kvq::calibrate(xv, s); });
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("KVQ_NUM_THREADS", "1", 1);  // one thread: fast, deterministic runs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Gen g(data, size);
  switch (g.in<uint8_t>(0, 4)) {
    case 0: fuzz_prefill(g); break;
    case 1: fuzz_decode(g); break;
    case 2: fuzz_append(g); break;
    case 3: fuzz_dequant(g); break;
    default: fuzz_calibrate(g); break;
  }
  return 0;
}
