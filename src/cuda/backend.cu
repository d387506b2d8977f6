// src/cuda/backend.cu — the CUDA backend: every kvq::cuda:: function of src/core/backend.h.
//
// The dispatcher (src/core/dispatch.cpp) validated shapes, dtypes and options before any call
// lands here; this file picks kernels and lays out workspaces:
//   paged_prefill: plan.path kFused -> plan.kernel kMmaDecode (chosen by core/plan.cpp, which
//     checked the call against the plan): the tensor-core decode kernel (decode/mma_decode.h) over
//     cu_q_lens, with the plan's split count and workspace; else the tensor-core kernel (tc_prefill.h)
//     when it serves the problem; with args.path == kAuto it falls back to the generic kernel, a
//     forced fused path that cannot be served is an error. kDequant -> dequantize the referenced K and V blocks into
//     the workspace (layout: src/core/plan.cpp) with a compact block table, then the tensor-core
//     kernel over that bf16/fp16 cache. kGeneric -> generic_prefill.
//   paged_decode: split-KV decode (decode/), num_splits from the planner or args.num_splits.
//   append / calibrate: append/. dequantize_blocks: prefill/dequant_blocks.
//   check_prefill_data: copies the metadata to the host (synchronous; only when check=true).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kvq/error.h"
#include "kvq_config.h"
#include "src/core/backend.h"
#include "src/core/plan.h"
#include "src/core/validate.h"
#include "src/cuda/append/append.h"
#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/decode/decode.h"
#include "src/cuda/decode/mma_decode.h"
#include "src/cuda/prefill/dequant_blocks.h"
#include "src/cuda/prefill/generic_prefill.h"
#include "src/cuda/prefill/tc_prefill.h"

