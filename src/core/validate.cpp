// src/core/validate.cpp — host-side validation of every entry point (docs/design.md §3).
//
// Order of checks for a tensor argument: present, rank, dtype (kType), device (kType, against
// the first tensor of the call), sizes >= 0, non-null data when it has elements, strides >= 0
// with a contiguous last dimension. Then the cross-tensor shapes, the options, and the
// aliasing of outputs with inputs. Messages read "<func>: <arg>: expected X, got Y", where X
// names the dtypes and the symbolic shape and Y is TensorView::describe().
#include "src/core/validate.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kvq/error.h"

namespace kvq::detail {
namespace {

constexpr int64_t kMaxHeadDim = 256;

std::string device_name(Device device, int index) {
  return std::string(to_string(device)) + ":" + std::to_string(index);
}

std::string dims_str(std::initializer_list<int64_t> dims) {
  std::ostringstream os;
  os << "[";
  bool first = true;
  for (int64_t d : dims) {
    os << (first ? "" : ", ") << d;
    first = false;
  }
  os << "]";
  return os.str();
}

std::string strides_str(const TensorView& t) {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < t.ndim; ++d) os << (d ? ", " : "") << t.strides[d];
  os << "]";
  return os.str();
}

[[noreturn]] void fail(ErrorKind kind, const char* func, const std::string& arg,
                       const std::string& msg) {
  throw Error(kind, func, arg, msg);
}

// No view may address more than 2^62 bytes: far above any real allocation, and low enough that
// every byte offset and pointer sum below stays exact. Larger ("absurd") extents are rejected.
constexpr int64_t kMaxViewBytes = int64_t{1} << 62;

// Bytes of t's elements (numel * element size), overflow-checked; false when it exceeds
// kMaxViewBytes. Needs sizes >= 0.
bool element_bytes(const TensorView& t, int64_t& bytes) {
  int64_t n = 1;
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] == 0) {
      bytes = 0;
      return true;
    }
  for (int d = 0; d < t.ndim; ++d)
    if (__builtin_mul_overflow(n, t.shape[d], &n)) return false;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(dtype_size(t.dtype)), &bytes)) return false;
  return bytes <= kMaxViewBytes;
}

// Bytes from the first to one past the last element t addresses, overflow-checked; false when it
// exceeds kMaxViewBytes. Needs sizes >= 0 and strides >= 0.
bool span_bytes(const TensorView& t, int64_t& bytes) {
  int64_t last = 0;
  for (int d = 0; d < t.ndim; ++d) {
    if (t.shape[d] == 0) {
      bytes = 0;
      return true;
    }
    int64_t term = 0;
    if (__builtin_mul_overflow(t.shape[d] - 1, t.strides[d], &term)) return false;
    if (__builtin_add_overflow(last, term, &last)) return false;
  }
  if (__builtin_mul_overflow(last + 1, static_cast<int64_t>(dtype_size(t.dtype)), &bytes)) return false;
  return bytes <= kMaxViewBytes;
}

// The device every tensor of a call must share (that of its first tensor).
struct DeviceRef {
  Device device = Device::kCPU;
  int index = 0;
  std::string from;  // the argument it was taken from
};

bool dtype_in(DType dt, std::initializer_list<DType> allowed) {
  for (DType a : allowed)
    if (a == dt) return true;
  return false;
}

// Checks one tensor argument. `spec` is the expectation ("int32 [batch_size + 1]").
void check_tensor(const char* func, const std::string& name, const TensorView& t, int rank,
                  std::initializer_list<DType> dtypes, const std::string& spec,
                  const DeviceRef* dev) {
  if (!t.defined()) fail(ErrorKind::kValue, func, name, "expected " + spec + ", got absent");
  if (t.ndim != rank)
    fail(ErrorKind::kValue, func, name,
         "expected " + spec + " (rank " + std::to_string(rank) + "), got " + t.describe() +
             " (rank " + std::to_string(t.ndim) + ")");
  if (!dtype_in(t.dtype, dtypes))
    fail(ErrorKind::kType, func, name, "expected " + spec + ", got " + t.describe());
  if (dev && (t.device != dev->device || t.device_index != dev->index))
    fail(ErrorKind::kType, func, name,
         "expected a tensor on " + device_name(dev->device, dev->index) + " (the device of " +
             dev->from + "), got " + t.describe() + " on " + device_name(t.device, t.device_index));
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] < 0)
      fail(ErrorKind::kValue, func, name,
           "expected sizes >= 0 (" + spec + "), got " + t.describe());
  int64_t bytes = 0;
  if (!element_bytes(t, bytes))
    fail(ErrorKind::kValue, func, name,
         "expected at most 2^62 bytes of elements (" + spec + "), got " + t.describe() +
             " (absurd extents: the element count overflows)");
  if (bytes > 0 && t.data == nullptr)
    fail(ErrorKind::kValue, func, name,
         "expected a non-null data pointer for " + std::to_string(t.numel()) +
             " elements, got null (" + t.describe() + ")");
  for (int d = 0; d < t.ndim; ++d)
    if (t.strides[d] < 0)
      fail(ErrorKind::kValue, func, name,
           "expected strides >= 0, got strides " + strides_str(t) + " for " + t.describe());
  if (!span_bytes(t, bytes))
    fail(ErrorKind::kValue, func, name,
         "expected a view addressing at most 2^62 bytes, got strides " + strides_str(t) + " for " +
             t.describe() + " (absurd extents or strides)");
  if (t.ndim > 0 && t.size(-1) > 1 && t.stride(-1) != 1)
    fail(ErrorKind::kValue, func, name,
         "expected a contiguous last dimension (stride 1), got strides " + strides_str(t) +
             " for " + t.describe());
}

void check_optional(const char* func, const std::string& name, const TensorView& t, int rank,
                    std::initializer_list<DType> dtypes, const std::string& spec,
                    const DeviceRef* dev) {
  if (t.defined()) check_tensor(func, name, t, rank, dtypes, spec, dev);
}

bool shape_is(const TensorView& t, std::initializer_list<int64_t> dims) {
  if (t.ndim != static_cast<int>(dims.size())) return false;
  int d = 0;
  for (int64_t s : dims)
    if (t.shape[d++] != s) return false;
  return true;
}

void check_shape(const char* func, const std::string& name, const TensorView& t,
                 std::initializer_list<int64_t> dims, const std::string& symbolic) {
  if (!shape_is(t, dims))
    fail(ErrorKind::kValue, func, name,
         "expected " + dims_str(dims) + " (" + symbolic + "), got " + t.describe());
}

bool same_shape(const TensorView& a, const TensorView& b) {
  if (a.ndim != b.ndim) return false;
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[d] != b.shape[d]) return false;
  return true;
}

std::string shape_of(const TensorView& t) {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < t.ndim; ++d) os << (d ? ", " : "") << t.shape[d];
  os << "]";
  return os.str();
}

