// tests/gpu/primitives_test.cu — the src/cuda/common primitives, GPU function against a host
// definition: UintFastDiv (device divmod vs '/' and '%' for many divisors and dividends, the
// extremes included) and the int8 -> bf16 / fp16 / fp32 conversions, exhaustive over all 256 byte
// values in every lane position (int8x4_to_float4_magic / _bf16x4 / _half4).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "src/cuda/common/convert.cuh"
#include "src/cuda/common/fastdiv.cuh"
#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

__global__ void fastdiv_kernel(kvq::cuda::UintFastDiv f, const uint32_t* n, uint32_t* q, uint32_t* r, int count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) f.divmod(n[i], q[i], r[i]);
}

TEST(SmallPrimitives, FastDivMatchesDivision) {
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 1100; ++d) divisors.push_back(d);
  for (uint32_t d : {2047u, 2048u, 4097u, 65535u, 65536u, 1000003u, 0x7fffffffu, 0x80000000u, 0x80000001u, 0xffffffffu})
    divisors.push_back(d);
  std::vector<uint32_t> n;
  Rng rng(1);
  for (uint32_t v : {0u, 1u, 2u, 15u, 16u, 17u, 1023u, 1024u, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu}) n.push_back(v);
  while (n.size() < 4096) n.push_back(static_cast<uint32_t>(rng.next_u64()));
  const int count = static_cast<int>(n.size());
  uint32_t *dn, *dq, *dr;
  KVQ_TEST_CUDA(cudaMalloc(&dn, count * 4));
  KVQ_TEST_CUDA(cudaMalloc(&dq, count * 4));
  KVQ_TEST_CUDA(cudaMalloc(&dr, count * 4));
  std::vector<uint32_t> q(count), r(count);
  int64_t bad = 0;
  for (uint32_t d : divisors) {
    std::vector<uint32_t> nn = n;
    for (uint32_t k = 0; k < 8; ++k) {  // multiples of d and their neighbours
      const uint64_t m = uint64_t{d} * (k * 977 + 1);
      if (m < 0xffffffffull) {
        nn[k * 3] = static_cast<uint32_t>(m);
        nn[k * 3 + 1] = static_cast<uint32_t>(m - 1);
        nn[k * 3 + 2] = static_cast<uint32_t>(m + 1);
      }
    }
    const kvq::cuda::UintFastDiv f(d);
    KVQ_TEST_CUDA(cudaMemcpy(dn, nn.data(), count * 4, cudaMemcpyHostToDevice));
    fastdiv_kernel<<<(count + 255) / 256, 256>>>(f, dn, dq, dr, count);
    KVQ_TEST_CUDA(cudaGetLastError());
    KVQ_TEST_CUDA(cudaMemcpy(q.data(), dq, count * 4, cudaMemcpyDeviceToHost));
    KVQ_TEST_CUDA(cudaMemcpy(r.data(), dr, count * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < count; ++i) {
      uint32_t hq, hr;
      f.divmod(nn[i], hq, hr);  // the host path of the same struct
      if (q[i] != nn[i] / d || r[i] != nn[i] % d || hq != nn[i] / d || hr != nn[i] % d) {
        if (bad++ < 5) ADD_FAILURE() << nn[i] << " / " << d << ": got " << q[i] << " r " << r[i];
      }
    }
  }
  EXPECT_EQ(bad, 0);
  cudaFree(dn);
  cudaFree(dq);
  cudaFree(dr);
}

__global__ void convert_kernel(const uint32_t* words, float* bf, float* hf, float* ff, int count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  __nv_bfloat162 blo, bhi;
  kvq::cuda::int8x4_to_bf16x4(words[i], blo, bhi);
  bf[4 * i + 0] = __low2float(blo);
  bf[4 * i + 1] = __high2float(blo);
  bf[4 * i + 2] = __low2float(bhi);
  bf[4 * i + 3] = __high2float(bhi);
  __half2 hlo, hhi;
  kvq::cuda::int8x4_to_half4(words[i], hlo, hhi);
  hf[4 * i + 0] = __low2float(hlo);
  hf[4 * i + 1] = __high2float(hlo);
  hf[4 * i + 2] = __low2float(hhi);
  hf[4 * i + 3] = __high2float(hhi);
  float f[4];
  kvq::cuda::int8x4_to_float4_magic(words[i], f);
  for (int k = 0; k < 4; ++k) ff[4 * i + k] = f[k];
}

TEST(SmallPrimitives, Int8x4ConversionsExact) {
  // Word w(b, s): byte b in lane s, distinct filler bytes in the others.
  std::vector<uint32_t> words;
  for (int s = 0; s < 4; ++s)
    for (int b = 0; b < 256; ++b) {
      uint32_t w = 0;
      for (int k = 0; k < 4; ++k) {
        const uint32_t byte = k == s ? static_cast<uint32_t>(b) : static_cast<uint32_t>((b * 37 + k * 101) & 0xff);
        w |= byte << (8 * k);
      }
      words.push_back(w);
    }
  const int count = static_cast<int>(words.size());
  uint32_t* dw;
  float *dbf, *dhf, *dff;
  KVQ_TEST_CUDA(cudaMalloc(&dw, count * 4));
  KVQ_TEST_CUDA(cudaMalloc(&dbf, count * 16));
  KVQ_TEST_CUDA(cudaMalloc(&dhf, count * 16));
  KVQ_TEST_CUDA(cudaMalloc(&dff, count * 16));
  KVQ_TEST_CUDA(cudaMemcpy(dw, words.data(), count * 4, cudaMemcpyHostToDevice));
  convert_kernel<<<(count + 127) / 128, 128>>>(dw, dbf, dhf, dff, count);
  KVQ_TEST_CUDA(cudaGetLastError());
  std::vector<float> bf(4 * count), hf(4 * count), ff(4 * count);
  KVQ_TEST_CUDA(cudaMemcpy(bf.data(), dbf, count * 16, cudaMemcpyDeviceToHost));
  KVQ_TEST_CUDA(cudaMemcpy(hf.data(), dhf, count * 16, cudaMemcpyDeviceToHost));
  KVQ_TEST_CUDA(cudaMemcpy(ff.data(), dff, count * 16, cudaMemcpyDeviceToHost));
  int64_t bad = 0;
  for (int i = 0; i < count; ++i)
    for (int k = 0; k < 4; ++k) {
      const float want = static_cast<float>(static_cast<int8_t>((words[i] >> (8 * k)) & 0xff));
      if (bf[4 * i + k] != want || hf[4 * i + k] != want || ff[4 * i + k] != want) {
        if (bad++ < 5)
          ADD_FAILURE() << "word " << std::hex << words[i] << std::dec << " lane " << k << ": want " << want << " bf16 "
                        << bf[4 * i + k] << " fp16 " << hf[4 * i + k] << " fp32 " << ff[4 * i + k];
      }
    }
  EXPECT_EQ(bad, 0);
  cudaFree(dw);
  cudaFree(dbf);
  cudaFree(dhf);
  cudaFree(dff);
}

}  // namespace
}  // namespace kvq::test
