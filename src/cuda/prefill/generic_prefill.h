// src/cuda/prefill/generic_prefill.h — host entry of the generic (CUDA-core) paged prefill kernel,
// the path that serves every shape: any head_dim 1..256, page size, mask, scale mode and dtype.
#pragma once
#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::cuda {

// Same contract as launch_tc_prefill (tc_prefill.h): q, out, lse, cu_q_lens, kv_lens and mask come
// from args; kv/block_tables are the cache to read; p describes that cache.
void launch_generic_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PagedKvCache& kv,
                            const TensorView& block_tables, void* stream);

}  // namespace kvq::cuda
