// bench/cli/workload.h — builds paged int8 (and reference bf16) caches for the CLI's demo and bench.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench/cli/util.h"

namespace kvq_cli {

struct Shape {
  int64_t num_qo_heads = 32, num_kv_heads = 8, head_dim = 128, page_size = 16;
  kvq::KvLayout layout = kvq::KvLayout::kHND;
};

// The block tables of one batch over a shared cache: sequence b owns the shuffled physical blocks
// table[b][0..ceil(kv_len_b/page)), unused entries -1.
struct Batch {
  std::vector<int32_t> q_lens, kv_lens;
  std::vector<int32_t> cu_q_lens;   // [B+1]
  std::vector<int32_t> table;       // [B, max_blocks]
  int64_t max_blocks = 1;
  int64_t total_q() const { return cu_q_lens.back(); }
  int64_t batch_size() const { return static_cast<int64_t>(kv_lens.size()); }
};

// Assigns physical blocks from `perm` (consumed from *next) to every sequence of the batch.
Batch make_batch(const std::vector<int32_t>& q_lens, const std::vector<int32_t>& kv_lens,
                 int64_t page_size, const std::vector<int32_t>& perm, size_t* next);

// Visible (unmasked) score entries of a causal batch: sum over queries of min(kv_len, pos + 1).
int64_t visible_pairs(const Batch& b, bool causal);

std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng, float stddev = 1.f);

}  // namespace kvq_cli
