// src/cuda/prefill/tc_prefill_launch.cuh — host launcher of the tensor-core prefill and the one
// list of its instantiations.
//
// Variants per head dim: DTypeQ in {bf16, fp16} x cache in {same dtype as q, int8}, plus fp16 q over
// an int8 cache with per-token V scales (kFactorV: V scales factored out of P, 5 kernels).
// Causal, windows, scale modes, layouts, GQA layout and lse are runtime flags. Each head dim D of
// the CMake list KVQ_TC_HEAD_DIMS (KVQ_FOR_EACH_TC_HEAD_DIM in the generated kvq_config.h) has one
// generated translation unit <build>/generated/cuda/tc_prefill_hd<D>.cu holding
// KVQ_TC_PREFILL_INSTANTIATE(D) (from tc_prefill_hd.cu.in); a head dim left out of the CMake list
// KVQ_HEAD_DIMS (KVQ_FAST_HEAD_DIMS) compiles to a stub that reports it was not built.
#pragma once
#include <cuda_runtime.h>

#include "kvq_config.h"
#include "src/core/kernels.h"
#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/prefill/tc_prefill_kernel.cuh"

namespace kvq::cuda::tc {

// The head-dim lists and their padding (KVQ_TC_HEAD_DIMS, KVQ_HEAD_DIMS): src/core/kernels.h,
// shared with the planner.
using ::kvq::detail::tc_head_dim_built;
using ::kvq::detail::tc_padded_head_dim;

template <typename Tr>
void launch_tc_prefill_traits(const TcPrefillParams& params, int batch_size, cudaStream_t stream) {
  auto kernel = tc_prefill_kernel<Tr>;
  KVQ_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(params.num_q_tiles) * static_cast<unsigned>(params.num_kv_heads),
                  static_cast<unsigned>(batch_size));
  kernel<<<grid, Tr::kNumThreads, Tr::kSmemBytes, stream>>>(params);
  KVQ_LAUNCH_CHECK(stream);
}

// Specialized for each head dim of KVQ_FOR_EACH_TC_HEAD_DIM, defined in its tc_prefill_hd<D>.cu.
template <int kHeadDim>
void launch_tc_prefill_hd(const TcPrefillParams& params, int batch_size, bool q_fp16, bool kv_int8,
                          cudaStream_t stream);
#define KVQ_TC_PREFILL_DECLARE(HD) \
  template <>                      \
  void launch_tc_prefill_hd<HD>(const TcPrefillParams&, int, bool, bool, cudaStream_t);
KVQ_FOR_EACH_TC_HEAD_DIM(KVQ_TC_PREFILL_DECLARE)
#undef KVQ_TC_PREFILL_DECLARE

}  // namespace kvq::cuda::tc

#define KVQ_TC_PREFILL_INSTANTIATE(HD)                                                                   \
  namespace kvq::cuda::tc {                                                                              \
  template <>                                                                                            \
  void launch_tc_prefill_hd<HD>(const TcPrefillParams& params, int batch_size, bool q_fp16, bool kv_int8, \
                                cudaStream_t stream) {                                                   \
    if constexpr (tc_head_dim_built(HD)) {                                                               \
      if (q_fp16) {                                                                                      \
        if (kv_int8 && params.v_scale_mode == kScalePerToken)                                            \
          launch_tc_prefill_traits<TcPrefillTraits<HD, __half, true, true>>(params, batch_size, stream);  \
        else if (kv_int8) launch_tc_prefill_traits<TcPrefillTraits<HD, __half, true>>(params, batch_size, stream); \
        else launch_tc_prefill_traits<TcPrefillTraits<HD, __half, false>>(params, batch_size, stream);   \
      } else {                                                                                           \
        if (kv_int8) launch_tc_prefill_traits<TcPrefillTraits<HD, __nv_bfloat16, true>>(params, batch_size, stream); \
        else launch_tc_prefill_traits<TcPrefillTraits<HD, __nv_bfloat16, false>>(params, batch_size, stream); \
      }                                                                                                  \
    } else {                                                                                             \
      throw ::kvq::Error(::kvq::ErrorKind::kNotImplemented, "paged_prefill", "head_dim",                 \
                         "not implemented: head dim " #HD " is not in this build's KVQ_HEAD_DIMS");      \
    }                                                                                                    \
  }                                                                                                      \
  }