namespace kvq::cuda {
namespace {

size_t round_up256(size_t x) { return (x + 255) / 256 * 256; }

// Makes the tensors' device current for the duration of a call (launches, SM counts and
// allocations-free workspaces all refer to the current device), and restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device_index) {
    KVQ_CUDA_CHECK(cudaGetDevice(&prev_));
    if (device_index != prev_) KVQ_CUDA_CHECK(cudaSetDevice(device_index));
  }
  ~DeviceGuard() {
    int cur = prev_;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

DType float_dtype_of_q(DType q) { return q == DType::kInt8 ? DType::kBFloat16 : q; }

// A contiguous view of a paged cache part of the dequant workspace.
TensorView make_cache_view(void* data, DType dtype, int64_t n, const detail::AttnProblem& p, int device_index) {
  if (p.layout == KvLayout::kHND)
    return TensorView::make(data, dtype, {n, p.num_kv_heads, p.page_size, p.head_dim}, Device::kCUDA, device_index);
  return TensorView::make(data, dtype, {n, p.page_size, p.num_kv_heads, p.head_dim}, Device::kCUDA, device_index);
}

void run_dequant_path(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan) {
  constexpr const char* kFunc = "paged_prefill";
  const DType wdtype = float_dtype_of_q(p.q_dtype);
  detail::AttnProblem p2 = p;
  p2.kv_dtype = wdtype;
  p2.k_scale_mode = ScaleMode::kNone;
  p2.v_scale_mode = ScaleMode::kNone;
  p2.num_blocks = plan.num_referenced_blocks;
  if (!tc_prefill_supports(p2)) {
    throw Error(ErrorKind::kValue, kFunc, "path",
                "expected a problem the tensor-core kernel serves after dequantization (fast head_dim, no mask, "
                "native compute), got head_dim " + std::to_string(p.head_dim) + (p.has_mask ? " with a mask" : "") +
                    (p.compute == ComputeMode::kInt8 ? " with int8 compute" : "") + " (path=dequant was forced)");
  }
  const size_t kv_bytes = static_cast<size_t>(plan.num_referenced_blocks) * p.page_size * p.num_kv_heads * p.head_dim * 2;
  const size_t table_bytes = static_cast<size_t>(p.batch_size) * p.max_blocks_per_seq * 4;
  const size_t need = 2 * round_up256(kv_bytes) + round_up256(table_bytes);
  KVQ_CHECK(args.workspace.data != nullptr && args.workspace.bytes >= need, kFunc, "workspace",
            "expected at least " << need << " bytes for the dequant path, got " << args.workspace.bytes);
  char* base = static_cast<char*>(args.workspace.data);
  const int dev = args.q.device_index;
  PagedKvCache kv2;
  kv2.layout = p.layout;
  kv2.k_cache = make_cache_view(base, wdtype, plan.num_referenced_blocks, p, dev);
  kv2.v_cache = make_cache_view(base + round_up256(kv_bytes), wdtype, plan.num_referenced_blocks, p, dev);
  TensorView table2 = TensorView::make(base + 2 * round_up256(kv_bytes), DType::kInt32,
                                       {p.batch_size, p.max_blocks_per_seq}, Device::kCUDA, dev);
  if (!tc_prefill_supports_views(args, p2, kv2, table2)) {
    throw Error(ErrorKind::kValue, kFunc, "path",
                "expected 16-byte aligned q/out pointers and strides for the tensor-core kernel, got views it "
                "cannot load (path=dequant was forced; use auto or generic)");
  }
  for (int part = 0; part < 2; ++part) {
    DequantLaunch d;
    d.cache = part == 0 ? args.kv.k_cache : args.kv.v_cache;
    d.scale = part == 0 ? args.kv.k_scale : args.kv.v_scale;
    d.mode = part == 0 ? p.k_scale_mode : p.v_scale_mode;
    d.layout = p.layout;
    d.block_tables = args.block_tables;
    d.kv_lens = args.kv_lens;
    d.out = part == 0 ? kv2.k_cache : kv2.v_cache;
    d.out_block_tables = table2;
    d.write_table = part == 0;
    d.num_kv_heads = p.num_kv_heads;
    d.page_size = p.page_size;
    d.head_dim = p.head_dim;
    launch_dequant_blocks(d, args.stream);
  }
  launch_tc_prefill(args, p2, kv2, table2, args.stream);
}

template <typename T>
std::vector<T> copy_to_host_1d(const TensorView& t, int64_t n, cudaStream_t stream) {
  std::vector<T> h(n);
  if (n == 0) return h;
  const int64_t st = t.strides[0];
  if (st == 1) {
    KVQ_CUDA_CHECK(cudaMemcpyAsync(h.data(), t.data, n * sizeof(T), cudaMemcpyDeviceToHost, stream));
  } else {
    KVQ_CUDA_CHECK(cudaMemcpy2DAsync(h.data(), sizeof(T), t.data, st * sizeof(T), sizeof(T), n,
                                     cudaMemcpyDeviceToHost, stream));
  }
  return h;
}

std::vector<int32_t> copy_table_to_host(const TensorView& t, cudaStream_t stream) {
  const int64_t rows = t.shape[0], cols = t.shape[1];
  std::vector<int32_t> h(rows * cols);
  if (rows == 0 || cols == 0) return h;
  KVQ_CHECK(t.strides[1] == 1, "check", "block_tables", "expected a contiguous last dim, got stride " << t.strides[1]);
  KVQ_CUDA_CHECK(cudaMemcpy2DAsync(h.data(), cols * sizeof(int32_t), t.data, t.strides[0] * sizeof(int32_t),
                                   cols * sizeof(int32_t), rows, cudaMemcpyDeviceToHost, stream));
  return h;
}

// check=true for append: a per-channel scale [num_kv_heads, head_dim] (fp32/bf16/fp16, last dim
// contiguous) must hold finite values > 0, since append divides by it. Synchronizes the stream.
void check_channel_scale_on_host(const TensorView& s, const char* name, cudaStream_t stream) {
  const int64_t rows = s.shape[0], cols = s.shape[1];
  if (rows == 0 || cols == 0) return;
  const size_t es = dtype_size(s.dtype);
  std::vector<uint8_t> h(static_cast<size_t>(rows * cols) * es);
  KVQ_CUDA_CHECK(cudaMemcpy2DAsync(h.data(), cols * es, s.data, s.strides[0] * es, cols * es, rows,
                                   cudaMemcpyDeviceToHost, stream));
  KVQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (int64_t i = 0; i < rows * cols; ++i) {
    float v = 0.f;
    if (s.dtype == DType::kFloat32) {
      std::memcpy(&v, h.data() + i * 4, 4);
    } else {
      uint16_t b = 0;
      std::memcpy(&b, h.data() + i * 2, 2);
      if (s.dtype == DType::kBFloat16) {
        const uint32_t u = static_cast<uint32_t>(b) << 16;
        std::memcpy(&v, &u, 4);
      } else {  // fp16: only its class matters here (finite, > 0)
        const bool neg = (b & 0x8000u) != 0, special = (b & 0x7c00u) == 0x7c00u, zero = (b & 0x7fffu) == 0;
        v = special ? ((b & 0x3ffu) ? NAN : (neg ? -INFINITY : INFINITY)) : (zero ? 0.f : (neg ? -1.f : 1.f));
      }
    }
    KVQ_CHECK(std::isfinite(v) && v > 0.f, "append", name,
              "expected per-channel scales that are finite and > 0 (append divides by them), got " << name << "["
                  << i / cols << "][" << i % cols << "] = " << v);
  }
}

void check_tables(const char* func, const std::vector<int32_t>& table, int64_t width, const std::vector<int32_t>& kv,
                  int64_t page_size, int64_t num_blocks) {
  for (size_t b = 0; b < kv.size(); ++b) {
    KVQ_CHECK(kv[b] >= 0, func, "kv_lens", "expected kv_len >= 0, got " << kv[b] << " at b = " << b);
    const int64_t pages = (int64_t{kv[b]} + page_size - 1) / page_size;
    KVQ_CHECK(pages <= width, func, "kv_lens",
              "expected kv_len <= max_blocks_per_seq * page_size = " << width * page_size << ", got " << kv[b]
                                                                     << " at b = " << b);
    for (int64_t i = 0; i < pages; ++i) {
      const int32_t blk = table[b * width + i];
      KVQ_CHECK(blk >= 0 && blk < num_blocks, func, "block_tables",
                "expected block ids in [0, " << num_blocks << "), got " << blk << " at [" << b << ", " << i << "]");
    }
  }
}

}  // namespace

bool built() { return true; }

bool available() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

// ---- short prefill chunks on the tensor-core decode kernel (PrefillKernel::kMmaDecode) ----
// core/plan.cpp decides (small_q_decode_refusal); these say what the kernel serves and size it.

bool prefill_mma_decode_serves(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan) {
  if (!mma_decode_supports_shape(p, plan.max_q_len) || !mma_decode_supports_views(args.kv, args.q, p)) return false;
  if (plan.num_splits < 1 || plan.num_splits > kMmaDecodeMaxSplits) return false;
  return plan.workspace_bytes >= mma_decode_workspace_bytes(p, p.total_q, plan.num_splits);
}

bool plan_prefill_mma_decode(const PrefillArgs& args, const detail::AttnProblem& p, PrefillPlan& plan) {
  if (!mma_decode_supports_shape(p, plan.max_q_len) || !mma_decode_supports_views(args.kv, args.q, p)) return false;
  if (!available()) return false;  // planning CUDA views without a device: the path's kernel
  const DeviceGuard device_guard(args.q.device_index);  // the split count follows this device's SM count
  const int splits = plan_mma_decode_splits(p, plan.max_q_len, 0);
  plan.num_splits = splits;
  plan.workspace_bytes = mma_decode_workspace_bytes(p, p.total_q, splits);
  return true;
}

namespace {

// The views of a tensor-core decode launch common to decode and short-chunk prefill calls.
template <typename Args>
MmaDecodeLaunch mma_decode_launch_of(const Args& args, const detail::AttnProblem& p) {
  MmaDecodeLaunch L;
  L.q = args.q;
  L.out = args.out;
  if (p.has_lse && args.lse.defined()) L.lse = args.lse;
  L.kv = &args.kv;
  L.block_tables = args.block_tables;
  L.kv_lens = args.kv_lens;
  L.workspace = args.workspace;
  return L;
}

void run_mma_decode_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan) {
  MmaDecodeLaunch L = mma_decode_launch_of(args, p);
  L.cu_q_lens = args.cu_q_lens;
  L.total_rows = p.total_q;
  L.max_q_len = plan.max_q_len;
  L.func = "paged_prefill";
  launch_mma_decode(L, p, plan.num_splits, args.stream);
}

}  // namespace

