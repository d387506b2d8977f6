// tests/gpu/multi_device_test.cpp — kvq calls on several devices at once, as a tensor-parallel
// engine makes them (one thread and stream per device, each device with its own cache and shape):
// every entry point must run on its tensors' device, size its workspace for that device, and use
// no hidden device 0. With one GPU the same code runs from two threads on that GPU (the
// concurrency part), and the two-device tests are skipped loudly.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <string>
#include <thread>
#include <vector>

#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

PagedCaseSpec shape(int which) {
  PagedCaseSpec s;
  s.q_lens = which == 0 ? std::vector<int32_t>{1, 1, 1} : std::vector<int32_t>{1, 1};
  s.kv_lens = which == 0 ? std::vector<int32_t>{3000, 17, 800} : std::vector<int32_t>{5000, 4096};
  s.num_qo_heads = which == 0 ? 32 : 16;
  s.num_kv_heads = which == 0 ? 8 : 2;
  s.head_dim = which == 0 ? 128 : 64;
  s.page_size = which == 0 ? 16 : 64;
  s.v_scale_mode = which == 0 ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.with_lse = true;
  s.seed = 7100 + which;
  return s;
}

// One decode call of shape `which` on `device`, from the calling thread, on its own stream; the
// result compared with the CPU oracle. Returns "" or what went wrong.
std::string decode_on(int device, int which, int repeats) {
  try {
    if (cudaSetDevice(device) != cudaSuccess) return "cudaSetDevice failed";
    PagedCase c = make_paged_case(shape(which));
    DeviceCase dc(c);
    const DecodeArgs host = c.decode_args();
    const RefOutput ref = cpu_decode(host, true);
    cudaStream_t stream = nullptr;
    if (cudaStreamCreate(&stream) != cudaSuccess) return "cudaStreamCreate failed";
    DecodeArgs a = dc.decode_args(host);
    if (a.q.device_index != device) return "test setup: q not on device " + std::to_string(device);
    a.stream = stream;
    const size_t ws_bytes = decode_workspace_size(a);
    DeviceTensor ws = DeviceTensor::bytes(ws_bytes > 0 ? ws_bytes : 1);
    a.workspace = {ws.data(), ws_bytes};
    for (int r = 0; r < repeats; ++r) {
      c.poison_outputs();
      dc.out.upload(c.out);
      dc.lse.upload(c.lse);
      paged_decode(a);
      if (cudaStreamSynchronize(stream) != cudaSuccess) return "cudaStreamSynchronize failed";
      HostTensor out = c.out, lse = c.lse;
      dc.out.download(out);
      dc.lse.download(lse);
      const ErrorStats st = compare_decode_output(out.view(), ref);
      if (!st.ok(1e-2)) return "device " + std::to_string(device) + " shape " + std::to_string(which) + ": " + st.describe();
      const LseStats ls = compare_lse(lse.view(), ref, c.batch_size);
      if (ls.num_mismatch != 0) return "lse: " + ls.describe();
    }
    cudaStreamDestroy(stream);
    int cur = -1;
    cudaGetDevice(&cur);
    if (cur != device) return "kvq changed the thread's current device to " + std::to_string(cur);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST(MultiDevice, TwoThreadsOneDeviceDifferentShapes) {
  std::string r0, r1;
  std::thread t0([&] { r0 = decode_on(0, 0, 20); });
  std::thread t1([&] { r1 = decode_on(0, 1, 20); });
  t0.join();
  t1.join();
  EXPECT_EQ(r0, "");
  EXPECT_EQ(r1, "");
}

TEST(MultiDevice, TwoDevicesConcurrently) {
  const int n = device_count();
  if (n < 2) GTEST_SKIP() << "NOT RUN: needs 2 CUDA devices, this machine has " << n;
  std::string r0, r1;
  std::thread t0([&] { r0 = decode_on(0, 0, 20); });
  std::thread t1([&] { r1 = decode_on(1, 1, 20); });
  t0.join();
  t1.join();
  EXPECT_EQ(r0, "");
  EXPECT_EQ(r1, "");
}

// The tensors live on device 1 while the calling thread's current device is 0: the workspace is
// sized (split count from device 1's SM count) and the kernels run on device 1.
TEST(MultiDevice, TensorsOnAnotherDeviceThanTheCurrentOne) {
  const int n = device_count();
  if (n < 2) GTEST_SKIP() << "NOT RUN: needs 2 CUDA devices, this machine has " << n;
  std::string r;
  std::thread t([&] {
    if (cudaSetDevice(1) != cudaSuccess) {
      r = "cudaSetDevice(1) failed";
      return;
    }
    PagedCase c = make_paged_case(shape(0));
    DeviceCase dc(c);  // allocated on device 1
    if (cudaSetDevice(0) != cudaSuccess) {
      r = "cudaSetDevice(0) failed";
      return;
    }
    const DecodeArgs host = c.decode_args();
    const RefOutput ref = cpu_decode(host, true);
    DecodeArgs a = dc.decode_args(host);
    const size_t ws_bytes = decode_workspace_size(a);
    cudaSetDevice(1);
    DeviceTensor ws = DeviceTensor::bytes(ws_bytes > 0 ? ws_bytes : 1);
    cudaSetDevice(0);
    a.workspace = {ws.data(), ws_bytes};
    try {
      paged_decode(a);
    } catch (const std::exception& e) {
      r = e.what();
      return;
    }
    cudaSetDevice(1);
    cudaDeviceSynchronize();
    HostTensor out = c.out;
    dc.out.download(out);
    const ErrorStats st = compare_decode_output(out.view(), ref);
    if (!st.ok(1e-2)) r = st.describe();
  });
  t.join();
  EXPECT_EQ(r, "");
}

}  // namespace
}  // namespace kvq::test
