// kvq/kvq.h — the entry points. Every call validates its arguments first and throws kvq::Error
// (naming the argument, the expectation and what came) before anything is launched or written.
// The backend is chosen by the tensors' device: CPU tensors run the reference CPU backend,
// CUDA tensors the CUDA backend (when kvq was built with CUDA).
#pragma once
#include <vector>

#include "kvq/error.h"
#include "kvq/types.h"
#include "kvq/views.h"

namespace kvq {

// Attention over the paged cache for a varlen batch of query chunks (prefill, chunked prefill).
void paged_prefill(const PrefillArgs& args);
// Attention of one query token per sequence (decode).
void paged_decode(const DecodeArgs& args);
// Quantize and write new K/V tokens into the cache by slot (per-token scales are computed and stored).
void append(const AppendArgs& args);
// Dequantize the referenced blocks of one cache into a bf16/fp16 buffer (full or compact).
void dequantize_blocks(const DequantArgs& args);
// Per-channel scales of a sample x [num_tokens, num_kv_heads, head_dim] (any float dtype, CPU or CUDA):
// scale_out [num_kv_heads, head_dim] fp32 = max(amax over tokens / 127, 1e-5).
void calibrate(const TensorView& x, const TensorView& scale_out, void* stream = nullptr);

// Validates args (shapes, dtypes, options; not the data) and plans from host-side lengths:
// cu_q_lens_host [batch_size + 1], kv_lens_host [batch_size]. Nulls: planned from upper bounds.
PrefillPlan plan_prefill(const PrefillArgs& args, const int32_t* cu_q_lens_host,
                         const int32_t* kv_lens_host);
// Workspace bytes paged_decode needs for these args (0 on the CPU).
size_t decode_workspace_size(const DecodeArgs& args);

// Whether this build has the CUDA backend, and whether a CUDA device is usable now.
bool cuda_built();
bool cuda_available();
// The head dims that have fast (tensor-core) instantiations in this build.
std::vector<int> fast_head_dims();

// Quantization primitives, the definition every kernel matches bit-exactly (src/cpu/quant.cpp):
// round-half-even of x / scale, clamped to [-128, 127].
int8_t quantize_value(float x, float scale);
// per-token scale: max(amax / 127, 1e-8)
float per_token_scale(float amax);

}  // namespace kvq