// Byte range [lo, hi) a view can touch; empty when it has no elements or no data.
struct ByteRange {
  uintptr_t lo = 0;
  uintptr_t hi = 0;
  bool empty() const { return hi <= lo; }
};

// Only for views check_tensor accepted (their span is below 2^62 bytes).
ByteRange byte_range(const TensorView& t) {
  ByteRange r;
  int64_t bytes = 0;
  if (!t.defined() || t.data == nullptr || !span_bytes(t, bytes) || bytes == 0) return r;
  r.lo = reinterpret_cast<uintptr_t>(t.data);
  r.hi = r.lo + static_cast<uintptr_t>(bytes);
  if (r.hi < r.lo) r.hi = UINTPTR_MAX;  // a pointer near the top of the address space
  return r;
}

bool overlaps(ByteRange a, ByteRange b) {
  return !a.empty() && !b.empty() && a.lo < b.hi && b.lo < a.hi;
}

// The dims of size > 1 of t as (stride, size), by increasing stride.
std::vector<std::pair<int64_t, int64_t>> dims_by_stride(const TensorView& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] > 1) dims.emplace_back(t.strides[d], t.shape[d]);
  std::sort(dims.begin(), dims.end());
  return dims;
}

// Whether distinct indices of t address distinct elements: with the dims of size > 1 sorted by
// stride, each stride must step past everything the smaller ones span. A stride of 0 (or strides
// that interleave) fails it. Exact for every layout whose sorted strides nest; others are
// refused, which is conservative for outputs.
bool elements_disjoint(const TensorView& t) {
  int64_t span = 1;  // elements spanned by the dims seen so far
  for (const auto& [stride, size] : dims_by_stride(t)) {
    if (stride < span) return false;
    span += stride * (size - 1);  // below 2^62 (check_tensor)
  }
  return true;
}

// An output may not overlap itself (docs/design.md §3): two of its elements at one address would be
// written by different threads (a race) and at least one result lost.
void check_output_layout(const char* func, const std::string& name, const TensorView& t) {
  if (!t.defined() || elements_disjoint(t)) return;
  fail(ErrorKind::kValue, func, name,
       "expected an output whose elements do not overlap each other (no stride 0 or interleaved "
       "strides on a dimension of size > 1), got strides " +
           strides_str(t) + " for " + t.describe());
}

// Whether views a and b may share a byte. Disjoint byte ranges never do. Two views of one dtype,
// shape and strides whose outermost (largest-stride) dim steps over whole rows — e.g. K and V
// interleaved block by block in one [num_blocks, 2, ...] buffer — share a byte only when their
// offset, modulo that stride, falls within one row. Anything else with overlapping ranges counts
// as overlapping (conservative).
bool may_overlap(const TensorView& a, const TensorView& b) {
  const ByteRange ra = byte_range(a), rb = byte_range(b);
  if (!overlaps(ra, rb)) return false;
  if (a.dtype != b.dtype || !same_shape(a, b) || !elements_disjoint(a)) return true;
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[d] > 1 && a.strides[d] != b.strides[d]) return true;
  std::vector<std::pair<int64_t, int64_t>> dims = dims_by_stride(a);
  if (dims.empty()) return true;
  const int64_t es = static_cast<int64_t>(dtype_size(a.dtype));
  const auto [outer_stride, outer_size] = dims.back();
  int64_t inner_last = 0;  // last element offset within one outer row
  for (size_t i = 0; i + 1 < dims.size(); ++i) inner_last += dims[i].first * (dims[i].second - 1);
  const uint64_t row_bytes = static_cast<uint64_t>(inner_last + 1) * es;  // bytes one row spans
  const uint64_t step = static_cast<uint64_t>(outer_stride) * es;
  if (row_bytes > step) return true;
  const uint64_t delta = ra.lo > rb.lo ? ra.lo - rb.lo : rb.lo - ra.lo;
  const uint64_t q = delta / step, r = delta % step;
  // Row k of the later view starts at delta + k * step: it meets row k + q of the other when
  // r < row_bytes, row k + q + 1 when step - r < row_bytes.
  if (r < row_bytes && q < static_cast<uint64_t>(outer_size)) return true;
  if (step - r < row_bytes && q + 1 < static_cast<uint64_t>(outer_size)) return true;
  return false;
}

using Named = std::pair<const char*, const TensorView*>;

// An output must not share memory with any input (nor with another output).
void check_no_alias(const char* func, const char* out_name, const TensorView& out,
                    std::initializer_list<Named> others) {
  ByteRange ro = byte_range(out);
  if (ro.empty()) return;
  for (const Named& other : others) {
    if (!other.second->defined() || other.second->device != out.device ||
        other.second->device_index != out.device_index)
      continue;
    if (overlaps(ro, byte_range(*other.second)))
      fail(ErrorKind::kValue, func, out_name,
           std::string("expected a buffer that does not overlap ") + other.first +
               " (outputs may not alias inputs), got " + out.describe() + " overlapping " +
               other.first + " " + other.second->describe());
  }
}

