// src/cuda/common/cuda_check.cuh — error checking for CUDA runtime calls and kernel launches.
//
// KVQ_CUDA_CHECK(expr) evaluates a cudaError_t expression and throws kvq::Error(kRuntime) naming
// the expression and the CUDA error name. KVQ_LAUNCH_CHECK(func) follows every kernel launch: it
// checks cudaGetLastError() and, when the environment sets KVQ_SYNC_AFTER_LAUNCH=1, synchronizes
// the device so that a fault surfaces at the launch that caused it (debug mode; never inside a
// graph capture, where a sync is illegal: the capture state is checked first).
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "kvq/error.h"

namespace kvq::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  std::ostringstream os;
  os << "expected cudaSuccess, got " << cudaGetErrorName(err) << " (" << cudaGetErrorString(err)
     << ") from " << expr << " at " << file << ":" << line;
  throw ::kvq::Error(::kvq::ErrorKind::kRuntime, "cuda", expr, os.str());
}

inline bool sync_after_launch_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("KVQ_SYNC_AFTER_LAUNCH");
    return v != nullptr && v[0] == '1';
  }();
  return enabled;
}

}  // namespace kvq::cuda

#define KVQ_CUDA_CHECK(expr)                                                       \
  do {                                                                             \
    cudaError_t kvq_err_ = (expr);                                                 \
    if (kvq_err_ != cudaSuccess) {                                                 \
      (void)cudaGetLastError();                                                    \
      ::kvq::cuda::throw_cuda_error(kvq_err_, #expr, __FILE__, __LINE__);          \
    }                                                                              \
  } while (0)

// After a launch on `stream`: the launch error, then (debug mode, not capturing) a stream sync.
#define KVQ_LAUNCH_CHECK(stream)                                                   \
  do {                                                                             \
    KVQ_CUDA_CHECK(cudaGetLastError());                                            \
    if (::kvq::cuda::sync_after_launch_enabled()) {                                \
      cudaStreamCaptureStatus kvq_cs_ = cudaStreamCaptureStatusNone;               \
      KVQ_CUDA_CHECK(cudaStreamIsCapturing((stream), &kvq_cs_));                   \
      if (kvq_cs_ == cudaStreamCaptureStatusNone) KVQ_CUDA_CHECK(cudaStreamSynchronize(stream)); \
    }                                                                              \
  } while (0)
