// Randomized prefill grid on the CPU backend against the naive fp64 reference:
// head_dim × page_size × group_size, with kv lengths around page boundaries (page-1, page+1,
// random), a cached prefix, shuffled block tables with -1 past the used entries, both cache
// layouts and both GQA layouts (alternating), lse checked.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "tests/cpu/cpu_check.h"

namespace kvq::test {
namespace {

using GridParam = std::tuple<int64_t, int64_t, int64_t>;  // head_dim, page_size, group_size

class PrefillGrid : public ::testing::TestWithParam<GridParam> {};

TEST_P(PrefillGrid, MatchesReference) {
  const auto [head_dim, page_size, group] = GetParam();
  const uint64_t seed = static_cast<uint64_t>(head_dim * 1000003 + page_size * 101 + group);
  Rng rng(seed);
  PagedCaseSpec s;
  s.num_kv_heads = group >= 8 ? 1 : 2;
  s.num_qo_heads = group * s.num_kv_heads;
  s.head_dim = head_dim;
  s.page_size = page_size;
  const int64_t long_kv = std::max<int64_t>(2 * page_size + 2, 70);
  const int64_t kvs[3] = {std::max<int64_t>(1, page_size - 1), page_size + 1, rng.randint(1, long_kv + 1)};
  const int64_t max_q = page_size >= 512 ? 6 : 12;
  for (int64_t kv : kvs) {
    s.kv_lens.push_back(static_cast<int32_t>(kv));
    s.q_lens.push_back(static_cast<int32_t>(rng.randint(1, std::min(kv, max_q) + 1)));
  }
  s.layout = (seed % 2) ? KvLayout::kNHD : KvLayout::kHND;
  s.extra_table_cols = 1;
  s.extra_blocks = 3;
  s.with_lse = true;
  s.seed = seed;
  PagedCase c = make_paged_case(s);
  SCOPED_TRACE(case_label(s));
  const GqaLayout gqa = (seed / 2 % 2) ? GqaLayout::kInterleaved : GqaLayout::kGrouped;
  check_prefill(c, c.prefill_args({}, gqa, ComputeMode::kNative), "grid native");
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, PrefillGrid,
    ::testing::Combine(::testing::Values<int64_t>(1, 33, 64, 80, 96, 128, 192, 256),
                       ::testing::Values<int64_t>(1, 3, 7, 16, 48, 100, 1000, 1024),
                       ::testing::Values<int64_t>(1, 3, 16)),
    [](const ::testing::TestParamInfo<GridParam>& param_info) {
      return "hd" + std::to_string(std::get<0>(param_info.param)) + "_ps" + std::to_string(std::get<1>(param_info.param)) + "_g" +
             std::to_string(std::get<2>(param_info.param));
    });

// int8 compute over a smaller grid (head_dim × page_size), per-channel and per-token scales.
using Int8Param = std::tuple<int64_t, int64_t, int>;  // head_dim, page_size, scale combo

std::string int8_param_name(const ::testing::TestParamInfo<Int8Param>& info) {
  static const char* combos[] = {"kch_vch", "ktok_vch", "kch_vtok", "ktok_vtok"};
  return "hd" + std::to_string(std::get<0>(info.param)) + "_ps" + std::to_string(std::get<1>(info.param)) + "_" +
         combos[std::get<2>(info.param)];
}

class PrefillInt8Grid : public ::testing::TestWithParam<Int8Param> {};

TEST_P(PrefillInt8Grid, MatchesReference) {
  const auto [head_dim, page_size, combo] = GetParam();
  const uint64_t seed = static_cast<uint64_t>(77 + head_dim * 7919 + page_size * 31 + combo);
  Rng rng(seed);
  PagedCaseSpec s;
  s.num_kv_heads = 2;
  s.num_qo_heads = 8;
  s.head_dim = head_dim;
  s.page_size = page_size;
  s.k_scale_mode = (combo & 1) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.v_scale_mode = (combo & 2) ? ScaleMode::kPerToken : ScaleMode::kPerChannel;
  s.layout = (combo == 1 || combo == 2) ? KvLayout::kNHD : KvLayout::kHND;
  for (int b = 0; b < 3; ++b) {
    const int64_t kv = rng.randint(1, 300);
    s.kv_lens.push_back(static_cast<int32_t>(kv));
    s.q_lens.push_back(static_cast<int32_t>(rng.randint(1, std::min<int64_t>(kv, 24) + 1)));
  }
  s.with_lse = true;
  s.seed = seed;
  PagedCase c = make_paged_case(s);
  SCOPED_TRACE(case_label(s));
  check_prefill(c, c.prefill_args({}, GqaLayout::kGrouped, ComputeMode::kInt8), "grid int8");
}

INSTANTIATE_TEST_SUITE_P(Cpu, PrefillInt8Grid,
                         ::testing::Combine(::testing::Values<int64_t>(33, 64, 80, 128, 256),
                                            ::testing::Values<int64_t>(1, 16, 100),
                                            ::testing::Values(0, 1, 2, 3)),
                         int8_param_name);

}  // namespace
}  // namespace kvq::test
