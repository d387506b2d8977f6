// src/cuda/append/append.h — host entries of the cache-write (append) and calibrate kernels.
#pragma once
#include <cstdint>

#include "kvq/views.h"

namespace kvq::cuda {

void launch_append(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
                   int64_t page_size, int64_t num_blocks, ScaleMode k_mode, ScaleMode v_mode);
void launch_calibrate(const TensorView& x, const TensorView& scale_out, void* stream);
// check=true: the first (token, kv head, K or V) row that append would write (slot in range)
// holding a NaN or Inf, as (token * num_kv_heads + head) * 2 + (1 for v_new); -1 when none.
// Synchronizes the stream.
int64_t find_nonfinite_appended(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads,
                                int64_t head_dim, int64_t page_size, int64_t num_blocks);

}  // namespace kvq::cuda
