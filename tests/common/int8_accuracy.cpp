#include "tests/common/int8_accuracy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "tests/common/half.h"
#include "tests/common/rng.h"
#include "tests/common/tensor.h"

namespace kvq::test {
namespace {

constexpr int64_t kHeads = 6;

float* key_row(PagedCase& c, int64_t b, int64_t j) {
  return c.k_orig.ptr<float>() +
         cache_offset(c.k_orig.view(), c.spec.layout, c.physical_block(b, j), 0, j % c.spec.page_size, 0);
}

double softmax_scale_of(const PagedCase& c) { return 1.0 / std::sqrt(static_cast<double>(c.spec.head_dim)); }

int64_t row_begin(const PagedCase& c, int64_t b) { return c.cu_q_lens_host[static_cast<size_t>(b)]; }
int64_t row_end(const PagedCase& c, int64_t b) { return c.cu_q_lens_host[static_cast<size_t>(b) + 1]; }

// Scales q row (t, h) of sequence b so that its logits softmax_scale * <q, k_j> over (a sample of)
// its visible keys have standard deviation `target` (on the unquantized keys).
void scale_query_logits(PagedCase& c, int64_t b, int64_t t, int64_t h, double target, Rng& rng) {
  const int64_t D = c.spec.head_dim;
  const int64_t kv = c.spec.kv_lens[static_cast<size_t>(b)], q_len = c.spec.q_lens[static_cast<size_t>(b)];
  const int64_t visible = kv - q_len + (t - row_begin(c, b)) + 1;
  const int64_t samples = std::min<int64_t>(visible, 2048);
  std::vector<double> q(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) q[static_cast<size_t>(d)] = c.q.at({t, h, d});
  double sum = 0, sum2 = 0;
  for (int64_t i = 0; i < samples; ++i) {
    const float* k = key_row(c, b, samples == visible ? i : rng.randint(0, visible));
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += q[static_cast<size_t>(d)] * k[d];
    s *= softmax_scale_of(c);
    sum += s;
    sum2 += s * s;
  }
  const double mean = sum / static_cast<double>(samples);
  const double sd = std::sqrt(std::max(sum2 / static_cast<double>(samples) - mean * mean, 1e-30));
  for (int64_t d = 0; d < D; ++d) {
    double x = round_to_dtype(q[static_cast<size_t>(d)] * (target / sd), c.spec.q_dtype);
    if (x == 0.0) x = q[static_cast<size_t>(d)] > 0 ? 1e-3 : -1e-3;
    c.q.set({t, h, d}, x);
  }
}

// 4 K channels much larger than the rest: g * (sign + z / 2), z the randn already there.
void add_outlier_channels(PagedCase& c, Rng& rng) {
  const int64_t D = c.spec.head_dim;
  const double gains[] = {10, 20, 35, 50};
  const std::vector<int32_t> perm = rng.permutation(D);
  float* k = c.k_orig.ptr<float>();
  const int64_t rows = c.k_orig.numel() / D;  // Hkv = 1: every run of D elements is one token
  for (int i = 0; i < 4; ++i) {
    const int64_t d = perm[static_cast<size_t>(i)];
    const double sign = rng.bernoulli(0.5) ? 1.0 : -1.0;
    for (int64_t r = 0; r < rows; ++r) {
      float& x = k[r * D + d];
      x = round_to_bf16(static_cast<float>(gains[i] * (sign + 0.5 * x)));
    }
  }
}

// Values not of unit scale: K x 3 (outliers included), V x 0.05, and one token in 8 (per kv row of
// the cache, drawn independently) a small-magnitude V token, randn x 3e-4 (amax ~1e-3).
void set_magnitudes(PagedCase& c, Rng& rng) {
  const int64_t D = c.spec.head_dim;
  float* k = c.k_orig.ptr<float>();
  float* v = c.v_orig.ptr<float>();
  for (int64_t i = 0; i < c.k_orig.numel(); ++i) k[i] = round_to_bf16(k[i] * 3.f);
  for (int64_t r = 0; r < c.v_orig.numel() / D; ++r) {
    const float g = rng.bernoulli(0.125) ? 3e-4f : 0.05f;
    for (int64_t d = 0; d < D; ++d) v[r * D + d] = round_to_bf16(v[r * D + d] * g);
  }
}

// For (query t, head h) of sequence b: 4 visible keys along the query's direction (plus noise 0.3)
// with logits ln(kv_len) + {2, 3, 4, 5}; the bulk's logits are ~N(0, 1). `used` keeps keys distinct.
void plant_peaks(PagedCase& c, int64_t b, int64_t t, int64_t h, std::set<int64_t>& used, Rng& rng) {
  const int64_t D = c.spec.head_dim;
  const int64_t kv = c.spec.kv_lens[static_cast<size_t>(b)], q_len = c.spec.q_lens[static_cast<size_t>(b)];
  const int64_t first_pos = kv - q_len;  // a key at or before it is visible to every query of b
  std::vector<double> q(static_cast<size_t>(D));
  double norm = 0;
  for (int64_t d = 0; d < D; ++d) {
    q[static_cast<size_t>(d)] = c.q.at({t, h, d});
    norm += q[static_cast<size_t>(d)] * q[static_cast<size_t>(d)];
  }
  norm = std::sqrt(norm);
  for (int i = 0; i < 4; ++i) {
    int64_t j = rng.randint(0, first_pos + 1);
    while (used.count(j) != 0) j = rng.randint(0, first_pos + 1);
    used.insert(j);
    const double logit = std::log(static_cast<double>(kv)) + 2 + i;
    const double beta = logit / (softmax_scale_of(c) * norm);  // scale * <q, beta q/|q|> = logit
    float* k = key_row(c, b, j);
    for (int64_t d = 0; d < D; ++d)
      k[d] = round_to_bf16(static_cast<float>(beta * q[static_cast<size_t>(d)] / norm + 0.3 * rng.normal()));
  }
}

}  // namespace

const char* int8_workload_name(Int8Workload w) {
  switch (w) {
    case Int8Workload::kFlat: return "flat";
    case Int8Workload::kRandn: return "randn";
    case Int8Workload::kPeaked: return "peaked";
    case Int8Workload::kOutliers: return "outliers";
  }
  return "?";
}

const char* int8_case_name(Int8Case c) { return c == Int8Case::kPlainK ? "plain_k" : "outlier_k"; }

std::vector<Int8Workload> int8_case_workloads(Int8Case c) {
  if (c == Int8Case::kOutlierK) return {Int8Workload::kOutliers};
  return {Int8Workload::kFlat, Int8Workload::kRandn, Int8Workload::kPeaked};
}

Int8Workload int8_workload_of_head(Int8Case c, int64_t h) {
  if (c == Int8Case::kOutlierK) return Int8Workload::kOutliers;
  return int8_case_workloads(c)[static_cast<size_t>(h / 2)];
}

PagedCase make_int8_accuracy_case(Int8Case which) {
  PagedCaseSpec s;
  s.kv_lens = {1 << 10, 16 << 10, 64 << 10, 128 << 10};
  s.q_lens = {4, 3, 2, 1};
  s.num_qo_heads = kHeads;
  s.num_kv_heads = 1;
  s.head_dim = 128;
  s.page_size = 64;
  s.layout = which == Int8Case::kPlainK ? KvLayout::kNHD : KvLayout::kHND;
  s.extra_blocks = 3;
  s.extra_table_cols = 1;
  s.with_lse = true;
  s.seed = 0x1a8c00u + static_cast<uint64_t>(which);
  PagedCase c = make_paged_case(s);
  Rng rng(s.seed ^ 0x5eedu);
  if (which == Int8Case::kOutlierK) add_outlier_channels(c, rng);
  set_magnitudes(c, rng);
  for (int64_t b = 0; b < c.batch_size; ++b) {
    std::set<int64_t> planted;
    for (int64_t t = row_begin(c, b); t < row_end(c, b); ++t)
      for (int64_t h = 0; h < kHeads; ++h) {
        switch (int8_workload_of_head(which, h)) {
          case Int8Workload::kFlat: scale_query_logits(c, b, t, h, 0.05, rng); break;
          case Int8Workload::kRandn: scale_query_logits(c, b, t, h, 1.0, rng); break;
          case Int8Workload::kPeaked: plant_peaks(c, b, t, h, planted, rng); break;
          case Int8Workload::kOutliers: scale_query_logits(c, b, t, h, 1.5, rng); break;
        }
      }
  }
  requantize(c);
  return c;
}

void set_int8_accuracy_mode(PagedCase& c, ScaleMode mode) {
  if (c.spec.k_scale_mode == mode && c.spec.v_scale_mode == mode) return;  // already quantized so
  c.spec.k_scale_mode = c.spec.v_scale_mode = mode;
  requantize(c);
}

double int8_workload_error(const PagedCase& c, Int8Case which, const TensorView& out, const RefOutput& ref,
                           int64_t b, Int8Workload w) {
  double worst = 0;
  for (int64_t h = 0; h < c.spec.num_qo_heads; ++h) {
    if (int8_workload_of_head(which, h) != w) continue;
    double num = 0, den = 0;
    for (int64_t t = row_begin(c, b); t < row_end(c, b); ++t)
      for (int64_t d = 0; d < c.spec.head_dim; ++d) {
        const double o = load_element(out, offset_of(out, {t, h, d}));
        const double r = ref.out_at(t, h, d);
        if (!std::isfinite(o)) return std::numeric_limits<double>::infinity();
        num += (o - r) * (o - r);
        den += r * r;
      }
    worst = std::max(worst, den > 0 ? std::sqrt(num / den) : std::numeric_limits<double>::infinity());
  }
  return worst;
}

}  // namespace kvq::test
