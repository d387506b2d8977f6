// tests/unit/attn_tile_test.cpp — the tensor-core prefill kernels' index math
// (src/cuda/common/attn_tile.cuh, host build of the same inline functions the kernels use) against
// a brute-force enumeration of docs/design.md §1's visibility rule: for random CTAs (query rows at
// absolute positions [pos_min, pos_max]), kv lengths, tile sizes, causal or not, local and global
// windows (hostile extremes included):
//   - every KV tile holding a key some row of the CTA sees is iterated, exactly once, in
//     increasing order, and no iterated tile lies past kv_len;
//   - key_visible(row_bounds(...)) is the rule itself;
//   - a tile that tile_needs_mask() calls full has every key visible to every row.
#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <set>
#include <vector>

#include "src/cuda/common/attn_tile.cuh"
#include "tests/common/rng.h"

namespace kvq::test {
namespace {

using kvq::cuda::key_visible;
using kvq::cuda::kv_tile_range;
using kvq::cuda::row_bounds;
using kvq::cuda::tile_needs_mask;

// docs/design.md §1, written out: key j of a row at absolute position p.
bool visible_rule(int64_t j, int64_t p, int64_t kv_len, bool causal, int64_t local_window, int64_t global_window) {
  if (j < 0 || j >= kv_len) return false;
  if (causal && j > p) return false;
  if (local_window >= 0 && !(p - j <= local_window || j < global_window)) return false;
  return true;
}

struct Case {
  int kv_len, pos_min, pos_max, tile_kv;
  bool causal;
  int local_window, global_window;
};

void check_case(const Case& c) {
  SCOPED_TRACE(testing::Message() << "kv_len " << c.kv_len << " pos [" << c.pos_min << ", " << c.pos_max << "] tile "
                                  << c.tile_kv << " causal " << c.causal << " local " << c.local_window << " global "
                                  << c.global_window);
  const auto range = kv_tile_range(c.kv_len, c.pos_min, c.pos_max, c.tile_kv, c.causal, c.local_window,
                                   c.global_window);
  ASSERT_GE(range.n_iter, 0);
  std::vector<int> tiles;
  for (int it = 0; it < range.n_iter; ++it) tiles.push_back(range.tile(it));
  for (size_t i = 1; i < tiles.size(); ++i) ASSERT_LT(tiles[i - 1], tiles[i]) << "tiles in increasing order, once";
  const int n_tiles_kv = (c.kv_len + c.tile_kv - 1) / c.tile_kv;
  for (int t : tiles) {
    ASSERT_GE(t, 0);
    ASSERT_LT(t, std::max(n_tiles_kv, 0)) << "no tile past kv_len";
  }
  const std::set<int> iterated(tiles.begin(), tiles.end());
  // Brute force over the CTA's rows (positions) and the keys.
  for (int t = 0; t < n_tiles_kv; ++t) {
    const int kv0 = t * c.tile_kv;
    bool any_visible = false, all_visible = true;
    for (int64_t p = c.pos_min; p <= c.pos_max; ++p) {
      const auto b = row_bounds(static_cast<int>(p), c.kv_len, c.causal, c.local_window);
      for (int j = kv0; j < kv0 + c.tile_kv; ++j) {
        const bool rule = visible_rule(j, p, c.kv_len, c.causal, c.local_window, c.global_window);
        // key_visible is checked for keys inside kv_len (the kernels clamp hi to kv_len - 1).
        if (j < c.kv_len) ASSERT_EQ(key_visible(j, b, c.global_window), rule) << "key " << j << " row " << p;
        any_visible = any_visible || rule;
        all_visible = all_visible && rule;
      }
    }
    if (any_visible) ASSERT_TRUE(iterated.count(t)) << "tile " << t << " holds a visible key but is not iterated";
    if (!tile_needs_mask(kv0, c.tile_kv, c.kv_len, c.pos_min, c.pos_max, c.causal, c.local_window, c.global_window))
      ASSERT_TRUE(all_visible) << "tile " << t << " is called full but has an invisible (row, key)";
  }
}

TEST(AttnTile, HandPickedShapes) {
  // No window, causal and not; prefix chunks; a tile boundary on the diagonal; empty CTAs.
  for (const Case& c : std::vector<Case>{
           {8192, 0, 31, 128, true, -1, 0},
           {8192, 8160, 8191, 128, true, -1, 0},
           {16384, 15360, 15391, 64, true, -1, 0},
           {333, 0, 332, 64, false, -1, 0},
           {100, -5, 10, 32, true, -1, 0},     // q_len > kv_len: negative positions see nothing
           {0, -4, -1, 128, true, -1, 0},      // kv_len 0
           {4096, 4000, 4095, 128, true, 255, 0},
           {4096, 4000, 4095, 128, true, 255, 4},   // local + global window (attention sinks)
           {4096, 4000, 4095, 128, true, 255, 300}, // global window reaching the local one
           {4096, 10, 40, 128, true, 0, 0},         // local window 0: the diagonal only
       })
    check_case(c);
}

TEST(AttnTile, RandomShapesAndWindows) {
  Rng rng(2026);
  for (int i = 0; i < 3000; ++i) {
    Case c;
    c.tile_kv = std::vector<int>{32, 64, 128}[rng.randint(0, 3)];
    c.kv_len = static_cast<int>(rng.randint(0, 700));
    const int q_len = static_cast<int>(rng.randint(1, 200));
    const int first = static_cast<int>(rng.randint(0, q_len));
    const int last = std::min(q_len - 1, first + static_cast<int>(rng.randint(0, 64)));
    c.pos_min = c.kv_len - q_len + first;
    c.pos_max = c.kv_len - q_len + last;
    c.causal = rng.randint(0, 4) != 0;
    c.local_window = c.causal && rng.randint(0, 2) ? static_cast<int>(rng.randint(0, 300)) : -1;
    c.global_window = c.local_window >= 0 && rng.randint(0, 2) ? static_cast<int>(rng.randint(0, 200)) : 0;
    check_case(c);
    if (HasFatalFailure()) return;
  }
}

TEST(AttnTile, HostileExtremesDoNotOverflow) {
  // Huge windows and positions near INT_MAX: the range stays inside the table, nothing wraps.
  for (int lw : {0, 1, INT_MAX - 1, INT_MAX}) {
    for (int gw : {0, 7, INT_MAX}) {
      const auto r = kv_tile_range(1000, 900, 999, 128, true, lw, gw);
      ASSERT_GE(r.n_iter, 1);
      ASSERT_LE(r.n_iter, 8);
      for (int it = 0; it < r.n_iter; ++it) {
        ASSERT_GE(r.tile(it), 0);
        ASSERT_LT(r.tile(it), 8);
      }
    }
  }
  // kv_len clamped by the caller to the table; a CTA far past it under causal sees at most all tiles.
  const auto r = kv_tile_range(INT_MAX - 200, INT_MAX - 300, INT_MAX - 200, 128, true, -1, 0);
  ASSERT_EQ(r.n_iter, (INT_MAX - 200 + 127) / 128);
  const auto b = row_bounds(5, 100, true, INT_MAX);
  EXPECT_EQ(b.lo, 5 - INT_MAX);
  EXPECT_TRUE(key_visible(0, b, 0));
}

}  // namespace
}  // namespace kvq::test
