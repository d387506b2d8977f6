// src/core/views.cpp — TensorView helpers (kvq/views.h).
#include "kvq/views.h"

#include <sstream>

#include "kvq/error.h"

namespace kvq {

// Overflow-checked: a product of extents that does not fit in int64 throws kvq::Error instead of
// wrapping (a wrapped count of 0 would skip the null-data and aliasing checks). Any extent of 0
// makes the count 0, however large the others are. Validation (src/core/validate.cpp) rejects
// such views earlier, naming the argument; this is the backstop for every other caller.
int64_t TensorView::numel() const {
  if (ndim < 0) return 0;
  const int dims = ndim < kMaxDims ? ndim : kMaxDims;
  for (int d = 0; d < dims; ++d)
    if (shape[d] == 0) return 0;
  int64_t n = 1;
  for (int d = 0; d < dims; ++d) {
    if (__builtin_mul_overflow(n, shape[d], &n))
      throw Error(ErrorKind::kValue, "TensorView::numel", "shape",
                  "expected a number of elements below 2^63, got " + describe() +
                      " (the product of the extents overflows int64)");
  }
  return n;
}

bool TensorView::is_contiguous() const {
  if (ndim < 0 || ndim > kMaxDims) return false;
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    // The stride of a dimension of size 1 never addresses memory, so it may hold anything.
    if (shape[d] != 1 && strides[d] != expected) return false;
    if (__builtin_mul_overflow(expected, shape[d], &expected)) return false;
  }
  return true;
}

std::string TensorView::describe() const {
  if (ndim < 0) return "absent";
  std::ostringstream os;
  if (ndim > kMaxDims) {
    os << to_string(dtype) << " [rank " << ndim << " > " << kMaxDims << "]";
    return os.str();
  }
  os << to_string(dtype) << " [";
  for (int d = 0; d < ndim; ++d) os << (d ? ", " : "") << shape[d];
  os << "]";
  return os.str();
}

namespace {

void fill_shape(TensorView& t, const char* func, std::initializer_list<int64_t> shape) {
  KVQ_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), func, "shape",
            "expected at most " << kMaxDims << " dimensions, got " << shape.size());
  t.ndim = static_cast<int>(shape.size());
  int d = 0;
  for (int64_t s : shape) {
    KVQ_CHECK(s >= 0, func, "shape", "expected sizes >= 0, got " << s << " at dim " << d);
    t.shape[d++] = s;
  }
}

}  // namespace

TensorView TensorView::make(void* data, DType dtype, std::initializer_list<int64_t> shape,
                            Device device, int device_index) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.device_index = device_index;
  fill_shape(t, "TensorView::make", shape);
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    if (d > 0 && __builtin_mul_overflow(stride, t.shape[d], &stride))
      throw Error(ErrorKind::kValue, "TensorView::make", "shape",
                  "expected extents whose contiguous strides fit in int64, got " + t.describe());
  }
  return t;
}

TensorView TensorView::make_strided(void* data, DType dtype, std::initializer_list<int64_t> shape,
                                    std::initializer_list<int64_t> strides, Device device,
                                    int device_index) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.device_index = device_index;
  fill_shape(t, "TensorView::make_strided", shape);
  KVQ_CHECK(strides.size() == shape.size(), "TensorView::make_strided", "strides",
            "expected " << shape.size() << " strides (one per dimension), got " << strides.size());
  int d = 0;
  for (int64_t s : strides) t.strides[d++] = s;
  return t;
}

}  // namespace kvq
