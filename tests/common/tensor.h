// tests/common/tensor.h — owning host tensors for tests, and dtype-generic element access to
// any CPU kvq::TensorView.
//
// HostTensor owns its bytes (zero-initialised), knows its dtype, shape and strides (elements),
// and hands out a kvq::TensorView with view(). Strides may leave gaps (see strided()), which is
// how tests build non-contiguous q/out views; the gaps are real storage, so poison() fills them
// too and tests can check that a kernel never wrote there.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kvq/views.h"

namespace kvq::test {

// Reads element `offset` (in elements, from view.data) of a CPU view as double, whatever its dtype
// (fp32/fp16/bf16/int8/uint8/int32/int64/bool).
double load_element(const TensorView& view, int64_t offset);
// Writes `value` converted to the view's dtype: round-to-nearest-even for bf16/fp16, cast for
// fp32, round-half-even then saturate for integer types.
void store_element(const TensorView& view, int64_t offset, double value);
// Element offset of a multi-index.
int64_t offset_of(const TensorView& view, std::initializer_list<int64_t> index);
// Rounds a double to the precision of a float dtype (fp32/fp16/bf16); identity otherwise.
double round_to_dtype(double value, DType dtype);

class HostTensor {
 public:
  HostTensor() = default;
  // Contiguous, zero-filled.
  HostTensor(DType dtype, std::vector<int64_t> shape);
  // Explicit strides (elements; last one should be 1): storage covers the largest offset.
  static HostTensor strided(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides);
  // Contiguous in a padded buffer: each dim i is allocated with shape[i] + pad[i] entries, so
  // the view is non-contiguous wherever pad[i] > 0 (pad of the last dim keeps stride 1).
  static HostTensor padded(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> pad);

  bool defined() const { return !shape_.empty() || !bytes_.empty(); }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t size(int dim) const { return shape_[static_cast<size_t>(dim < 0 ? dim + ndim() : dim)]; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  // Number of elements of storage (>= numel() when strided).
  int64_t storage_elements() const { return storage_elements_; }
  size_t nbytes() const { return bytes_.size(); }

  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  template <typename T>
  T* ptr() { return reinterpret_cast<T*>(bytes_.data()); }
  template <typename T>
  const T* ptr() const { return reinterpret_cast<const T*>(bytes_.data()); }

  // A CPU view of the tensor (absent when the tensor is undefined).
  TensorView view() const;

  int64_t offset(std::initializer_list<int64_t> index) const;
  double at(std::initializer_list<int64_t> index) const;
  void set(std::initializer_list<int64_t> index, double value);
  // Raw storage access by element offset (converting like load_element/store_element).
  double load(int64_t offset) const;
  void store(int64_t offset, double value);

  // Every storage element (gaps included) set to the poison pattern: NaN for float dtypes
  // (0x7fff for bf16/fp16, 0x7fffffff for fp32), 0x5a bytes for integer dtypes.
  void poison();
  // Whether storage element `offset` still holds the poison pattern bit for bit.
  bool is_poison(int64_t offset) const;

  // "bf16 [12, 8, 16, 128]".
  std::string describe() const;

 private:
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  int64_t storage_elements_ = 0;
  std::vector<uint8_t> bytes_;
};

// Copies of 1-D/2-D host vectors into int32 tensors.
HostTensor make_int32(const std::vector<int32_t>& values);
HostTensor make_int32_2d(const std::vector<std::vector<int32_t>>& rows, int64_t num_cols, int32_t fill);

}  // namespace kvq::test
