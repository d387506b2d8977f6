// src/cuda/decode/decode.h — host entry of the split-KV paged decode (decode_kernel.cuh).
#pragma once
#include <cstddef>

#include "kvq/views.h"
#include "src/core/kernels.h"
#include "src/core/problem.h"

namespace kvq::cuda {

// num_splits: the planner's (detail::split_decode_splits: shape and SM count, no device data), so
// run() and workspace sizing agree; the workspace is detail::split_decode_workspace_bytes.
void launch_decode(const DecodeArgs& args, const detail::AttnProblem& p, int num_splits, void* stream);

}  // namespace kvq::cuda
