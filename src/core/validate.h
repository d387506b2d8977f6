// src/core/validate.h — the host-side checks of every entry point (docs/design.md §3).
//
// validate_* read only shapes, dtypes, strides, devices and options: they never touch tensor
// data, so they serve CPU and CUDA tensors alike, and they run before anything is launched or
// written. The device-data checks ("device-data values" below) read what the metadata holds
// (lengths, block ids, cu_q_lens, slots, scales) in host memory: a CPU call's own tensors, or the
// host copies the CUDA backend makes under check=true. They are the only definition of those
// checks: the dispatcher, the CPU backend and the CUDA backend all call them, so every backend
// refuses a bad input with the same message. check_*_data_host apply them to one CPU call.
// Every failure throws kvq::Error naming the function and the argument, with "expected X, got Y".
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

// ---- device-data values, over host memory ----
// Arrays are int32 and contiguous, as validation leaves the tensors they come from: kv_lens[b],
// cu_q_lens[b], block_tables[b * table_row_stride + i].

// kv_len (element b of the lengths `arg`: "kv_lens", or plan_prefill's "kv_lens_host") in
// [0, max_blocks_per_seq * page_size].
void check_kv_len_value(const char* func, const char* arg, int64_t b, int64_t kv_len,
                        int64_t max_blocks_per_seq, int64_t page_size);

// Every kv_lens[b] as check_kv_len_value says, and the block ids of the ceil(kv_lens[b] /
// page_size) entries sequence b reads in [0, num_blocks). Returns the number of referenced
// entries, sum_b ceil(kv_lens[b] / page_size).
int64_t check_lens_and_table_values(const char* func, const int32_t* kv_lens, int64_t batch_size,
                                    const int32_t* block_tables, int64_t max_blocks_per_seq,
                                    int64_t table_row_stride, int64_t page_size,
                                    int64_t num_blocks);
// The same over validated int32 CPU tensors kv_lens [batch_size] and block_tables
// [batch_size, max_blocks_per_seq].
int64_t check_lens_and_table_data(const char* func, const TensorView& kv_lens,
                                  const TensorView& block_tables, int64_t page_size,
                                  int64_t num_blocks);

// cu_q_lens[0] = 0, non-decreasing, cu_q_lens[batch_size] <= total_q. `arg` names the array in
// messages ("cu_q_lens", or plan_prefill's "cu_q_lens_host").
void check_cu_q_lens_values(const char* func, const char* arg, const int32_t* cu_q_lens,
                            int64_t batch_size, int64_t total_q);

// mask [n] (only its shape is read): n = sum_b q_len_b * kv_len_b, lengths already checked.
void check_mask_length(const char* func, const TensorView& mask, const int32_t* cu_q_lens,
                       const int32_t* kv_lens, int64_t batch_size);

// dequantize_blocks in compact mode: out [num_out_blocks, ...] (only its shape is read) holds
// the `referenced` blocks.
void check_compact_out_blocks(const char* func, const TensorView& out, int64_t referenced);

// append: slots[n] < num_slots (a negative slot skips its token); with `distinct`, no slot twice.
void check_slot_values(const char* func, const int64_t* slots, int64_t num_tokens,
                       int64_t num_slots, bool distinct);

// append: a per-channel scale [num_kv_heads, head_dim] (fp32, bf16 or fp16, any strides, host
// memory) holds finite values > 0, since append divides by it. `name`: "k_scale" or "v_scale".
void check_channel_scale_values(const char* func, const char* name, const TensorView& s);

// ---- the data checks of one CPU call ----
// The bounds checks that keep the backend inside its buffers
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