void paged_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan) {
  const DeviceGuard device_guard(args.q.device_index);
  switch (plan.path) {
    case PrefillPath::kFused:
      if (plan.kernel == PrefillKernel::kMmaDecode) {
        run_mma_decode_prefill(args, p, plan);
        return;
      }
      if (tc_prefill_supports(p) && tc_prefill_supports_views(args, p, args.kv, args.block_tables)) {
        launch_tc_prefill(args, p, args.kv, args.block_tables, args.stream);
        return;
      }
      if (args.path == PrefillPath::kFused)
        throw Error(ErrorKind::kValue, "paged_prefill", "path",
                    "expected a problem the fused (tensor-core) path serves (fast head_dim, no mask, 16-byte "
                    "aligned views), got head_dim " +
                        std::to_string(p.head_dim) + (p.has_mask ? " with a mask" : "") +
                        " (path=fused was forced; use auto or generic)");
      launch_generic_prefill(args, p, args.kv, args.block_tables, args.stream);
      return;
    case PrefillPath::kDequant:
      run_dequant_path(args, p, plan);
      return;
    case PrefillPath::kGeneric:
    case PrefillPath::kAuto:
      launch_generic_prefill(args, p, args.kv, args.block_tables, args.stream);
      return;
  }
}

// ---- decode through the tensor-core prefill kernel ----
// A decode step is a prefill with one query row per sequence (at position kv_len - 1, so causal
// sees every key). The tensor-core kernel packs the q heads of a GQA group into its M tile and
// reads each int8 K/V tile once per group with cp.async, converting in registers; it has no split
// over KV. Measured on an H100 (2026-11-25, bench/results/2026-11-25_h100_peers.json) it is slower
// than the split-KV CUDA-core kernel (B64 kv4096: 0.84 vs 1.20 TB/s; B8 kv32768: 0.30 vs 1.31), so
// it is not chosen by default; KVQ_DECODE_PATH=tc selects it (kept runnable to compare against,
// tested by tools/device_all.sh), KVQ_DECODE_PATH=split forces the default. cu_q_lens = [0, 1, .., B]
// lives at the start of the workspace, written by a one-CTA kernel (no host work: graph capturable).
namespace {

__global__ void iota_kernel(int32_t* out, int32_t n) {
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = i;
}

detail::AttnProblem decode_as_prefill(const detail::AttnProblem& p) {
  detail::AttnProblem pp = p;
  pp.is_decode = false;
  pp.causal = true;
  pp.total_q = p.batch_size;
  return pp;
}

bool decode_via_tc(const detail::AttnProblem& p, int /*requested_splits*/) {
  const char* env = std::getenv("KVQ_DECODE_PATH");
  const std::string force = env != nullptr ? env : "";
  if (force == "split") return false;
  if (!tc_prefill_supports(decode_as_prefill(p))) return false;
  return force == "tc";
}

size_t tc_decode_workspace_bytes(const detail::AttnProblem& p) {
  return (static_cast<size_t>(p.batch_size + 1) * sizeof(int32_t) + 255) / 256 * 256;
}

// Returns false (nothing launched) when the views don't suit the kernel (alignment).
bool launch_decode_via_tc(const DecodeArgs& args, const detail::AttnProblem& p) {
  const detail::AttnProblem pp = decode_as_prefill(p);
  PrefillArgs pa;
  pa.q = args.q;
  pa.kv = args.kv;
  pa.block_tables = args.block_tables;
  pa.cu_q_lens = TensorView::make(args.workspace.data, DType::kInt32, {p.batch_size + 1}, Device::kCUDA,
                                  args.q.device_index);
  pa.kv_lens = args.kv_lens;
  pa.out = args.out;
  pa.lse = args.lse;
  pa.mask_options.causal = true;
  pa.mask_options.local_window = args.local_window;
  pa.mask_options.global_window = args.global_window;
  pa.softmax_scale = p.softmax_scale;
  pa.gqa_layout = args.gqa_layout;
  pa.stream = args.stream;
  PrefillPlan plan;
  plan.path = PrefillPath::kFused;
  plan.device = Device::kCUDA;
  plan.batch_size = p.batch_size;
  plan.total_q = p.batch_size;
  plan.max_q_len = 1;
  plan.max_kv_len = p.max_blocks_per_seq * p.page_size;
  pa.plan = &plan;
  if (!tc_prefill_supports_views(pa, pp, args.kv, args.block_tables)) return false;
  auto s = static_cast<cudaStream_t>(args.stream);
  iota_kernel<<<1, 256, 0, s>>>(static_cast<int32_t*>(args.workspace.data), static_cast<int32_t>(p.batch_size + 1));
  KVQ_LAUNCH_CHECK(s);
  launch_tc_prefill(pa, pp, args.kv, args.block_tables, args.stream);
  return true;
}

}  // namespace