std::string fmt_float(float v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

const char* cache_spec_shape(KvLayout layout) {
  return layout == KvLayout::kHND ? "[num_blocks, num_kv_heads, page_size, head_dim] (HND)"
                                  : "[num_blocks, page_size, num_kv_heads, head_dim] (NHD)";
}

// Reads the mode of one scale tensor off its shape; checks dtype, device and shape.
ScaleMode check_scale(const char* func, const char* name, const TensorView& s,
                      const CacheInfo& c, const DeviceRef& dev) {
  const std::string per_token_shape =
      c.layout == KvLayout::kHND ? "[num_blocks, num_kv_heads, page_size] (per-token, HND)"
                                 : "[num_blocks, page_size, num_kv_heads] (per-token, NHD)";
  const std::string spec = "fp32, bf16 or fp16 [num_kv_heads, head_dim] (per-channel) or " +
                           per_token_shape + " for an int8 cache";
  if (!s.defined()) fail(ErrorKind::kValue, func, name, "expected " + spec + ", got absent");
  if (s.ndim != 2 && s.ndim != 3)
    fail(ErrorKind::kValue, func, name,
         "expected " + spec + " (rank 2 or 3), got " + s.describe() + " (rank " +
             std::to_string(s.ndim) + ")");
  check_tensor(func, name, s, s.ndim, {DType::kFloat32, DType::kBFloat16, DType::kFloat16}, spec,
               &dev);
  if (s.ndim == 2) {
    check_shape(func, name, s, {c.num_kv_heads, c.head_dim}, "[num_kv_heads, head_dim] per-channel");
    return ScaleMode::kPerChannel;
  }
  if (c.layout == KvLayout::kHND)
    check_shape(func, name, s, {c.num_blocks, c.num_kv_heads, c.page_size},
                "[num_blocks, num_kv_heads, page_size] per-token, HND");
  else
    check_shape(func, name, s, {c.num_blocks, c.page_size, c.num_kv_heads},
                "[num_blocks, page_size, num_kv_heads] per-token, NHD");
  return ScaleMode::kPerToken;
}

// k_cache, v_cache and their scales (int8 caches need both scales, float caches take none).
CacheInfo check_cache(const char* func, const PagedKvCache& kv, const DeviceRef& dev) {
  CacheInfo c;
  c.layout = kv.layout;
  if (kv.layout != KvLayout::kHND && kv.layout != KvLayout::kNHD)
    fail(ErrorKind::kValue, func, "layout",
         "expected HND or NHD, got " + std::to_string(static_cast<int>(kv.layout)));
  const std::string spec = std::string("int8, bf16 or fp16 ") + cache_spec_shape(kv.layout);
  check_tensor(func, "k_cache", kv.k_cache, 4, {DType::kInt8, DType::kBFloat16, DType::kFloat16},
               spec, &dev);
  check_tensor(func, "v_cache", kv.v_cache, 4, {DType::kInt8, DType::kBFloat16, DType::kFloat16},
               spec, &dev);
  if (kv.v_cache.dtype != kv.k_cache.dtype)
    fail(ErrorKind::kType, func, "v_cache",
         std::string("expected ") + to_string(kv.k_cache.dtype) + " (the dtype of k_cache), got " +
             kv.v_cache.describe());
  if (!same_shape(kv.k_cache, kv.v_cache))
    fail(ErrorKind::kValue, func, "v_cache",
         "expected " + shape_of(kv.k_cache) + " (the shape of k_cache), got " +
             kv.v_cache.describe());
  const TensorView& k = kv.k_cache;
  c.dtype = k.dtype;
  c.num_blocks = k.size(0);
  c.num_kv_heads = kv.layout == KvLayout::kHND ? k.size(1) : k.size(2);
  c.page_size = kv.layout == KvLayout::kHND ? k.size(2) : k.size(1);
  c.head_dim = k.size(3);
  if (c.page_size < 1)
    fail(ErrorKind::kValue, func, "k_cache",
         "expected page_size >= 1 in " + std::string(cache_spec_shape(kv.layout)) + ", got " +
             k.describe());
  if (c.num_kv_heads < 1)
    fail(ErrorKind::kValue, func, "k_cache",
         "expected num_kv_heads >= 1 in " + std::string(cache_spec_shape(kv.layout)) + ", got " +
             k.describe());
  if (c.head_dim < 1 || c.head_dim > kMaxHeadDim)
    fail(ErrorKind::kValue, func, "k_cache",
         "expected head_dim in 1.." + std::to_string(kMaxHeadDim) + " in " +
             cache_spec_shape(kv.layout) + ", got " + k.describe());
  if (c.dtype == DType::kInt8) {
    c.k_mode = check_scale(func, "k_scale", kv.k_scale, c, dev);
    c.v_mode = check_scale(func, "v_scale", kv.v_scale, c, dev);
  } else {
    const char* names[2] = {"k_scale", "v_scale"};
    const TensorView* scales[2] = {&kv.k_scale, &kv.v_scale};
    for (int i = 0; i < 2; ++i)
      if (scales[i]->defined())
        fail(ErrorKind::kValue, func, names[i],
             std::string("expected absent for a ") + to_string(c.dtype) +
                 " cache (scales go only with int8 caches), got " + scales[i]->describe());
  }
  return c;
}

void check_window(const char* func, int local_window, int global_window, bool causal) {
  if (local_window >= 0 && !causal)
    fail(ErrorKind::kValue, func, "local_window",
         "expected -1 (no window) with causal=false (a local window needs causal=true), got " +
             std::to_string(local_window));
  if (global_window < 0)
    fail(ErrorKind::kValue, func, "global_window",
         "expected global_window >= 0, got " + std::to_string(global_window));
}

// 0 (the default) selects 1/sqrt(head_dim). A negative scale is refused rather than replaced:
// the kernels' online softmax assumes scores keep their order under the scale.
float resolve_softmax_scale(const char* func, float softmax_scale, int64_t head_dim) {
  if (!std::isfinite(softmax_scale) || softmax_scale < 0.f)
    fail(ErrorKind::kValue, func, "softmax_scale",
         "expected a finite value > 0 (or 0, which selects 1/sqrt(head_dim)), got " +
             fmt_float(softmax_scale));
  if (softmax_scale == 0.f) return 1.0f / std::sqrt(static_cast<float>(head_dim));
  return softmax_scale;
}

// q's head count and head_dim (before the cache is looked at).
void check_q_geometry(const char* func, const TensorView& q, AttnProblem& p) {
  p.num_qo_heads = q.size(1);
  p.head_dim = q.size(2);
  if (p.head_dim < 1 || p.head_dim > kMaxHeadDim)
    fail(ErrorKind::kValue, func, "q",
         "expected head_dim in 1.." + std::to_string(kMaxHeadDim) +
             " ([total_q, num_qo_heads, head_dim]), got " + q.describe());
  if (p.num_qo_heads < 1)
    fail(ErrorKind::kValue, func, "q", "expected num_qo_heads >= 1, got " + q.describe());
}

// The cache against q: same head_dim, num_qo_heads a multiple of num_kv_heads.
void check_cache_vs_q(const char* func, const TensorView& q, const TensorView& k_cache,
                      const CacheInfo& c, AttnProblem& p) {
  if (c.head_dim != p.head_dim)
    fail(ErrorKind::kValue, func, "k_cache",
         "expected head_dim " + std::to_string(p.head_dim) + " (from q) in " +
             cache_spec_shape(c.layout) + ", got " + k_cache.describe());
  if (c.dtype != DType::kInt8 && q.dtype != DType::kInt8 && c.dtype != q.dtype)
    fail(ErrorKind::kType, func, "k_cache",
         std::string("expected int8 or ") + to_string(q.dtype) +
             " (a bf16/fp16 cache has the dtype of q) " + cache_spec_shape(c.layout) + ", got " +
             k_cache.describe());
  if (p.num_qo_heads % c.num_kv_heads != 0)
    fail(ErrorKind::kValue, func, "q",
         "expected num_qo_heads a multiple of num_kv_heads " + std::to_string(c.num_kv_heads) +
             " (from k_cache), got " + q.describe());
  p.num_kv_heads = c.num_kv_heads;
  p.group_size = p.num_qo_heads / c.num_kv_heads;
  p.page_size = c.page_size;
  p.num_blocks = c.num_blocks;
  p.kv_dtype = c.dtype;
  p.k_scale_mode = c.k_mode;
  p.v_scale_mode = c.v_mode;
  p.layout = c.layout;
}

// kv_lens [batch_size] and block_tables [batch_size, max_blocks_per_seq] of a call.
void check_lens_and_table(const char* func, const TensorView& kv_lens,
                          const TensorView& block_tables, int64_t batch_size,
                          const std::string& batch_from, const DeviceRef& dev) {
  check_tensor(func, "kv_lens", kv_lens, 1, {DType::kInt32}, "int32 [batch_size]", &dev);
  check_shape(func, "kv_lens", kv_lens, {batch_size}, "[batch_size], batch_size from " + batch_from);
  check_tensor(func, "block_tables", block_tables, 2, {DType::kInt32},
               "int32 [batch_size, max_blocks_per_seq]", &dev);
  if (block_tables.size(0) != batch_size)
    fail(ErrorKind::kValue, func, "block_tables",
         "expected " + std::to_string(batch_size) + " rows ([batch_size, max_blocks_per_seq], " +
             "batch_size from " + batch_from + "), got " + block_tables.describe());
}

void check_gqa_layout(const char* func, GqaLayout g) {
  if (g != GqaLayout::kGrouped && g != GqaLayout::kInterleaved)
    fail(ErrorKind::kValue, func, "gqa_layout",
         "expected grouped or interleaved, got " + std::to_string(static_cast<int>(g)));
}

void check_workspace_alias(const char* func, const Workspace& ws,
                           std::initializer_list<Named> tensors) {
  if (ws.data == nullptr || ws.bytes == 0) return;
  ByteRange w{reinterpret_cast<uintptr_t>(ws.data), reinterpret_cast<uintptr_t>(ws.data) + ws.bytes};
  for (const Named& t : tensors)
    if (t.second->defined() && overlaps(w, byte_range(*t.second)))
      fail(ErrorKind::kValue, func, "workspace",
           std::string("expected scratch memory that does not overlap ") + t.first + ", got " +
               std::to_string(ws.bytes) + " bytes overlapping " + t.first + " " +
               t.second->describe());
}

}  // namespace

