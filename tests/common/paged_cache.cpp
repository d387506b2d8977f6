#include "tests/common/paged_cache.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "tests/common/half.h"

namespace kvq::test {

int8_t ref_quantize(float x, float scale) {
  const float r = std::nearbyint(x / scale);  // default rounding mode: ties to even
  return static_cast<int8_t>(std::min(127.f, std::max(-128.f, r)));
}

float ref_per_token_scale(float amax) { return std::max(amax / 127.f, 1e-8f); }
float ref_per_channel_scale(float amax) { return std::max(amax / 127.f, 1e-5f); }

int64_t cache_offset(const TensorView& cache, KvLayout layout, int64_t block, int64_t head, int64_t pos, int64_t dim) {
  return layout == KvLayout::kHND
             ? block * cache.strides[0] + head * cache.strides[1] + pos * cache.strides[2] + dim * cache.strides[3]
             : block * cache.strides[0] + pos * cache.strides[1] + head * cache.strides[2] + dim * cache.strides[3];
}

int64_t token_scale_offset(const TensorView& scale, KvLayout layout, int64_t block, int64_t head, int64_t pos) {
  return layout == KvLayout::kHND ? block * scale.strides[0] + head * scale.strides[1] + pos * scale.strides[2]
                                  : block * scale.strides[0] + pos * scale.strides[1] + head * scale.strides[2];
}

ScaleMode scale_mode_of(const TensorView& scale) {
  if (!scale.defined()) return ScaleMode::kNone;
  return scale.ndim == 3 ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
}

namespace {

std::vector<int64_t> cache_shape(const PagedCaseSpec& s, int64_t num_blocks) {
  return s.layout == KvLayout::kHND ? std::vector<int64_t>{num_blocks, s.num_kv_heads, s.page_size, s.head_dim}
                                    : std::vector<int64_t>{num_blocks, s.page_size, s.num_kv_heads, s.head_dim};
}

// kv head of row `row` (one (block, head, position) run of head_dim elements) of a contiguous cache.
int64_t head_of_row(const PagedCaseSpec& s, int64_t row) {
  return s.layout == KvLayout::kHND ? (row / s.page_size) % s.num_kv_heads : row % s.num_kv_heads;
}

// Fills orig (fp32, contiguous cache shape) with bf16-rounded randn, outlier channels scaled.
void fill_values(const PagedCaseSpec& s, Rng& rng, HostTensor& orig) {
  std::vector<float> channel_gain(static_cast<size_t>(s.num_kv_heads * s.head_dim), 1.f);
  for (int64_t h = 0; h < s.num_kv_heads; ++h) {
    const auto perm = rng.permutation(s.head_dim);
    for (int i = 0; i < std::min<int64_t>(s.num_outlier_channels, s.head_dim); ++i)
      channel_gain[static_cast<size_t>(h * s.head_dim + perm[static_cast<size_t>(i)])] = static_cast<float>(s.outlier_scale);
  }
  float* o = orig.ptr<float>();
  for (int64_t row = 0; row < orig.numel() / s.head_dim; ++row) {
    const float* gain = &channel_gain[static_cast<size_t>(head_of_row(s, row) * s.head_dim)];
    for (int64_t d = 0; d < s.head_dim; ++d)
      o[row * s.head_dim + d] = round_to_bf16(static_cast<float>(rng.normal()) * gain[d]);
  }
}

// Quantizes orig into cache (int8) and writes scale, or converts it (bf16/fp16 caches).
void quantize_cache(const PagedCaseSpec& s, int64_t num_blocks, ScaleMode mode, const HostTensor& orig,
                    HostTensor& cache, HostTensor& scale) {
  const float* o = orig.ptr<float>();
  const TensorView c = cache.view();
  const int64_t n = orig.numel();
  if (s.kv_dtype != DType::kInt8) {
    for (int64_t i = 0; i < n; ++i) store_element(c, i, o[i]);
    return;
  }
  int8_t* c8 = cache.ptr<int8_t>();
  if (mode == ScaleMode::kPerChannel) {
    scale = HostTensor(s.scale_dtype, {s.num_kv_heads, s.head_dim});
    const TensorView sv = scale.view();
    std::vector<float> amax(static_cast<size_t>(s.num_kv_heads * s.head_dim), 0.f);
    for (int64_t row = 0; row < n / s.head_dim; ++row) {
      float* a = &amax[static_cast<size_t>(head_of_row(s, row) * s.head_dim)];
      for (int64_t d = 0; d < s.head_dim; ++d) a[d] = std::max(a[d], std::fabs(o[row * s.head_dim + d]));
    }
    std::vector<float> stored(amax.size());
    for (size_t i = 0; i < amax.size(); ++i) {
      store_element(sv, static_cast<int64_t>(i), ref_per_channel_scale(amax[i]));
      stored[i] = static_cast<float>(load_element(sv, static_cast<int64_t>(i)));  // quantize with what is stored
    }
    for (int64_t row = 0; row < n / s.head_dim; ++row) {
      const float* sc = &stored[static_cast<size_t>(head_of_row(s, row) * s.head_dim)];
      for (int64_t d = 0; d < s.head_dim; ++d) c8[row * s.head_dim + d] = ref_quantize(o[row * s.head_dim + d], sc[d]);
    }
    return;
  }
  scale = s.layout == KvLayout::kHND ? HostTensor(s.scale_dtype, {num_blocks, s.num_kv_heads, s.page_size})
                                     : HostTensor(s.scale_dtype, {num_blocks, s.page_size, s.num_kv_heads});
  const TensorView sv = scale.view();
  // Per-token: each run of head_dim contiguous elements is one (block, head, position).
  for (int64_t row = 0; row < n / s.head_dim; ++row) {
    const float* x = o + row * s.head_dim;
    float amax = 0.f;
    for (int64_t d = 0; d < s.head_dim; ++d) amax = std::max(amax, std::fabs(x[d]));
    // Scale tensors are contiguous and ordered like the cache rows (HND: blk,h,pos; NHD: blk,pos,h).
    store_element(sv, row, ref_per_token_scale(amax));
    const float sc = static_cast<float>(load_element(sv, row));
    for (int64_t d = 0; d < s.head_dim; ++d) c8[row * s.head_dim + d] = ref_quantize(x[d], sc);
  }
}

}  // namespace

PagedCase make_paged_case(const PagedCaseSpec& spec) {
  if (spec.q_lens.size() != spec.kv_lens.size()) throw std::invalid_argument("make_paged_case: q_lens/kv_lens sizes differ");
  PagedCase c;
  c.spec = spec;
  const PagedCaseSpec& s = c.spec;
  Rng rng(s.seed);
  c.batch_size = static_cast<int64_t>(s.q_lens.size());
  c.cu_q_lens_host.assign(1, 0);
  int64_t needed = 0, max_used = 0;
  for (int64_t b = 0; b < c.batch_size; ++b) {
    c.cu_q_lens_host.push_back(c.cu_q_lens_host.back() + s.q_lens[static_cast<size_t>(b)]);
    const int64_t used = (s.kv_lens[static_cast<size_t>(b)] + s.page_size - 1) / s.page_size;
    needed += used;
    max_used = std::max(max_used, used);
  }
  c.total_q = c.cu_q_lens_host.back();
  c.num_rows = c.total_q + s.padding_rows;
  c.num_blocks = needed + s.extra_blocks;
  c.max_blocks_per_seq = std::max<int64_t>(1, max_used + s.extra_table_cols);

  // Physical blocks: a random permutation handed out in order.
  std::vector<int32_t> perm = rng.permutation(c.num_blocks);
  if (!s.shuffle_blocks) std::sort(perm.begin(), perm.end());
  size_t next = 0;
  c.block_ids.resize(static_cast<size_t>(c.batch_size));
  for (int64_t b = 0; b < c.batch_size; ++b) {
    const int64_t used = (s.kv_lens[static_cast<size_t>(b)] + s.page_size - 1) / s.page_size;
    for (int64_t i = 0; i < used; ++i) c.block_ids[static_cast<size_t>(b)].push_back(perm[next++]);
  }
  c.block_tables = make_int32_2d(c.block_ids, c.max_blocks_per_seq, -1);
  c.cu_q_lens = make_int32(c.cu_q_lens_host);
  c.kv_lens = make_int32(s.kv_lens);

  // q: randn in the query dtype, never exactly zero.
  c.q = HostTensor::padded(s.q_dtype, {c.num_rows, s.num_qo_heads, s.head_dim}, s.q_pad);
  for (int64_t t = 0; t < c.num_rows; ++t)
    for (int64_t h = 0; h < s.num_qo_heads; ++h)
      for (int64_t d = 0; d < s.head_dim; ++d) {
        double x = round_to_dtype(rng.normal(), s.q_dtype);
        if (x == 0.0) x = 0.25;
        c.q.set({t, h, d}, x);
      }

  const std::vector<int64_t> shape = cache_shape(s, c.num_blocks);
  c.k_orig = HostTensor(DType::kFloat32, shape);
  c.v_orig = HostTensor(DType::kFloat32, shape);
  fill_values(s, rng, c.k_orig);
  fill_values(s, rng, c.v_orig);
  c.k_cache = HostTensor(s.kv_dtype, shape);
  c.v_cache = HostTensor(s.kv_dtype, shape);
  quantize_cache(s, c.num_blocks, s.k_scale_mode, c.k_orig, c.k_cache, c.k_scale);
  quantize_cache(s, c.num_blocks, s.v_scale_mode, c.v_orig, c.v_cache, c.v_scale);

  c.out = HostTensor::padded(s.q_dtype, {c.num_rows, s.num_qo_heads, s.head_dim}, s.out_pad);
  if (s.with_lse) c.lse = HostTensor(DType::kFloat32, {c.num_rows, s.num_qo_heads});
  c.poison_outputs();
  return c;
}

void requantize(PagedCase& c) {
  quantize_cache(c.spec, c.num_blocks, c.spec.k_scale_mode, c.k_orig, c.k_cache, c.k_scale);
  quantize_cache(c.spec, c.num_blocks, c.spec.v_scale_mode, c.v_orig, c.v_cache, c.v_scale);
}

PagedKvCache PagedCase::kv() const {
  PagedKvCache kv;
  kv.k_cache = k_cache.view();
  kv.v_cache = v_cache.view();
  kv.k_scale = k_scale.view();
  kv.v_scale = v_scale.view();
  kv.layout = spec.layout;
  return kv;
}

PrefillArgs PagedCase::prefill_args(const MaskOptions& mask_options, GqaLayout gqa, ComputeMode compute) const {
  PrefillArgs a;
  a.q = q.view();
  a.kv = kv();
  a.block_tables = block_tables.view();
  a.cu_q_lens = cu_q_lens.view();
  a.kv_lens = kv_lens.view();
  a.mask = mask.view();
  a.out = out.view();
  a.lse = lse.view();
  a.mask_options = mask_options;
  a.gqa_layout = gqa;
  a.compute = compute;
  return a;
}

DecodeArgs PagedCase::decode_args(int local_window, int global_window, GqaLayout gqa) const {
  for (int32_t ql : spec.q_lens)
    if (ql != 1) throw std::invalid_argument("decode_args: every q_len must be 1");
  if (spec.padding_rows != 0) throw std::invalid_argument("decode_args: padding_rows must be 0");
  DecodeArgs a;
  a.q = q.view();
  a.kv = kv();
  a.block_tables = block_tables.view();
  a.kv_lens = kv_lens.view();
  a.out = out.view();
  a.lse = lse.view();
  a.local_window = local_window;
  a.global_window = global_window;
  a.gqa_layout = gqa;
  return a;
}

void PagedCase::poison_outputs() {
  out.poison();
  if (lse.defined()) lse.poison();
}

void PagedCase::set_random_mask(Rng& rng, double p_visible, int empty_row_every) {
  int64_t total = 0;
  for (int64_t b = 0; b < batch_size; ++b)
    total += static_cast<int64_t>(spec.q_lens[static_cast<size_t>(b)]) * spec.kv_lens[static_cast<size_t>(b)];
  mask = HostTensor(DType::kBool, {std::max<int64_t>(total, 0)});
  uint8_t* m = mask.ptr<uint8_t>();
  int64_t off = 0;
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t ql = spec.q_lens[static_cast<size_t>(b)], kl = spec.kv_lens[static_cast<size_t>(b)];
    for (int64_t i = 0; i < ql; ++i)
      for (int64_t j = 0; j < kl; ++j) {
        const bool empty_row = empty_row_every > 0 && i % empty_row_every == empty_row_every - 1;
        m[off++] = (!empty_row && rng.bernoulli(p_visible)) ? 1 : 0;
      }
  }
}

}  // namespace kvq::test
