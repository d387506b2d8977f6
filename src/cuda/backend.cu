// src/cuda/backend.cu — the CUDA backend: every kvq::cuda:: function of src/core/backend.h.
//
// The dispatcher (src/core/dispatch.cpp) validated shapes, dtypes and options and the planner
// (src/core/plan.cpp) chose every kernel before any call lands here; this file runs the
// detail::KernelLaunch it is given and chooses nothing (a launch it cannot run is an internal error):
//   paged_prefill: kMmaDecode -> the tensor-core decode kernel (decode/mma_decode.h) over cu_q_lens,
//     with the launch's variant and split count and the plan's workspace. kTcPrefill -> the
//     tensor-core kernel (tc_prefill.h) with the launch's mainloop (mma.sync or the Hopper kernel).
//     kDequantPrefill -> dequantize the referenced K and V blocks into the workspace (layout and
//     views: src/core/plan.cpp dequant_workspace) with a compact block table, then the tensor-core
//     kernel over that bf16/fp16 cache. kGeneric -> generic_prefill.
//   paged_decode: kMmaDecode (decode/mma_decode.h), kSplitDecode (decode/decode.h), kTcPrefill (the
//     tensor-core prefill with one query row per sequence), with the launch's form and split count.
//   device_info: what the planner asks of a device (SM count, sm_90, the decode kernel's occupancy).
//   append / calibrate: append/. dequantize_blocks: prefill/dequant_blocks.
//   check_prefill_data: copies the metadata to the host (synchronous; only when check=true).
//   Like append's and dequantize_blocks' check=true, it runs src/core's device-data checks
//   (validate.h) on the host copies: the CPU backend's checks, in its words.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvq/error.h"
#include "kvq_config.h"
#include "src/core/backend.h"
#include "src/core/plan.h"
#include "src/core/validate.h"
#include "src/cuda/append/append.h"
#include "src/core/kernels.h"
#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/common/device_info.h"
#include "src/cuda/decode/decode.h"
#include "src/cuda/decode/mma_decode.h"
#include "src/cuda/prefill/dequant_blocks.h"
#include "src/cuda/prefill/generic_prefill.h"
#include "src/cuda/prefill/tc_prefill.h"

