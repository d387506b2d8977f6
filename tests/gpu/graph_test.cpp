// tests/gpu/graph_test.cpp — CUDA-graph capture and replay (the seed's edge case): capture prefill
// (each path) and decode once at the largest shape, then replay with smaller padded batches written
// into the same device metadata (q_len 0 / kv_len 0 sequences, a repeated tail in cu_q_lens, table
// rows of -1). Active rows must equal an eager run of the same metadata bit for bit and match the
// CPU oracle; padding rows stay poisoned. GraphDecodeMaxBatch.* is the serving pattern: one graph
// at the maximum batch and table width, replayed with live sequences scattered over the batch slots,
// new lengths, new queries and freshly shuffled block tables written in place (dead slots: kv_len
// 0, table row -1, so an empty row). GraphPrefillMaxBatch.* is the same pattern for prefill: one
// plan and one graph at 8 sequences x q_len 64 over 32-page tables (int8 per-channel and bf16
// caches, each prefill path), replayed with live batches written in place: sequences with q_len 0
// (a repeated cu_q_lens entry), dead slots (q_len 0, kv_len 0, table row -1), a live sequence with
// kv_len 0 (causal q_len > kv_len: empty rows, docs/api.md), new queries and reshuffled tables each
// round. Rows past cu_q_lens[B] are bucket padding and stay the sentinel (never written).
// Run: kvq_gpu_tests --gtest_filter='Graph*' (under each KVQ_DECODE_PATH for the decode ones).
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "tests/gpu/graph_setup.h"

