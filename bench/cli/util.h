// bench/cli/util.h — small helpers of the `kvq` CLI (flags: options.h): bf16 conversion, buffers that live on the
// CPU or the GPU, a progress bar, timing. Host-only (CUDA runtime calls only when built with CUDA).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench/cli/options.h"
#include "kvq/kvq.h"

namespace kvq_cli {

uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t x);

// A contiguous buffer on the CPU or the GPU (when use_gpu), with host staging helpers.
class Buffer {
 public:
  Buffer() = default;
  Buffer(kvq::DType dtype, std::vector<int64_t> shape, bool on_gpu);
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  ~Buffer();
  kvq::TensorView view() const;
  size_t bytes() const { return bytes_; }
  void upload(const void* host);       // host -> buffer (memcpy on the CPU)
  void download(void* host) const;     // buffer -> host
  void fill_byte(int value);
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  kvq::DType dtype_ = kvq::DType::kFloat32;
  std::vector<int64_t> shape_;
  bool on_gpu_ = false;
};

// Device helpers (no-ops / errors on CPU-only builds).
bool gpu_present();
std::string gpu_name();
void gpu_sync();

// Times fn: GPU with events (median of iters after warmup), CPU with a steady clock. Milliseconds.
double time_ms(bool on_gpu, int warmup, int iters, const std::function<void()>& fn);

// A one-line progress bar on stderr, shown only for work that takes over a second.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void step(int64_t n = 1);
  void done();

 private:
  std::string label_;
  int64_t total_, current_ = 0;
  std::chrono::steady_clock::time_point start_;
  bool shown_ = false;
  int last_pct_ = -1;
};

}  // namespace kvq_cli