namespace kvq::cuda {
namespace {

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

// The dequant path: the checks of the forced path ran in resolve_prefill_launch (plan.cpp), on the
// same workspace views (dequant_workspace).
void run_dequant_path(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan,
                      const detail::KernelLaunch& launch) {
  constexpr const char* kFunc = "paged_prefill";
  const detail::DequantWorkspace w = detail::dequant_workspace(args, p, plan.num_referenced_blocks);
  KVQ_INTERNAL_CHECK(args.workspace.data != nullptr && args.workspace.bytes >= w.bytes &&
                         detail::tc_prefill_supports_views(args, w.p, w.kv, w.block_tables),
                     kFunc, "expected a dequant launch the planner resolved (tensor-core kernel over the copy, "
                                << w.bytes << " workspace bytes), got " << args.workspace.bytes << " bytes");
  for (int part = 0; part < 2; ++part) {
    DequantLaunch d;
    d.cache = part == 0 ? args.kv.k_cache : args.kv.v_cache;
    d.scale = part == 0 ? args.kv.k_scale : args.kv.v_scale;
    d.mode = part == 0 ? p.k_scale_mode : p.v_scale_mode;
    d.layout = p.layout;
    d.block_tables = args.block_tables;
    d.kv_lens = args.kv_lens;
    d.out = part == 0 ? w.kv.k_cache : w.kv.v_cache;
    d.out_block_tables = w.block_tables;
    d.write_table = part == 0;
    d.num_kv_heads = p.num_kv_heads;
    d.page_size = p.page_size;
    d.head_dim = p.head_dim;
    launch_dequant_blocks(d, args.stream);
  }
  launch_tc_prefill(args, w.p, w.kv, w.block_tables, launch.max_q_len, launch.mainloop, args.stream);
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
// contiguous), copied to the host and checked by src/core (finite and > 0: append divides by it).
// Synchronizes the stream.
void check_channel_scale_on_host(const TensorView& s, const char* name, cudaStream_t stream) {
  const int64_t rows = s.shape[0], cols = s.shape[1];
  if (rows == 0 || cols == 0) return;
  const size_t es = dtype_size(s.dtype);
  std::vector<uint8_t> h(static_cast<size_t>(rows * cols) * es);
  KVQ_CUDA_CHECK(cudaMemcpy2DAsync(h.data(), cols * es, s.data, s.strides[0] * es, cols * es, rows,
                                   cudaMemcpyDeviceToHost, stream));
  KVQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  detail::check_channel_scale_values("append", name, TensorView::make(h.data(), s.dtype, {rows, cols}));
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

// ---- what the planner asks of a device ----

namespace {

int mma_decode_ctas_per_sm_on(const detail::AttnProblem& p, int64_t max_q_len, DecodeVariant variant, int device_index) {
  const DeviceGuard device_guard(device_index);
  return mma_decode_ctas_per_sm(p, max_q_len, variant);
}

// The number of devices, asked once per process (it does not change while the process runs), so
// planning inside a CUDA-graph capture makes no device-count query.
int device_count_once() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      n = 0;
    }
    return n;
  }();
  return count;
}

}  // namespace

detail::DeviceInfo device_info(int device_index, bool require) {
  detail::DeviceInfo d;
  d.index = device_index;
  if (!require && (device_index < 0 || device_index >= device_count_once())) return d;
  const DeviceGuard device_guard(device_index);
  d.usable = true;
  d.sm_count = current_device_sm_count();
  d.sm90 = current_device_is_sm90();
  d.mma_decode_ctas_per_sm = &mma_decode_ctas_per_sm_on;
  return d;
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

void run_mma_decode_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const detail::KernelLaunch& launch) {
  MmaDecodeLaunch L = mma_decode_launch_of(args, p);
  L.cu_q_lens = args.cu_q_lens;
  L.total_rows = p.total_q;
  L.max_q_len = launch.max_q_len;
  L.func = "paged_prefill";
  launch_mma_decode(L, p, launch.num_splits, launch.variant, args.stream);
}

}  // namespace

void paged_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan,
                   const detail::KernelLaunch& launch) {
  const DeviceGuard device_guard(args.q.device_index);
  switch (launch.kernel) {
    case detail::LaunchKernel::kMmaDecode:
      run_mma_decode_prefill(args, p, launch);
      return;
    case detail::LaunchKernel::kTcPrefill:
      launch_tc_prefill(args, p, args.kv, args.block_tables, launch.max_q_len, launch.mainloop, args.stream);
      return;
    case detail::LaunchKernel::kDequantPrefill:
      run_dequant_path(args, p, plan, launch);
      return;
    case detail::LaunchKernel::kGeneric:
      launch_generic_prefill(args, p, args.kv, args.block_tables, args.stream);
      return;
    case detail::LaunchKernel::kSplitDecode:
      break;
  }
  KVQ_INTERNAL_CHECK(false, "paged_prefill",
                     "expected a prefill launch (generic, tc_prefill, dequant_prefill or mma_decode), got "
                         << detail::to_string(launch.kernel));
}

