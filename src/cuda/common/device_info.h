// src/cuda/common/device_info.h — what the planner (through cuda::device_info, backend.cu) and the
// launchers' checks ask of the current device: its SM count and whether it is an sm_90 GPU
// (H100/H200: the Hopper prefill and the tensor-core decode's TMA form), both cached per device.
#pragma once
#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "src/cuda/common/cuda_check.cuh"

namespace kvq::cuda {

// SM count of the current device (cached per device).
inline int current_device_sm_count() {
  int dev = 0;
  KVQ_CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::vector<int> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int>(cache.size()) <= dev) cache.resize(dev + 1, 0);
  if (cache[dev] == 0) KVQ_CUDA_CHECK(cudaDeviceGetAttribute(&cache[dev], cudaDevAttrMultiProcessorCount, dev));
  return cache[dev];
}

// Whether the current device is compute capability 9.0 (false when it cannot be queried; cached
// per device once answered).
inline bool current_device_is_sm90() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  static std::mutex mu;
  static std::vector<int> cache;  // 0: not asked yet, 1: no, 2: yes
  {
    std::lock_guard<std::mutex> lock(mu);
    if (static_cast<int>(cache.size()) > dev && cache[dev] != 0) return cache[dev] == 2;
  }
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return false;
  const bool sm90 = major == 9 && minor == 0;
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int>(cache.size()) <= dev) cache.resize(dev + 1, 0);
  cache[dev] = sm90 ? 2 : 1;
  return sm90;
}

}  // namespace kvq::cuda
