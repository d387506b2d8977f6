// src/core/backend.h — what src/core/dispatch.cpp (and the planner, for the device) calls after
// validation. One namespace per backend. The CUDA functions are defined in src/cuda/ when kvq is
// built with CUDA, else in src/core/nocuda/cuda_stub.cpp (they throw "kvq was built without CUDA";
// device_info says no device).
#pragma once
#include "kvq/views.h"
#include "src/core/plan.h"
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
// What the planner asks of CUDA device `device_index` (src/core/plan.h): SM count, sm_90, the
// tensor-core decode's occupancy. require=false: no usable device (none, or no such index) gives
// a DeviceInfo that is not usable; require=true: the CUDA error a launch would raise is thrown.
detail::DeviceInfo device_info(int device_index, bool require);
// The backend executes what the planner resolved (detail::KernelLaunch, plan.cpp) and chooses
// nothing; a launch it cannot run is an internal error (kvq::Error kRuntime on `plan`).
void paged_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PrefillPlan& plan,
                   const detail::KernelLaunch& launch);
void paged_decode(const DecodeArgs& args, const detail::AttnProblem& p, const detail::KernelLaunch& launch);
void append(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
            int64_t page_size, int64_t num_blocks, ScaleMode k_mode, ScaleMode v_mode);
void dequantize_blocks(const DequantArgs& args, int64_t num_kv_heads, int64_t page_size,
                       int64_t head_dim, ScaleMode mode);
void calibrate(const TensorView& x, const TensorView& scale_out, void* stream);
// Device-data checks (check=true): block ids in [0, num_blocks), kv_len <= table width * page_size,
// cu_q_lens monotonic; throws kvq::Error naming the argument.
void check_prefill_data(const PrefillArgs& args, const detail::AttnProblem& p);
}  // namespace kvq::cuda
