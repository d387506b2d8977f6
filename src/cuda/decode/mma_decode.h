// src/cuda/decode/mma_decode.h — host entry of the tensor-core split-KV decode (mma_decode.cu).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::cuda {

// Most split-KV partials per row (the merge kernel weighs them in shared memory).
constexpr int kMmaDecodeMaxSplits = 256;

// The views one launch reads and writes: decode (cu_q_lens undefined: one query row per sequence,
// q/out [B, Hq, D]) or a multi-token prefill (q/out [T, Hq, D], rows cu_q_lens[b] .. cu_q_lens[b+1]).
struct MmaDecodeLaunch {
  TensorView q, out, lse;
  const PagedKvCache* kv = nullptr;
  TensorView block_tables, kv_lens, cu_q_lens;
  Workspace workspace;
  int64_t total_rows = 0;  // rows of q, out and lse (B for decode, T for prefill)
  int64_t max_q_len = 1;   // query rows per sequence the launch serves (rows past it are not computed)
  const char* func = "paged_decode";
};

// Whether the kernel serves the shape (head dim, dtypes, rows per kv head) and the views (alignment).
bool mma_decode_supports_shape(const detail::AttnProblem& p, int64_t max_q_len);
bool mma_decode_supports_views(const PagedKvCache& kv, const TensorView& q, const detail::AttnProblem& p);
// Split count (0 requested: chosen from the shape and the current device's SM count and occupancy).
int plan_mma_decode_splits(const detail::AttnProblem& p, int64_t max_q_len, int requested);
size_t mma_decode_workspace_bytes(const detail::AttnProblem& p, int64_t total_rows, int num_splits);
void launch_mma_decode(const MmaDecodeLaunch& launch, const detail::AttnProblem& p, int num_splits, void* stream);

}  // namespace kvq::cuda
