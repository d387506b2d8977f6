// src/cuda/decode/mma_decode.h — host entry of the tensor-core split-KV decode (mma_decode.cu).
// What it serves, its split count and workspace are src/core/kernels.h (the planner's); the form
// (cp.async, TMA, TMA with int8 Q·Kᵀ) is the planner's choice (DecodeVariant), executed here.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kvq/views.h"
#include "src/core/kernels.h"
#include "src/core/problem.h"

namespace kvq::cuda {

// Most split-KV partials per row (the merge kernel weighs them in shared memory).
constexpr int kMmaDecodeMaxSplits = detail::kMmaDecodeMaxSplits;

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

// Resident CTAs per SM of the instantiation for (p, max_q_len, variant) on the current device
// (the occupancy API; the planner's split count reads it through cuda::device_info).
int mma_decode_ctas_per_sm(const detail::AttnProblem& p, int64_t max_q_len, DecodeVariant variant);
// Runs `variant` (kCpAsync, kTma, kTmaS8: as the planner resolved it; anything the shape or device
// has no instantiation for is an internal error). A TMA form whose tensor maps the driver refuses
// to encode for these views runs as kCpAsync.
void launch_mma_decode(const MmaDecodeLaunch& launch, const detail::AttnProblem& p, int num_splits,
                       DecodeVariant variant, void* stream);

}  // namespace kvq::cuda
