// src/cuda/hopper/wgmma_prefill.cu — host entry of the Hopper prefill: the launch of the mainloop
// order the planner chose (the choice itself: src/core/plan.cpp choose_tc_mainloop).
#include "src/cuda/hopper/wgmma_prefill.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kvq/error.h"
#include "src/cuda/common/device_info.h"
#include "src/cuda/common/tensor_map.h"
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
                       bool q_fp16, bool kv_int8, bool ping_pong, bool qk_int8, void* stream) {
  const int64_t tiles = (max_packed_rows + wg_tile_q() - 1) / wg_tile_q();
  params.num_q_tiles = static_cast<int>(tiles);
  if (tiles == 0 || batch_size == 0) return;
  params.diag = wg_diag();
  // K/V tiles by TMA where the page size allows whole boxes: 16-bit caches straight into the ring
  // (KVQ_WG_TMA=0: cp.async); int8 into the staging slots.
  WgTmaMaps maps{};
  const char* stores_env = std::getenv("KVQ_WG_PLAIN_STORES");
  maps.plain_stores = stores_env != nullptr && std::strcmp(stores_env, "1") == 0 ? 1 : 0;
  const char* tma_env = std::getenv("KVQ_WG_TMA");
  // int8 caches by TMA (head dim 128, three staging slots): opt-in with KVQ_WG_INT8_TMA=1: on the
  // H200 it measured 1-5% slower than the cp.async staging (docs/perf-notes.md).
  const char* int8_tma_env = std::getenv("KVQ_WG_INT8_TMA");
  const bool int8_tma = int8_tma_env != nullptr && std::strcmp(int8_tma_env, "1") == 0;
  // int8 compute: K straight into the ring by TMA like a 16-bit cache (KVQ_WG_TMA=0: cp.async).
  const bool tma_off = tma_env != nullptr && std::strcmp(tma_env, "0") == 0;
  const bool want_tma = qk_int8 ? !tma_off : kv_int8 ? (padded_head_dim == 128 && int8_tma) : !tma_off;
  const int elem_bytes = kv_int8 ? 1 : 2;
  if (want_tma) {
    const int64_t page = params.page_div.d;
    uint32_t box = 0;
    for (const uint32_t b : {128u, 64u, 32u, 16u, 8u}) {
      if (static_cast<int>(b) <= wg_tile_kv(padded_head_dim) && page % b == 0) {
        box = b;
        break;
      }
    }
    const bool pos_first = params.k_stride_pos < params.k_stride_head;
    if (box != 0 &&
        encode_paged_cache_map(&maps.k, params.k_cache, elem_bytes, params.head_dim, page, params.num_kv_heads,
                               params.num_blocks, params.k_stride_block, params.k_stride_head, params.k_stride_pos, box,
                               pos_first) &&
        encode_paged_cache_map(&maps.v, params.v_cache, elem_bytes, params.head_dim, page, params.num_kv_heads,
                               params.num_blocks, params.v_stride_block, params.v_stride_head, params.v_stride_pos, box,
                               pos_first)) {
      maps.use = 1;
      maps.box_rows = static_cast<int>(box);
      maps.pos_first = pos_first ? 1 : 0;
    }
  }
  const int order = ping_pong ? kWgPingPong : kWgSerial;
  // bf16 q over int8: fp16 MMAs with KVQ_WG_FP16_MATH=1 (opt-in: on the H200 it measured -10% to
  // +8% by shape against the bf16 MMAs, docs/perf-notes.md).
  const char* fp16_env = std::getenv("KVQ_WG_FP16_MATH");
  const bool fp16_math = fp16_env != nullptr && std::strcmp(fp16_env, "1") == 0;
  // int8 caches, head dims up to 128: two producer warpgroups (the default; on the H200 +3% to
  // +12% by shape over one, docs/perf-notes.md); KVQ_WG_INT8_PRODUCERS=1 keeps the one-producer kernel.
  const char* prod_env = std::getenv("KVQ_WG_INT8_PRODUCERS");
  const bool two_producers = !(prod_env != nullptr && std::strcmp(prod_env, "1") == 0);
  auto s = static_cast<cudaStream_t>(stream);
  switch (padded_head_dim) {
#define KVQ_WG_PREFILL_CASE(HD) \
  case HD: launch_wg_hd##HD(params, maps, batch_size, q_fp16, kv_int8, fp16_math, two_producers, qk_int8, order, s); break;
    KVQ_FOR_EACH_WG_HEAD_DIM(KVQ_WG_PREFILL_CASE)
#undef KVQ_WG_PREFILL_CASE
    default:
      throw Error(ErrorKind::kNotImplemented, "paged_prefill", "head_dim",
                  "not implemented: the Hopper prefill has no instantiation for padded head dim " +
                      std::to_string(padded_head_dim));
  }
}

}  // namespace kvq::cuda::hopper
