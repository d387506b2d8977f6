// kvq/views.h — non-owning tensor views and the argument structs of every entry point.
// Host-only; compiles without nvcc. Strides are in elements; the last dimension must be
// contiguous (stride 1) for q, out, caches and k_new/v_new.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "kvq/types.h"

namespace kvq {

constexpr int kMaxDims = 6;

// A view of memory owned by the caller. ndim == -1 means "absent" (optional arguments).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Device device = Device::kCPU;
  int device_index = 0;
  int ndim = -1;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  bool defined() const { return ndim >= 0; }
  int64_t size(int dim) const { return shape[dim < 0 ? dim + ndim : dim]; }
  int64_t stride(int dim) const { return strides[dim < 0 ? dim + ndim : dim]; }
  int64_t numel() const;
  bool is_contiguous() const;
  // "bf16 [12, 8, 16, 128]" (or "absent").
  std::string describe() const;

  // A contiguous view.
  static TensorView make(void* data, DType dtype, std::initializer_list<int64_t> shape,
                         Device device = Device::kCPU, int device_index = 0);
  // A view with explicit strides (elements).
  static TensorView make_strided(void* data, DType dtype, std::initializer_list<int64_t> shape,
                                 std::initializer_list<int64_t> strides,
                                 Device device = Device::kCPU, int device_index = 0);
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// One paged K/V cache. k_cache/v_cache are int8 (with scales) or bf16/fp16 (no scales).
//   HND: [num_blocks, num_kv_heads, page_size, head_dim]; NHD: [num_blocks, page_size, num_kv_heads, head_dim]
// k_scale/v_scale (int8 caches only), fp32/bf16/fp16:
//   per-channel [num_kv_heads, head_dim];
//   per-token   HND [num_blocks, num_kv_heads, page_size] / NHD [num_blocks, page_size, num_kv_heads].
// The mode of each scale is read off its shape.
struct PagedKvCache {
  TensorView k_cache;
  TensorView v_cache;
  TensorView k_scale;
  TensorView v_scale;
  KvLayout layout = KvLayout::kHND;
};

// Visibility of key j to the query at absolute position p (docs/design.md §1):
//   (!causal || j <= p) && (local_window < 0 || p - j <= local_window || j < global_window)
struct MaskOptions {
  bool causal = true;
  int local_window = -1;   // < 0: no window. Needs causal.
  int global_window = 0;   // the first global_window keys stay visible under a local window.
};

// Scratch memory provided by the caller, of at least plan.workspace_bytes, on the tensors' device.
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

struct PrefillPlan;

// Paged prefill / chunked prefill over a varlen batch.
struct PrefillArgs {
  TensorView q;             // [total_q, num_qo_heads, head_dim] bf16/fp16, or int8 with q_scale
  TensorView q_scale;       // [total_q, num_qo_heads] fp32, only with int8 q
  PagedKvCache kv;
  TensorView block_tables;  // [batch_size, max_blocks_per_seq] int32; entries past ceil(kv_len/page_size) unread
  TensorView cu_q_lens;     // [batch_size + 1] int32, cu_q_lens[0] = 0, non-decreasing
  TensorView kv_lens;       // [batch_size] int32, kv_len >= q_len when causal
  // Optional, non-causal only: bool/uint8, the per-sequence [q_len, kv_len] row-major masks
  // concatenated over the batch (length sum_b q_len_b * kv_len_b); true = visible.
  TensorView mask;
  TensorView out;           // [total_q, num_qo_heads, head_dim], q's float dtype (bf16 when q is int8)
  TensorView lse;           // optional [total_q, num_qo_heads] fp32, natural log; -inf for empty rows
  MaskOptions mask_options;
  float softmax_scale = 0.f;  // <= 0: 1/sqrt(head_dim)
  GqaLayout gqa_layout = GqaLayout::kGrouped;
  ComputeMode compute = ComputeMode::kNative;  // forced to kInt8 when q is int8
  PrefillPath path = PrefillPath::kAuto;
  bool check = false;       // run the checks that need device data (block ids, lengths, monotonic cu_q_lens)
  const PrefillPlan* plan = nullptr;  // from plan_prefill(); null: planned on the fly (may sync)
  Workspace workspace;
  void* stream = nullptr;   // cudaStream_t for CUDA tensors
};

// Decode: one query token per sequence, at position kv_len - 1 (all keys visible but for windows).
struct DecodeArgs {
  TensorView q;             // [batch_size, num_qo_heads, head_dim] bf16/fp16
  PagedKvCache kv;
  TensorView block_tables;  // [batch_size, max_blocks_per_seq] int32
  TensorView kv_lens;       // [batch_size] int32
  TensorView out;           // [batch_size, num_qo_heads, head_dim], q's dtype
  TensorView lse;           // optional [batch_size, num_qo_heads] fp32
  int local_window = -1;
  int global_window = 0;
  float softmax_scale = 0.f;
  GqaLayout gqa_layout = GqaLayout::kGrouped;
  bool check = false;
  int num_splits = 0;       // 0: chosen by the planner
  Workspace workspace;
  void* stream = nullptr;
};

// Quantize-and-write new tokens into the pages (docs/design.md §1 "Writing the cache").
struct AppendArgs {
  TensorView k_new;         // [num_tokens, num_kv_heads, head_dim] bf16/fp16/fp32
  TensorView v_new;         // [num_tokens, num_kv_heads, head_dim]
  TensorView slot_mapping;  // [num_tokens] int32/int64; slot < 0: skipped
  PagedKvCache kv;          // int8 caches: per-channel scales are read, per-token scales written
  bool check = false;       // slots < num_blocks * page_size
  void* stream = nullptr;
};

// Dequantize the blocks referenced by (block_tables, kv_lens) of one int8 cache into bf16/fp16.
// Full mode (out_block_tables absent): out has the cache's shape; referenced blocks are written at
// their own ids, other blocks untouched. Compact mode: out is [num_out_blocks, ...] and
// out_block_tables [batch_size, max_blocks_per_seq] int32 receives the remapped ids (row-major order
// of (sequence, block) references; unused entries -1).
struct DequantArgs {
  TensorView cache;         // int8, HND or NHD
  TensorView scale;         // per-channel or per-token
  TensorView block_tables;  // [batch_size, max_blocks_per_seq] int32
  TensorView kv_lens;       // [batch_size] int32
  TensorView out;           // bf16/fp16
  TensorView out_block_tables;  // optional, compact mode
  KvLayout layout = KvLayout::kHND;
  bool check = false;
  void* stream = nullptr;
};

// Planning (host side). plan_prefill reads shapes, dtypes and options from args and the lengths
// from host arrays, so run() needs no device-to-host copy.
struct PrefillPlan {
  PrefillPath path = PrefillPath::kGeneric;  // resolved path
  // The kernel the path runs: kMmaDecode (the tensor-core decode kernel, path fused) when the host
  // lengths show at most 8 query tokens per sequence and the call qualifies (docs/api.md "Options").
  PrefillKernel kernel = PrefillKernel::kPath;
  // The planner's choice of the kernel's form, for the plan's shape on the device it planned on and
  // the KVQ_* overrides of that moment (docs/api.md "Options"): the tensor-core prefill's mainloop
  // (path fused or dequant with kernel kPath; else kNone) and the tensor-core decode's variant
  // (kernel kMmaDecode; else kNone). A run takes them as planned where its views and device allow,
  // else a step down (Hopper -> mma.sync, TMA -> cp.async); it never chooses anew.
  PrefillMainloop mainloop = PrefillMainloop::kNone;
  DecodeVariant decode_variant = DecodeVariant::kNone;
  Device device = Device::kCPU;
  int64_t batch_size = 0;
  int64_t total_q = 0;
  int64_t num_referenced_blocks = 0;  // sum_b ceil(kv_len_b / page_size)
  int64_t max_q_len = 0;
  int64_t max_kv_len = 0;
  int num_splits = 1;        // split-KV count of kernel kMmaDecode (its partials are in the workspace)
  size_t workspace_bytes = 0;
};

}  // namespace kvq
