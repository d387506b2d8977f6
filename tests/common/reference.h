// tests/common/reference.h — the naive reference of docs/design.md §1, written from the spec and
// independently of src/ (nothing here includes or copies src/cpu).
//
// Everything reads plain CPU kvq::TensorViews element by element (any dtype, any strides), so
// the reference runs on exactly the bytes and scales a backend read. Attention is computed in
// fp64 with obviously-correct loops: dequantize every referenced K/V element (int8 * scale),
// score every visible key, softmax with the row max, weighted sum of V, lse = m + log(l).
// The only concession to speed is parallelism over (sequence, kv head) and 4 partial sums in
// the dot product; set KVQ_TEST_THREADS=1 to run it single-threaded.
#pragma once
#include <cstdint>
#include <vector>

#include "kvq/views.h"

namespace kvq::test {

// Which numerics the reference models (docs/design.md §1 "Compute modes").
enum class RefCompute {
  kExact,   // fp64 everywhere: the oracle
  kRoundP,  // as kExact, but P = exp(S - max) rounded to the query dtype (bf16/fp16) before P·V,
            // normalised by the unrounded sum: what a bf16 tensor-core kernel computes
  kInt8,    // SageAttention-style: q' = q*k_scale split per (token, head) into two int8 parts in
            // [-127, 127] (q' = s_q (hi + lo / 128)), S from the exact int8 products; P·V as kRoundP
            // (P rounded to the query's float dtype, bf16 for an int8 q), the per-token V scale on p,
            // the per-channel one on O
};

struct RefOutput {
  int64_t num_rows = 0;       // q.shape[0]; rows past the last sequence stay zero
  int64_t num_qo_heads = 0;
  int64_t head_dim = 0;
  std::vector<double> out;    // [num_rows, num_qo_heads, head_dim]; zeros for rows with no visible key
  std::vector<double> lse;    // [num_rows, num_qo_heads]; -inf for rows with no visible key
  // [num_rows]: 1 where the row was computed (see row_stride below); empty = every row computed.
  // The compare helpers skip rows that were not computed.
  std::vector<uint8_t> row_computed;
  bool computed(int64_t t) const { return row_computed.empty() || row_computed[static_cast<size_t>(t)] != 0; }
  double out_at(int64_t t, int64_t h, int64_t d) const { return out[static_cast<size_t>((t * num_qo_heads + h) * head_dim + d)]; }
  double lse_at(int64_t t, int64_t h) const { return lse[static_cast<size_t>(t * num_qo_heads + h)]; }
};

// Prefill reference over CPU views of the args (q, q_scale, kv, block_tables, cu_q_lens, kv_lens,
// mask, mask_options, softmax_scale, gqa_layout). args.out/lse/compute/path are ignored.
RefOutput reference_prefill(const PrefillArgs& args, RefCompute compute = RefCompute::kExact);
// Several compute models in one pass over the data (same order as `computes`). row_stride > 1
// computes only rows i (within each sequence) with i % row_stride == 0 or i == q_len - 1: a
// sampled reference for shapes too big to check every row on a CPU.
std::vector<RefOutput> reference_prefill(const PrefillArgs& args, const std::vector<RefCompute>& computes,
                                         int64_t row_stride = 1);
// Decode reference: row b is one query at position kv_len_b - 1 (causal, plus the windows).
RefOutput reference_decode(const DecodeArgs& args, RefCompute compute = RefCompute::kExact);
std::vector<RefOutput> reference_decode(const DecodeArgs& args, const std::vector<RefCompute>& computes);

// Naive append (docs/design.md §1 "Writing the cache") into CPU views: token n goes to block
// slot/page_size, position slot%page_size; slot < 0 is skipped. int8 caches: per-channel
// scales are read; per-token scales are computed as max(amax/127, 1e-8), stored (in the scale
// tensor's dtype) and the stored value is used to quantize. bf16/fp16 caches: values rounded.
void reference_append(const AppendArgs& args);

// Naive dequantize_blocks (full or compact mode, see kvq::DequantArgs): out = to_dtype(float(int8) * scale)
// with the product in fp32, then rounded to nearest-even.
void reference_dequantize_blocks(const DequantArgs& args);

// Naive calibrate: scale_out[h, d] = max(max_n |x[n, h, d]| / 127, 1e-5) in fp32.
void reference_calibrate(const TensorView& x, const TensorView& scale_out);

}  // namespace kvq::test
