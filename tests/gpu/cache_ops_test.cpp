// tests/gpu/cache_ops_test.cpp — append, dequantize_blocks and calibrate on the GPU against the CPU
// backend, bit for bit: same initial bytes on both sides, same call, every byte of the results
// (cache, scales, outputs, remapped tables) compared, untouched regions included.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

int64_t count_byte_diffs(const HostTensor& a, const HostTensor& b) {
  if (a.nbytes() != b.nbytes()) return -1;
  const auto* x = static_cast<const uint8_t*>(a.data());
  const auto* y = static_cast<const uint8_t*>(b.data());
  int64_t n = 0;
  for (size_t i = 0; i < a.nbytes(); ++i) n += x[i] != y[i];
  return n;
}

// ---------------------------------------------------------------- append
struct AppendConfig {
  int64_t num_kv_heads, head_dim, page_size;
  std::vector<int32_t> prefix, new_lens;  // prefix -1: padded sequence (nothing written)
  ScaleMode k_mode = ScaleMode::kPerChannel, v_mode = ScaleMode::kPerChannel;
  DType scale_dtype = DType::kFloat32;
  DType in_dtype = DType::kBFloat16;
  DType cache_dtype = DType::kInt8;
  KvLayout layout = KvLayout::kHND;
  bool slots_int64 = true;
  std::string name;
};

std::vector<AppendConfig> append_configs() {
  std::vector<AppendConfig> v;
  // The seed's cache-write cases.
  v.push_back({2, 128, 128, {0, 0}, {130, 33}, ScaleMode::kPerChannel, ScaleMode::kPerChannel, DType::kFloat32,
               DType::kBFloat16, DType::kInt8, KvLayout::kHND, true, "seed_a"});
  v.push_back({2, 128, 2048, {1023, 2047}, {900, 1025}, ScaleMode::kPerChannel, ScaleMode::kPerChannel,
               DType::kBFloat16, DType::kBFloat16, DType::kInt8, KvLayout::kHND, true, "seed_b"});
  v.push_back({2, 128, 128, {32, -1, 35}, {1, 1, 1}, ScaleMode::kPerChannel, ScaleMode::kPerChannel, DType::kFloat32,
               DType::kBFloat16, DType::kInt8, KvLayout::kHND, false, "seed_c_padded"});
  v.push_back({2, 128, 128, {224, 542, 34, 41, 54, 57, 65, 0}, {432, 84, 977, 93, 23, 89, 31, 555},
               ScaleMode::kPerChannel, ScaleMode::kPerChannel, DType::kFloat32, DType::kBFloat16, DType::kInt8,
               KvLayout::kHND, true, "seed_d"});
  // Per-token scales of each dtype, NHD, other inputs, odd shapes, float caches.
  v.push_back({3, 96, 16, {5, 0}, {40, 17}, ScaleMode::kPerToken, ScaleMode::kPerToken, DType::kFloat32,
               DType::kBFloat16, DType::kInt8, KvLayout::kHND, true, "tok_f32"});
  v.push_back({2, 64, 7, {3, 10}, {9, 30}, ScaleMode::kPerToken, ScaleMode::kPerChannel, DType::kBFloat16,
               DType::kFloat32, DType::kInt8, KvLayout::kNHD, false, "tok_bf16_nhd_f32in"});
  v.push_back({4, 256, 64, {0, 63, 64}, {65, 1, 64}, ScaleMode::kPerChannel, ScaleMode::kPerToken, DType::kFloat16,
               DType::kFloat16, DType::kInt8, KvLayout::kNHD, true, "tok_f16_hd256"});
  v.push_back({1, 37, 3, {2}, {11}, ScaleMode::kPerToken, ScaleMode::kPerToken, DType::kBFloat16, DType::kBFloat16,
               DType::kInt8, KvLayout::kHND, true, "odd_hd37_ps3"});
  v.push_back({2, 128, 16, {4, 0}, {20, 3}, ScaleMode::kNone, ScaleMode::kNone, DType::kFloat32, DType::kFloat32,
               DType::kBFloat16, KvLayout::kHND, true, "bf16_cache"});
  v.push_back({2, 80, 16, {4, 0}, {20, 3}, ScaleMode::kNone, ScaleMode::kNone, DType::kFloat32, DType::kBFloat16,
               DType::kFloat16, KvLayout::kNHD, false, "fp16_cache_nhd"});
  return v;
}

class AppendBitExact : public testing::TestWithParam<int> {};

