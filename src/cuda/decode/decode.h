// src/cuda/decode/decode.h — host entry of the split-KV paged decode (decode_kernel.cuh).
#pragma once
#include <cstddef>

#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::cuda {

// num_splits the planner picks for p when the caller asked for `requested` (0: choose). Depends only
// on shapes and the device's SM count (no device data), so run() and workspace sizing agree.
int plan_decode_splits(const detail::AttnProblem& p, int requested);
size_t decode_workspace_bytes(const detail::AttnProblem& p, int num_splits);
void launch_decode(const DecodeArgs& args, const detail::AttnProblem& p, int num_splits, void* stream);

}  // namespace kvq::cuda
