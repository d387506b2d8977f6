// src/cuda/common/wgmma.cuh — the few Hopper (sm_90a) primitives the warp-specialized kernels use:
// warpgroup MMA (wgmma.mma_async) and its shared-memory matrix descriptors, the 128-byte swizzled
// tile layout those descriptors name, mbarrier waits (through libcu++'s cuda::ptx), named barriers
// and register reallocation between warpgroups (setmaxnreg).
//
// Everything here is device code for sm_90a. A translation unit also built for older GPUs must
// only call it under `#if KVQ_SM90_ENABLED` (defined below); the host decides which kernel runs.
//
// ---- The tile layout (one layout for every operand in shared memory) ----
// A tile of R rows x C 16-bit columns (C a multiple of 64) is stored as C/64 panels, one after the
// other; panel p holds columns [64p, 64p + 64) of every row as R rows of 128 bytes. Inside a panel,
// the 16-byte chunk c (8 elements) of row r sits at chunk position c ^ (r % 8): the 128-byte
// swizzle of wgmma, which makes row-wise stores and the tensor cores' reads conflict-free. Panels
// start at 1024-byte boundaries (R is a multiple of 8), so the swizzle phase is the row's.
// - As an operand whose reduction dim runs along the row ("K-major": Q, and K for S = Q·Kᵀ), a
//   k16 step at columns [16s, 16s + 16) starts at panel s / 4, byte (s % 4) * 32; rows step by
//   1024 bytes per 8 rows (the descriptor's stride byte offset).
// - As B with the reduction dim along the rows ("MN-major": V for O = P·V, keys are rows), a k16
//   step at rows [16s, 16s + 16) starts at byte 16s * 128 of the first panel; the descriptor's
//   leading byte offset is the panel size (next 64 columns), its stride byte offset 1024 (next 8
//   rows). The transpose bit of the instruction says which.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KVQ_SM90_ENABLED 1
#else
#define KVQ_SM90_ENABLED 0
#endif

#if KVQ_SM90_ENABLED
#include <cuda/ptx>
#endif

namespace kvq::cuda::wg {

// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` inside one 128-byte-swizzled panel.
__host__ __device__ constexpr uint32_t swizzle128(uint32_t row, uint32_t chunk) {
  return row * 128u + ((chunk ^ (row & 7u)) << 4);
}

// Byte offset of element column `col` (16-bit elements, a multiple of 8) of `row` in a tile of
// `rows` rows stored as the panels above.
__host__ __device__ constexpr uint32_t tile_offset(uint32_t rows, uint32_t row, uint32_t col) {
  return (col / 64u) * rows * 128u + swizzle128(row, (col % 64u) / 8u);
}

// Shared-memory matrix descriptor (PTX "matrix-descriptor-encode"): start address, leading and
// stride byte offsets (all >> 4), base offset 0 (panels are 1024-aligned), swizzle mode 1 = 128 B.
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_byte_addr, uint32_t lead_bytes, uint32_t stride_bytes) {
  uint64_t d = (smem_byte_addr & 0x3FFFFu) >> 4;
  d |= static_cast<uint64_t>((lead_bytes >> 4) & 0x3FFFu) << 16;
  d |= static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFFu) << 32;
  d |= uint64_t{1} << 62;
  return d;
}
// K-major operand (A, or B = Kᵀ): the leading byte offset is unused with swizzling (1 by convention).
__device__ __forceinline__ uint64_t desc_k_major(uint32_t addr) { return make_desc(addr, 16u, 1024u); }
// MN-major B (keys on rows, output columns along the row) of a tile whose panels are `panel_bytes` apart.
__device__ __forceinline__ uint64_t desc_mn_major(uint32_t addr, uint32_t panel_bytes) {
  return make_desc(addr, panel_bytes, 1024u);
}

// wgmma m64nNk16, fp32 accumulators d[N/2] in the mma.sync m16n8 fragment order per warp (warp w
// of the warpgroup holds rows 16w..16w+15; d[4j + e] is n8 block j: e = 0, 1 row lane/4, columns
// 8j + 2 (lane % 4) + {0, 1}; e = 2, 3 the same for row lane/4 + 8). scale_d = 0 overwrites d.
// RS takes A as the mma.sync m16n8k16 A fragment of the warp's 16 rows.
template <int N, typename T>
struct Mma;
// wgmma m64nNk32 s8 x s8 -> s32, both operands K-major in shared memory (an int8 operand's panel
// is 128 int8 columns; a k32 step is the same 32 bytes a 16-bit k16 step is); d in the same
// fragment order as Mma's.
template <int N>
struct MmaS8;

#if KVQ_SM90_ENABLED
#include "src/cuda/common/wgmma_ops.inc"

// Orders this thread's register writes before the warpgroup's next wgmma reads them.
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most kPending committed wgmma groups of this warpgroup are still running.
template <int kPending>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across the async MMA.
template <int N>
__device__ __forceinline__ void fence_operand(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

template <int N>
__device__ __forceinline__ void fence_operand(uint32_t (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

// Register reallocation between warpgroups (all threads of the warpgroup execute it).
template <int kRegs>
__device__ __forceinline__ void regs_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }
template <int kRegs>
__device__ __forceinline__ void regs_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }

// Named barrier `id` (1..15; 0 is __syncthreads) over `count` threads (a multiple of 32).
__device__ __forceinline__ void named_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
// Arrives on named barrier `id` without waiting (the producer side of a named_sync over `count`).
__device__ __forceinline__ void named_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
// Named barrier that also ORs a predicate over the participating threads.
__device__ __forceinline__ bool named_sync_or(int id, int count, bool pred) {
  uint32_t out;
  asm volatile(
      "{\n.reg .pred p, q;\nsetp.ne.u32 q, %1, 0;\nbar.red.or.pred p, %2, %3, q;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(out)
      : "r"(pred ? 1u : 0u), "r"(id), "r"(count)
      : "memory");
  return out != 0;
}

// mbarrier helpers (libcu++ cuda::ptx underneath).
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) { ::cuda::ptx::mbarrier_init(bar, count); }
__device__ __forceinline__ void mbar_init_fence() {
  ::cuda::ptx::fence_mbarrier_init(::cuda::ptx::sem_release, ::cuda::ptx::scope_cluster);
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) { (void)::cuda::ptx::mbarrier_arrive(bar); }
// Ends the barrier object's life (before its memory is reused or the CTA exits with it in use by a
// tool's tracking). libcu++ has no wrapper for it.
__device__ __forceinline__ void mbar_inval(uint64_t* bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar)))
               : "memory");
}
// Spins until the phase with parity `parity` of `bar` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  while (!::cuda::ptx::mbarrier_try_wait_parity(bar, parity)) {
  }
}
// The mbarrier receives one arrival when all of this thread's prior cp.async copies have landed
// (counted among the barrier's expected arrivals: "noinc").
__device__ __forceinline__ void cp_async_arrive_noinc(uint64_t* bar) { ::cuda::ptx::cp_async_mbarrier_arrive_noinc(bar); }
// Generic-proxy shared-memory writes (st.shared) made visible to the async proxy (wgmma reads).
__device__ __forceinline__ void fence_async_smem() {
  ::cuda::ptx::fence_proxy_async(::cuda::ptx::space_shared);
}
#endif  // KVQ_SM90_ENABLED

}  // namespace kvq::cuda::wg
