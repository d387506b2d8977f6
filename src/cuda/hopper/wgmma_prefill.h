// src/cuda/hopper/wgmma_prefill.h — host entry of the Hopper (sm_90a) warp-specialized prefill
// (wgmma_prefill_kernel.cuh). It takes the tensor-core prefill's parameters, so it serves the same
// problems (tc_prefill_supports / _views) for head dims padded to 64, 128 or 256, on sm_90 GPUs.
#pragma once
#include "src/cuda/prefill/tc_prefill_kernel.cuh"

namespace kvq::cuda::hopper {

// Which mainloop the tensor-core prefill runs: KVQ_PREFILL_KERNEL=wgmma selects the Hopper kernel
// on sm_90 GPUs for the head dims it serves; otherwise (unset, or =mma) the mma.sync (sm_80)
// kernel runs, which stays the default until the Hopper kernel beats it (docs/perf-notes.md).
bool wg_prefill_selected(int padded_head_dim);

// Launches over the same params as the tensor-core prefill (num_q_tiles is recomputed for
// 128-row tiles from max_q_len * group); padded_head_dim in {64, 128, 256}.
void launch_wg_prefill(tc::TcPrefillParams params, int64_t max_packed_rows, int batch_size, int padded_head_dim,
                       bool q_fp16, bool kv_int8, void* stream);

}  // namespace kvq::cuda::hopper
