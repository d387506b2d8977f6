// src/cuda/prefill/dequant_blocks.h — host entry of the block dequantization kernels, used by the
// public dequantize_blocks (full and compact modes) and by the `dequant` prefill path.
#pragma once
#include <cstdint>

#include "kvq/views.h"

namespace kvq::cuda {

struct DequantLaunch {
  TensorView cache;             // int8 (or bf16/fp16) [num_blocks, <block shape in layout>]
  TensorView scale;             // per-channel / per-token, or absent
  ScaleMode mode = ScaleMode::kNone;
  KvLayout layout = KvLayout::kHND;
  TensorView block_tables;      // [batch_size, max_blocks_per_seq] int32
  TensorView kv_lens;           // [batch_size] int32
  TensorView out;               // bf16/fp16 [num_out_blocks, <block shape in layout>]
  TensorView out_block_tables;  // compact mode: [batch_size, width] int32/int64; absent: full mode
  bool write_table = true;      // compact mode: (re)compute out_block_tables before copying
  int64_t num_kv_heads = 0, page_size = 0, head_dim = 0;
};

void launch_dequant_blocks(const DequantLaunch& d, void* stream);

}  // namespace kvq::cuda