// ---- decode route ----
// The default decode kernel is the tensor-core split-KV kernel (decode/mma_decode.cu) wherever it
// serves the shape and views; KVQ_DECODE_PATH=split forces the CUDA-core split-KV kernel
// (decode/decode.cu, the previous default, kept to compare against), =tc the prefill kernel.
namespace {

std::string decode_route_env() {
  const char* env = std::getenv("KVQ_DECODE_PATH");
  return env != nullptr ? env : "";
}

bool decode_via_mma(const detail::AttnProblem& p) {
  const std::string force = decode_route_env();
  if (force == "split" || force == "tc") return false;
  const bool served = mma_decode_supports_shape(p, 1);
  KVQ_CHECK(served || force != "mma", "paged_decode", "KVQ_DECODE_PATH",
            "not implemented: the tensor-core decode kernel (KVQ_DECODE_PATH=mma) serves head_dim "
            KVQ_MMA_DECODE_HEAD_DIMS_TEXT " with "
            "group_size <= 16 (<= 8 at head_dim 256), bf16/fp16 q, no mask; got head_dim "
                << p.head_dim << ", group_size " << p.group_size);
  return served;
}

}  // namespace

void paged_decode(const DecodeArgs& args, const detail::AttnProblem& p) {
  const DeviceGuard device_guard(args.q.device_index);
  bool via_mma = p.batch_size > 0 && decode_via_mma(p);
  if (via_mma) {
    via_mma = mma_decode_supports_views(args.kv, args.q, p);
    KVQ_CHECK(via_mma || decode_route_env() != "mma", "paged_decode", "k_cache",
              "not implemented: the tensor-core decode kernel (KVQ_DECODE_PATH=mma) needs 16-byte aligned K/V rows "
              "(data pointer and strides), 4-byte aligned q rows and fp32 per-token scales");
  }
  if (via_mma) {
    MmaDecodeLaunch L = mma_decode_launch_of(args, p);
    L.total_rows = p.batch_size;
    L.max_q_len = 1;
    L.func = "paged_decode";
    launch_mma_decode(L, p, plan_mma_decode_splits(p, 1, args.num_splits), args.stream);
    return;
  }
  if (p.batch_size > 0 && decode_via_tc(p, args.num_splits)) {
    KVQ_CHECK(args.workspace.bytes >= tc_decode_workspace_bytes(p) && args.workspace.data != nullptr,
              "paged_decode", "workspace",
              "expected at least " << tc_decode_workspace_bytes(p) << " bytes (decode_workspace_size), got "
                                   << args.workspace.bytes);
    if (launch_decode_via_tc(args, p)) return;
  }
  const int splits = plan_decode_splits(p, args.num_splits);
  launch_decode(args, p, splits, args.stream);
}

