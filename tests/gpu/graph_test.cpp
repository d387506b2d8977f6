// tests/gpu/graph_test.cpp — CUDA-graph capture and replay (the seed's edge case): capture prefill
// (each path) and decode once at the largest shape, then replay with smaller padded batches written
// into the same device metadata (q_len 0 / kv_len 0 sequences, a repeated tail in cu_q_lens, table
// rows of -1). Active rows must equal an eager run of the same metadata bit for bit and match the
// CPU oracle; padding rows stay poisoned.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/gpu/gpu_util.h"

namespace kvq::test {
namespace {

constexpr double kTolNative = 1e-2;

// Shrinks the batch to its first `active` sequences: later ones get q_len 0, kv_len 0 and a table
// row of -1. Host tensors and cu_q_lens_host are updated (the oracle reads them).
void shrink(PagedCase& c, int64_t active) {
  for (int64_t b = active; b < c.batch_size; ++b) {
    c.kv_lens.ptr<int32_t>()[b] = 0;
    for (int64_t i = 0; i < c.max_blocks_per_seq; ++i) c.block_tables.set({b, i}, -1);
  }
  for (int64_t b = active; b < c.batch_size; ++b) {
    c.cu_q_lens.ptr<int32_t>()[b + 1] = c.cu_q_lens.ptr<int32_t>()[active];
    c.cu_q_lens_host[b + 1] = c.cu_q_lens_host[active];
    c.spec.q_lens[b] = 0;
    c.spec.kv_lens[b] = 0;
  }
  c.total_q = c.cu_q_lens_host[c.batch_size];
}

bool same_rows(const HostTensor& a, const HostTensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

class GraphPrefill : public testing::TestWithParam<PrefillPath> {};

TEST_P(GraphPrefill, CaptureLargestReplaySmaller) {
  PagedCaseSpec s;
  s.q_lens = {40, 17, 33, 9};
  s.kv_lens = {90, 17, 120, 50};
  s.num_qo_heads = 8;
  s.num_kv_heads = 2;
  s.head_dim = 128;
  s.page_size = 16;
  s.padding_rows = 4;
  s.with_lse = true;
  s.seed = 321;
  PagedCase c = make_paged_case(s);
  DeviceCase dc(c);
  PrefillArgs a = dc.prefill_args(c.prefill_args());
  a.path = GetParam();
  PrefillPlan plan;
  try {
    plan = plan_prefill(a, c.cu_q_lens_host.data(), c.kv_lens.ptr<int32_t>());
  } catch (const Error& e) {
    if (e.argument() != "path") throw;
    GTEST_SKIP() << e.what();
  }
  DeviceTensor ws = DeviceTensor::bytes(plan.workspace_bytes);
  a.plan = &plan;
  a.workspace = {ws.data(), plan.workspace_bytes};
  cudaStream_t stream;
  KVQ_TEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  a.stream = stream;
  // Eager first (also proves the path serves the shape).
  try {
    paged_prefill(a);
  } catch (const Error& e) {
    cudaStreamDestroy(stream);
    if (e.argument() == "path") GTEST_SKIP() << e.what();
    throw;
  }
  KVQ_TEST_CUDA(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  KVQ_TEST_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  paged_prefill(a);
  KVQ_TEST_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  KVQ_TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));

  for (int64_t active : {4, 3, 1, 2, 0}) {
    shrink(c, active);
    dc.cu_q_lens.upload(c.cu_q_lens);
    dc.kv_lens.upload(c.kv_lens);
    dc.block_tables.upload(c.block_tables);
    // Eager run of this metadata.
    c.poison_outputs();
    dc.out.upload(c.out);
    dc.lse.upload(c.lse);
    paged_prefill(a);
    KVQ_TEST_CUDA(cudaStreamSynchronize(stream));
    HostTensor eager_out = c.out, eager_lse = c.lse;
    dc.out.download(eager_out);
    dc.lse.download(eager_lse);
    // Replay.
    dc.out.upload(c.out);
    dc.lse.upload(c.lse);
    KVQ_TEST_CUDA(cudaGraphLaunch(exec, stream));
    KVQ_TEST_CUDA(cudaStreamSynchronize(stream));
    HostTensor out = c.out, lse = c.lse;
    dc.out.download(out);
    dc.lse.download(lse);
    EXPECT_TRUE(same_rows(out, eager_out)) << "graph replay differs from eager, active=" << active;
    EXPECT_TRUE(same_rows(lse, eager_lse)) << "graph replay lse differs from eager, active=" << active;
    EXPECT_EQ(count_written_outside(out, c.total_q), 0) << "active=" << active;
    if (active > 0) {
      const RefOutput ref = cpu_prefill(c.prefill_args(), true);
      const ErrorStats st = compare_output(out.view(), ref, c.cu_q_lens_host);
      EXPECT_TRUE(st.ok(kTolNative)) << "active=" << active << ": " << st.describe();
    }
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

INSTANTIATE_TEST_SUITE_P(Paths, GraphPrefill,
                         testing::Values(PrefillPath::kAuto, PrefillPath::kFused, PrefillPath::kDequant,
                                         PrefillPath::kGeneric),
                         [](const testing::TestParamInfo<PrefillPath>& info) { return std::string(to_string(info.param)); });

TEST(GraphDecode, CaptureLargestReplaySmaller) {
  PagedCaseSpec s;
  s.q_lens = {1, 1, 1, 1, 1, 1};
  s.kv_lens = {700, 33, 1200, 5, 260, 999};
  s.num_qo_heads = 16;
  s.num_kv_heads = 4;
  s.head_dim = 128;
  s.page_size = 16;
  s.with_lse = true;
  s.seed = 654;
  PagedCase c = make_paged_case(s);
  DeviceCase dc(c);
  DecodeArgs a = dc.decode_args(c.decode_args());
  a.num_splits = 0;
  const size_t ws_bytes = decode_workspace_size(a);
  DeviceTensor ws = DeviceTensor::bytes(ws_bytes);
  a.workspace = {ws.data(), ws_bytes};
  cudaStream_t stream;
  KVQ_TEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  a.stream = stream;
  cudaGraph_t graph;
  KVQ_TEST_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  paged_decode(a);
  KVQ_TEST_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  KVQ_TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int64_t active : {6, 4, 1, 3, 0}) {
    for (int64_t b = active; b < c.batch_size; ++b) {
      c.kv_lens.ptr<int32_t>()[b] = 0;
      for (int64_t i = 0; i < c.max_blocks_per_seq; ++i) c.block_tables.set({b, i}, -1);
    }
    dc.kv_lens.upload(c.kv_lens);
    dc.block_tables.upload(c.block_tables);
    c.poison_outputs();
    dc.out.upload(c.out);
    dc.lse.upload(c.lse);
    paged_decode(a);
    KVQ_TEST_CUDA(cudaStreamSynchronize(stream));
    HostTensor eager = c.out;
    dc.out.download(eager);
    dc.out.upload(c.out);
    dc.lse.upload(c.lse);
    KVQ_TEST_CUDA(cudaGraphLaunch(exec, stream));
    KVQ_TEST_CUDA(cudaStreamSynchronize(stream));
    HostTensor out = c.out, lse = c.lse;
    dc.out.download(out);
    dc.lse.download(lse);
    EXPECT_TRUE(same_rows(out, eager)) << "graph replay differs from eager, active=" << active;
    const RefOutput ref = cpu_decode(c.decode_args(), true);
    const ErrorStats st = compare_decode_output(out.view(), ref);
    EXPECT_TRUE(st.ok(kTolNative)) << "active=" << active << ": " << st.describe();
    const LseStats ls = compare_lse(lse.view(), ref, c.batch_size);
    EXPECT_EQ(ls.num_mismatch, 0) << ls.describe();
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace kvq::test