// ---- decode through the tensor-core prefill kernel ----
// A decode step is a prefill with one query row per sequence (at position kv_len - 1, so causal
// sees every key). The tensor-core kernel packs the q heads of a GQA group into its M tile and
// reads each int8 K/V tile once per group with cp.async, converting in registers; it has no split
// over KV. Measured on an H100 (2026-11-25, bench/results/2026-11-25_h100_peers.json) it is slower
// than the split-KV CUDA-core kernel (B64 kv4096: 0.84 vs 1.20 TB/s; B8 kv32768: 0.30 vs 1.31), so
// it is not chosen by default; KVQ_DECODE_PATH=tc selects it (the planner: plan.cpp make_decode_plan;
// kept runnable to compare against, tested by tools/device_all.sh). cu_q_lens = [0, 1, .., B]
// lives at the start of the workspace, written by a one-CTA kernel (no host work: graph capturable).
namespace {

__global__ void iota_kernel(int32_t* out, int32_t n) {
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = i;
}

// The planner resolved this route for these views (resolve_decode_launch).
void launch_decode_via_tc(const DecodeArgs& args, const detail::AttnProblem& p, PrefillMainloop mainloop) {
  const detail::AttnProblem pp = detail::decode_as_prefill(p);
  KVQ_CHECK(args.workspace.bytes >= detail::tc_decode_workspace_bytes(p) && args.workspace.data != nullptr,
            "paged_decode", "workspace",
            "expected at least " << detail::tc_decode_workspace_bytes(p) << " bytes (decode_workspace_size), got "
                                 << args.workspace.bytes);
  PrefillArgs pa = detail::decode_as_prefill_args(args);
  pa.cu_q_lens = TensorView::make(args.workspace.data, DType::kInt32, {p.batch_size + 1}, Device::kCUDA,
                                  args.q.device_index);
  pa.softmax_scale = p.softmax_scale;
  KVQ_INTERNAL_CHECK(detail::tc_prefill_supports_views(pa, pp, args.kv, args.block_tables), "paged_decode",
                     "expected views the tensor-core prefill loads for the decode route tc, got views it cannot load");
  auto s = static_cast<cudaStream_t>(args.stream);
  iota_kernel<<<1, 256, 0, s>>>(static_cast<int32_t*>(args.workspace.data), static_cast<int32_t>(p.batch_size + 1));
  KVQ_LAUNCH_CHECK(s);
  launch_tc_prefill(pa, pp, args.kv, args.block_tables, /*max_q_len=*/1, mainloop, args.stream);
}

}  // namespace

void paged_decode(const DecodeArgs& args, const detail::AttnProblem& p, const detail::KernelLaunch& launch) {
  const DeviceGuard device_guard(args.q.device_index);
  switch (launch.kernel) {
    case detail::LaunchKernel::kMmaDecode: {
      MmaDecodeLaunch L = mma_decode_launch_of(args, p);
      L.total_rows = p.batch_size;
      L.max_q_len = 1;
      L.func = "paged_decode";
      launch_mma_decode(L, p, launch.num_splits, launch.variant, args.stream);
      return;
    }
    case detail::LaunchKernel::kTcPrefill:
      launch_decode_via_tc(args, p, launch.mainloop);
      return;
    case detail::LaunchKernel::kSplitDecode:
      launch_decode(args, p, launch.num_splits, args.stream);
      return;
    case detail::LaunchKernel::kGeneric:
    case detail::LaunchKernel::kDequantPrefill:
      break;
  }
  KVQ_INTERNAL_CHECK(false, "paged_decode",
                     "expected a decode launch (mma_decode, split_decode or tc_prefill), got "
                         << detail::to_string(launch.kernel));
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
    // Slots past the cache, and two tokens for one slot (they race: in per-token mode scale and
    // payload may come from different tokens), as the CPU backend words them.
    detail::check_slot_values("append", slots.data(), num_tokens, num_blocks * page_size, /*distinct=*/true);
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
    // src/core's checks over the contiguous host copies, as the CPU backend runs them (out_block_tables
    // has the shape of block_tables, validate_dequant saw to it: the lengths bound its columns).
    const int64_t width = args.block_tables.shape[1];
    const int64_t referenced = detail::check_lens_and_table_values(
        kFunc, kv.data(), args.block_tables.shape[0], table.data(), width, width, page_size, args.cache.shape[0]);
    if (compact) detail::check_compact_out_blocks(kFunc, args.out, referenced);
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
