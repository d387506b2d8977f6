// src/cuda/hopper/wgmma_prefill.cu — host entry of the Hopper prefill: the launch of the mainloop
// order the planner chose (the choice itself: src/core/plan.cpp choose_tc_mainloop).
#include "src/cuda/hopper/wgmma_prefill.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kvq/error.h"
#include "src/cuda/hopper/wgmma_prefill_launch.cuh"

namespace kvq::cuda::hopper {

// KVQ_WG_DIAG: a measurement knob (docs/perf-notes.md) that skips kernel stages, so the output is
// garbage; said on stderr once per process whenever it is set.
static int wg_diag() {
  const char* env = std::getenv("KVQ_WG_DIAG");
  if (env == nullptr) return 0;
  const int diag = std::atoi(env);
  static bool warned = false;
  if (diag != 0 && !warned) {
    std::fprintf(stderr, "kvq: KVQ_WG_DIAG=%d is set: the Hopper prefill skips stages and its output is garbage\n",
                 diag);
    warned = true;
  }
  return diag;
}

void launch_wg_prefill(tc::TcPrefillParams params, int64_t max_packed_rows, int batch_size, int padded_head_dim,
                       bool q_fp16, bool kv_int8, bool ping_pong, void* stream) {
  const int64_t tiles = (max_packed_rows + wg_tile_q() - 1) / wg_tile_q();
  params.num_q_tiles = static_cast<int>(tiles);
  if (tiles == 0 || batch_size == 0) return;
  params.diag = wg_diag();
  const int order = ping_pong ? kWgPingPong : kWgSerial;
  auto s = static_cast<cudaStream_t>(stream);
  switch (padded_head_dim) {
#define KVQ_WG_PREFILL_CASE(HD) \
  case HD: launch_wg_hd##HD(params, batch_size, q_fp16, kv_int8, order, s); break;
    KVQ_FOR_EACH_WG_HEAD_DIM(KVQ_WG_PREFILL_CASE)
#undef KVQ_WG_PREFILL_CASE
    default:
      throw Error(ErrorKind::kNotImplemented, "paged_prefill", "head_dim",
                  "not implemented: the Hopper prefill has no instantiation for padded head dim " +
                      std::to_string(padded_head_dim));
  }
}

}  // namespace kvq::cuda::hopper