int32_t read_i32(const TensorView& t, int64_t i) {
  return t.ptr<const int32_t>()[i * t.stride(0)];
}

AttnProblem validate_prefill(const PrefillArgs& a, const char* func) {
  AttnProblem p;
  check_tensor(func, "q", a.q, 3, {DType::kBFloat16, DType::kFloat16, DType::kInt8},
               "bf16, fp16 or int8 (with q_scale) [total_q, num_qo_heads, head_dim]", nullptr);
  const DeviceRef dev{a.q.device, a.q.device_index, "q"};
  p.total_q = a.q.size(0);
  p.q_dtype = a.q.dtype;
  check_q_geometry(func, a.q, p);

  const CacheInfo c = check_cache(func, a.kv, dev);
  check_cache_vs_q(func, a.q, a.kv.k_cache, c, p);

  const bool q_int8 = a.q.dtype == DType::kInt8;
  if (q_int8) {
    if (c.dtype != DType::kInt8)
      fail(ErrorKind::kType, func, "q",
           std::string("expected bf16 or fp16 for a ") + to_string(c.dtype) +
               " cache (int8 q needs an int8 cache), got " + a.q.describe());
    check_tensor(func, "q_scale", a.q_scale, 2, {DType::kFloat32},
                 "fp32 [total_q, num_qo_heads] (required with int8 q)", &dev);
    check_shape(func, "q_scale", a.q_scale, {p.total_q, p.num_qo_heads}, "[total_q, num_qo_heads]");
  } else if (a.q_scale.defined()) {
    fail(ErrorKind::kValue, func, "q_scale",
         "expected absent (q_scale goes only with int8 q), got " + a.q_scale.describe() +
             " with q " + a.q.describe());
  }

  check_tensor(func, "kv_lens", a.kv_lens, 1, {DType::kInt32}, "int32 [batch_size]", &dev);
  p.batch_size = a.kv_lens.size(0);
  check_tensor(func, "cu_q_lens", a.cu_q_lens, 1, {DType::kInt32}, "int32 [batch_size + 1]", &dev);
  check_shape(func, "cu_q_lens", a.cu_q_lens, {p.batch_size + 1},
              "[batch_size + 1], batch_size from kv_lens");
  check_lens_and_table(func, a.kv_lens, a.block_tables, p.batch_size, "kv_lens", dev);
  p.max_blocks_per_seq = a.block_tables.size(1);

  p.out_dtype = q_int8 ? DType::kBFloat16 : a.q.dtype;
  check_tensor(func, "out", a.out, 3, {DType::kBFloat16, DType::kFloat16},
               "bf16 or fp16 [total_q, num_qo_heads, head_dim]", &dev);
  if (a.out.dtype != p.out_dtype)
    fail(ErrorKind::kType, func, "out",
         std::string("expected ") + to_string(p.out_dtype) +
             (q_int8 ? " (bf16 for int8 q)" : " (the dtype of q)") + ", got " + a.out.describe());
  if (!same_shape(a.out, a.q))
    fail(ErrorKind::kValue, func, "out",
         "expected " + shape_of(a.q) + " (the shape of q), got " + a.out.describe());

  check_optional(func, "lse", a.lse, 2, {DType::kFloat32}, "fp32 [total_q, num_qo_heads]", &dev);
  if (a.lse.defined())
    check_shape(func, "lse", a.lse, {p.total_q, p.num_qo_heads}, "[total_q, num_qo_heads]");

  const MaskOptions& mo = a.mask_options;
  if (a.mask.defined()) {
    if (mo.causal)
      fail(ErrorKind::kValue, func, "mask",
           "expected absent with causal=true (a mask needs causal=false), got " + a.mask.describe());
    check_tensor(func, "mask", a.mask, 1, {DType::kBool, DType::kUInt8},
                 "bool or uint8 [sum_b q_len_b * kv_len_b]", &dev);
  }
  check_window(func, mo.local_window, mo.global_window, mo.causal);
  p.softmax_scale = resolve_softmax_scale(func, a.softmax_scale, p.head_dim);
  check_gqa_layout(func, a.gqa_layout);

  if (a.compute != ComputeMode::kNative && a.compute != ComputeMode::kInt8)
    fail(ErrorKind::kValue, func, "compute",
         "expected native or int8, got " + std::to_string(static_cast<int>(a.compute)));
  if (a.compute == ComputeMode::kInt8 && c.dtype != DType::kInt8)
    fail(ErrorKind::kValue, func, "compute",
         std::string("expected native for a ") + to_string(c.dtype) +
             " cache (int8 compute needs an int8 cache), got int8");
  if (a.path != PrefillPath::kAuto && a.path != PrefillPath::kFused &&
      a.path != PrefillPath::kDequant && a.path != PrefillPath::kGeneric)
    fail(ErrorKind::kValue, func, "path",
         "expected auto, fused, dequant or generic, got " +
             std::to_string(static_cast<int>(a.path)));
  if (a.path == PrefillPath::kDequant && c.dtype != DType::kInt8)
    fail(ErrorKind::kValue, func, "path",
         std::string("expected auto, fused or generic for a ") + to_string(c.dtype) +
             " cache (dequant needs an int8 cache), got dequant");

  check_output_layout(func, "out", a.out);
  check_output_layout(func, "lse", a.lse);
  check_no_alias(func, "out", a.out,
                 {{"q", &a.q}, {"q_scale", &a.q_scale}, {"k_cache", &a.kv.k_cache},
                  {"v_cache", &a.kv.v_cache}, {"k_scale", &a.kv.k_scale},
                  {"v_scale", &a.kv.v_scale}, {"block_tables", &a.block_tables},
                  {"cu_q_lens", &a.cu_q_lens}, {"kv_lens", &a.kv_lens}, {"mask", &a.mask},
                  {"lse", &a.lse}});
  check_no_alias(func, "lse", a.lse,
                 {{"q", &a.q}, {"q_scale", &a.q_scale}, {"k_cache", &a.kv.k_cache},
                  {"v_cache", &a.kv.v_cache}, {"k_scale", &a.kv.k_scale},
                  {"v_scale", &a.kv.v_scale}, {"block_tables", &a.block_tables},
                  {"cu_q_lens", &a.cu_q_lens}, {"kv_lens", &a.kv_lens}, {"mask", &a.mask}});
  check_workspace_alias(func, a.workspace,
                        {{"q", &a.q}, {"q_scale", &a.q_scale}, {"k_cache", &a.kv.k_cache},
                         {"v_cache", &a.kv.v_cache}, {"k_scale", &a.kv.k_scale},
                         {"v_scale", &a.kv.v_scale}, {"block_tables", &a.block_tables},
                         {"cu_q_lens", &a.cu_q_lens}, {"kv_lens", &a.kv_lens},
                         {"mask", &a.mask}, {"out", &a.out}, {"lse", &a.lse}});

  p.gqa_layout = a.gqa_layout;
  p.compute = q_int8 ? ComputeMode::kInt8 : a.compute;
  p.causal = mo.causal;
  p.local_window = mo.local_window < 0 ? -1 : mo.local_window;
  p.global_window = mo.global_window;
  p.has_mask = a.mask.defined();
  p.has_lse = a.lse.defined();
  p.is_decode = false;
  return p;
}

