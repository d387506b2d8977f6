// src/cuda/prefill/tc_prefill.h — the tensor-core paged prefill (FlashAttention-2 class, mma.sync
// m16n8k16 + ldmatrix + cp.async), host-side entry. Serves bf16/fp16 caches and, as the `fused`
// path, int8 caches read directly (int8 tile -> bf16 fragments in registers; no bf16 copy).
// The `dequant` path calls it too, with a compact bf16 cache and a remapped block table.
#pragma once
#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::cuda {

// Whether the tensor-core kernel serves this problem (head dim instantiated or padded up,
// dtypes, scale modes, compute mode, no mask). When false the backend takes the generic path.
bool tc_prefill_supports(const detail::AttnProblem& p);

// tc_prefill_supports plus what only the views tell: 16-byte aligned base pointers and outer
// strides of q, out, k_cache, v_cache (cp.async moves 16 bytes), block_tables' last dim contiguous.
// launch_tc_prefill throws kNotImplemented when this is false: call it before choosing the path.
bool tc_prefill_supports_views(const PrefillArgs& args, const detail::AttnProblem& p, const PagedKvCache& kv,
                               const TensorView& block_tables);

// Runs the kernel on `stream` (a cudaStream_t). kv/block_tables may differ from args.kv /
// args.block_tables (the dequant path passes its workspace cache and remapped table); q, out,
// lse, cu_q_lens and kv_lens come from args. p describes kv (its kv_dtype, scale modes, page
// size and num_blocks are those of the cache passed in).
void launch_tc_prefill(const PrefillArgs& args, const detail::AttnProblem& p,
                       const PagedKvCache& kv, const TensorView& block_tables, void* stream);

}  // namespace kvq::cuda
