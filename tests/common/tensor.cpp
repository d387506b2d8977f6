#include "tests/common/tensor.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "tests/common/half.h"

namespace kvq::test {

namespace {
template <typename T>
T load_as(const void* base, int64_t offset) {
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(base) + offset * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}
template <typename T>
void store_as(void* base, int64_t offset, T v) {
  std::memcpy(static_cast<uint8_t*>(base) + offset * static_cast<int64_t>(sizeof(T)), &v, sizeof(T));
}
size_t element_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: case DType::kInt32: return 4;
    case DType::kFloat16: case DType::kBFloat16: return 2;
    case DType::kInt8: case DType::kUInt8: case DType::kBool: return 1;
    case DType::kInt64: return 8;
  }
  return 1;
}
template <typename T>
T saturate_rne(double v, double lo, double hi) {
  double r = std::nearbyint(v);
  if (r < lo) r = lo;
  if (r > hi) r = hi;
  return static_cast<T>(r);
}
}  // namespace

double load_element(const TensorView& view, int64_t offset) {
  switch (view.dtype) {
    case DType::kFloat32: return load_as<float>(view.data, offset);
    case DType::kFloat16: return fp16_bits_to_float(load_as<uint16_t>(view.data, offset));
    case DType::kBFloat16: return bf16_bits_to_float(load_as<uint16_t>(view.data, offset));
    case DType::kInt8: return load_as<int8_t>(view.data, offset);
    case DType::kUInt8: return load_as<uint8_t>(view.data, offset);
    case DType::kBool: return load_as<uint8_t>(view.data, offset) != 0 ? 1.0 : 0.0;
    case DType::kInt32: return load_as<int32_t>(view.data, offset);
    case DType::kInt64: return static_cast<double>(load_as<int64_t>(view.data, offset));
  }
  return 0.0;
}

void store_element(const TensorView& view, int64_t offset, double value) {
  switch (view.dtype) {
    case DType::kFloat32: store_as<float>(view.data, offset, static_cast<float>(value)); return;
    case DType::kFloat16:
      store_as<uint16_t>(view.data, offset, float_to_fp16_bits(static_cast<float>(value)));
      return;
    case DType::kBFloat16:
      store_as<uint16_t>(view.data, offset, float_to_bf16_bits(static_cast<float>(value)));
      return;
    case DType::kInt8: store_as<int8_t>(view.data, offset, saturate_rne<int8_t>(value, -128, 127)); return;
    case DType::kUInt8: store_as<uint8_t>(view.data, offset, saturate_rne<uint8_t>(value, 0, 255)); return;
    case DType::kBool: store_as<uint8_t>(view.data, offset, value != 0.0 ? 1 : 0); return;
    case DType::kInt32:
      store_as<int32_t>(view.data, offset, saturate_rne<int32_t>(value, -2147483648.0, 2147483647.0));
      return;
    case DType::kInt64: store_as<int64_t>(view.data, offset, static_cast<int64_t>(std::nearbyint(value))); return;
  }
}

int64_t offset_of(const TensorView& view, std::initializer_list<int64_t> index) {
  int64_t off = 0;
  int d = 0;
  for (int64_t i : index) off += i * view.strides[d++];
  return off;
}

double round_to_dtype(double value, DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return static_cast<float>(value);
    case DType::kFloat16: return round_to_fp16(static_cast<float>(value));
    case DType::kBFloat16: return round_to_bf16(static_cast<float>(value));
    default: return value;
  }
}

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  *this = strided(dtype, std::move(shape), std::move(strides));
}

HostTensor HostTensor::strided(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides) {
  if (shape.size() != strides.size() || shape.size() > static_cast<size_t>(kMaxDims))
    throw std::invalid_argument("HostTensor::strided: bad rank");
  HostTensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  int64_t max_off = 0;
  bool empty = false;
  for (size_t i = 0; i < t.shape_.size(); ++i) {
    if (t.shape_[i] == 0) empty = true;
    else max_off += (t.shape_[i] - 1) * t.strides_[i];
  }
  t.storage_elements_ = empty ? 0 : max_off + 1;
  // Keep at least one byte so data() is never null (views of empty tensors still have an address).
  t.bytes_.assign(std::max<size_t>(1, static_cast<size_t>(t.storage_elements_) * element_size(dtype)), 0);
  return t;
}

HostTensor HostTensor::padded(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> pad) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i] + (i < pad.size() ? pad[i] : 0);
  }
  return strided(dtype, std::move(shape), std::move(strides));
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

TensorView HostTensor::view() const {
  TensorView v;
  if (!defined()) return v;
  v.data = const_cast<uint8_t*>(bytes_.data());
  v.dtype = dtype_;
  v.device = Device::kCPU;
  v.ndim = ndim();
  for (int i = 0; i < ndim(); ++i) {
    v.shape[i] = shape_[static_cast<size_t>(i)];
    v.strides[i] = strides_[static_cast<size_t>(i)];
  }
  return v;
}

int64_t HostTensor::offset(std::initializer_list<int64_t> index) const {
  int64_t off = 0;
  size_t d = 0;
  for (int64_t i : index) off += i * strides_[d++];
  return off;
}

double HostTensor::at(std::initializer_list<int64_t> index) const { return load(offset(index)); }
void HostTensor::set(std::initializer_list<int64_t> index, double value) { store(offset(index), value); }
double HostTensor::load(int64_t offset) const { return load_element(view(), offset); }
void HostTensor::store(int64_t offset, double value) { store_element(view(), offset, value); }

void HostTensor::poison() {
  const size_t n = static_cast<size_t>(storage_elements_);
  switch (dtype_) {
    case DType::kFloat32:
      for (size_t i = 0; i < n; ++i) store_as<uint32_t>(bytes_.data(), static_cast<int64_t>(i), 0x7fffffffu);
      break;
    case DType::kFloat16: case DType::kBFloat16:
      for (size_t i = 0; i < n; ++i) store_as<uint16_t>(bytes_.data(), static_cast<int64_t>(i), 0x7fff);
      break;
    default: std::memset(bytes_.data(), 0x5a, n * element_size(dtype_)); break;
  }
}

bool HostTensor::is_poison(int64_t offset) const {
  switch (dtype_) {
    case DType::kFloat32: return load_as<uint32_t>(bytes_.data(), offset) == 0x7fffffffu;
    case DType::kFloat16: case DType::kBFloat16: return load_as<uint16_t>(bytes_.data(), offset) == 0x7fff;
    default: {
      const size_t es = element_size(dtype_);
      for (size_t i = 0; i < es; ++i)
        if (bytes_[static_cast<size_t>(offset) * es + i] != 0x5a) return false;
      return true;
    }
  }
}

std::string HostTensor::describe() const {
  std::ostringstream os;
  os << to_string(dtype_) << " [";
  for (size_t i = 0; i < shape_.size(); ++i) os << (i ? ", " : "") << shape_[i];
  os << "]";
  return os.str();
}

HostTensor make_int32(const std::vector<int32_t>& values) {
  HostTensor t(DType::kInt32, {static_cast<int64_t>(values.size())});
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

HostTensor make_int32_2d(const std::vector<std::vector<int32_t>>& rows, int64_t num_cols, int32_t fill) {
  HostTensor t(DType::kInt32, {static_cast<int64_t>(rows.size()), num_cols});
  int32_t* p = t.ptr<int32_t>();
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t c = 0; c < num_cols; ++c)
      p[static_cast<int64_t>(r) * num_cols + c] = c < static_cast<int64_t>(rows[r].size()) ? rows[r][static_cast<size_t>(c)] : fill;
  return t;
}

}  // namespace kvq::test
