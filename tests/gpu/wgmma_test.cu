// tests/gpu/wgmma_test.cu — the Hopper primitives of src/cuda/common/wgmma.cuh against a host
// product: one warpgroup runs wgmma m64nNk16 over tiles stored in the 128-byte swizzled panel
// layout, A from shared memory (SS) with B K-major (S = Q·Kᵀ's form), and A from registers (RS)
// with B MN-major (O = P·V's form), for N in {64, 128, 256} and bf16 / fp16; and an mbarrier
// ring (a producer warp filling, a consumer warpgroup draining, parities over many phases).
// Random operands (not unit scale); the products are exact in fp32 up to summation order, so the
// bound is tight. Skipped (with a message) on GPUs other than sm_90.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "src/cuda/common/wgmma.cuh"
#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

namespace wg = kvq::cuda::wg;

bool is_sm90() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return major == 9 && minor == 0;
}

template <typename T>
__device__ __forceinline__ uint32_t pack_pair(T lo, T hi) {
  uint16_t a = *reinterpret_cast<uint16_t*>(&lo), b = *reinterpret_cast<uint16_t*>(&hi);
  return static_cast<uint32_t>(a) | (static_cast<uint32_t>(b) << 16);
}

// kK-deep products, one warpgroup:
//   ss: D1[64][kN] = A[64][kK] · B[kN][kK]ᵀ   (A, B K-major tiles in smem)
//   rs: D2[64][kN] = A[64][kK] · V[kK][kN]    (A from registers, V MN-major tile in smem)
template <int kN, int kK, typename T>
__global__ void wgmma_tile_kernel(const T* a, const T* b, const T* v, float* d1, float* d2) {
#if KVQ_SM90_ENABLED
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint8_t* s_a = smem;                       // 64 x kK
  uint8_t* s_b = s_a + 64 * kK * 2;          // kN x kK
  uint8_t* s_v = s_b + kN * kK * 2;          // kK x kN
  const int tid = threadIdx.x;
  for (int i = tid; i < 64 * kK / 8; i += 128) {
    const int r = i / (kK / 8), c = (i % (kK / 8)) * 8;
    *reinterpret_cast<uint4*>(s_a + wg::tile_offset(64, r, c)) = *reinterpret_cast<const uint4*>(a + r * kK + c);
  }
  for (int i = tid; i < kN * kK / 8; i += 128) {
    const int r = i / (kK / 8), c = (i % (kK / 8)) * 8;
    *reinterpret_cast<uint4*>(s_b + wg::tile_offset(kN, r, c)) = *reinterpret_cast<const uint4*>(b + r * kK + c);
  }
  for (int i = tid; i < kK * kN / 8; i += 128) {
    const int r = i / (kN / 8), c = (i % (kN / 8)) * 8;
    *reinterpret_cast<uint4*>(s_v + wg::tile_offset(kK, r, c)) = *reinterpret_cast<const uint4*>(v + r * kN + c);
  }
  wg::fence_async_smem();
  __syncthreads();

  float acc[kN / 2];
  const uint32_t a_addr = static_cast<uint32_t>(__cvta_generic_to_shared(s_a));
  const uint32_t b_addr = static_cast<uint32_t>(__cvta_generic_to_shared(s_b));
  const uint32_t v_addr = static_cast<uint32_t>(__cvta_generic_to_shared(s_v));
  wg::fence();
#pragma unroll
  for (int s = 0; s < kK / 16; ++s) {
    const uint32_t ka = (s / 4) * 64 * 128 + (s % 4) * 32;
    const uint32_t kb = (s / 4) * kN * 128 + (s % 4) * 32;
    wg::Mma<kN, T>::template ss<0>(acc, wg::desc_k_major(a_addr + ka), wg::desc_k_major(b_addr + kb), s > 0);
  }
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(acc);
  const int warp = tid / 32, lane = tid % 32;
  const int r0 = warp * 16 + lane / 4;
  for (int j = 0; j < kN / 8; ++j) {
    const int c = j * 8 + 2 * (lane % 4);
    d1[r0 * kN + c] = acc[4 * j];
    d1[r0 * kN + c + 1] = acc[4 * j + 1];
    d1[(r0 + 8) * kN + c] = acc[4 * j + 2];
    d1[(r0 + 8) * kN + c + 1] = acc[4 * j + 3];
  }

  // RS: A fragments straight from global (m16n8k16 A layout of this warp's 16 rows).
  wg::fence();
#pragma unroll
  for (int s = 0; s < kK / 16; ++s) {
    const int k0 = s * 16 + 2 * (lane % 4);
    uint32_t fa[4];
    fa[0] = pack_pair(a[r0 * kK + k0], a[r0 * kK + k0 + 1]);
    fa[1] = pack_pair(a[(r0 + 8) * kK + k0], a[(r0 + 8) * kK + k0 + 1]);
    fa[2] = pack_pair(a[r0 * kK + k0 + 8], a[r0 * kK + k0 + 9]);
    fa[3] = pack_pair(a[(r0 + 8) * kK + k0 + 8], a[(r0 + 8) * kK + k0 + 9]);
    wg::fence();
    wg::Mma<kN, T>::template rs<1>(acc, fa, wg::desc_mn_major(v_addr + s * 16 * 128, kK * 128), s > 0);
  }
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(acc);
  for (int j = 0; j < kN / 8; ++j) {
    const int c = j * 8 + 2 * (lane % 4);
    d2[r0 * kN + c] = acc[4 * j];
    d2[r0 * kN + c + 1] = acc[4 * j + 1];
    d2[(r0 + 8) * kN + c] = acc[4 * j + 2];
    d2[(r0 + 8) * kN + c + 1] = acc[4 * j + 3];
  }
#endif
}