AttnProblem validate_decode(const DecodeArgs& a, const char* func) {
  AttnProblem p;
  check_tensor(func, "q", a.q, 3, {DType::kBFloat16, DType::kFloat16},
               "bf16 or fp16 [batch_size, num_qo_heads, head_dim]", nullptr);
  const DeviceRef dev{a.q.device, a.q.device_index, "q"};
  p.batch_size = a.q.size(0);
  p.total_q = p.batch_size;
  p.q_dtype = a.q.dtype;
  p.out_dtype = a.q.dtype;
  check_q_geometry(func, a.q, p);

  const CacheInfo c = check_cache(func, a.kv, dev);
  check_cache_vs_q(func, a.q, a.kv.k_cache, c, p);

  check_lens_and_table(func, a.kv_lens, a.block_tables, p.batch_size, "q.size(0)", dev);
  p.max_blocks_per_seq = a.block_tables.size(1);

  check_tensor(func, "out", a.out, 3, {DType::kBFloat16, DType::kFloat16},
               "bf16 or fp16 [batch_size, num_qo_heads, head_dim]", &dev);
  if (a.out.dtype != p.out_dtype)
    fail(ErrorKind::kType, func, "out",
         std::string("expected ") + to_string(p.out_dtype) + " (the dtype of q), got " +
             a.out.describe());
  if (!same_shape(a.out, a.q))
    fail(ErrorKind::kValue, func, "out",
         "expected " + shape_of(a.q) + " (the shape of q), got " + a.out.describe());
  check_optional(func, "lse", a.lse, 2, {DType::kFloat32}, "fp32 [batch_size, num_qo_heads]", &dev);
  if (a.lse.defined())
    check_shape(func, "lse", a.lse, {p.batch_size, p.num_qo_heads}, "[batch_size, num_qo_heads]");

  // The decode query sits at kv_len - 1, so a local window is always causal here.
  check_window(func, a.local_window, a.global_window, true);
  p.softmax_scale = resolve_softmax_scale(func, a.softmax_scale, p.head_dim);
  check_gqa_layout(func, a.gqa_layout);
  if (a.num_splits < 0)
    fail(ErrorKind::kValue, func, "num_splits",
         "expected num_splits >= 0 (0: chosen by the backend), got " + std::to_string(a.num_splits));

  check_output_layout(func, "out", a.out);
  check_output_layout(func, "lse", a.lse);
  check_no_alias(func, "out", a.out,
                 {{"q", &a.q}, {"k_cache", &a.kv.k_cache}, {"v_cache", &a.kv.v_cache},
                  {"k_scale", &a.kv.k_scale}, {"v_scale", &a.kv.v_scale},
                  {"block_tables", &a.block_tables}, {"kv_lens", &a.kv_lens}, {"lse", &a.lse}});
  check_no_alias(func, "lse", a.lse,
                 {{"q", &a.q}, {"k_cache", &a.kv.k_cache}, {"v_cache", &a.kv.v_cache},
                  {"k_scale", &a.kv.k_scale}, {"v_scale", &a.kv.v_scale},
                  {"block_tables", &a.block_tables}, {"kv_lens", &a.kv_lens}});
  check_workspace_alias(func, a.workspace,
                        {{"q", &a.q}, {"k_cache", &a.kv.k_cache}, {"v_cache", &a.kv.v_cache},
                         {"k_scale", &a.kv.k_scale}, {"v_scale", &a.kv.v_scale},
                         {"block_tables", &a.block_tables}, {"kv_lens", &a.kv_lens},
                         {"out", &a.out}, {"lse", &a.lse}});

  p.gqa_layout = a.gqa_layout;
  p.compute = ComputeMode::kNative;
  p.causal = true;
  p.local_window = a.local_window < 0 ? -1 : a.local_window;
  p.global_window = a.global_window;
  p.has_mask = false;
  p.has_lse = a.lse.defined();
  p.is_decode = true;
  return p;
}

