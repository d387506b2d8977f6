// src/core/kernels.h — what each CUDA kernel serves, and the arithmetic of its split count and
// workspace, as plain host code: the planner (plan.cpp) decides from these, and the launchers of
// src/cuda/ hold a launch to the same definitions. Compiled in every build (a CPU-only build plans
// CUDA calls too, and tests the planner without a GPU); no CUDA header here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <sstream>

#include "kvq/error.h"
#include "kvq/views.h"
#include "kvq_config.h"
#include "src/core/problem.h"

// A launch that does not match what the planner resolved: a bug in kvq, never the caller's input
// (kvq::Error kRuntime, "<func>: plan: internal error: expected ..., got ...").
#define KVQ_INTERNAL_CHECK(cond, func, msg)                                                   \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::ostringstream kvq_os_;                                                             \
      kvq_os_ << "internal error: " << msg;                                                   \
      throw ::kvq::Error(::kvq::ErrorKind::kRuntime, func, "plan", kvq_os_.str());            \
    }                                                                                         \
  } while (0)

namespace kvq::detail {

// ---- the tensor-core prefill (src/cuda/prefill/tc_prefill.cu) ----

#define KVQ_TC_HEAD_DIM_ENTRY(HD) HD,
inline constexpr int kTcHeadDims[] = {KVQ_FOR_EACH_TC_HEAD_DIM(KVQ_TC_HEAD_DIM_ENTRY)};
#undef KVQ_TC_HEAD_DIM_ENTRY
inline constexpr int kBuiltHeadDims[] = {KVQ_FAST_HEAD_DIMS};

// Whether head dim d has a tensor-core prefill instantiation this build routes to (in
// KVQ_TC_HEAD_DIMS and KVQ_HEAD_DIMS).
constexpr bool tc_head_dim_built(int head_dim) {
  bool listed = false, has_file = false;
  for (int d : kBuiltHeadDims) listed = listed || d == head_dim;
  for (int d : kTcHeadDims) has_file = has_file || d == head_dim;
  return listed && has_file;
}

// The smallest built head dim >= head_dim, or 0.
constexpr int tc_padded_head_dim(int head_dim) {
  int best = 0;
  for (int d : kTcHeadDims)
    if (d >= head_dim && tc_head_dim_built(d) && (best == 0 || d < best)) best = d;
  return best;
}

// Whether the tensor-core kernel serves this problem (head dim instantiated or padded up, dtypes,
// scale modes, compute mode, no mask). When false `auto` takes the generic kernel. Compute int8
// (bf16/fp16 q over an int8 cache, padded head dim 128 or 256 with a Hopper instantiation) is
// served by the Hopper mainloop only (wg_int8_compute_supports): the planner gives it no other.
bool tc_prefill_supports(const AttnProblem& p);

// tc_prefill_supports plus what only the views tell: 16-byte aligned base pointers and outer
// strides of q, out, k_cache, v_cache (cp.async moves 16 bytes), block_tables' last dim contiguous.
bool tc_prefill_supports_views(const PrefillArgs& args, const AttnProblem& p, const PagedKvCache& kv,
                               const TensorView& block_tables);

// ---- the Hopper (sm_90a) prefill (src/cuda/hopper/): the tensor-core prefill's other mainloop ----

#define KVQ_WG_HEAD_DIM_ENTRY(HD) HD,
inline constexpr int kWgHeadDims[] = {KVQ_FOR_EACH_WG_HEAD_DIM(KVQ_WG_HEAD_DIM_ENTRY)};
#undef KVQ_WG_HEAD_DIM_ENTRY

// Whether the Hopper kernel has an instantiation for this padded head dim (KVQ_WG_HEAD_DIMS).
constexpr bool wg_has_head_dim(int padded_head_dim) {
  bool found = false;
  for (int d : kWgHeadDims) found = found || d == padded_head_dim;
  return found;
}

// compute="int8" on the Hopper kernel: bf16/fp16 q (not int8 q) over an int8 cache, padded head
// dim 128 or 256 instantiated, everything else as tc_prefill_supports.
bool wg_int8_compute_supports(const AttnProblem& p);

// Below this many packed query rows (max q_len x GQA group) of the longest sequence, the
// mma.sync kernel stays faster (H200: B16 q512 Hq32/Hkv8 D128 int8, 0.38 ms vs 0.44 ms: few KV
// tiles per CTA do not fill the Hopper kernel's pipeline); at 8192 rows the Hopper kernel wins
// (B8 q2048: 1.45 ms vs 1.66 ms). docs/perf-notes.md, "Hopper prefill".
inline constexpr int64_t kWgMinPackedRows = 4096;

// The Hopper kernel computes one row offset per token for K and V: their strides must agree.
bool wg_kv_strides_agree(const PagedKvCache& kv);

// ---- the tensor-core split-KV decode (src/cuda/decode/mma_decode.cu) ----

// Most split-KV partials per row (the merge kernel weighs them in shared memory).
inline constexpr int kMmaDecodeMaxSplits = 256;

bool mma_decode_has_head_dim(int64_t head_dim);
// n-tiles (8 query rows each) of the instantiation serving max_q_len * group_size rows; 0: none.
int mma_decode_n_tiles(const AttnProblem& p, int64_t max_q_len);
// Whether the kernel serves the shape (head dim, dtypes, rows per kv head) and the views (alignment).
bool mma_decode_supports_shape(const AttnProblem& p, int64_t max_q_len);
bool mma_decode_supports_views(const PagedKvCache& kv, const TensorView& q, const AttnProblem& p);
// Whether the shape has the bulk-copy (TMA) instantiations: K/V rows of >= 128 bytes and 16-key
// steps inside one page (page_size % 16 == 0). They run on sm_90 only.
bool mma_decode_has_tma_form(const AttnProblem& p);
// Split count: `requested` (> 0) capped, else the count that puts about two CTAs on each SM (one
// where the instantiation fits one per SM), rounded to the nearest, 1 when the batch's (sequence,
// kv head) pairs alone reach that, and at most one split per 256 keys. Measured on the H200
// (docs/perf-notes.md): fewer, longer CTAs beat a full wave of four per SM (int8 B1 kv131072:
// 33 splits 0.086 ms, 66 splits 0.098; B8 kv32768: 4 splits 0.150, 8 0.159; B64 kv4096: 1 split
// 0.155, 2 0.163).
int mma_decode_splits(const AttnProblem& p, int requested, int64_t sm_count, int ctas_per_sm);
size_t mma_decode_workspace_bytes(const AttnProblem& p, int64_t total_rows, int num_splits);

// ---- the CUDA-core split-KV decode (src/cuda/decode/decode.cu) ----

inline constexpr int kSplitDecodeGroupTile = 4;   // q heads of one GQA group per CTA
inline constexpr int kSplitDecodeMaxSplits = 256;
inline constexpr int64_t kSplitDecodeCtasPerSm = 3;  // the kernels' __launch_bounds__ minimum

// Split count: `requested` (> 0) capped, else from the shape and the device's SM count.
int split_decode_splits(const AttnProblem& p, int requested, int sm_count);
size_t split_decode_workspace_bytes(const AttnProblem& p, int num_splits);

// ---- decode through the tensor-core prefill (backend.cu, KVQ_DECODE_PATH=tc) ----

// cu_q_lens = [0, 1, .., B] at the start of the workspace.
size_t tc_decode_workspace_bytes(const AttnProblem& p);
// The decode step as a prefill of one query row per sequence (causal, total_q = batch_size).
AttnProblem decode_as_prefill(const AttnProblem& p);
// The decode call's views as a prefill call of one query row per sequence: q, kv, block_tables,
// kv_lens, out, lse, causal with the call's windows, softmax_scale (as given), gqa_layout, stream;
// no cu_q_lens, check false. The one adapter: the CUDA data checks and the decode route through the
// tensor-core prefill (which adds cu_q_lens and the resolved scale) both start from it.
PrefillArgs decode_as_prefill_args(const DecodeArgs& a);

// ---- CUDA-core split decode's split rule ----

// The split-KV count of the CUDA-core split kernel's planner: at least one full wave of resident CTAs,
// then the split count (up to 8 more) whose last wave is the fullest (512 CTAs on 396 slots: 1
// split leaves the second wave 29% full, 3 fill 97% of two). ctas: CTAs of one split; slots:
// resident CTAs of the device; split_cap >= 1.
int64_t fullest_wave_splits(int64_t ctas, int64_t slots, int64_t split_cap);

}  // namespace kvq::detail