template <typename T>
T to_t(float f);
template <>
__nv_bfloat16 to_t<__nv_bfloat16>(float f) { return __float2bfloat16(f); }
template <>
__half to_t<__half>(float f) { return __float2half(f); }
float from_t(__nv_bfloat16 x) { return __bfloat162float(x); }
float from_t(__half x) { return __half2float(x); }

template <int kN, int kK, typename T>
void run_tile_case() {
  if (!is_sm90()) GTEST_SKIP() << "wgmma needs an sm_90 GPU";
  Rng rng(kN * 7 + kK + (sizeof(T) == 2 && std::is_same_v<T, __half> ? 1 : 0));
  std::vector<T> a(64 * kK), b(kN * kK), v(kK * kN);
  auto fill = [&](std::vector<T>& x, float scale) {
    for (auto& e : x) e = to_t<T>(static_cast<float>(rng.uniform(-1.0, 1.0)) * scale);
  };
  fill(a, 3.f);
  fill(b, 0.5f);
  fill(v, 2.f);
  T *da, *db, *dv;
  float *d1, *d2;
  KVQ_TEST_CUDA(cudaMalloc(&da, a.size() * 2));
  KVQ_TEST_CUDA(cudaMalloc(&db, b.size() * 2));
  KVQ_TEST_CUDA(cudaMalloc(&dv, v.size() * 2));
  KVQ_TEST_CUDA(cudaMalloc(&d1, 64 * kN * 4));
  KVQ_TEST_CUDA(cudaMalloc(&d2, 64 * kN * 4));
  KVQ_TEST_CUDA(cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  KVQ_TEST_CUDA(cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  KVQ_TEST_CUDA(cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice));
  KVQ_TEST_CUDA(cudaMemset(d1, 0xff, 64 * kN * 4));  // NaN poison
  KVQ_TEST_CUDA(cudaMemset(d2, 0xff, 64 * kN * 4));
  const int smem = 1024 + (64 * kK + kN * kK + kK * kN) * 2;
  auto kernel = wgmma_tile_kernel<kN, kK, T>;
  KVQ_TEST_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<1, 128, smem>>>(da, db, dv, d1, d2);
  KVQ_TEST_CUDA(cudaGetLastError());
  KVQ_TEST_CUDA(cudaDeviceSynchronize());
  std::vector<float> h1(64 * kN), h2(64 * kN);
  KVQ_TEST_CUDA(cudaMemcpy(h1.data(), d1, h1.size() * 4, cudaMemcpyDeviceToHost));
  KVQ_TEST_CUDA(cudaMemcpy(h2.data(), d2, h2.size() * 4, cudaMemcpyDeviceToHost));
  double worst1 = 0, worst2 = 0;
  for (int m = 0; m < 64; ++m) {
    for (int n = 0; n < kN; ++n) {
      double r1 = 0, r2 = 0, mag1 = 0, mag2 = 0;
      for (int k = 0; k < kK; ++k) {
        const double x = from_t(a[m * kK + k]);
        r1 += x * from_t(b[n * kK + k]);
        r2 += x * from_t(v[k * kN + n]);
        mag1 += std::fabs(x * from_t(b[n * kK + k]));
        mag2 += std::fabs(x * from_t(v[k * kN + n]));
      }
      const double e1 = std::fabs(h1[m * kN + n] - r1) / (mag1 + 1e-30);
      const double e2 = std::fabs(h2[m * kN + n] - r2) / (mag2 + 1e-30);
      worst1 = std::isnan(h1[m * kN + n]) ? 1e30 : std::max(worst1, e1);
      worst2 = std::isnan(h2[m * kN + n]) ? 1e30 : std::max(worst2, e2);
    }
  }
  EXPECT_LT(worst1, 1e-5) << "SS K-major product, N=" << kN << " K=" << kK;
  EXPECT_LT(worst2, 1e-5) << "RS MN-major product, N=" << kN << " K=" << kK;
  cudaFree(da);
  cudaFree(db);
  cudaFree(dv);
  cudaFree(d1);
  cudaFree(d2);
}

TEST(SmallWgmma, TileN64Bf16) { run_tile_case<64, 128, __nv_bfloat16>(); }
TEST(SmallWgmma, TileN128Bf16) { run_tile_case<128, 128, __nv_bfloat16>(); }
TEST(SmallWgmma, TileN256Bf16) { run_tile_case<256, 64, __nv_bfloat16>(); }
TEST(SmallWgmma, TileN128Fp16) { run_tile_case<128, 64, __half>(); }
TEST(SmallWgmma, TileN64Fp16K256) { run_tile_case<64, 256, __half>(); }

// mbarrier ring: warp 4 (producer) writes stage s of a 2-stage ring then arrives on full[s];
// warpgroup 0 (consumers) waits full[s], sums the stage, arrives on empty[s]. 200 rounds cross
// many phases; any parity mistake deadlocks (bounded by the test's watchdog: a spin cap) or
// reads a stale stage (wrong sum).
__global__ void mbarrier_ring_kernel(int rounds, long long* sums, int* timed_out) {
#if KVQ_SM90_ENABLED
  __shared__ alignas(8) uint64_t full[2], empty[2];
  __shared__ int data[2][128];
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < 2; ++s) {
      wg::mbar_init(&full[s], 32);
      wg::mbar_init(&empty[s], 128);
    }
    wg::mbar_init_fence();
  }
  __syncthreads();
  auto bounded_wait = [&](uint64_t* bar, uint32_t parity) {
    for (long long spin = 0; !::cuda::ptx::mbarrier_try_wait_parity(bar, parity); ++spin) {
      if (spin > (1ll << 24)) {
        atomicExch(timed_out, 1);
        return false;
      }
    }
    return true;
  };
  if (tid >= 128) {  // producer warp
    for (int it = 0; it < rounds; ++it) {
      const int s = it % 2;
      if (!bounded_wait(&empty[s], ((it / 2) & 1) ^ 1)) return;
      for (int i = tid - 128; i < 128; i += 32) data[s][i] = it * 1000 + i;
      wg::mbar_arrive(&full[s]);
    }
  } else {
    long long sum = 0;
    for (int it = 0; it < rounds; ++it) {
      const int s = it % 2;
      if (!bounded_wait(&full[s], (it / 2) & 1)) return;
      sum += data[s][tid];
      wg::mbar_arrive(&empty[s]);
    }
    sums[tid] = sum;
  }
