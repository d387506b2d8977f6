// src/core/nocuda/cuda_stub.cpp — the kvq::cuda functions of a CPU-only build (KVQ_CUDA=OFF or
// no nvcc). built()/available() say no; every other function is reached only with CUDA tensors
// after validation passed, and reports that this build cannot serve them.
#include "kvq/error.h"
#include "src/core/backend.h"

namespace kvq::cuda {
namespace {

[[noreturn]] void no_cuda(const char* func) {
  throw Error(ErrorKind::kType, func, "device",
              "expected CPU tensors (CUDA tensors need kvq built with CUDA), got cuda");
}

}  // namespace

bool built() { return false; }
bool available() { return false; }

void paged_prefill(const PrefillArgs&, const detail::AttnProblem&, const PrefillPlan&) {
  no_cuda("paged_prefill");
}
void paged_decode(const DecodeArgs&, const detail::AttnProblem&) { no_cuda("paged_decode"); }
size_t decode_workspace_size(const detail::AttnProblem&, int, int) { no_cuda("decode_workspace_size"); }
void append(const AppendArgs&, int64_t, int64_t, int64_t, int64_t, int64_t, ScaleMode, ScaleMode) {
  no_cuda("append");
}
void dequantize_blocks(const DequantArgs&, int64_t, int64_t, int64_t, ScaleMode) {
  no_cuda("dequantize_blocks");
}
void calibrate(const TensorView&, const TensorView&, void*) { no_cuda("calibrate"); }
// No CUDA backend, no decode kernel: plans keep the path's kernel.
bool plan_prefill_mma_decode(const PrefillArgs&, const detail::AttnProblem&, PrefillPlan&) { return false; }
bool prefill_mma_decode_serves(const PrefillArgs&, const detail::AttnProblem&, const PrefillPlan&) { return false; }
void check_prefill_data(const PrefillArgs&, const detail::AttnProblem&) {
  no_cuda("check_prefill_data");
}

}  // namespace kvq::cuda
