// src/core/paged_strides.h — which axis of a paged view is which, for either layout: the element
// strides of (block, kv head, in-page position). Cache views HND [num_blocks, num_kv_heads,
// page_size, D] / NHD [num_blocks, page_size, num_kv_heads, D]; per-token scale views are the same
// without D. The host's one mapping of a layout to those strides: the CUDA launchers fill their
// params from it, the tensor-core decode's 32-bit addressing check (kernels.cpp) reads it. Plain
// host code, compiled in every build.
#pragma once
#include <cstdint>

#include "kvq/views.h"

namespace kvq::detail {

struct PagedStrides {
  int64_t block = 0, head = 0, pos = 0;
};

inline PagedStrides paged_strides(const TensorView& t, KvLayout layout) {
  const bool hnd = layout == KvLayout::kHND;
  return {t.strides[0], hnd ? t.strides[1] : t.strides[2], hnd ? t.strides[2] : t.strides[1]};
}

}  // namespace kvq::detail