#endif
}

TEST(SmallWgmma, MbarrierRingParities) {
  if (!is_sm90()) GTEST_SKIP() << "the mbarrier ring test uses sm_90 mbarrier waits";
  const int rounds = 200;
  long long* d_sums;
  int* d_to;
  KVQ_TEST_CUDA(cudaMalloc(&d_sums, 128 * 8));
  KVQ_TEST_CUDA(cudaMalloc(&d_to, 4));
  KVQ_TEST_CUDA(cudaMemset(d_sums, 0, 128 * 8));
  KVQ_TEST_CUDA(cudaMemset(d_to, 0, 4));
  mbarrier_ring_kernel<<<1, 160>>>(rounds, d_sums, d_to);
  KVQ_TEST_CUDA(cudaGetLastError());
  KVQ_TEST_CUDA(cudaDeviceSynchronize());
  std::vector<long long> sums(128);
  int to = 0;
  KVQ_TEST_CUDA(cudaMemcpy(sums.data(), d_sums, 128 * 8, cudaMemcpyDeviceToHost));
  KVQ_TEST_CUDA(cudaMemcpy(&to, d_to, 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(to, 0) << "an mbarrier wait did not complete";
  for (int i = 0; i < 128; ++i) {
    long long want = 0;
    for (int it = 0; it < rounds; ++it) want += it * 1000 + i;
    ASSERT_EQ(sums[i], want) << "consumer " << i;
  }
  cudaFree(d_sums);
  cudaFree(d_to);
}

}  // namespace
}  // namespace kvq::test
