// tests/gpu/main.cpp — entry of kvq_gpu_tests. Without a usable CUDA device it prints a loud
// SKIPPED line and exits 77, which CTest (SKIP_RETURN_CODE 77) reports as skipped.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--gtest_list_tests") == 0) {
      testing::InitGoogleTest(&argc, argv);
      return RUN_ALL_TESTS();
    }
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    std::fprintf(stderr, "\n*** SKIPPED: no CUDA device (%s) — kvq_gpu_tests did not run ***\n\n",
                 err != cudaSuccess ? cudaGetErrorName(err) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("kvq_gpu_tests on %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
