// src/core/backend.h — what src/core/dispatch.cpp calls after validation. One namespace per backend.
// The CUDA functions are defined in src/cuda/ when kvq is built with CUDA, else in
// src/core/cuda_stub.cpp (they throw "kvq was built without CUDA").
#pragma once
#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::cpu {
void paged_prefill(const PrefillArgs& args, const detail::AttnProblem& p);
void paged_decode(const DecodeArgs& args, const detail::AttnProblem& p);
void append(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
            int64_t page_size, int64_t num_blocks, ScaleMode k_mode, ScaleMode v_mode);
void dequantize_blocks(const DequantArgs& args, int64_t num_kv_heads, int64_t page_size,
                       int64_t head_dim, ScaleMode mode);
void calibrate(const TensorView& x, const TensorView& scale_out);
// Test-only: accumulate in fp64 instead of fp32 (the oracle mode). Not thread-safe to flip mid-call.
void set_fp64_accumulation(bool on);
bool fp64_accumulation();
}  // namespace kvq::cpu

namespace kvq::cuda {
bool built();
bool available();
void paged_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan);
void paged_decode(const DecodeArgs& args, const detail::AttnProblem& p);
// Sized on device_index (the tensors' device): the split count depends on its SM count.
size_t decode_workspace_size(const detail::AttnProblem& p, int num_splits, int device_index);
void append(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
            int64_t page_size, int64_t num_blocks, ScaleMode k_mode, ScaleMode v_mode);
void dequantize_blocks(const DequantArgs& args, int64_t num_kv_heads, int64_t page_size,
                       int64_t head_dim, ScaleMode mode);
void calibrate(const TensorView& x, const TensorView& scale_out, void* stream);
// The tensor-core decode kernel (decode/mma_decode.cu) as the kernel of a prefill plan
// (PrefillKernel::kMmaDecode; core/plan.cpp decides when). plan_prefill_mma_decode: whether it serves
// the call's shape and views for plan.max_q_len query rows per sequence, and if so sets
// plan.num_splits and plan.workspace_bytes, sized on the tensors' device (its SM count); false,
// plan untouched, when it does not serve them or no CUDA device is usable.
// prefill_mma_decode_serves: the same test of a given plan, its split count and workspace size
// included (no device needed).
bool plan_prefill_mma_decode(const PrefillArgs& args, const detail::AttnProblem& p, PrefillPlan& plan);
bool prefill_mma_decode_serves(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan);
// Device-data checks (check=true): block ids in [0, num_blocks), kv_len <= table width * page_size,
// cu_q_lens monotonic; throws kvq::Error naming the argument.
void check_prefill_data(const PrefillArgs& args, const detail::AttnProblem& p);
}  // namespace kvq::cuda
