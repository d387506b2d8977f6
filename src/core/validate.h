// src/core/validate.h — the host-side checks of every entry point (docs/design.md §3).
//
// validate_* read only shapes, dtypes, strides, devices and options: they never touch tensor
// data, so they serve CPU and CUDA tensors alike, and they run before anything is launched or
// written. check_*_host read the metadata tensors (lengths, block tables, slots) on the host:
// the dispatcher runs them for CPU tensors only. Every failure throws kvq::Error naming the
// function and the argument, with "expected X, got Y".
#pragma once
#include <cstdint>

#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::detail {

// The geometry of one paged cache, read off its shapes.
struct CacheInfo {
  DType dtype = DType::kInt8;
  KvLayout layout = KvLayout::kHND;
  int64_t num_blocks = 0;
  int64_t num_kv_heads = 0;
  int64_t page_size = 0;
  int64_t head_dim = 0;
  ScaleMode k_mode = ScaleMode::kNone;
  ScaleMode v_mode = ScaleMode::kNone;
};

// `func` is the entry point named in messages ("paged_prefill", "plan_prefill", ...).
AttnProblem validate_prefill(const PrefillArgs& args, const char* func);
AttnProblem validate_decode(const DecodeArgs& args, const char* func);

struct AppendProblem {
  int64_t num_tokens = 0;
  CacheInfo cache;
};
AppendProblem validate_append(const AppendArgs& args, const char* func);

struct DequantProblem {
  CacheInfo cache;         // k_mode holds the mode of `scale`
  int64_t batch_size = 0;
  int64_t max_blocks_per_seq = 0;
  bool compact = false;
};
DequantProblem validate_dequant(const DequantArgs& args, const char* func);

void validate_calibrate(const TensorView& x, const TensorView& scale_out, const char* func);

// Host reads of CPU metadata. The bounds checks that keep the backend inside its buffers
// (cu_q_lens range, kv_lens vs table width, referenced block ids, mask length, slots) always
// run; `full` adds the rest (causal kv_len >= q_len).
void check_prefill_data_host(const PrefillArgs& args, const AttnProblem& p, bool full,
                             const char* func);
void check_decode_data_host(const DecodeArgs& args, const AttnProblem& p, bool full,
                            const char* func);
void check_append_data_host(const AppendArgs& args, const AppendProblem& ap, const char* func);
void check_dequant_data_host(const DequantArgs& args, const DequantProblem& dp, const char* func);

// Element i of a 1-D int32 CPU tensor (stride-aware).
int32_t read_i32(const TensorView& t, int64_t i);

}  // namespace kvq::detail