AppendProblem validate_append(const AppendArgs& a, const char* func) {
  AppendProblem ap;
  const char* new_spec = "bf16, fp16 or fp32 [num_tokens, num_kv_heads, head_dim]";
  check_tensor(func, "k_new", a.k_new, 3, {DType::kBFloat16, DType::kFloat16, DType::kFloat32},
               new_spec, nullptr);
  const DeviceRef dev{a.k_new.device, a.k_new.device_index, "k_new"};
  check_tensor(func, "v_new", a.v_new, 3, {DType::kBFloat16, DType::kFloat16, DType::kFloat32},
               new_spec, &dev);
  if (a.v_new.dtype != a.k_new.dtype)
    fail(ErrorKind::kType, func, "v_new",
         std::string("expected ") + to_string(a.k_new.dtype) + " (the dtype of k_new), got " +
             a.v_new.describe());
  if (!same_shape(a.v_new, a.k_new))
    fail(ErrorKind::kValue, func, "v_new",
         "expected " + shape_of(a.k_new) + " (the shape of k_new), got " + a.v_new.describe());
  ap.num_tokens = a.k_new.size(0);
  check_tensor(func, "slot_mapping", a.slot_mapping, 1, {DType::kInt32, DType::kInt64},
               "int32 or int64 [num_tokens]", &dev);
  check_shape(func, "slot_mapping", a.slot_mapping, {ap.num_tokens},
              "[num_tokens], num_tokens from k_new");

  ap.cache = check_cache(func, a.kv, dev);
  const CacheInfo& c = ap.cache;
  if (a.k_new.size(1) != c.num_kv_heads || a.k_new.size(2) != c.head_dim)
    fail(ErrorKind::kValue, func, "k_new",
         "expected [" + std::to_string(ap.num_tokens) + ", " + std::to_string(c.num_kv_heads) +
             ", " + std::to_string(c.head_dim) +
             "] ([num_tokens, num_kv_heads, head_dim] of k_cache), got " + a.k_new.describe());

  // The caches are written, and so are per-token scales: none may overlap itself, and V may not
  // overlap K (two disjoint views of one combined K/V buffer are fine, interleaved ones included).
  check_output_layout(func, "k_cache", a.kv.k_cache);
  check_output_layout(func, "v_cache", a.kv.v_cache);
  if (c.k_mode == ScaleMode::kPerToken) check_output_layout(func, "k_scale", a.kv.k_scale);
  if (c.v_mode == ScaleMode::kPerToken) check_output_layout(func, "v_scale", a.kv.v_scale);
  if (may_overlap(a.kv.k_cache, a.kv.v_cache))
    fail(ErrorKind::kValue, func, "v_cache",
         "expected a buffer that does not overlap k_cache (append writes both; V would overwrite K), "
         "got " + a.kv.v_cache.describe() + " sharing bytes with k_cache " + a.kv.k_cache.describe());
  check_no_alias(func, "k_cache", a.kv.k_cache,
                 {{"k_new", &a.k_new}, {"v_new", &a.v_new}, {"slot_mapping", &a.slot_mapping},
                  {"k_scale", &a.kv.k_scale}, {"v_scale", &a.kv.v_scale}});
  check_no_alias(func, "v_cache", a.kv.v_cache,
                 {{"k_new", &a.k_new}, {"v_new", &a.v_new}, {"slot_mapping", &a.slot_mapping},
                  {"k_scale", &a.kv.k_scale}, {"v_scale", &a.kv.v_scale}});
  if (c.k_mode == ScaleMode::kPerToken)
    check_no_alias(func, "k_scale", a.kv.k_scale,
                   {{"k_new", &a.k_new}, {"v_new", &a.v_new}, {"slot_mapping", &a.slot_mapping},
                    {"v_scale", &a.kv.v_scale}});
  if (c.v_mode == ScaleMode::kPerToken)
    check_no_alias(func, "v_scale", a.kv.v_scale,
                   {{"k_new", &a.k_new}, {"v_new", &a.v_new}, {"slot_mapping", &a.slot_mapping},
                    {"k_scale", &a.kv.k_scale}});
  return ap;
}

DequantProblem validate_dequant(const DequantArgs& a, const char* func) {
  DequantProblem dp;
  CacheInfo& c = dp.cache;
  c.layout = a.layout;
  if (a.layout != KvLayout::kHND && a.layout != KvLayout::kNHD)
    fail(ErrorKind::kValue, func, "layout",
         "expected HND or NHD, got " + std::to_string(static_cast<int>(a.layout)));
  check_tensor(func, "cache", a.cache, 4, {DType::kInt8},
               std::string("int8 ") + cache_spec_shape(a.layout), nullptr);
  const DeviceRef dev{a.cache.device, a.cache.device_index, "cache"};
  c.dtype = DType::kInt8;
  c.num_blocks = a.cache.size(0);
  c.num_kv_heads = a.layout == KvLayout::kHND ? a.cache.size(1) : a.cache.size(2);
  c.page_size = a.layout == KvLayout::kHND ? a.cache.size(2) : a.cache.size(1);
  c.head_dim = a.cache.size(3);
  if (c.page_size < 1)
    fail(ErrorKind::kValue, func, "cache",
         std::string("expected page_size >= 1 in ") + cache_spec_shape(a.layout) + ", got " +
             a.cache.describe());
  if (c.num_kv_heads < 1)
    fail(ErrorKind::kValue, func, "cache",
         std::string("expected num_kv_heads >= 1 in ") + cache_spec_shape(a.layout) + ", got " +
             a.cache.describe());
  if (c.head_dim < 1 || c.head_dim > kMaxHeadDim)
    fail(ErrorKind::kValue, func, "cache",
         "expected head_dim in 1.." + std::to_string(kMaxHeadDim) + " in " +
             cache_spec_shape(a.layout) + ", got " + a.cache.describe());
  c.k_mode = check_scale(func, "scale", a.scale, c, dev);
  c.v_mode = c.k_mode;

  check_tensor(func, "kv_lens", a.kv_lens, 1, {DType::kInt32}, "int32 [batch_size]", &dev);
  dp.batch_size = a.kv_lens.size(0);
  check_lens_and_table(func, a.kv_lens, a.block_tables, dp.batch_size, "kv_lens", dev);
  dp.max_blocks_per_seq = a.block_tables.size(1);

  const std::string out_spec = std::string("bf16 or fp16 ") + cache_spec_shape(a.layout);
  check_tensor(func, "out", a.out, 4, {DType::kBFloat16, DType::kFloat16}, out_spec, &dev);
  dp.compact = a.out_block_tables.defined();
  if (dp.compact) {
    check_tensor(func, "out_block_tables", a.out_block_tables, 2, {DType::kInt32},
                 "int32 [batch_size, max_blocks_per_seq] (compact mode)", &dev);
    check_shape(func, "out_block_tables", a.out_block_tables, {dp.batch_size, dp.max_blocks_per_seq},
                "the shape of block_tables");
    for (int d = 1; d < 4; ++d)
      if (a.out.size(d) != a.cache.size(d))
        fail(ErrorKind::kValue, func, "out",
             "expected [num_out_blocks, " + std::to_string(a.cache.size(1)) + ", " +
                 std::to_string(a.cache.size(2)) + ", " + std::to_string(a.cache.size(3)) +
                 "] (compact mode: the block shape of cache), got " + a.out.describe());
  } else if (!same_shape(a.out, a.cache)) {
    fail(ErrorKind::kValue, func, "out",
         "expected " + shape_of(a.cache) + " (full mode: the shape of cache), got " +
             a.out.describe());
  }
  check_output_layout(func, "out", a.out);
  check_output_layout(func, "out_block_tables", a.out_block_tables);
  check_no_alias(func, "out", a.out,
                 {{"cache", &a.cache}, {"scale", &a.scale}, {"block_tables", &a.block_tables},
                  {"kv_lens", &a.kv_lens}, {"out_block_tables", &a.out_block_tables}});
  check_no_alias(func, "out_block_tables", a.out_block_tables,
                 {{"cache", &a.cache}, {"scale", &a.scale}, {"block_tables", &a.block_tables},
                  {"kv_lens", &a.kv_lens}});
  return dp;
}

