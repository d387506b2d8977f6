// tests/common/int8_accuracy.h — the accuracy grid of compute=int8 (docs/design.md §1 "Compute
// modes", §5): workloads where int8 attention loses precision, at kv_len 1k, 16k, 64k and 128k,
// with per-channel and per-token scales. Shared by the CPU test (tests/cpu/int8_accuracy_test.cpp)
// and the GPU test (tests/gpu/int8_accuracy_test.cpp), so both judge the same bytes.
//
// Two cases, each a batch of 4 sequences with kv_len 1k, 16k, 64k, 128k and q_len 4, 3, 2, 1
// (causal, the queries at the tail), Hq = 6, Hkv = 1, D = 128, bf16 q, pages of 64 tokens in a
// shuffled block table (-1 past the used entries), an int8 cache whose float K/V are drawn once and
// quantized per-channel or per-token (K and V alike) by set_int8_accuracy_mode(). K, V and q start
// as randn rounded to bf16 (q never exactly zero), then K x 3 and V x 0.05 with one token in 8 a
// small-magnitude V token (randn x 3e-4, amax ~1e-3); the workloads shape them:
//   case kPlainK, two q heads per workload (the keys are shared):
//     flat:     q scaled to logits of standard deviation 0.05: near-uniform attention, every
//               p ~ 1/kv_len;
//     randn:    q scaled to logits of standard deviation 1 (most of the mass on keys far below
//               the row max: where the retired uint8-P recipe lost 1.4e-2 to 4.3e-2);
//     peaked:   q as drawn, and per (query, head) 4 planted keys along the query's direction with
//               logits ln(kv_len) + {2, 3, 4, 5} over the ~N(0, 1) bulk: most of the softmax mass on
//               a few keys, at every kv_len (for the other heads they are keys like any other);
//   case kOutlierK, every head:
//     outliers: 4 K channels 10, 20, 35 and 50x larger than the rest, each a fixed-sign offset of
//               that size plus noise of half that size (the shape of LLM key outliers; then x 3
//               like every K value); q scaled to logits of standard deviation 1.5.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tests/common/paged_cache.h"
#include "tests/common/reference.h"

namespace kvq::test {

enum class Int8Workload { kFlat, kRandn, kPeaked, kOutliers };
enum class Int8Case { kPlainK, kOutlierK };

// The contract's bound for compute=int8 against fp64, per (sequence, head) (docs/design.md §5).
constexpr double kInt8AccuracyTol = 1e-2;

const char* int8_workload_name(Int8Workload w);
const char* int8_case_name(Int8Case c);
// The workloads of a case, and the one of q head h.
std::vector<Int8Workload> int8_case_workloads(Int8Case c);
Int8Workload int8_workload_of_head(Int8Case c, int64_t h);
// The case (quantized per-channel). ~210k keys: build it once per test.
PagedCase make_int8_accuracy_case(Int8Case which);
// Quantizes the case's float K/V (k_orig/v_orig) with `mode` scales for both K and V (nothing to
// do when the case is already in that mode).
void set_int8_accuracy_mode(PagedCase& c, ScaleMode mode);

// ||out - ref|| / ||ref|| over the rows of sequence b, worst over the q heads of workload w
// (infinity when out has a non-finite value there). out: [rows, Hq, D] view, any float dtype.
double int8_workload_error(const PagedCase& c, Int8Case which, const TensorView& out, const RefOutput& ref,
                           int64_t b, Int8Workload w);

}  // namespace kvq::test