TEST_P(AppendBitExact, MatchesCpu) {
  const AppendConfig cfg = append_configs()[GetParam()];
  const int64_t batch = static_cast<int64_t>(cfg.prefix.size());
  PagedCaseSpec s;
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t total = cfg.prefix[b] < 0 ? 0 : cfg.prefix[b] + cfg.new_lens[b];
    s.q_lens.push_back(1);
    s.kv_lens.push_back(total);
  }
  s.num_kv_heads = cfg.num_kv_heads;
  s.num_qo_heads = cfg.num_kv_heads;
  s.head_dim = cfg.head_dim;
  s.page_size = cfg.page_size;
  s.layout = cfg.layout;
  s.kv_dtype = cfg.cache_dtype;
  s.k_scale_mode = cfg.k_mode == ScaleMode::kNone ? ScaleMode::kPerChannel : cfg.k_mode;
  s.v_scale_mode = cfg.v_mode == ScaleMode::kNone ? ScaleMode::kPerChannel : cfg.v_mode;
  s.scale_dtype = cfg.scale_dtype;
  s.extra_blocks = 3;
  s.seed = 500 + GetParam();
  PagedCase c = make_paged_case(s);

  // New tokens and their slots.
  Rng rng(600 + GetParam());
  std::vector<int64_t> slots;
  for (int64_t b = 0; b < batch; ++b) {
    for (int32_t j = 0; j < cfg.new_lens[b]; ++j) {
      if (cfg.prefix[b] < 0) {
        slots.push_back(-1);
        continue;
      }
      const int64_t pos = cfg.prefix[b] + j;
      slots.push_back(c.physical_block(b, pos) * cfg.page_size + pos % cfg.page_size);
    }
  }
  const int64_t n = static_cast<int64_t>(slots.size());
  HostTensor k_new(cfg.in_dtype, {n, cfg.num_kv_heads, cfg.head_dim});
  HostTensor v_new(cfg.in_dtype, {n, cfg.num_kv_heads, cfg.head_dim});
  for (int64_t i = 0; i < k_new.numel(); ++i) {
    // Values spanning several scales, including exact ties x/scale = k + 0.5 now and then.
    k_new.store(i, rng.normal() * (1 + 3 * rng.uniform()));
    v_new.store(i, rng.normal() * 2);
  }
  HostTensor slot_t(cfg.slots_int64 ? DType::kInt64 : DType::kInt32, {n});
  for (int64_t i = 0; i < n; ++i) slot_t.store(i, static_cast<double>(slots[i]));

  // CPU side on copies of the cache.
  HostTensor kc = c.k_cache, vc = c.v_cache, ks = c.k_scale, vs = c.v_scale;
  AppendArgs ha;
  ha.k_new = k_new.view();
  ha.v_new = v_new.view();
  ha.slot_mapping = slot_t.view();
  ha.kv.k_cache = kc.view();
  ha.kv.v_cache = vc.view();
  if (cfg.cache_dtype == DType::kInt8) {
    ha.kv.k_scale = ks.view();
    ha.kv.v_scale = vs.view();
  }
  ha.kv.layout = cfg.layout;
  append(ha);

  // GPU side on the original bytes.
  DeviceTensor dk(k_new), dv(v_new), dslot(slot_t), dkc(c.k_cache), dvc(c.v_cache), dks(c.k_scale), dvs(c.v_scale);
  AppendArgs ga;
  ga.k_new = dk.view();
  ga.v_new = dv.view();
  ga.slot_mapping = dslot.view();
  ga.kv.k_cache = dkc.view();
  ga.kv.v_cache = dvc.view();
  if (cfg.cache_dtype == DType::kInt8) {
    ga.kv.k_scale = dks.view();
    ga.kv.v_scale = dvs.view();
  }
  ga.kv.layout = cfg.layout;
  ga.check = GetParam() % 2 == 0;
  append(ga);
  KVQ_TEST_CUDA(cudaDeviceSynchronize());
  HostTensor gkc = c.k_cache, gvc = c.v_cache, gks = c.k_scale, gvs = c.v_scale;
  dkc.download(gkc);
  dvc.download(gvc);
  EXPECT_EQ(count_byte_diffs(kc, gkc), 0) << cfg.name << ": k_cache bytes differ";
  EXPECT_EQ(count_byte_diffs(vc, gvc), 0) << cfg.name << ": v_cache bytes differ";
  if (cfg.cache_dtype == DType::kInt8) {
    dks.download(gks);
    dvs.download(gvs);
    EXPECT_EQ(count_byte_diffs(ks, gks), 0) << cfg.name << ": k_scale bytes differ";
    EXPECT_EQ(count_byte_diffs(vs, gvs), 0) << cfg.name << ": v_scale bytes differ";
  }
  // The write must have changed something where tokens went (the test is not vacuous).
  if (n > 0 && cfg.prefix[0] >= 0) EXPECT_GT(count_byte_diffs(c.k_cache, gkc), 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, AppendBitExact, testing::Range(0, static_cast<int>(append_configs().size())),
                         [](const testing::TestParamInfo<int>& info) { return append_configs()[info.param].name; });