void validate_calibrate(const TensorView& x, const TensorView& scale_out, const char* func) {
  check_tensor(func, "x", x, 3, {DType::kFloat32, DType::kBFloat16, DType::kFloat16},
               "fp32, bf16 or fp16 [num_tokens, num_kv_heads, head_dim]", nullptr);
  const DeviceRef dev{x.device, x.device_index, "x"};
  check_tensor(func, "scale_out", scale_out, 2, {DType::kFloat32},
               "fp32 [num_kv_heads, head_dim]", &dev);
  check_shape(func, "scale_out", scale_out, {x.size(1), x.size(2)},
              "[num_kv_heads, head_dim] of x");
  check_output_layout(func, "scale_out", scale_out);
  check_no_alias(func, "scale_out", scale_out, {{"x", &x}});
}

// ---- device-data values over host memory (the CPU's tensors, the CUDA backend's copies) ----

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

void check_kv_len_value(const char* func, const char* arg, int64_t b, int64_t kv_len,
                        int64_t max_blocks_per_seq, int64_t page_size) {
  if (kv_len < 0)
    fail(ErrorKind::kValue, func, arg,
         "expected " + std::string(arg) + "[" + std::to_string(b) + "] >= 0, got " +
             std::to_string(kv_len));
  if (kv_len > max_blocks_per_seq * page_size)
    fail(ErrorKind::kValue, func, arg,
         "expected " + std::string(arg) + "[" + std::to_string(b) +
             "] <= max_blocks_per_seq * page_size = " + std::to_string(max_blocks_per_seq) + " * " +
             std::to_string(page_size) + " = " + std::to_string(max_blocks_per_seq * page_size) +
             ", got " + std::to_string(kv_len));
}

int64_t check_lens_and_table_values(const char* func, const int32_t* kv_lens, int64_t batch_size,
                                    const int32_t* block_tables, int64_t max_blocks_per_seq,
                                    int64_t table_row_stride, int64_t page_size,
                                    int64_t num_blocks) {
  int64_t referenced = 0;
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t kv_len = kv_lens[b];
    check_kv_len_value(func, "kv_lens", b, kv_len, max_blocks_per_seq, page_size);
    const int64_t num_pages = ceil_div(kv_len, page_size);
    for (int64_t i = 0; i < num_pages; ++i) {
      const int32_t id = block_tables[b * table_row_stride + i];
      if (id < 0 || id >= num_blocks)
        fail(ErrorKind::kValue, func, "block_tables",
             "expected block ids in [0, " + std::to_string(num_blocks) + ") for the " +
                 std::to_string(num_pages) + " blocks sequence " + std::to_string(b) +
                 " reads, got block_tables[" + std::to_string(b) + "][" + std::to_string(i) +
                 "] = " + std::to_string(id));
    }
    referenced += num_pages;
  }
  return referenced;
}

int64_t check_lens_and_table_data(const char* func, const TensorView& kv_lens,
                                  const TensorView& block_tables, int64_t page_size,
                                  int64_t num_blocks) {
  // Validation left both int32 with a contiguous last dimension (a stride matters only past size 1).
  return check_lens_and_table_values(func, kv_lens.ptr<const int32_t>(), kv_lens.size(0),
                                     block_tables.ptr<const int32_t>(), block_tables.size(1),
                                     block_tables.stride(0), page_size, num_blocks);
}

void check_cu_q_lens_values(const char* func, const char* arg, const int32_t* cu_q_lens,
                            int64_t batch_size, int64_t total_q) {
  const std::string name = arg;
  if (cu_q_lens[0] != 0)
    fail(ErrorKind::kValue, func, name,
         "expected " + name + "[0] = 0, got " + std::to_string(cu_q_lens[0]));
  for (int64_t b = 0; b < batch_size; ++b) {
    const int32_t lo = cu_q_lens[b], hi = cu_q_lens[b + 1];
    if (hi < lo)
      fail(ErrorKind::kValue, func, name,
           "expected non-decreasing values, got " + name + "[" + std::to_string(b + 1) + "] = " +
               std::to_string(hi) + " < " + name + "[" + std::to_string(b) + "] = " +
               std::to_string(lo));
  }
  const int64_t last = cu_q_lens[batch_size];
  if (last > total_q)
    fail(ErrorKind::kValue, func, name,
         "expected " + name + "[" + std::to_string(batch_size) + "] <= total_q = " +
             std::to_string(total_q) + " (the rows of q), got " + std::to_string(last));
}

void check_mask_length(const char* func, const TensorView& mask, const int32_t* cu_q_lens,
                       const int32_t* kv_lens, int64_t batch_size) {
  int64_t expected = 0;
  for (int64_t b = 0; b < batch_size; ++b)
    expected += (int64_t{cu_q_lens[b + 1]} - cu_q_lens[b]) * kv_lens[b];
  if (mask.size(0) != expected)
    fail(ErrorKind::kValue, func, "mask",
         "expected " + std::to_string(expected) + " elements (sum_b q_len_b * kv_len_b), got " +
             mask.describe());
}

void check_compact_out_blocks(const char* func, const TensorView& out, int64_t referenced) {
  if (out.size(0) < referenced)
    fail(ErrorKind::kValue, func, "out",
         "expected at least " + std::to_string(referenced) +
             " blocks (compact mode: the referenced blocks), got " + out.describe());
}

void check_slot_values(const char* func, const int64_t* slots, int64_t num_tokens,
                       int64_t num_slots, bool distinct) {
  for (int64_t n = 0; n < num_tokens; ++n)
    if (slots[n] >= num_slots)
      fail(ErrorKind::kValue, func, "slot_mapping",
           "expected slots < num_blocks * page_size = " + std::to_string(num_slots) +
               " (or < 0 to skip a token), got slot_mapping[" + std::to_string(n) + "] = " +
               std::to_string(slots[n]));
  if (!distinct) return;
  std::vector<std::pair<int64_t, int64_t>> order;  // (slot, token) of written tokens
  for (int64_t n = 0; n < num_tokens; ++n)
    if (slots[n] >= 0) order.emplace_back(slots[n], n);
  std::sort(order.begin(), order.end());
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i].first == order[i - 1].first)
      fail(ErrorKind::kValue, func, "slot_mapping",
           "expected distinct slots (check=true; two tokens written to one slot race on the GPU), "
           "got slot " + std::to_string(order[i].first) + " at tokens " +
               std::to_string(order[i - 1].second) + " and " + std::to_string(order[i].second));
}

