// tests/gpu/gpu_util.h — device mirrors of the host test tensors, and the GPU-vs-CPU harness.
//
// DeviceTensor copies a HostTensor's whole storage (gaps of strided layouts included) to the
// device and hands out a CUDA TensorView with the same shape and strides, so a poisoned host
// buffer uploaded, run on, and downloaded again shows every element the kernel wrote.
// DeviceCase mirrors a PagedCase. The oracle of every GPU path is the CPU backend through the same
// public API (fp64 accumulation for native compute; its fp32 int8 recipe for int8 compute), or, for
// shapes too large for the CPU in the time budget, the naive fp64 reference of tests/common on a
// sample of the rows.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/kvq.h"
#include "tests/common/compare.h"
#include "tests/common/paged_cache.h"
#include "tests/common/reference.h"
#include "tests/common/tensor.h"

namespace kvq::test {

#define KVQ_TEST_CUDA(expr)                                                              \
  do {                                                                                   \
    cudaError_t e_ = (expr);                                                             \
    if (e_ != cudaSuccess) FAIL() << #expr << ": " << cudaGetErrorName(e_);              \
  } while (0)

class DeviceTensor {
 public:
  DeviceTensor() = default;
  explicit DeviceTensor(const HostTensor& h);
  // Raw scratch bytes (workspace).
  static DeviceTensor bytes(size_t n);
  DeviceTensor(DeviceTensor&& o) noexcept;
  DeviceTensor& operator=(DeviceTensor&& o) noexcept;
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  ~DeviceTensor();

  const TensorView& view() const { return view_; }
  void* data() const { return ptr_; }
  size_t nbytes() const { return bytes_; }
  void upload(const HostTensor& h);
  void download(HostTensor& h) const;
  // Fill every byte with `value` (async on stream 0 is avoided: synchronous memset).
  void fill_bytes(int value);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  TensorView view_;
};

struct DeviceCase {
  DeviceTensor q, q_scale, k_cache, v_cache, k_scale, v_scale, block_tables, cu_q_lens, kv_lens, mask, out, lse;
  KvLayout layout = KvLayout::kHND;

  explicit DeviceCase(const PagedCase& c);
  PagedKvCache kv() const;
  // host_args' options with this case's device tensors.
  PrefillArgs prefill_args(const PrefillArgs& host_args) const;
  DecodeArgs decode_args(const DecodeArgs& host_args) const;
};

// An int8 query (q8 = round(q / s), s = amax/127 per (row, head)) with its fp32 q_scale.
void make_int8_query(const HostTensor& q, HostTensor& q8, HostTensor& q_scale);

// The CPU backend's result for `host_args` (out/lse replaced by fresh buffers), as a RefOutput.
// fp64: the oracle accumulation mode.
RefOutput cpu_prefill(const PrefillArgs& host_args, bool fp64);
RefOutput cpu_decode(const DecodeArgs& host_args, bool fp64);

// Multiply-adds of the CPU oracle for a prefill case (q_len * kv_len * Hq * D summed).
double prefill_cost(const PagedCase& c);

// Outcome of one GPU prefill run.
struct GpuRun {
  bool served = true;          // false: the forced path refused the shape (kvq::Error on "path")
  std::string refusal;
  HostTensor out, lse;         // downloaded, same storage as the case's
};

// Poisons outputs, uploads, plans from the host lengths, runs paged_prefill on `path`, downloads.
GpuRun run_gpu_prefill(PagedCase& c, DeviceCase& dc, const PrefillArgs& host_args, PrefillPath path);

// Checks a GPU run against the oracle: rel err per (sequence, head) <= tol, no NaN, nothing
// written outside rows [0, total_q), lse agreement when present. Returns a description on failure.
void expect_prefill_matches(const PagedCase& c, const GpuRun& run, const RefOutput& ref, double tol,
                            const std::string& what);

const char* path_name(PrefillPath p);

}  // namespace kvq::test