size_t decode_workspace_size(const detail::AttnProblem& p, int num_splits, int device_index) {
  const DeviceGuard device_guard(device_index);
  const size_t split_bytes = decode_workspace_bytes(p, plan_decode_splits(p, num_splits));
  // The views decide between the tensor-core kernel and the CUDA-core one (alignment): room for both.
  if (p.batch_size > 0 && decode_via_mma(p))
    return std::max(split_bytes,
                    mma_decode_workspace_bytes(p, p.batch_size, plan_mma_decode_splits(p, 1, num_splits)));
  if (p.batch_size > 0 && decode_via_tc(p, num_splits)) return std::max(split_bytes, tc_decode_workspace_bytes(p));
  return split_bytes;
}

void append(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
            int64_t page_size, int64_t num_blocks, ScaleMode k_mode, ScaleMode v_mode) {
  const DeviceGuard device_guard(args.k_new.device_index);
  if (args.check && num_tokens > 0) {
    auto s = static_cast<cudaStream_t>(args.stream);
    std::vector<int64_t> slots(num_tokens);
    if (args.slot_mapping.dtype == DType::kInt64) {
      slots = copy_to_host_1d<int64_t>(args.slot_mapping, num_tokens, s);
      KVQ_CUDA_CHECK(cudaStreamSynchronize(s));
    } else {
      const std::vector<int32_t> s32 = copy_to_host_1d<int32_t>(args.slot_mapping, num_tokens, s);
      KVQ_CUDA_CHECK(cudaStreamSynchronize(s));
      std::copy(s32.begin(), s32.end(), slots.begin());
    }
    for (int64_t n = 0; n < num_tokens; ++n)
      KVQ_CHECK(slots[n] < num_blocks * page_size, "append", "slot_mapping",
                "expected slots < num_blocks * page_size = " << num_blocks * page_size << ", got " << slots[n]
                                                             << " at token " << n);
    // Two tokens for one slot race (in per-token mode scale and payload may come from different
    // tokens): refused with check=true.
    std::vector<std::pair<int64_t, int64_t>> order;
    for (int64_t n = 0; n < num_tokens; ++n)
      if (slots[n] >= 0) order.emplace_back(slots[n], n);
    std::sort(order.begin(), order.end());
    for (size_t i = 1; i < order.size(); ++i)
      KVQ_CHECK(order[i].first != order[i - 1].first, "append", "slot_mapping",
                "expected distinct slots (check=true; two tokens written to one slot race on the GPU), got slot "
                    << order[i].first << " at tokens " << order[i - 1].second << " and " << order[i].second);
    if (args.kv.k_cache.dtype == DType::kInt8) {
      if (k_mode == ScaleMode::kPerChannel) check_channel_scale_on_host(args.kv.k_scale, "k_scale", s);
      if (v_mode == ScaleMode::kPerChannel) check_channel_scale_on_host(args.kv.v_scale, "v_scale", s);
      const int64_t bad = find_nonfinite_appended(args, num_tokens, num_kv_heads, head_dim, page_size, num_blocks);
      if (bad >= 0) {
        const int64_t n = bad / (2 * num_kv_heads), h = (bad / 2) % num_kv_heads;
        const char* name = bad % 2 ? "v_new" : "k_new";
        throw Error(ErrorKind::kValue, "append", name,
                    std::string("expected finite values (an int8 cache cannot hold NaN or Inf), got a NaN or Inf in ") +
                        name + "[" + std::to_string(n) + "][" + std::to_string(h) + "] (token " + std::to_string(n) +
                        ", slot " + std::to_string(slots[n]) + ")");
      }
    }
  }
  launch_append(args, num_tokens, num_kv_heads, head_dim, page_size, num_blocks, k_mode, v_mode);
}