// ---- the data checks of each entry point, over CPU tensors ----

void check_prefill_data_host(const PrefillArgs& a, const AttnProblem& p, bool full,
                             const char* func) {
  const int64_t batch_size = p.batch_size;
  const int32_t* cu = a.cu_q_lens.ptr<const int32_t>();  // contiguous, as validation left them
  const int32_t* kv = a.kv_lens.ptr<const int32_t>();
  check_cu_q_lens_values(func, "cu_q_lens", cu, batch_size, p.total_q);
  check_lens_and_table_data(func, a.kv_lens, a.block_tables, p.page_size, p.num_blocks);
  if (a.mask.defined()) check_mask_length(func, a.mask, cu, kv, batch_size);
  if (!full) return;
  if (p.causal)
    for (int64_t b = 0; b < batch_size; ++b) {
      const int64_t q_len = int64_t{cu[b + 1]} - cu[b];
      const int64_t kv_len = kv[b];
      if (kv_len < q_len)
        fail(ErrorKind::kValue, func, "kv_lens",
             "expected kv_lens[" + std::to_string(b) + "] >= q_len = " + std::to_string(q_len) +
                 " (causal: the new tokens are in the cache), got " + std::to_string(kv_len));
    }
}

// Decode has no check beyond the bounds checks: its query sits at kv_len - 1 by definition.
void check_decode_data_host(const DecodeArgs& a, const AttnProblem& p, [[maybe_unused]] bool full,
                            const char* func) {
  check_lens_and_table_data(func, a.kv_lens, a.block_tables, p.page_size, p.num_blocks);
}

namespace {

// Bits of element `offset` of a float CPU view, and what they say (no conversion needed).
uint32_t float_bits(const TensorView& t, int64_t offset) {
  if (t.dtype == DType::kFloat32) return t.ptr<const uint32_t>()[offset];
  return t.ptr<const uint16_t>()[offset];
}
bool bits_finite(DType dt, uint32_t u) {
  if (dt == DType::kFloat32) return (u & 0x7f800000u) != 0x7f800000u;
  if (dt == DType::kBFloat16) return (u & 0x7f80u) != 0x7f80u;
  return (u & 0x7c00u) != 0x7c00u;  // fp16
}
bool bits_positive(DType dt, uint32_t u) {  // > 0 (and not NaN)
  const uint32_t sign = dt == DType::kFloat32 ? 0x80000000u : 0x8000u;
  return (u & sign) == 0 && (u & ~sign) != 0 && bits_finite(dt, u);
}
std::string bits_str(DType dt, uint32_t u) {
  float f = 0.f;
  if (dt == DType::kFloat32) {
    std::memcpy(&f, &u, sizeof(f));
  } else if (dt == DType::kBFloat16) {
    const uint32_t w = u << 16;
    std::memcpy(&f, &w, sizeof(f));
  } else {  // fp16: sign, then the magnitude's class is all a message needs beyond "finite"
    const bool neg = (u & 0x8000u) != 0;
    if ((u & 0x7c00u) == 0x7c00u) return (u & 0x3ffu) ? "nan" : (neg ? "-inf" : "inf");
    if ((u & 0x7fffu) == 0) return neg ? "-0" : "0";
    return neg ? "a negative value" : "a positive value";
  }
  return fmt_float(f);
}

}  // namespace

void check_channel_scale_values(const char* func, const char* name, const TensorView& s) {
  for (int64_t h = 0; h < s.shape[0]; ++h)
    for (int64_t d = 0; d < s.shape[1]; ++d) {
      const uint32_t u = float_bits(s, h * s.strides[0] + d * s.strides[1]);
      if (!bits_positive(s.dtype, u))
        fail(ErrorKind::kValue, func, name,
             "expected per-channel scales that are finite and > 0 (append divides by them), got " +
                 std::string(name) + "[" + std::to_string(h) + "][" + std::to_string(d) + "] = " +
                 bits_str(s.dtype, u));
    }
}

void check_append_data_host(const AppendArgs& a, const AppendProblem& ap, const char* func) {
  const TensorView& s = a.slot_mapping;
  std::vector<int64_t> slots(static_cast<size_t>(ap.num_tokens));
  for (int64_t n = 0; n < ap.num_tokens; ++n)
    slots[static_cast<size_t>(n)] = s.dtype == DType::kInt64
                                        ? s.ptr<const int64_t>()[n * s.stride(0)]
                                        : s.ptr<const int32_t>()[n * s.stride(0)];
  // Two tokens for one slot: the CPU keeps the last, the GPU is racy; check=true refuses it.
  check_slot_values(func, slots.data(), ap.num_tokens, ap.cache.num_blocks * ap.cache.page_size,
                    /*distinct=*/a.check);
  // Host data is read anyway: the values an int8 cache cannot hold (NaN, Inf), and the per-channel
  // scales append divides by, are checked on every CPU call (on CUDA with check=true).
  const CacheInfo& c = ap.cache;
  if (c.dtype == DType::kInt8 && c.k_mode == ScaleMode::kPerChannel)
    check_channel_scale_values(func, "k_scale", a.kv.k_scale);
  if (c.dtype == DType::kInt8 && c.v_mode == ScaleMode::kPerChannel)
    check_channel_scale_values(func, "v_scale", a.kv.v_scale);
  if (c.dtype != DType::kInt8) return;  // a bf16/fp16 cache holds NaN and Inf as they are
  for (const auto& [name, t] : {std::pair{"k_new", &a.k_new}, std::pair{"v_new", &a.v_new}}) {
    for (int64_t n = 0; n < ap.num_tokens; ++n) {
      if (slots[static_cast<size_t>(n)] < 0) continue;  // padding: never read
      for (int64_t h = 0; h < t->shape[1]; ++h)
        for (int64_t d = 0; d < t->shape[2]; ++d) {
          const uint32_t u = float_bits(*t, n * t->strides[0] + h * t->strides[1] + d * t->strides[2]);
          if (!bits_finite(t->dtype, u))
            fail(ErrorKind::kValue, func, name,
                 std::string("expected finite values (an int8 cache cannot hold NaN or Inf), got ") + name +
                     "[" + std::to_string(n) + "][" + std::to_string(h) + "][" + std::to_string(d) +
                     "] = " + bits_str(t->dtype, u) + " (token " + std::to_string(n) + ", slot " +
                     std::to_string(slots[static_cast<size_t>(n)]) + ")");
        }
    }
  }
}

void check_dequant_data_host(const DequantArgs& a, const DequantProblem& dp, const char* func) {
  const int64_t referenced = check_lens_and_table_data(func, a.kv_lens, a.block_tables,
                                                       dp.cache.page_size, dp.cache.num_blocks);
  if (dp.compact) check_compact_out_blocks(func, a.out, referenced);
}

}  // namespace kvq::detail
