// src/cuda/prefill/tc_prefill.h — the tensor-core paged prefill (FlashAttention-2 class, mma.sync
// m16n8k16 + ldmatrix + cp.async), host-side entry. Serves bf16/fp16 caches and, as the `fused`
// path, int8 caches read directly (int8 tile -> bf16 fragments in registers; no bf16 copy).
// The `dequant` path calls it too, with a compact bf16 cache and a remapped block table. What it
// serves is src/core/kernels.h (tc_prefill_supports / _views); its mainloop (mma.sync or the
// Hopper kernel) is the planner's choice (PrefillMainloop), executed here.
#pragma once
#include <cstdint>

#include "kvq/views.h"
#include "src/core/kernels.h"
#include "src/core/problem.h"

namespace kvq::cuda {

// Runs the kernel on `stream` (a cudaStream_t) with `mainloop` (kMmaSync, kWgmma,
// kWgmmaPingPong, as the planner resolved it: a Hopper form off sm_90, for a padded head dim
// outside KVQ_WG_HEAD_DIMS or over K/V views of different strides is an internal error) over
// max_q_len query rows per sequence (the plan's longest chunk: the tiles per sequence).
// kv/block_tables may differ from args.kv / args.block_tables (the dequant path passes its
// workspace cache and remapped table); q, out, lse, cu_q_lens and kv_lens come from args. p
// describes kv (its kv_dtype, scale modes, page size and num_blocks are those of the cache passed
// in). Throws kNotImplemented where tc_prefill_supports_views is false.
void launch_tc_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PagedKvCache& kv,
                       const TensorView& block_tables, int64_t max_q_len, PrefillMainloop mainloop, void* stream);

}  // namespace kvq::cuda