namespace kvq::test {
namespace {

constexpr double kTolNative = 1e-2;

// Empties the sequences from `active` on in the host tensors: kv_len 0 and a table row of -1.
void empty_slots(PagedCase& c, int64_t active) {
  for (int64_t b = active; b < c.batch_size; ++b) {
    c.kv_lens.ptr<int32_t>()[b] = 0;
    for (int64_t i = 0; i < c.max_blocks_per_seq; ++i) c.block_tables.set({b, i}, -1);
  }
}

// Shrinks the batch to its first `active` sequences: later ones get q_len 0, kv_len 0 and a table
// row of -1. Host tensors and cu_q_lens_host are updated (the oracle reads them).
void shrink(PagedCase& c, int64_t active) {
  empty_slots(c, active);
  for (int64_t b = active; b < c.batch_size; ++b) {
    c.cu_q_lens.ptr<int32_t>()[b + 1] = c.cu_q_lens.ptr<int32_t>()[active];
    c.cu_q_lens_host[b + 1] = c.cu_q_lens_host[active];
    c.spec.q_lens[b] = 0;
    c.spec.kv_lens[b] = 0;
  }
  c.total_q = c.cu_q_lens_host[c.batch_size];
}

class GraphPrefill : public testing::TestWithParam<PrefillPath> {};

TEST_P(GraphPrefill, CaptureLargestReplaySmaller) {
  PagedCase c = make_paged_case({.q_lens = {40, 17, 33, 9}, .kv_lens = {90, 17, 120, 50}, .num_qo_heads = 8,
                                 .num_kv_heads = 2, .head_dim = 128, .page_size = 16, .padding_rows = 4,
                                 .with_lse = true, .seed = 321});
  DeviceCase dc(c);
  PrefillArgs a = dc.prefill_args(c.prefill_args());
  a.path = GetParam();
  // Eager first (also proves the path serves the shape), then the capture.
  GraphOfOneCall g;
  ASSERT_NO_FATAL_FAILURE(g.capture_prefill(c, a));
  if (g.refused()) GTEST_SKIP() << g.refusal();

  for (int64_t active : {4, 3, 1, 2, 0}) {
    shrink(c, active);
    dc.cu_q_lens.upload(c.cu_q_lens);
    dc.kv_lens.upload(c.kv_lens);
    dc.block_tables.upload(c.block_tables);
    const RunOutputs eager = g.run(c, dc, false);  // an eager run of this metadata
    const RunOutputs replay = g.run(c, dc, true);
    EXPECT_TRUE(same_bytes(replay.out, eager.out)) << "graph replay differs from eager, active=" << active;
    EXPECT_TRUE(same_bytes(replay.lse, eager.lse)) << "graph replay lse differs from eager, active=" << active;
    EXPECT_EQ(count_written_outside(replay.out, c.total_q), 0) << "active=" << active;
    if (active > 0) {
      const RefOutput ref = cpu_prefill(c.prefill_args(), true);
      const ErrorStats st = compare_output(replay.out.view(), ref, c.cu_q_lens_host);
      EXPECT_TRUE(st.ok(kTolNative)) << "active=" << active << ": " << st.describe();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, GraphPrefill,
                         testing::Values(PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kDequant,
                                         PrefillPath::kGeneric),
                         [](const testing::TestParamInfo<PrefillPath>& info) { return std::string(to_string(info.param)); });

TEST(GraphDecode, CaptureLargestReplaySmaller) {
  PagedCase c = make_paged_case({.q_lens = {1, 1, 1, 1, 1, 1}, .kv_lens = {700, 33, 1200, 5, 260, 999},
                                 .num_qo_heads = 16, .num_kv_heads = 4, .head_dim = 128, .page_size = 16,
                                 .with_lse = true, .seed = 654});
  DeviceCase dc(c);
  DecodeArgs a = dc.decode_args(c.decode_args());
  a.num_splits = 0;
  GraphOfOneCall g;
  ASSERT_NO_FATAL_FAILURE(g.capture_decode(a));
  for (int64_t active : {6, 4, 1, 3, 0}) {
    empty_slots(c, active);
    dc.kv_lens.upload(c.kv_lens);
    dc.block_tables.upload(c.block_tables);
    const RunOutputs eager = g.run(c, dc, false);
    const RunOutputs replay = g.run(c, dc, true);
    EXPECT_TRUE(same_bytes(replay.out, eager.out)) << "graph replay differs from eager, active=" << active;
    const RefOutput ref = cpu_decode(c.decode_args(), true);
    const ErrorStats st = compare_decode_output(replay.out.view(), ref);
    EXPECT_TRUE(st.ok(kTolNative)) << "active=" << active << ": " << st.describe();
    const LseStats ls = compare_lse(replay.lse.view(), ref, c.batch_size);
    EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
  }
}

enum class GraphCache { kInt8PerChannel, kInt8PerToken, kBf16 };

const char* graph_cache_name(GraphCache g) {
  switch (g) {
    case GraphCache::kInt8PerChannel: return "Int8PerChannel";
    case GraphCache::kInt8PerToken: return "Int8PerToken";
    case GraphCache::kBf16: return "Bf16";
  }
  return "?";
}

// The cache of a max-batch case: int8 per-channel scales unless the parameter says otherwise.
void set_cache(PagedCaseSpec& s, GraphCache g) {
  if (g == GraphCache::kBf16) s.kv_dtype = DType::kBFloat16;
  if (g == GraphCache::kInt8PerToken) s.k_scale_mode = s.v_scale_mode = ScaleMode::kPerToken;
}

// Fresh tables: the case's physical blocks shuffled and dealt to its sequences in order,
// ceil(kv_lens[b] / page_size) each, unused entries -1; kv_lens written too. Returns how many
// blocks were dealt (at most c.num_blocks).
size_t deal_tables(PagedCase& c, Rng& rng, const std::vector<int32_t>& kv_lens) {
  const int64_t page = c.spec.page_size;
  const std::vector<int32_t> perm = rng.permutation(c.num_blocks);
  size_t next = 0;
  for (int64_t b = 0; b < c.batch_size; ++b) {
    const int64_t pages = (kv_lens[static_cast<size_t>(b)] + page - 1) / page;
    for (int64_t i = 0; i < c.max_blocks_per_seq; ++i) c.block_tables.set({b, i}, i < pages ? perm[next++] : -1);
    c.kv_lens.ptr<int32_t>()[b] = kv_lens[static_cast<size_t>(b)];
  }
  return next;
}

// New queries for every row of q (never zero), as the next step would bring.
void fresh_queries(PagedCase& c, Rng& rng) {
  for (int64_t i = 0; i < c.q.storage_elements(); ++i) {
    double x = rng.normal();
    if (x == 0) x = 0.5;
    c.q.store(i, x);
  }
}

// A max-batch round's host metadata and queries, written into the device tensors the graph reads.
void upload_round(const PagedCase& c, DeviceCase& dc) {
  dc.q.upload(c.q);
  dc.cu_q_lens.upload(c.cu_q_lens);
  dc.kv_lens.upload(c.kv_lens);
  dc.block_tables.upload(c.block_tables);
}

// A max-batch round: an eager run and two replays of the graph, which must all agree bit for bit
// (out and lse).
struct Round {
  RunOutputs eager, replay;
};
Round run_round(GraphOfOneCall& g, PagedCase& c, DeviceCase& dc) {
  Round r{g.run(c, dc, false), g.run(c, dc, true)};
  const RunOutputs replay2 = g.run(c, dc, true);
  EXPECT_TRUE(same_bytes(r.replay.out, r.eager.out)) << "graph replay differs from the eager run";
  EXPECT_TRUE(same_bytes(r.replay.lse, r.eager.lse)) << "graph replay lse differs from the eager run";
  EXPECT_TRUE(same_bytes(replay2.out, r.replay.out)) << "two replays differ";
  EXPECT_TRUE(same_bytes(replay2.lse, r.replay.lse)) << "two replays' lse differ";
  return r;
}

class GraphDecodeMaxBatch : public testing::TestWithParam<GraphCache> {};

TEST_P(GraphDecodeMaxBatch, ReplaysEqualEagerRunsBitForBit) {
  constexpr int64_t kMaxBatch = 16, kMaxLen = 1024, kPage = 16;
  PagedCaseSpec s{.num_qo_heads = 16, .num_kv_heads = 4, .head_dim = 128, .page_size = kPage, .with_lse = true,
                  .seed = 655};
  s.q_lens.assign(kMaxBatch, 1);
  s.kv_lens.assign(kMaxBatch, kMaxLen);  // the cache holds every slot at its longest
  set_cache(s, GetParam());
  PagedCase c = make_paged_case(s);
  ASSERT_EQ(c.max_blocks_per_seq, kMaxLen / kPage);
  DeviceCase dc(c);
  DecodeArgs a = dc.decode_args(c.decode_args());
  a.num_splits = 0;  // the planner's choice for the maximum batch, fixed in the graph
  GraphOfOneCall g;
  ASSERT_NO_FATAL_FAILURE(g.capture_decode(a));

  Rng rng(656);
  const std::vector<int64_t> live_counts = {16, 11, 1, 7, 0, 16, 3, 9};
  for (size_t round = 0; round < live_counts.size(); ++round) {
    const int64_t live = live_counts[round];
    SCOPED_TRACE("round " + std::to_string(round) + ", " + std::to_string(live) + " live sequences");
    // Live slots scattered over the batch; lengths include the edges (1 key, a page, a page + 1,
    // the table's full width).
    const std::vector<int32_t> slots = rng.permutation(kMaxBatch);
    std::vector<int32_t> lens(kMaxBatch, 0);
    const int32_t edges[] = {1, static_cast<int32_t>(kPage), static_cast<int32_t>(kPage + 1), static_cast<int32_t>(kMaxLen)};
    for (int64_t i = 0; i < live; ++i)
      lens[slots[i]] = i < 4 && round % 2 == 0 ? edges[i] : static_cast<int32_t>(rng.randint(1, kMaxLen + 1));
    // Fresh tables for the live sequences; new queries, as the next decode step would bring.
    const size_t dealt = deal_tables(c, rng, lens);
    ASSERT_LE(dealt, static_cast<size_t>(c.num_blocks));
    fresh_queries(c, rng);
    upload_round(c, dc);

    const RunOutputs replay = run_round(g, c, dc).replay;
    const RefOutput ref = cpu_decode(c.decode_args(), true);
    const ErrorStats st = compare_decode_output(replay.out.view(), ref);
    EXPECT_TRUE(st.ok(kTolNative)) << st.describe();
    const LseStats ls = compare_lse(replay.lse.view(), ref, kMaxBatch);
    EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
    EXPECT_LE(ls.max_abs, 2e-2) << ls.describe();
    for (int64_t b = 0; b < kMaxBatch; ++b) {
      if (lens[b] != 0) continue;
      for (int64_t h = 0; h < s.num_qo_heads; ++h) {
        EXPECT_EQ(replay.lse.at({b, h}), -std::numeric_limits<double>::infinity()) << "dead slot " << b;
        for (int64_t d = 0; d < s.head_dim; ++d) ASSERT_EQ(replay.out.at({b, h, d}), 0.0) << "dead slot " << b;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Caches, GraphDecodeMaxBatch,
                         testing::Values(GraphCache::kInt8PerChannel, GraphCache::kInt8PerToken, GraphCache::kBf16),
                         [](const testing::TestParamInfo<GraphCache>& info) { return std::string(graph_cache_name(info.param)); });

class GraphPrefillMaxBatch : public testing::TestWithParam<std::tuple<GraphCache, PrefillPath>> {};

TEST_P(GraphPrefillMaxBatch, ReplaysEqualEagerRunsBitForBit) {
  constexpr int64_t kMaxBatch = 8, kMaxQ = 64, kPages = 32, kPage = 16, kMaxKv = kPages * kPage;
  const GraphCache cache = std::get<0>(GetParam());
  const PrefillPath path = std::get<1>(GetParam());
  PagedCaseSpec s{.num_qo_heads = 8, .num_kv_heads = 2, .head_dim = 128, .page_size = kPage,
                  .padding_rows = 16,  // bucket padding past the maximum batch's rows
                  .with_lse = true, .seed = 701};
  s.q_lens.assign(kMaxBatch, kMaxQ);
  s.kv_lens.assign(kMaxBatch, kMaxKv);  // plan and cache at the maximum batch and table width
  set_cache(s, cache);
  PagedCase c = make_paged_case(s);
  ASSERT_EQ(c.max_blocks_per_seq, kPages);
  ASSERT_EQ(c.total_q, kMaxBatch * kMaxQ);
  DeviceCase dc(c);
  PrefillArgs a = dc.prefill_args(c.prefill_args());
  a.path = path;
  // Eager once at the maximum batch (also proves the path serves the shape), then the capture.
  GraphOfOneCall g;
  ASSERT_NO_FATAL_FAILURE(g.capture_prefill(c, a));
  if (g.refused()) GTEST_SKIP() << g.refusal();

  Rng rng(702);
  const std::vector<int64_t> live_counts = {8, 5, 1, 6, 0, 8, 3, 7};
  for (size_t round = 0; round < live_counts.size(); ++round) {
    const int64_t live = live_counts[round];
    SCOPED_TRACE("round " + std::to_string(round) + ", " + std::to_string(live) + " live sequences");
    // Live sequences scattered over the batch slots. Among them: one resting this step (q_len 0,
    // its cache kept), one with kv_len 0 (q_len > kv_len: empty rows) on odd rounds, and the
    // edges (q_len 1 and 64; kv_len q_len, a page, a page + 1, the table's full width).
    const std::vector<int32_t> slots = rng.permutation(kMaxBatch);
    std::vector<int32_t> q_lens(kMaxBatch, 0), kv_lens(kMaxBatch, 0);
    for (int64_t i = 0; i < live; ++i) {
      const size_t b = static_cast<size_t>(slots[static_cast<size_t>(i)]);
      int32_t ql = static_cast<int32_t>(rng.randint(1, kMaxQ + 1));
      int32_t kl = static_cast<int32_t>(rng.randint(ql, kMaxKv + 1));
      if (live > 1 && i == 0) {
        ql = 0;  // resting: no rows this step
        kl = static_cast<int32_t>(rng.randint(1, kMaxKv + 1));
      } else if (live > 2 && i == 1 && round % 2 == 1) {
        kl = 0;  // no key yet: every row empty (zeros, lse -inf), as the CPU backend
      } else if (round % 2 == 0 && i >= 2 && i < 6) {
        const int32_t edge_q[] = {1, static_cast<int32_t>(kMaxQ), 7, static_cast<int32_t>(kMaxQ)};
        const int32_t edge_kv[] = {1, static_cast<int32_t>(kPage), static_cast<int32_t>(kPage + 1),
                                   static_cast<int32_t>(kMaxKv)};
        ql = std::min(edge_q[i - 2], edge_kv[i - 2]);
        kl = edge_kv[i - 2];
      }
      q_lens[b] = ql;
      kv_lens[b] = kl;
    }
    // Fresh tables for the sequences, and their lengths.
    const size_t dealt = deal_tables(c, rng, kv_lens);
    c.cu_q_lens_host.assign(1, 0);
    for (int64_t b = 0; b < kMaxBatch; ++b) {
      c.cu_q_lens_host.push_back(c.cu_q_lens_host.back() + q_lens[static_cast<size_t>(b)]);
      c.cu_q_lens.ptr<int32_t>()[b + 1] = c.cu_q_lens_host.back();
      c.spec.q_lens[static_cast<size_t>(b)] = q_lens[static_cast<size_t>(b)];
      c.spec.kv_lens[static_cast<size_t>(b)] = kv_lens[static_cast<size_t>(b)];
    }
    ASSERT_LE(dealt, static_cast<size_t>(c.num_blocks));
    c.total_q = c.cu_q_lens_host.back();
    const int64_t rows = c.total_q;
    // New queries for every row (padding rows included: never read for results).
    fresh_queries(c, rng);
    upload_round(c, dc);

    const Round r = run_round(g, c, dc);
    const RunOutputs& eager = r.eager;
    const RunOutputs& replay = r.replay;
    // Nothing outside the live rows [0, cu_q_lens[B]) is written.
    EXPECT_EQ(count_written_outside(replay.out, rows), 0) << "rows past cu_q_lens[B] written";
    EXPECT_EQ(count_written_outside(replay.lse, rows), 0) << "lse rows past cu_q_lens[B] written";
    EXPECT_EQ(count_written_outside(eager.out, rows), 0) << "eager: rows past cu_q_lens[B] written";
    if (rows > 0) {
      const RefOutput ref = cpu_prefill(c.prefill_args(), true);
      const ErrorStats st = compare_output(replay.out.view(), ref, c.cu_q_lens_host);
      EXPECT_TRUE(st.ok(kTolNative)) << st.describe();
      const LseStats ls = compare_lse(replay.lse.view(), ref, rows);
      EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
      EXPECT_LE(ls.max_abs, 2e-2) << ls.describe();
    }
    // Rows of a live sequence without keys: empty rows.
    for (int64_t b = 0; b < kMaxBatch; ++b) {
      if (kv_lens[static_cast<size_t>(b)] != 0) continue;
      for (int64_t t = c.cu_q_lens_host[b]; t < c.cu_q_lens_host[b + 1]; ++t)
        for (int64_t h = 0; h < s.num_qo_heads; ++h) {
          EXPECT_EQ(replay.lse.at({t, h}), -std::numeric_limits<double>::infinity()) << "slot " << b << " row " << t;
          for (int64_t d = 0; d < s.head_dim; ++d) ASSERT_EQ(replay.out.at({t, h, d}), 0.0) << "slot " << b << " row " << t;
        }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    CachesPaths, GraphPrefillMaxBatch,
    testing::Combine(testing::Values(GraphCache::kInt8PerChannel, GraphCache::kBf16),
                     testing::Values(PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kDequant, PrefillPath::kGeneric)),
    [](const testing::TestParamInfo<std::tuple<GraphCache, PrefillPath>>& info) {
      return std::string(graph_cache_name(std::get<0>(info.param))) + "_" + to_string(std::get<1>(info.param));
    });

}  // namespace
}  // namespace kvq::test
