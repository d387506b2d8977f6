// src/cuda/hopper/wgmma_prefill.h — host entry of the Hopper (sm_90a) warp-specialized prefill
// (wgmma_prefill_kernel.cuh). It takes the tensor-core prefill's parameters, so it serves the same
// problems (tc_prefill_supports / _views) for head dims padded to one of KVQ_WG_HEAD_DIMS
// (CMakeLists.txt), on sm_90 GPUs.
#pragma once
#include "src/cuda/prefill/tc_prefill_kernel.cuh"

namespace kvq::cuda::hopper {

// Below this many packed query rows (max q_len x GQA group) of the longest sequence, the
// mma.sync kernel stays faster (H200: B16 q512 Hq32/Hkv8 D128 int8, 0.38 ms vs 0.44 ms: few KV
// tiles per CTA do not fill the Hopper kernel's pipeline); at 8192 rows the Hopper kernel wins
// (B8 q2048: 1.45 ms vs 1.66 ms). docs/perf-notes.md, "Hopper prefill".
constexpr int64_t kWgMinPackedRows = 4096;

// Which mainloop the tensor-core prefill runs. On sm_90 GPUs the Hopper kernel serves the padded
// head dims of KVQ_WG_HEAD_DIMS when the longest sequence has >= kWgMinPackedRows packed rows;
// KVQ_PREFILL_KERNEL=wgmma selects it whatever the rows, =mma keeps the mma.sync (sm_80) kernel.
bool wg_prefill_selected(int padded_head_dim, int64_t max_packed_rows);

// Launches over the same params as the tensor-core prefill (num_q_tiles is recomputed for
// 128-row tiles from max_q_len * group); padded_head_dim in KVQ_WG_HEAD_DIMS.
void launch_wg_prefill(tc::TcPrefillParams params, int64_t max_packed_rows, int batch_size, int padded_head_dim,
                       bool q_fp16, bool kv_int8, void* stream);

}  // namespace kvq::cuda::hopper
