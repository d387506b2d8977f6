// src/cuda/hopper/wgmma_prefill.h — host entry of the Hopper (sm_90a) warp-specialized prefill
// (wgmma_prefill_kernel.cuh). It takes the tensor-core prefill's parameters, so it serves the same
// problems (src/core/kernels.h tc_prefill_supports / _views) for head dims padded to one of
// KVQ_WG_HEAD_DIMS (CMakeLists.txt; kernels.h wg_has_head_dim), on sm_90 GPUs. When it runs is the
// planner's choice (src/core/plan.cpp choose_tc_mainloop: PrefillMainloop kWgmma / kWgmmaPingPong);
// launch_tc_prefill (src/cuda/prefill/tc_prefill.cu) calls it for those.
#pragma once
#include <cstdint>

#include "src/cuda/prefill/tc_prefill_kernel.cuh"

namespace kvq::cuda::hopper {

// Launches over the same params as the tensor-core prefill (num_q_tiles is recomputed for
// 128-row tiles from max_q_len * group); padded_head_dim in KVQ_WG_HEAD_DIMS. ping_pong: the
// consumers in FlashAttention-3's ping-pong order (PrefillMainloop::kWgmmaPingPong), else serial.
// qk_int8: compute="int8" (int8 cache, padded head dim 128 or 256): int8 Q·Kᵀ, serial order.
void launch_wg_prefill(tc::TcPrefillParams params, int64_t max_packed_rows, int batch_size, int padded_head_dim,
                       bool q_fp16, bool kv_int8, bool ping_pong, bool qk_int8, void* stream);

}  // namespace kvq::cuda::hopper
