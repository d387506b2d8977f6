// src/cuda/hopper/wgmma_prefill_launch.cuh — the instantiation list of the Hopper prefill: per head
// dim, q in {bf16, fp16} x cache in {q's dtype, int8}; int8 caches with per-token V scales under
// fp16 MMAs take the kFactorV variant; bf16 q over int8 runs its MMAs in fp16 (kFp16Math) when
// KVQ_WG_FP16_MATH=1. The head dims are the CMake list KVQ_WG_HEAD_DIMS (KVQ_FOR_EACH_WG_HEAD_DIM in
// the generated kvq_config.h), one generated translation unit each,
// <build>/generated/cuda/wgmma_prefill_hd<D>.cu holding KVQ_WG_PREFILL_INSTANTIATE(D) (from
// wgmma_prefill_hd.cu.in).
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "kvq/error.h"
#include "kvq_config.h"
#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/hopper/wgmma_prefill_kernel.cuh"

namespace kvq::cuda::hopper {

// order: the consumers' order the planner chose (kWgSerial or kWgPingPong; KVQ_WG_MAINLOOP, read
// when planning, src/core/plan.cpp).
template <typename Tr>
void launch_wg_traits(const TcPrefillParams& params, const WgTmaMaps& maps, int batch_size, int order,
                      cudaStream_t stream) {
  // (kWgOverlap alone is not instantiated: it measured no faster than serial, docs/perf-notes.md.)
  auto kernel = wg_prefill_kernel<Tr, kWgSerial>;
  if constexpr (!Tr::kQkInt8) {  // int8 Q·Kᵀ: serial only
    if (order == kWgPingPong) kernel = wg_prefill_kernel<Tr, kWgPingPong>;
  }
  KVQ_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(params.num_q_tiles) * static_cast<unsigned>(params.num_kv_heads),
                  static_cast<unsigned>(batch_size));
  kernel<<<grid, Tr::kNumThreads, Tr::kSmemBytes, stream>>>(params, maps);
  KVQ_LAUNCH_CHECK(stream);
}

template <int kHeadDim>
void launch_wg_hd(const TcPrefillParams& params, const WgTmaMaps& maps, int batch_size, bool q_fp16, bool kv_int8,
                  bool fp16_math, bool two_producers, bool qk_int8, int order, cudaStream_t stream) {
  // qk_int8 (compute="int8" over an int8 cache, head dims 128 and 256): int8 Q·Kᵀ, one producer
  // warpgroup (it converts V only), serial order; fp16 q with per-token V scales factors them out
  // of P (kFactorV) as in the bf16 mode.
  if (qk_int8) {
    if constexpr (kHeadDim >= 128) {
      if (q_fp16 && params.v_scale_mode == kScalePerToken)
        launch_wg_traits<WgPrefillTraits<kHeadDim, __half, true, true, false, 1, true>>(params, maps, batch_size,
                                                                                        kWgSerial, stream);
      else if (q_fp16)
        launch_wg_traits<WgPrefillTraits<kHeadDim, __half, true, false, false, 1, true>>(params, maps, batch_size,
                                                                                         kWgSerial, stream);
      else
        launch_wg_traits<WgPrefillTraits<kHeadDim, __nv_bfloat16, true, false, false, 1, true>>(
            params, maps, batch_size, kWgSerial, stream);
      return;
    }
    throw Error(ErrorKind::kRuntime, "paged_prefill", "plan",
                "internal error: int8 compute on the Hopper prefill at head dim " + std::to_string(kHeadDim) +
                    " (the planner sends head dims 128 and 256 only)");
  }
  // two_producers (default; KVQ_WG_INT8_PRODUCERS=1 turns it off): int8 caches without factored V scales and with the
  // q dtype's MMAs stage and convert with two producer warpgroups; head dims up to 128 (at 512
  // threads a thread starts with 128 registers, fewer than one m64n256 wgmma's accumulators).
  if constexpr (kHeadDim > 128) two_producers = false;
  if (q_fp16) {
    if (kv_int8 && params.v_scale_mode == kScalePerToken)
      launch_wg_traits<WgPrefillTraits<kHeadDim, __half, true, true>>(params, maps, batch_size, order, stream);
    else if (kv_int8 && two_producers) {
      if constexpr (kHeadDim <= 128)
        launch_wg_traits<WgPrefillTraits<kHeadDim, __half, true, false, false, 2>>(params, maps, batch_size, order,
                                                                                   stream);
    } else if (kv_int8)
      launch_wg_traits<WgPrefillTraits<kHeadDim, __half, true>>(params, maps, batch_size, order, stream);
    else
      launch_wg_traits<WgPrefillTraits<kHeadDim, __half, false>>(params, maps, batch_size, order, stream);
  } else {
    // bf16 q over int8: fp16 MMAs (kFp16Math), per-token V scales factored out of P as for fp16 q;
    // fp16_math false (the default; KVQ_WG_FP16_MATH=1 sets it): bf16 MMAs.
    if (kv_int8 && fp16_math && params.v_scale_mode == kScalePerToken)
      launch_wg_traits<WgPrefillTraits<kHeadDim, __nv_bfloat16, true, true, true>>(params, maps, batch_size, order,
                                                                                    stream);
    else if (kv_int8 && fp16_math)
      launch_wg_traits<WgPrefillTraits<kHeadDim, __nv_bfloat16, true, false, true>>(params, maps, batch_size, order,
                                                                                     stream);
    else if (kv_int8 && two_producers) {
      if constexpr (kHeadDim <= 128)
        launch_wg_traits<WgPrefillTraits<kHeadDim, __nv_bfloat16, true, false, false, 2>>(params, maps, batch_size,
                                                                                          order, stream);
    } else if (kv_int8)
      launch_wg_traits<WgPrefillTraits<kHeadDim, __nv_bfloat16, true>>(params, maps, batch_size, order, stream);
    else
      launch_wg_traits<WgPrefillTraits<kHeadDim, __nv_bfloat16, false>>(params, maps, batch_size, order, stream);
  }
}

// The head dims with an instantiation: src/core/kernels.h wg_has_head_dim (KVQ_WG_HEAD_DIMS).
// launch_wg_hd<D> for each head dim of KVQ_FOR_EACH_WG_HEAD_DIM, defined in its wgmma_prefill_hd<D>.cu.
#define KVQ_WG_PREFILL_DECLARE(HD) \
  void launch_wg_hd##HD(const TcPrefillParams&, const WgTmaMaps&, int, bool, bool, bool, bool, bool, int, cudaStream_t);
KVQ_FOR_EACH_WG_HEAD_DIM(KVQ_WG_PREFILL_DECLARE)
#undef KVQ_WG_PREFILL_DECLARE

}  // namespace kvq::cuda::hopper

#define KVQ_WG_PREFILL_INSTANTIATE(HD)                                                                  \
  namespace kvq::cuda::hopper {                                                                         \
  void launch_wg_hd##HD(const TcPrefillParams& params, const WgTmaMaps& maps, int batch_size, bool q_fp16, \
                        bool kv_int8, bool fp16_math, bool two_producers, bool qk_int8, int order,         \
                        cudaStream_t stream) {                                                          \
    launch_wg_hd<HD>(params, maps, batch_size, q_fp16, kv_int8, fp16_math, two_producers, qk_int8, order, \
                     stream);                                                                           \
  }                                                                                                     \
  }
