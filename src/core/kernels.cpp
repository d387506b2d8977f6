// src/core/kernels.cpp — what each CUDA kernel serves, its split counts and workspace sizes
// (kernels.h). Host code only: the planner decides from these in every build.
#include "src/core/kernels.h"

#include <algorithm>

#include "src/core/paged_strides.h"

namespace kvq::detail {
namespace {

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

bool strides_aligned(const TensorView& t, int ndim_outer, size_t elem) {
  for (int i = 0; i < ndim_outer; ++i)
    if ((static_cast<uint64_t>(t.strides[i]) * elem) % 16 != 0) return false;
  return t.strides[t.ndim - 1] == 1;
}

bool rows_aligned16(const TensorView& t, int64_t elem_bytes) {
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return false;
  for (int i = 0; i < 3; ++i)
    if ((t.strides[i] * elem_bytes) % 16 != 0) return false;
  return true;
}

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

constexpr int64_t kMinKeysPerSplit = 256;  // both decode kernels

}  // namespace

// ---- tensor-core prefill ----

bool tc_prefill_supports(const AttnProblem& p) {
  if (p.q_dtype != DType::kBFloat16 && p.q_dtype != DType::kFloat16) return false;
  if (p.kv_dtype != p.q_dtype && p.kv_dtype != DType::kInt8) return false;
  if (p.out_dtype != p.q_dtype) return false;
  if (p.has_mask) return false;
  if (p.compute != ComputeMode::kNative) {
    if (p.compute != ComputeMode::kInt8 || p.kv_dtype != DType::kInt8) return false;
    const int padded = tc_padded_head_dim(static_cast<int>(p.head_dim));
    if ((padded != 128 && padded != 256) || !wg_has_head_dim(padded)) return false;
  }
  if (p.head_dim < 1 || p.head_dim > 256) return false;
  if (p.head_dim % (p.kv_dtype == DType::kInt8 ? 16 : 8) != 0) return false;
  if (tc_padded_head_dim(static_cast<int>(p.head_dim)) == 0) return false;
  if (p.batch_size < 1 || p.batch_size > 65535) return false;
  if (p.page_size < 1 || p.page_size > (int64_t{1} << 30)) return false;
  if (p.total_q * p.group_size >= (int64_t{1} << 31) || p.num_blocks >= (int64_t{1} << 31)) return false;  // 32-bit row math
  return true;
}

bool wg_int8_compute_supports(const AttnProblem& p) {
  return p.compute == ComputeMode::kInt8 && tc_prefill_supports(p);
}

bool tc_prefill_supports_views(const PrefillArgs& args, const AttnProblem& p, const PagedKvCache& kv,
                               const TensorView& block_tables) {
  if (!tc_prefill_supports(p)) return false;
  const size_t kv_elem = p.kv_dtype == DType::kInt8 ? 1 : 2;
  if (!aligned16(args.q.data) || !aligned16(args.out.data) || !aligned16(kv.k_cache.data) ||
      !aligned16(kv.v_cache.data))
    return false;
  if (!strides_aligned(args.q, 2, 2) || !strides_aligned(args.out, 2, 2)) return false;
  if (!strides_aligned(kv.k_cache, 3, kv_elem) || !strides_aligned(kv.v_cache, 3, kv_elem)) return false;
  if (block_tables.ndim != 2 || block_tables.strides[1] != 1) return false;
  return true;
}

// ---- Hopper prefill ----

bool wg_kv_strides_agree(const PagedKvCache& kv) {
  // Block, head and position strides of K and V (the same axes in either layout).
  for (int i = 0; i < 3; ++i)
    if (kv.k_cache.strides[i] != kv.v_cache.strides[i]) return false;
  return true;
}

// ---- tensor-core decode ----

bool mma_decode_has_head_dim(int64_t d) {
#define KVQ_MMA_DECODE_IS(HD) d == HD ||
  return KVQ_FOR_EACH_MMA_DECODE_HEAD_DIM(KVQ_MMA_DECODE_IS) false;
#undef KVQ_MMA_DECODE_IS
}

int mma_decode_n_tiles(const AttnProblem& p, int64_t max_q_len) {
  const int64_t rows = p.group_size * max_q_len;
  if (rows <= 8) return 1;
  if (rows <= 16 && p.head_dim != 256) return 2;
  return 0;
}

bool mma_decode_supports_shape(const AttnProblem& p, int64_t max_q_len) {
  if (!mma_decode_has_head_dim(p.head_dim)) return false;
  if (p.q_dtype != DType::kBFloat16 && p.q_dtype != DType::kFloat16) return false;
  if (p.kv_dtype != DType::kInt8 && p.kv_dtype != DType::kBFloat16 && p.kv_dtype != DType::kFloat16) return false;
  if (p.has_mask) return false;
  if (p.num_blocks >= (int64_t{1} << 31) || p.page_size >= (int64_t{1} << 31)) return false;
  return mma_decode_n_tiles(p, max_q_len) > 0;
}

bool mma_decode_supports_views(const PagedKvCache& kv, const TensorView& q, const AttnProblem& p) {
  const int64_t eb = static_cast<int64_t>(dtype_size(p.kv_dtype));
  if (!rows_aligned16(kv.k_cache, eb) || !rows_aligned16(kv.v_cache, eb)) return false;
  // 32-bit in-block addressing: every byte stride and in-block offset < 2^31.
  for (const TensorView* t : {&kv.k_cache, &kv.v_cache}) {
    const PagedStrides st = paged_strides(*t, kv.layout);
    if (st.block * eb >= (int64_t{1} << 31) || st.block < 0 || st.head < 0 || st.pos < 0) return false;
    if ((st.head * (p.num_kv_heads - 1) + st.pos * (p.page_size - 1) + p.head_dim) * eb >= (int64_t{1} << 31))
      return false;
  }
  for (int i = 0; i < 2 && p.kv_dtype == DType::kInt8; ++i) {
    const TensorView& sc = i == 0 ? kv.k_scale : kv.v_scale;
    const ScaleMode mode = i == 0 ? p.k_scale_mode : p.v_scale_mode;
    if (mode != ScaleMode::kPerToken) continue;
    int64_t far = 0;
    for (int d = 0; d < sc.ndim; ++d) far += (sc.shape[d] - 1) * sc.strides[d];
    if (far >= (int64_t{1} << 31)) return false;
  }
  // q is read two elements at a time.
  if (reinterpret_cast<uintptr_t>(q.data) % 4 != 0 || q.strides[0] % 2 != 0 || q.strides[1] % 2 != 0) return false;
  // Per-token scales are copied with 4-byte cp.async: fp32 only (per-channel scales: any dtype).
  if (p.kv_dtype == DType::kInt8) {
    if (p.k_scale_mode == ScaleMode::kPerToken && kv.k_scale.dtype != DType::kFloat32) return false;
    if (p.v_scale_mode == ScaleMode::kPerToken && kv.v_scale.dtype != DType::kFloat32) return false;
  }
  return true;
}

bool mma_decode_has_tma_form(const AttnProblem& p) {
  return p.page_size % 16 == 0 && p.head_dim * static_cast<int64_t>(dtype_size(p.kv_dtype)) >= 128;
}

int mma_decode_splits(const AttnProblem& p, int requested, int64_t sm_count, int ctas_per_sm) {
  if (requested > 0) return std::min(requested, kMmaDecodeMaxSplits);
  const int64_t max_kv = p.max_blocks_per_seq * p.page_size;
  const int64_t split_cap =
      std::clamp<int64_t>((max_kv + kMinKeysPerSplit - 1) / kMinKeysPerSplit, 1, kMmaDecodeMaxSplits);
  const int64_t ctas = std::max<int64_t>(1, p.batch_size * p.num_kv_heads);
  const int64_t target = std::max<int64_t>(1, sm_count) * std::clamp(ctas_per_sm, 1, 2);
  return static_cast<int>(std::clamp<int64_t>((target + ctas / 2) / ctas, 1, split_cap));
}

size_t mma_decode_workspace_bytes(const AttnProblem& p, int64_t total_rows, int num_splits) {
  if (num_splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(total_rows) * p.num_qo_heads * num_splits;
  return align256(rows * p.head_dim * sizeof(float)) + align256(rows * sizeof(float));
}

// ---- CUDA-core split decode ----

int split_decode_splits(const AttnProblem& p, int requested, int sm_count) {
  const int64_t max_kv = p.max_blocks_per_seq * p.page_size;
  const int64_t split_cap = std::max<int64_t>(
      1, std::min<int64_t>(kSplitDecodeMaxSplits, (max_kv + kMinKeysPerSplit - 1) / kMinKeysPerSplit));
  if (requested > 0) return static_cast<int>(std::min<int64_t>(requested, kSplitDecodeMaxSplits));
  // Resident CTAs: kSplitDecodeCtasPerSm per SM (the kernels' __launch_bounds__ minimum).
  const int64_t head_tiles = (p.group_size + kSplitDecodeGroupTile - 1) / kSplitDecodeGroupTile;
  const int64_t ctas = p.batch_size * p.num_kv_heads * head_tiles;
  const int64_t slots = static_cast<int64_t>(sm_count) * kSplitDecodeCtasPerSm;
  return static_cast<int>(fullest_wave_splits(ctas, slots, split_cap));
}

size_t split_decode_workspace_bytes(const AttnProblem& p, int num_splits) {
  if (num_splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(p.batch_size) * p.num_qo_heads * num_splits;
  return align256(rows * p.head_dim * sizeof(float)) + align256(rows * sizeof(float));
}

// ---- decode through the tensor-core prefill ----

size_t tc_decode_workspace_bytes(const AttnProblem& p) {
  return (static_cast<size_t>(p.batch_size + 1) * sizeof(int32_t) + 255) / 256 * 256;
}

AttnProblem decode_as_prefill(const AttnProblem& p) {
  AttnProblem pp = p;
  pp.is_decode = false;
  pp.causal = true;
  pp.total_q = p.batch_size;
  return pp;
}

PrefillArgs decode_as_prefill_args(const DecodeArgs& a) {
  PrefillArgs pa;
  pa.q = a.q;
  pa.kv = a.kv;
  pa.block_tables = a.block_tables;
  pa.kv_lens = a.kv_lens;
  pa.out = a.out;
  pa.lse = a.lse;
  pa.mask_options.causal = true;
  pa.mask_options.local_window = a.local_window;
  pa.mask_options.global_window = a.global_window;
  pa.softmax_scale = a.softmax_scale;
  pa.gqa_layout = a.gqa_layout;
  pa.stream = a.stream;
  return pa;
}

// ---- shared ----

int64_t fullest_wave_splits(int64_t ctas, int64_t slots, int64_t split_cap) {
  ctas = std::max<int64_t>(1, ctas);
  slots = std::max<int64_t>(1, slots);  // a device reports >= 1 SM; a fake one might not
  const int64_t s_min = std::clamp<int64_t>((slots + ctas - 1) / ctas, 1, split_cap);
  int64_t best = s_min;
  double best_eff = 0;
  for (int64_t s = s_min; s <= std::min<int64_t>(split_cap, s_min + 8); ++s) {
    const int64_t total = ctas * s;
    const double eff = static_cast<double>(total) / (static_cast<double>((total + slots - 1) / slots) * slots);
    if (eff > best_eff + 0.02) {
      best_eff = eff;
      best = s;
    }
  }
  return best;
}

}  // namespace kvq::detail
