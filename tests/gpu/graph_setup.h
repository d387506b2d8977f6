// tests/gpu/graph_setup.h — the CUDA-graph scaffolding of the capture/replay tests (graph_test.cpp,
// small_q_prefill_test.cpp): a non-blocking stream with one call captured on it, and one run of a
// case, eager or replayed, on poisoned outputs.
//
// The tests say what they capture (capture(), or capture_prefill() / capture_decode() for the
// graph tests' plan-and-workspace setup) and check every run themselves; this header only runs.
// CUDA errors of the stream and the capture fail the test (KVQ_TEST_CUDA; call capture*() under
// ASSERT_NO_FATAL_FAILURE, and a failed stream creation stops there too); those of run() throw, as
// the other GPU run helpers do.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <functional>
#include <stdexcept>
#include <string>

#include "tests/gpu/gpu_util.h"

namespace kvq::test {

// Copies of the outputs of one run (eager or replay), poisoned before it.
struct RunOutputs {
  HostTensor out, lse;
};

class GraphOfOneCall {
 public:
  GraphOfOneCall() { create_stream(); }
  ~GraphOfOneCall() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  GraphOfOneCall(const GraphOfOneCall&) = delete;
  GraphOfOneCall& operator=(const GraphOfOneCall&) = delete;

  cudaStream_t stream() const { return stream_; }

  // Captures call() (which enqueues its work on stream()) into the graph and instantiates it;
  // call() is also what run(.., false) runs eagerly.
  void capture(std::function<void()> call) {
    ASSERT_NE(stream_, nullptr) << "no stream";
    call_ = std::move(call);
    KVQ_TEST_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    call_();
    KVQ_TEST_CUDA(cudaStreamEndCapture(stream_, &graph_));
    KVQ_TEST_CUDA(cudaGraphInstantiate(&exec_, graph_, 0));
  }

  // Prefill at its largest shape: plans `a` (device args, path set) from the case's host lengths,
  // gives it a workspace of plan.workspace_bytes and stream(), runs it once eagerly (which also
  // proves the path serves the shape) and captures it. A forced path that refuses the shape
  // (kvq::Error on "path", from the planner or that run) captures nothing and leaves its message
  // in refusal(); any other error propagates. `a` must outlive this object's runs.
  void capture_prefill(const PagedCase& c, PrefillArgs& a) {
    try {
      plan_ = plan_prefill(a, c.cu_q_lens_host.data(), c.kv_lens.ptr<int32_t>());
    } catch (const Error& e) {
      if (e.argument() != "path") throw;
      refusal_ = e.what();
      return;
    }
    ws_ = DeviceTensor::bytes(plan_.workspace_bytes);
    a.plan = &plan_;
    a.workspace = {ws_.data(), plan_.workspace_bytes};
    a.stream = stream_;
    try {
      paged_prefill(a);
    } catch (const Error& e) {
      if (e.argument() != "path") throw;
      refusal_ = e.what();
      return;
    }
    KVQ_TEST_CUDA(cudaStreamSynchronize(stream_));
    capture([&a] { paged_prefill(a); });
  }
  bool refused() const { return !refusal_.empty(); }
  const std::string& refusal() const { return refusal_; }

  // Decode: gives `a` (device args, num_splits as the test fixes it) a workspace of
  // decode_workspace_size(a) and stream(), and captures it. `a` must outlive this object's runs.
  void capture_decode(DecodeArgs& a) {
    const size_t ws_bytes = decode_workspace_size(a);
    ws_ = DeviceTensor::bytes(ws_bytes);
    a.workspace = {ws_.data(), ws_bytes};
    a.stream = stream_;
    capture([&a] { paged_decode(a); });
  }

  // One run on the device metadata as it stands: the case's outputs poisoned (the sentinel) and
  // uploaded, then the captured call run eagerly or the graph launched, the stream waited for, and
  // out (and lse, when the case has one) downloaded.
  RunOutputs run(PagedCase& c, DeviceCase& dc, bool replay) {
    c.poison_outputs();
    dc.out.upload(c.out);
    if (c.lse.defined()) dc.lse.upload(c.lse);
    if (replay) {
      check(cudaGraphLaunch(exec_, stream_), "cudaGraphLaunch");
    } else {
      call_();
    }
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    RunOutputs o{c.out, c.lse};
    dc.out.download(o.out);
    if (c.lse.defined()) dc.lse.download(o.lse);
    return o;
  }

 private:
  void create_stream() { KVQ_TEST_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e));
  }

  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  std::function<void()> call_;
  PrefillPlan plan_;
  DeviceTensor ws_;
  std::string refusal_;
};

}  // namespace kvq::test
