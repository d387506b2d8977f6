// tests/common/compare.h — comparing a kernel's output with the reference (docs/design.md §5).
//
// Our criterion: rel_err = ||out - ref||_2 / ||ref||_2 per (sequence, head), over that sequence's
// rows and all dims; NaN/Inf in out never passes (rel_err = inf); rows whose reference has no
// visible key must be exactly zero. The seed's criterion: |out - ref| <= atol + rtol*|ref|, with ref
// rounded to out's dtype, for at least a fraction of the elements. Mismatches are decoded to
// (sequence, row within sequence, head, dim).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kvq/views.h"
#include "tests/common/reference.h"
#include "tests/common/tensor.h"

namespace kvq::test {

struct ErrorStats {
  double max_rel = 0;          // max over (sequence, head) of the relative norm error
  int64_t rel_seq = -1, rel_head = -1;
  double max_abs = 0;          // max elementwise |out - ref|
  int64_t abs_seq = -1, abs_row = -1, abs_head = -1, abs_dim = -1;
  double abs_out = 0, abs_ref = 0;
  int64_t num_nonfinite = 0;   // out not finite
  int64_t num_empty_nonzero = 0;  // out != 0 on a row with no visible key (ref lse = -inf)
  int64_t num_elements = 0;
  // True when max_rel <= tol and there is no NaN/Inf and no nonzero empty row.
  bool ok(double tol) const { return max_rel <= tol && num_nonfinite == 0 && num_empty_nonzero == 0; }
  std::string describe() const;
};

// out: [rows, Hq, D] view (any float dtype and strides); cu_q_lens: [B + 1] host lengths.
ErrorStats compare_output(const TensorView& out, const RefOutput& ref, const std::vector<int32_t>& cu_q_lens);
// Decode outputs: row b is sequence b.
ErrorStats compare_decode_output(const TensorView& out, const RefOutput& ref);

// The seed's criterion: fraction of elements (rows [0, cu_q_lens[B])) with
// |out - round(ref)| <= atol + rtol * |round(ref)|, round() to out's dtype. NaN counts as outside.
double fraction_within(const TensorView& out, const RefOutput& ref, int64_t num_valid_rows, double atol, double rtol);

struct LseStats {
  double max_abs = 0;          // over rows where both are finite
  int64_t num_mismatch = 0;    // -inf / finite disagreements and NaNs
  int64_t seq_row = -1, head = -1;
  std::string describe() const;
};
// lse: [rows, Hq] fp32 view; only rows [0, num_valid_rows) are compared.
LseStats compare_lse(const TensorView& lse, const RefOutput& ref, int64_t num_valid_rows);

// A backend's output read back as a RefOutput (so two outputs can be compared with compare_output).
RefOutput to_ref_output(const TensorView& out, const TensorView& lse);

// Storage elements of t (poisoned before the run) that were written although they lie outside
// rows [0, num_valid_rows) of dim 0 or in the gaps of a strided layout. Should be 0.
int64_t count_written_outside(const HostTensor& t, int64_t num_valid_rows);

// Whether a and b hold the same bytes (storage gaps and poisoned elements included): the
// bit-for-bit comparisons of reruns, replays and refused calls.
bool same_bytes(const HostTensor& a, const HostTensor& b);

}  // namespace kvq::test
