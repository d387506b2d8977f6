#include "tests/common/compare.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

namespace kvq::test {

std::string ErrorStats::describe() const {
  std::ostringstream os;
  os << "max_rel=" << max_rel << " at (seq " << rel_seq << ", head " << rel_head << "); max_abs=" << max_abs
     << " at (seq " << abs_seq << ", row " << abs_row << ", head " << abs_head << ", dim " << abs_dim << "): out=" << abs_out
     << " ref=" << abs_ref << "; nonfinite=" << num_nonfinite << " empty_nonzero=" << num_empty_nonzero
     << " elements=" << num_elements;
  return os.str();
}

std::string LseStats::describe() const {
  std::ostringstream os;
  os << "lse max_abs=" << max_abs << " mismatches=" << num_mismatch << " (worst row " << seq_row << ", head " << head << ")";
  return os.str();
}

namespace {
ErrorStats compare_rows(const TensorView& out, const RefOutput& ref, const std::vector<int64_t>& starts,
                        const std::vector<int64_t>& lens) {
  ErrorStats st;
  const int64_t H = ref.num_qo_heads, D = ref.head_dim;
  for (size_t b = 0; b < starts.size(); ++b)
    for (int64_t h = 0; h < H; ++h) {
      double num = 0, den = 0;
      bool bad = false;
      for (int64_t i = 0; i < lens[b]; ++i) {
        const int64_t t = starts[b] + i;
        if (!ref.computed(t)) continue;
        const bool empty = std::isinf(ref.lse_at(t, h)) && ref.lse_at(t, h) < 0;
        for (int64_t d = 0; d < D; ++d) {
          const double o = load_element(out, offset_of(out, {t, h, d}));
          const double r = ref.out_at(t, h, d);
          ++st.num_elements;
          if (!std::isfinite(o)) {
            ++st.num_nonfinite;
            bad = true;
            continue;
          }
          if (empty && o != 0.0) ++st.num_empty_nonzero;
          const double e = std::fabs(o - r);
          if (e > st.max_abs) {
            st.max_abs = e;
            st.abs_seq = static_cast<int64_t>(b);
            st.abs_row = i;
            st.abs_head = h;
            st.abs_dim = d;
            st.abs_out = o;
            st.abs_ref = r;
          }
          num += e * e;
          den += r * r;
        }
      }
      double rel;
      if (bad) rel = std::numeric_limits<double>::infinity();
      else if (den == 0.0) rel = num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
      else rel = std::sqrt(num / den);
      if (rel > st.max_rel || st.rel_seq < 0) {
        st.max_rel = rel;
        st.rel_seq = static_cast<int64_t>(b);
        st.rel_head = h;
      }
    }
  return st;
}
}  // namespace

ErrorStats compare_output(const TensorView& out, const RefOutput& ref, const std::vector<int32_t>& cu_q_lens) {
  std::vector<int64_t> starts, lens;
  for (size_t b = 0; b + 1 < cu_q_lens.size(); ++b) {
    starts.push_back(cu_q_lens[b]);
    lens.push_back(cu_q_lens[b + 1] - cu_q_lens[b]);
  }
  return compare_rows(out, ref, starts, lens);
}

ErrorStats compare_decode_output(const TensorView& out, const RefOutput& ref) {
  std::vector<int64_t> starts, lens;
  for (int64_t b = 0; b < ref.num_rows; ++b) {
    starts.push_back(b);
    lens.push_back(1);
  }
  return compare_rows(out, ref, starts, lens);
}

double fraction_within(const TensorView& out, const RefOutput& ref, int64_t num_valid_rows, double atol, double rtol) {
  int64_t total = 0, within = 0;
  for (int64_t t = 0; t < num_valid_rows; ++t)
    for (int64_t h = 0; h < ref.num_qo_heads && ref.computed(t); ++h)
      for (int64_t d = 0; d < ref.head_dim; ++d) {
        const double o = load_element(out, offset_of(out, {t, h, d}));
        const double r = round_to_dtype(ref.out_at(t, h, d), out.dtype);
        ++total;
        if (std::fabs(o - r) <= atol + rtol * std::fabs(r)) ++within;  // false for NaN
      }
  return total == 0 ? 1.0 : static_cast<double>(within) / static_cast<double>(total);
}

LseStats compare_lse(const TensorView& lse, const RefOutput& ref, int64_t num_valid_rows) {
  LseStats st;
  for (int64_t t = 0; t < num_valid_rows; ++t)
    for (int64_t h = 0; h < ref.num_qo_heads && ref.computed(t); ++h) {
      const double o = load_element(lse, offset_of(lse, {t, h}));
      const double r = ref.lse_at(t, h);
      if (std::isnan(o) || std::isfinite(o) != std::isfinite(r) || (std::isinf(r) && o != r)) {
        ++st.num_mismatch;
        st.seq_row = t;
        st.head = h;
        continue;
      }
      if (std::isfinite(r) && std::fabs(o - r) > st.max_abs) {
        st.max_abs = std::fabs(o - r);
        if (st.num_mismatch == 0) {
          st.seq_row = t;
          st.head = h;
        }
      }
    }
  return st;
}

RefOutput to_ref_output(const TensorView& out, const TensorView& lse) {
  RefOutput r;
  r.num_rows = out.shape[0];
  r.num_qo_heads = out.shape[1];
  r.head_dim = out.shape[2];
  r.out.resize(static_cast<size_t>(r.num_rows * r.num_qo_heads * r.head_dim));
  r.lse.assign(static_cast<size_t>(r.num_rows * r.num_qo_heads), 0.0);
  for (int64_t t = 0; t < r.num_rows; ++t)
    for (int64_t h = 0; h < r.num_qo_heads; ++h) {
      for (int64_t d = 0; d < r.head_dim; ++d)
        r.out[static_cast<size_t>((t * r.num_qo_heads + h) * r.head_dim + d)] = load_element(out, offset_of(out, {t, h, d}));
      if (lse.defined()) r.lse[static_cast<size_t>(t * r.num_qo_heads + h)] = load_element(lse, offset_of(lse, {t, h}));
    }
  return r;
}

int64_t count_written_outside(const HostTensor& t, int64_t num_valid_rows) {
  // Mark the storage of the valid region, then count non-poison elements elsewhere.
  std::vector<uint8_t> inside(static_cast<size_t>(t.storage_elements()), 0);
  const auto& shape = t.shape();
  const auto& strides = t.strides();
  std::vector<int64_t> idx(shape.size(), 0);
  if (num_valid_rows > 0 && t.numel() > 0) {
    while (true) {
      int64_t off = 0;
      for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * strides[i];
      inside[static_cast<size_t>(off)] = 1;
      int k = static_cast<int>(idx.size()) - 1;
      for (; k >= 0; --k) {
        if (++idx[static_cast<size_t>(k)] < (k == 0 ? num_valid_rows : shape[static_cast<size_t>(k)])) break;
        idx[static_cast<size_t>(k)] = 0;
      }
      if (k < 0) break;
    }
  }
  int64_t written = 0;
  for (int64_t off = 0; off < t.storage_elements(); ++off)
    if (!inside[static_cast<size_t>(off)] && !t.is_poison(off)) ++written;
  return written;
}

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

}  // namespace kvq::test
