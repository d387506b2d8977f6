// tests/gpu/perf_test.cu — a quick decode bandwidth probe (disabled by default; run with
// --gtest_also_run_disabled_tests --gtest_filter='*Perf*'). Not a benchmark harness (bench/ is):
// it fills a large int8 cache on the device, times paged_decode with CUDA events (warm-up, median
// of 20) and prints the bytes that must move per second: int8 K/V of the referenced tokens,
// scales, q and out.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

__global__ void fill_int8_kernel(int8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = static_cast<int8_t>(h & 0xff);
  }
}

void perf_decode(int64_t batch, int64_t kv_len, int64_t page_size, int64_t hq, int64_t hkv, int64_t d) {
  const int64_t pages_per_seq = (kv_len + page_size - 1) / page_size;
  const int64_t num_blocks = batch * pages_per_seq;
  const size_t cache_elems = static_cast<size_t>(num_blocks) * hkv * page_size * d;
  DeviceTensor kc = DeviceTensor::bytes(cache_elems), vc = DeviceTensor::bytes(cache_elems);
  fill_int8_kernel<<<1024, 256>>>(static_cast<int8_t*>(kc.data()), cache_elems, 1);
  fill_int8_kernel<<<1024, 256>>>(static_cast<int8_t*>(vc.data()), cache_elems, 2);
  HostTensor ks(DType::kFloat32, {hkv, d}), vs(DType::kFloat32, {hkv, d});
  for (int64_t i = 0; i < hkv * d; ++i) {
    ks.store(i, 0.01);
    vs.store(i, 0.02);
  }
  Rng rng(5);
  const std::vector<int32_t> perm = rng.permutation(num_blocks);
  HostTensor table(DType::kInt32, {batch, pages_per_seq});
  for (int64_t i = 0; i < num_blocks; ++i) table.ptr<int32_t>()[i] = perm[i];
  HostTensor lens(DType::kInt32, {batch});
  for (int64_t b = 0; b < batch; ++b) lens.ptr<int32_t>()[b] = static_cast<int32_t>(kv_len);
  HostTensor q(DType::kBFloat16, {batch, hq, d}), out(DType::kBFloat16, {batch, hq, d});
  for (int64_t i = 0; i < q.numel(); ++i) q.store(i, rng.normal());
  DeviceTensor dks(ks), dvs(vs), dt(table), dl(lens), dq(q), dout(out);
  DecodeArgs a;
  a.q = dq.view();
  a.kv.k_cache = TensorView::make(kc.data(), DType::kInt8, {num_blocks, hkv, page_size, d}, Device::kCUDA);
  a.kv.v_cache = TensorView::make(vc.data(), DType::kInt8, {num_blocks, hkv, page_size, d}, Device::kCUDA);
  a.kv.k_scale = dks.view();
  a.kv.v_scale = dvs.view();
  a.block_tables = dt.view();
  a.kv_lens = dl.view();
  a.out = dout.view();
  const size_t ws_bytes = decode_workspace_size(a);
  DeviceTensor ws = DeviceTensor::bytes(ws_bytes);
  a.workspace = {ws.data(), ws_bytes};
  for (int i = 0; i < 3; ++i) paged_decode(a);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    cudaEventRecord(e0);
    paged_decode(a);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double bytes = 2.0 * batch * kv_len * hkv * d + 2.0 * hkv * d * 4 + 2.0 * 2 * batch * hq * d;
  int dev = 0;
  cudaDeviceProp prop{};
  cudaGetDevice(&dev);
  cudaGetDeviceProperties(&prop, dev);
  std::printf("PERF decode B%lld kv%lld page%lld Hq%lld Hkv%lld D%lld int8 per-channel: %.3f ms, %.2f TB/s (%s)\n",
              (long long)batch, (long long)kv_len, (long long)page_size, (long long)hq, (long long)hkv, (long long)d,
              med, bytes / (med * 1e-3) / 1e12, prop.name);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

TEST(DISABLED_Perf, DecodeBandwidth) {
  perf_decode(64, 4096, 16, 32, 8, 128);
  perf_decode(64, 4096, 64, 32, 8, 128);
  perf_decode(8, 16384, 16, 32, 8, 128);
  perf_decode(1, 32768, 16, 32, 8, 128);
  perf_decode(64, 4096, 16, 32, 8, 64);
}

}  // namespace
}  // namespace kvq::test