void dequantize_blocks(const DequantArgs& args, int64_t num_kv_heads, int64_t page_size, int64_t head_dim,
                       ScaleMode mode) {
  const DeviceGuard device_guard(args.cache.device_index);
  constexpr const char* kFunc = "dequantize_blocks";
  const bool compact = args.out_block_tables.defined();
  if (args.check) {
    auto s = static_cast<cudaStream_t>(args.stream);
    const std::vector<int32_t> table = copy_table_to_host(args.block_tables, s);
    const std::vector<int32_t> kv = copy_to_host_1d<int32_t>(args.kv_lens, args.block_tables.shape[0], s);
    KVQ_CUDA_CHECK(cudaStreamSynchronize(s));
    check_tables(kFunc, table, args.block_tables.shape[1], kv, page_size, args.cache.shape[0]);
    if (compact) {
      int64_t total = 0, max_pages = 0;
      for (int32_t k : kv) {
        const int64_t pages = (int64_t{k} + page_size - 1) / page_size;
        total += pages;
        max_pages = std::max(max_pages, pages);
      }
      KVQ_CHECK(total <= args.out.shape[0], kFunc, "out",
                "expected at least " << total << " blocks (one per referenced block), got " << args.out.describe());
      KVQ_CHECK(max_pages <= args.out_block_tables.shape[1], kFunc, "out_block_tables",
                "expected at least " << max_pages << " columns, got " << args.out_block_tables.describe());
    }
  }
  DequantLaunch d;
  d.cache = args.cache;
  d.scale = args.scale;
  d.mode = mode;
  d.layout = args.layout;
  d.block_tables = args.block_tables;
  d.kv_lens = args.kv_lens;
  d.out = args.out;
  d.out_block_tables = args.out_block_tables;
  d.num_kv_heads = num_kv_heads;
  d.page_size = page_size;
  d.head_dim = head_dim;
  launch_dequant_blocks(d, args.stream);
}

