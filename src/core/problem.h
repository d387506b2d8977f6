// src/core/problem.h — the validated, normalized description of a call that every backend reads.
// Built by src/core/validate.cpp after all host-side checks passed; backends never re-validate.
#pragma once
#include <cstdint>

#include "kvq/views.h"

namespace kvq::detail {

struct AttnProblem {
  int64_t batch_size = 0;
  int64_t num_qo_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t group_size = 1;
  int64_t head_dim = 0;
  int64_t page_size = 0;
  int64_t num_blocks = 0;
  int64_t max_blocks_per_seq = 0;
  int64_t total_q = 0;           // q.shape[0]; rows past cu_q_lens[batch_size] are never touched
  DType q_dtype = DType::kBFloat16;
  DType kv_dtype = DType::kInt8;
  DType out_dtype = DType::kBFloat16;
  ScaleMode k_scale_mode = ScaleMode::kNone;
  ScaleMode v_scale_mode = ScaleMode::kNone;
  KvLayout layout = KvLayout::kHND;
  GqaLayout gqa_layout = GqaLayout::kGrouped;
  ComputeMode compute = ComputeMode::kNative;  // resolved (int8 q forces kInt8)
  float softmax_scale = 0.f;     // resolved (> 0)
  bool causal = true;
  int local_window = -1;
  int global_window = 0;
  bool has_mask = false;
  bool has_lse = false;
  bool is_decode = false;        // q_len = 1 per sequence, q row b <-> sequence b
};

// kv head index of q head h.
inline int64_t kv_head_of(const AttnProblem& p, int64_t h) {
  return p.gqa_layout == GqaLayout::kGrouped ? h / p.group_size : h % p.num_kv_heads;
}

// Visibility of key j for the query at absolute position pos (docs/design.md §1), mask aside.
inline bool is_visible(const AttnProblem& p, int64_t pos, int64_t j) {
  if (p.causal && j > pos) return false;
  if (p.local_window >= 0 && !(pos - j <= p.local_window || j < p.global_window)) return false;
  return true;
}

}  // namespace kvq::detail
