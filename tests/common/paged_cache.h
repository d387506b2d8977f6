// tests/common/paged_cache.h — builds a random paged-attention problem on the host.
//
// make_paged_case(spec) draws, from spec.seed:
//   - K/V over the WHOLE cache (every block and position, used or not): randn in fp32, rounded to
//     bf16 (as the seed's torch.randn(dtype=bf16)), optionally with outlier channels scaled up;
//   - for int8 caches, the quantization exactly as the seed does it:
//       per-channel: scale[h,d] = max(amax over blocks and positions / 127, 1e-5)
//       per-token:   scale[blk,h,pos] = max(amax over d / 127, 1e-8)
//       int8 = clamp(round_half_even(x / scale), -128, 127), x / scale in fp32 with the stored
//       (dtype-rounded) scale;
//     bf16/fp16 caches hold the values rounded to that dtype and have no scales;
//   - a block table over a random permutation of num_blocks = sum ceil(kv_len/page_size) + extra
//     physical blocks, entries past each sequence's used blocks set to -1;
//   - q: randn rounded to q_dtype, never exactly zero; out/lse allocated and poisoned.
// All tensors are host tensors. q and out have total_q + padding_rows rows (bucket padding).
#pragma once
#include <cstdint>
#include <vector>

#include "kvq/views.h"
#include "tests/common/rng.h"
#include "tests/common/tensor.h"

namespace kvq::test {

// Every field has a default (so a spec can be written as designated initializers naming only what
// a case changes).
struct PagedCaseSpec {
  std::vector<int32_t> q_lens{};   // per sequence; decode cases use 1 everywhere
  std::vector<int32_t> kv_lens{};  // per sequence
  int64_t num_qo_heads = 8;
  int64_t num_kv_heads = 2;
  int64_t head_dim = 128;
  int64_t page_size = 16;
  KvLayout layout = KvLayout::kHND;
  DType q_dtype = DType::kBFloat16;   // bf16 / fp16
  DType kv_dtype = DType::kInt8;      // int8 / bf16 / fp16
  ScaleMode k_scale_mode = ScaleMode::kPerChannel;  // ignored for bf16/fp16 caches
  ScaleMode v_scale_mode = ScaleMode::kPerChannel;
  DType scale_dtype = DType::kFloat32;  // fp32 / bf16 / fp16 (the seed stores bf16)
  int num_outlier_channels = 0;         // per kv head, random channels scaled by outlier_scale
  double outlier_scale = 10.0;
  int64_t extra_blocks = 10;            // num_blocks = needed + extra_blocks
  int64_t extra_table_cols = 0;         // table width = max used blocks + extra_table_cols (>= 1)
  bool shuffle_blocks = true;           // false: identity physical order
  int64_t padding_rows = 0;             // q/out rows past cu_q_lens[B]
  std::vector<int64_t> q_pad{};         // HostTensor::padded pads of q ([T, Hq, D]); {} = contiguous
  std::vector<int64_t> out_pad{};       // same for out
  bool with_lse = false;
  uint64_t seed = 0;
};

struct PagedCase {
  PagedCaseSpec spec;
  int64_t batch_size = 0;
  int64_t total_q = 0;           // cu_q_lens[B]
  int64_t num_rows = 0;          // q.shape[0] = total_q + padding_rows
  int64_t num_blocks = 0;
  int64_t max_blocks_per_seq = 0;
  std::vector<int32_t> cu_q_lens_host;             // [B + 1]
  std::vector<std::vector<int32_t>> block_ids;     // per sequence, the used physical blocks

  HostTensor q;             // [num_rows, Hq, D] q_dtype (possibly strided)
  HostTensor k_cache;       // HND [num_blocks, Hkv, ps, D] / NHD [num_blocks, ps, Hkv, D]
  HostTensor v_cache;
  HostTensor k_scale;       // per-channel [Hkv, D]; per-token HND [nb, Hkv, ps] / NHD [nb, ps, Hkv]; absent for bf16/fp16
  HostTensor v_scale;
  HostTensor k_orig;        // fp32, cache shape: the values before quantization
  HostTensor v_orig;
  HostTensor block_tables;  // [B, max_blocks_per_seq] int32
  HostTensor cu_q_lens;     // [B + 1] int32
  HostTensor kv_lens;       // [B] int32
  HostTensor out;           // [num_rows, Hq, D] q_dtype, poisoned
  HostTensor lse;           // [num_rows, Hq] fp32, poisoned (absent unless spec.with_lse)
  HostTensor mask;          // absent unless set_random_mask() was called

  PagedKvCache kv() const;
  // Args over this case's host tensors (causal by default; set mask_options for windows).
  PrefillArgs prefill_args(const MaskOptions& mask_options = {}, GqaLayout gqa = GqaLayout::kGrouped,
                           ComputeMode compute = ComputeMode::kNative) const;
  // Decode args: requires q_len == 1 for every sequence and no padding rows.
  DecodeArgs decode_args(int local_window = -1, int global_window = 0,
                         GqaLayout gqa = GqaLayout::kGrouped) const;
  // Re-poisons out and lse (call before every run).
  void poison_outputs();
  // A random bool mask (non-causal prefill): each entry visible with probability p_visible;
  // with empty_row_every > 0 every such q row of each sequence is fully masked.
  void set_random_mask(Rng& rng, double p_visible, int empty_row_every = 0);
  // Physical block/position of token j of sequence b.
  int64_t physical_block(int64_t b, int64_t j) const { return block_ids[static_cast<size_t>(b)][static_cast<size_t>(j / spec.page_size)]; }
};

PagedCase make_paged_case(const PagedCaseSpec& spec);
// Re-derives k_cache/v_cache and their scales from k_orig/v_orig, the way make_paged_case does
// (per-channel amax over the whole cache, per-token amax per row): for tests that shape the
// values after make_paged_case drew them.
void requantize(PagedCase& c);

// Element offset of (block, kv head, position, dim) in a cache of the given layout.
int64_t cache_offset(const TensorView& cache, KvLayout layout, int64_t block, int64_t head, int64_t pos, int64_t dim);
// Element offset of a per-token scale (block, kv head, position).
int64_t token_scale_offset(const TensorView& scale, KvLayout layout, int64_t block, int64_t head, int64_t pos);
// Whether a scale tensor is per-token (3-D) or per-channel (2-D).
ScaleMode scale_mode_of(const TensorView& scale);

// The quantization definitions of docs/design.md §1, written independently of src/cpu:
// round-half-even of x / scale (fp32 division), clamped to [-128, 127].
int8_t ref_quantize(float x, float scale);
// max(amax / 127, 1e-8) in fp32.
float ref_per_token_scale(float amax);
// max(amax / 127, 1e-5) in fp32.
float ref_per_channel_scale(float amax);

}  // namespace kvq::test