TEST(AppendCheck, SlotPastTheCacheIsAnError) {
  HostTensor k_new(DType::kBFloat16, {1, 1, 64}), v_new(DType::kBFloat16, {1, 1, 64});
  HostTensor kc(DType::kInt8, {2, 1, 4, 64}), vc(DType::kInt8, {2, 1, 4, 64});
  HostTensor ks(DType::kFloat32, {1, 64}), vs(DType::kFloat32, {1, 64});
  for (int64_t i = 0; i < 64; ++i) {
    ks.store(i, 0.01);
    vs.store(i, 0.01);
    k_new.store(i, 0.5);
    v_new.store(i, 0.5);
  }
  HostTensor slot = make_int32({8});
  DeviceTensor dk(k_new), dv(v_new), dkc(kc), dvc(vc), dks(ks), dvs(vs), ds(slot);
  AppendArgs a;
  a.k_new = dk.view();
  a.v_new = dv.view();
  a.slot_mapping = ds.view();
  a.kv.k_cache = dkc.view();
  a.kv.v_cache = dvc.view();
  a.kv.k_scale = dks.view();
  a.kv.v_scale = dvs.view();
  a.check = true;
  try {
    append(a);
    FAIL() << "expected kvq::Error for slot 8 >= 2 * 4";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "slot_mapping") << e.what();
  }
  // Without check the kernel skips the out-of-range slot: nothing is written anywhere.
  a.check = false;
  append(a);
  KVQ_TEST_CUDA(cudaDeviceSynchronize());
  HostTensor back = kc;
  dkc.download(back);
  EXPECT_EQ(count_byte_diffs(kc, back), 0);
}

// ---------------------------------------------------------------- dequantize_blocks
class DequantBitExact : public testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(DequantBitExact, MatchesCpu) {
  const auto [variant, compact] = GetParam();
  PagedCaseSpec s;
  s.q_lens = {1, 1, 1, 1};
  s.kv_lens = {33, 0, 70, 16};
  s.num_qo_heads = 2;
  s.num_kv_heads = 2;
  s.head_dim = variant == 2 ? 80 : 128;
  s.page_size = variant == 1 ? 7 : 16;
  s.layout = variant == 1 ? KvLayout::kNHD : KvLayout::kHND;
  s.k_scale_mode = variant == 2 ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.scale_dtype = variant == 1 ? DType::kBFloat16 : DType::kFloat32;
  s.extra_table_cols = 2;
  s.seed = 700 + variant;
  PagedCase c = make_paged_case(s);
  const DType out_dtype = variant == 1 ? DType::kFloat16 : DType::kBFloat16;
  int64_t referenced = 0;
  for (int32_t kv : s.kv_lens) referenced += (kv + s.page_size - 1) / s.page_size;
  std::vector<int64_t> out_shape = c.k_cache.shape();
  if (compact) out_shape[0] = referenced + 1;
  HostTensor out_cpu(out_dtype, out_shape);
  out_cpu.poison();
  HostTensor table_cpu(DType::kInt32, {c.batch_size, c.max_blocks_per_seq});
  table_cpu.poison();
  HostTensor out_gpu = out_cpu, table_gpu = table_cpu;

  DequantArgs h;
  h.cache = c.k_cache.view();
  h.scale = c.k_scale.view();
  h.block_tables = c.block_tables.view();
  h.kv_lens = c.kv_lens.view();
  h.out = out_cpu.view();
  if (compact) h.out_block_tables = table_cpu.view();
  h.layout = s.layout;
  dequantize_blocks(h);

  DeviceTensor dcache(c.k_cache), dscale(c.k_scale), dbt(c.block_tables), dkv(c.kv_lens), dout(out_gpu), dtab(table_gpu);
  DequantArgs g = h;
  g.cache = dcache.view();
  g.scale = dscale.view();
  g.block_tables = dbt.view();
  g.kv_lens = dkv.view();
  g.out = dout.view();
  g.out_block_tables = compact ? dtab.view() : TensorView{};
  g.check = variant == 0;
  dequantize_blocks(g);
  KVQ_TEST_CUDA(cudaDeviceSynchronize());
  dout.download(out_gpu);
  EXPECT_EQ(count_byte_diffs(out_cpu, out_gpu), 0) << "out bytes differ (untouched blocks included)";
  if (compact) {
    dtab.download(table_gpu);
    EXPECT_EQ(count_byte_diffs(table_cpu, table_gpu), 0) << "remapped block table differs";
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, DequantBitExact, testing::Combine(testing::Range(0, 3), testing::Bool()),
                         [](const testing::TestParamInfo<std::tuple<int, bool>>& info) {
                           return "v" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_compact" : "_full");
                         });

// ---------------------------------------------------------------- calibrate
class CalibrateBitExact : public testing::TestWithParam<DType> {};

TEST_P(CalibrateBitExact, MatchesCpu) {
  HostTensor x(GetParam(), {1000, 3, 72});
  Rng rng(42);
  for (int64_t i = 0; i < x.numel(); ++i) x.store(i, rng.normal() * (i % 7 == 0 ? 5 : 1));
  HostTensor s_cpu(DType::kFloat32, {3, 72});
  HostTensor s_gpu = s_cpu;
  calibrate(x.view(), s_cpu.view());
  DeviceTensor dx(x), ds(s_gpu);
  calibrate(dx.view(), ds.view());
  KVQ_TEST_CUDA(cudaDeviceSynchronize());
  ds.download(s_gpu);
  EXPECT_EQ(count_byte_diffs(s_cpu, s_gpu), 0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CalibrateBitExact,
                         testing::Values(DType::kFloat32, DType::kBFloat16, DType::kFloat16),
                         [](const testing::TestParamInfo<DType>& info) { return std::string(to_string(info.param)); });

}  // namespace
}  // namespace kvq::test
