// bench/cli/util.cpp — see util.h.
#include "bench/cli/util.h"

#include <algorithm>
#include <cmath>
#include <iostream>

#ifdef KVQ_WITH_CUDA
#include <cuda_runtime_api.h>
#define CLI_CUDA(expr)                                                                   \
  do {                                                                                   \
    cudaError_t e_ = (expr);                                                             \
    if (e_ != cudaSuccess)                                                               \
      throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorName(e_));        \
  } while (0)
#endif

namespace kvq_cli {

uint16_t float_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);                     // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_float(uint16_t x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

Buffer::Buffer(kvq::DType dtype, std::vector<int64_t> shape, bool on_gpu)
    : dtype_(dtype), shape_(std::move(shape)), on_gpu_(on_gpu) {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  bytes_ = static_cast<size_t>(n) * kvq::dtype_size(dtype_);
  size_t alloc = std::max<size_t>(bytes_, 16);
  if (on_gpu_) {
#ifdef KVQ_WITH_CUDA
    CLI_CUDA(cudaMalloc(&data_, alloc));
#else
    throw std::runtime_error("GPU buffer requested in a CPU-only build");
#endif
  } else {
    data_ = std::aligned_alloc(64, (alloc + 63) / 64 * 64);
  }
}

Buffer::Buffer(Buffer&& o) noexcept { *this = std::move(o); }
Buffer& Buffer::operator=(Buffer&& o) noexcept {
  std::swap(data_, o.data_);
  std::swap(bytes_, o.bytes_);
  std::swap(dtype_, o.dtype_);
  std::swap(shape_, o.shape_);
  std::swap(on_gpu_, o.on_gpu_);
  return *this;
}

Buffer::~Buffer() {
  if (!data_) return;
#ifdef KVQ_WITH_CUDA
  if (on_gpu_) {
    cudaFree(data_);
    return;
  }
#endif
  std::free(data_);
}

kvq::TensorView Buffer::view() const {
  kvq::TensorView v;
  v.data = data_;
  v.dtype = dtype_;
  v.device = on_gpu_ ? kvq::Device::kCUDA : kvq::Device::kCPU;
  v.ndim = static_cast<int>(shape_.size());
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.shape[d] = shape_[d];
    v.strides[d] = stride;
    stride *= shape_[d];
  }
  return v;
}

void Buffer::upload(const void* host) {
#ifdef KVQ_WITH_CUDA
  if (on_gpu_) {
    CLI_CUDA(cudaMemcpy(data_, host, bytes_, cudaMemcpyHostToDevice));
    return;
  }
#endif
  std::memcpy(data_, host, bytes_);
}

void Buffer::download(void* host) const {
#ifdef KVQ_WITH_CUDA
  if (on_gpu_) {
    CLI_CUDA(cudaMemcpy(host, data_, bytes_, cudaMemcpyDeviceToHost));
    return;
  }
#endif
  std::memcpy(host, data_, bytes_);
}

void Buffer::fill_byte(int value) {
#ifdef KVQ_WITH_CUDA
  if (on_gpu_) {
    CLI_CUDA(cudaMemset(data_, value, bytes_));
    return;
  }
#endif
  std::memset(data_, value, bytes_);
}

bool gpu_present() {
#ifdef KVQ_WITH_CUDA
  return kvq::cuda_available();
#else
  return false;
#endif
}

std::string gpu_name() {
#ifdef KVQ_WITH_CUDA
  cudaDeviceProp prop{};
  int dev = 0;
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
    return prop.name;
#endif
  return "none";
}

void gpu_sync() {
#ifdef KVQ_WITH_CUDA
  CLI_CUDA(cudaDeviceSynchronize());
#endif
}

double time_ms(bool on_gpu, int warmup, int iters, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> samples;
#ifdef KVQ_WITH_CUDA
  if (on_gpu) {
    cudaEvent_t start, stop;
    CLI_CUDA(cudaEventCreate(&start));
    CLI_CUDA(cudaEventCreate(&stop));
    for (int i = 0; i < iters; ++i) {
      CLI_CUDA(cudaEventRecord(start));
      fn();
      CLI_CUDA(cudaEventRecord(stop));
      CLI_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      CLI_CUDA(cudaEventElapsedTime(&ms, start, stop));
      samples.push_back(ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
#endif
  if (!on_gpu) {
    for (int i = 0; i < iters; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      auto t1 = std::chrono::steady_clock::now();
      samples.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  std::sort(samples.begin(), samples.end());
  return samples.empty() ? 0.0 : samples[samples.size() / 2];
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 1)),
      start_(std::chrono::steady_clock::now()) {}

void Progress::step(int64_t n) {
  current_ = std::min(total_, current_ + n);
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!shown_ && elapsed < 1.0) return;  // only work that takes over a second gets a bar
  int pct = static_cast<int>(100 * current_ / total_);
  if (pct == last_pct_ && shown_) return;
  shown_ = true;
  last_pct_ = pct;
  int filled = pct * 30 / 100;
  std::cerr << "\r  " << label_ << " [" << std::string(filled, '#') << std::string(30 - filled, '.')
            << "] " << pct << "% (" << current_ << "/" << total_ << ", " << static_cast<int>(elapsed)
            << " s)" << std::flush;
}

void Progress::done() {
  if (shown_) {
    current_ = total_ - 1;
    last_pct_ = -1;
    step(1);
    std::cerr << "\n";
  }
}

}  // namespace kvq_cli
