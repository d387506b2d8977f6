// src/cpu/cache_ops.cpp — writing, dequantizing and calibrating the paged cache on the CPU.
//
// append: token n of k_new/v_new [num_tokens, num_kv_heads, head_dim] goes to block
//   slot / page_size, offset slot % page_size (slot = slot_mapping[n]; slot < 0 skips the
//   token). Per kv head and token:
//     int8, per-channel: cache = quantize(x[d], scale[h][d])
//     int8, per-token:   s = per_token_scale(fmaxf-amax_d |x[d]|), stored in the scale tensor's
//                        dtype; cache = quantize(x[d], stored s), so dequantization with the
//                        stored scale is what the quantization assumed
//     bf16/fp16 cache:   cache = x rounded to nearest-even
//   K and V each use their own mode. Work is split over kv heads (disjoint outputs); within a
//   head tokens are written in order, so a duplicated slot deterministically keeps the last.
//
// dequantize_blocks: every block referenced by (block_tables, kv_lens), i.e. entries
//   i < ceil(kv_len / page_size) of each row, is expanded to bf16/fp16 (int8 * scale in fp32,
//   rounded to nearest-even). Full mode writes block id -> same id in `out` (each distinct
//   block once); compact mode writes the references in row-major (sequence, block) order to
//   out blocks 0, 1, 2, ... and fills out_block_tables with those ids (-1 past each row's
//   last referenced block). Work is split over output blocks.
//
// calibrate: scale_out[h][d] = fmaxf(fmaxf-amax over tokens of |x[n][h][d]| / 127, 1e-5).
//
// Every entry checks the metadata it indexes with (slots, block ids, lengths) before writing
// anything, so a bad table raises kvq::Error and leaves the cache and outputs untouched. The
// checks are src/core's (validate.h), the ones the dispatcher ran: one wording on every backend.
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "kvq/error.h"
#include "src/core/backend.h"
#include "src/core/validate.h"
#include "src/cpu/parallel.h"
#include "src/cpu/quant.h"
#include "src/cpu/tensor_access.h"