void calibrate(const TensorView& x, const TensorView& scale_out, void* stream) {
  const DeviceGuard device_guard(x.device_index);
  launch_calibrate(x, scale_out, stream);
}

void check_prefill_data(const PrefillArgs& args, const detail::AttnProblem& p) {
  const DeviceGuard device_guard(args.q.device_index);
  const char* func = p.is_decode ? "paged_decode" : "paged_prefill";
  auto s = static_cast<cudaStream_t>(args.stream);
  std::vector<int32_t> table = copy_table_to_host(args.block_tables, s);
  std::vector<int32_t> kv = copy_to_host_1d<int32_t>(args.kv_lens, p.batch_size, s);
  std::vector<int32_t> cu;
  if (!p.is_decode && args.cu_q_lens.defined()) cu = copy_to_host_1d<int32_t>(args.cu_q_lens, p.batch_size + 1, s);
  KVQ_CUDA_CHECK(cudaStreamSynchronize(s));
  // The CPU backend's checks (core/validate.cpp), in its words, over contiguous host copies: one
  // definition of what bad metadata is and how it is reported, whichever backend runs.
  const TensorView h_table =
      TensorView::make(table.data(), DType::kInt32, {args.block_tables.shape[0], args.block_tables.shape[1]});
  const TensorView h_kv = TensorView::make(kv.data(), DType::kInt32, {p.batch_size});
  if (cu.empty()) {
    DecodeArgs d;
    d.block_tables = h_table;
    d.kv_lens = h_kv;
    detail::check_decode_data_host(d, p, /*full=*/true, func);
    return;
  }
  PrefillArgs h = args;
  h.block_tables = h_table;
  h.kv_lens = h_kv;
  h.cu_q_lens = TensorView::make(cu.data(), DType::kInt32, {p.batch_size + 1});
  detail::check_prefill_data_host(h, p, /*full=*/true, func);  // reads only the shape of `mask`
}

}  // namespace kvq::cuda
