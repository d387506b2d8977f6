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
// No CUDA backend, no device: the planner keeps to what needs none (the path's kernel, mma.sync).
detail::DeviceInfo device_info(int device_index, bool require) {
  if (require) no_cuda("device_info");
  detail::DeviceInfo d;
  d.index = device_index;
  return d;
}

void paged_prefill(const PrefillArgs&, const detail::AttnProblem&, const PrefillPlan&, const detail::KernelLaunch&) {
  no_cuda("paged_prefill");
}
void paged_decode(const DecodeArgs&, const detail::AttnProblem&, const detail::KernelLaunch&) {
  no_cuda("paged_decode");
}
void append(const AppendArgs&, int64_t, int64_t, int64_t, int64_t, int64_t, ScaleMode, ScaleMode) {
  no_cuda("append");
}
void dequantize_blocks(const DequantArgs&, int64_t, int64_t, int64_t, ScaleMode) {
  no_cuda("dequantize_blocks");
}
void calibrate(const TensorView&, const TensorView&, void*) { no_cuda("calibrate"); }
void check_prefill_data(const PrefillArgs&, const detail::AttnProblem&) {
  no_cuda("check_prefill_data");
}

}  // namespace kvq::cuda