namespace kvq::cpu {
namespace {

int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

// Writes one token row x[head_dim] (fp32) for kv head h at (blk, off) of one cache.
void write_token(const TensorView& cache, const TensorView& scale, ScaleMode mode, KvLayout layout,
                 int64_t blk, int64_t off, int64_t h, int64_t head_dim, const float* x,
                 std::vector<float>& row) {
  const int64_t base = paged_offset(cache, layout, blk, h, off);
  if (cache.dtype != DType::kInt8) {
    store_row_f32(cache.data, cache.dtype, base, head_dim, x);
    return;
  }
  int8_t* dst = static_cast<int8_t*>(cache.data) + base;
  if (mode == ScaleMode::kPerChannel) {
    for (int64_t d = 0; d < head_dim; ++d)
      row[d] = load_f32(scale.data, scale.dtype, h * scale.strides[0] + d * scale.strides[1]);
    for (int64_t d = 0; d < head_dim; ++d) dst[d] = quantize_int8(x[d], row[d]);
    return;
  }
  float amax = 0.f;
  for (int64_t d = 0; d < head_dim; ++d) amax = amax_update(amax, x[d]);
  const float s = round_to_dtype(per_token_scale_of(amax), scale.dtype);
  store_f32(scale.data, scale.dtype, paged_offset(scale, layout, blk, h, off), s);
  for (int64_t d = 0; d < head_dim; ++d) dst[d] = quantize_int8(x[d], s);
}

}  // namespace

void append(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
            int64_t page_size, int64_t num_blocks, ScaleMode k_mode, ScaleMode v_mode) {
  const char* func = "append";
  const PagedKvCache& kv = args.kv;
  for (const auto& [cache, mode, name] :
       {std::tuple{&kv.k_cache, k_mode, "k_scale"}, std::tuple{&kv.v_cache, v_mode, "v_scale"}}) {
    KVQ_CHECK(cache->dtype != DType::kInt8 || mode != ScaleMode::kNone, func, name,
              "expected a per-channel or per-token scale for an int8 cache, got none");
  }
  std::vector<int64_t> slots(num_tokens);
  for (int64_t n = 0; n < num_tokens; ++n) slots[n] = read_index(args.slot_mapping, n);
  // Duplicates are no hazard here (tokens are written in order, the last wins): bounds only.
  detail::check_slot_values(func, slots.data(), num_tokens, num_blocks * page_size, /*distinct=*/false);
  parallel_for(num_kv_heads, [&](int64_t h, int) {
    std::vector<float> buf(head_dim), row(head_dim);
    float* x = buf.data();
    for (int64_t n = 0; n < num_tokens; ++n) {
      if (slots[n] < 0) continue;
      const int64_t blk = slots[n] / page_size;
      const int64_t off = slots[n] % page_size;
      const TensorView& kn = args.k_new;
      load_row_f32(kn.data, kn.dtype, n * kn.strides[0] + h * kn.strides[1], head_dim, x);
      write_token(kv.k_cache, kv.k_scale, k_mode, kv.layout, blk, off, h, head_dim, x, row);
      const TensorView& vn = args.v_new;
      load_row_f32(vn.data, vn.dtype, n * vn.strides[0] + h * vn.strides[1], head_dim, x);
      write_token(kv.v_cache, kv.v_scale, v_mode, kv.layout, blk, off, h, head_dim, x, row);
    }
  });
}

void dequantize_blocks(const DequantArgs& args, int64_t num_kv_heads, int64_t page_size,
                       int64_t head_dim, ScaleMode mode) {
  const char* func = "dequantize_blocks";
  const TensorView& cache = args.cache;
  const TensorView& out = args.out;
  const TensorView& table = args.block_tables;
  const bool compact = args.out_block_tables.defined();
  const int64_t batch_size = table.shape[0];
  const int64_t num_blocks = cache.shape[0];
  KVQ_CHECK(cache.dtype != DType::kInt8 || mode != ScaleMode::kNone, func, "scale",
            "expected a per-channel or per-token scale for an int8 cache, got none");

  // Lengths, block ids and (compact mode) the room in `out`, checked before any write. The shapes
  // of `out` and out_block_tables are validate_dequant's: out_block_tables has the shape of
  // block_tables, so the lengths bound its columns too; in full mode `out` has the cache's shape.
  const int64_t referenced =
      detail::check_lens_and_table_data(func, args.kv_lens, table, page_size, num_blocks);
  if (compact) detail::check_compact_out_blocks(func, out, referenced);

  // (source block, destination block) pairs.
  std::vector<std::pair<int64_t, int64_t>> copies;
  std::vector<int64_t> num_pages(batch_size);
  std::vector<char> seen(compact ? 0 : num_blocks, 0);
  for (int64_t b = 0; b < batch_size; ++b) {
    num_pages[b] = ceil_div(read_index(args.kv_lens, b), page_size);
    for (int64_t i = 0; i < num_pages[b]; ++i) {
      const int64_t blk = read_index2(table, b, i);
      if (compact) {
        copies.emplace_back(blk, static_cast<int64_t>(copies.size()));
      } else if (!seen[blk]) {
        seen[blk] = 1;
        copies.emplace_back(blk, blk);
      }
    }
  }

  if (compact) {
    const TensorView& ot = args.out_block_tables;
    int64_t next = 0;
    for (int64_t b = 0; b < batch_size; ++b) {
      for (int64_t i = 0; i < ot.shape[1]; ++i) {
        const int64_t off = b * ot.strides[0] + i * ot.strides[1];
        const int64_t id = i < num_pages[b] ? next++ : -1;
        if (ot.dtype == DType::kInt64)
          static_cast<int64_t*>(ot.data)[off] = id;
        else
          static_cast<int32_t*>(ot.data)[off] = static_cast<int32_t>(id);
      }
    }
  }

  const int64_t num_copies = static_cast<int64_t>(copies.size());
  std::vector<std::vector<float>> bufs(num_workers_for(num_copies), std::vector<float>(2 * head_dim));
  parallel_for(num_copies, [&](int64_t c, int worker) {
    const auto [src, dst] = copies[c];
    float* x = bufs[worker].data();
    float* s = x + head_dim;
    for (int64_t h = 0; h < num_kv_heads; ++h) {
      if (mode == ScaleMode::kPerChannel)
        for (int64_t d = 0; d < head_dim; ++d)
          s[d] = load_f32(args.scale.data, args.scale.dtype, h * args.scale.strides[0] + d * args.scale.strides[1]);
      for (int64_t off = 0; off < page_size; ++off) {
        load_row_f32(cache.data, cache.dtype, paged_offset(cache, args.layout, src, h, off), head_dim, x);
        if (mode == ScaleMode::kPerChannel) {
          for (int64_t d = 0; d < head_dim; ++d) x[d] = dequantize_int8(static_cast<int8_t>(x[d]), s[d]);
        } else if (mode == ScaleMode::kPerToken) {
          const float st = load_f32(args.scale.data, args.scale.dtype, paged_offset(args.scale, args.layout, src, h, off));
          for (int64_t d = 0; d < head_dim; ++d) x[d] = dequantize_int8(static_cast<int8_t>(x[d]), st);
        }
        store_row_f32(out.data, out.dtype, paged_offset(out, args.layout, dst, h, off), head_dim, x);
      }
    }
  });
}

void calibrate(const TensorView& x, const TensorView& scale_out) {
  const int64_t num_tokens = x.shape[0];
  const int64_t num_kv_heads = x.shape[1];
  const int64_t head_dim = x.shape[2];
  if (num_kv_heads == 0 || head_dim == 0) return;  // no scale to write (and x may be null)
  std::vector<float> amax(num_kv_heads * head_dim, 0.f);
  parallel_for(num_kv_heads, [&](int64_t h, int) {
    float* a = amax.data() + h * head_dim;
    std::vector<float> row(head_dim);
    for (int64_t n = 0; n < num_tokens; ++n) {
      const int64_t base = n * x.strides[0] + h * x.strides[1];
      if (x.strides[2] == 1) {
        load_row_f32(x.data, x.dtype, base, head_dim, row.data());
      } else {
        for (int64_t d = 0; d < head_dim; ++d) row[d] = load_f32(x.data, x.dtype, base + d * x.strides[2]);
      }
      for (int64_t d = 0; d < head_dim; ++d) a[d] = amax_update(a[d], row[d]);
    }
    for (int64_t d = 0; d < head_dim; ++d)
      store_f32(scale_out.data, scale_out.dtype, h * scale_out.strides[0] + d * scale_out.strides[1],
                calibrate_scale_of(a[d]));
  });
}

}  // namespace kvq::cpu
