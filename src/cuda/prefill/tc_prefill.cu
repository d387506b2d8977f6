// src/cuda/prefill/tc_prefill.cu — host entry of the tensor-core prefill: the launch (views ->
// TcPrefillParams -> head-dim instantiation of the planned mainloop: mma.sync or the Hopper kernel).
//
// Served (src/core/kernels.h tc_prefill_supports / _views, the planner's definition): q bf16/fp16
// with out in q's dtype; a cache of q's dtype, or int8 with per-channel or per-token scales
// (fp32/bf16/fp16, K and V modes independent); compute kNative (kInt8 over an int8 cache at padded
// head dims 128 and 256 on the Hopper mainloop only); no boolean mask; head dims 1..256
// that are a multiple of 8 (16 for int8 caches), padded up to the next built instantiation
// (KVQ_TC_HEAD_DIMS in CMakeLists.txt) with zero-fill; any page size; HND/NHD; GQA grouped and
// interleaved (the q heads h, h + Hkv, ... of one kv head are packed into the row tile); causal
// (bottom-right), local/global windows; optional lse. Base pointers and strides of q, out and the
// caches must be multiples of 16 bytes (tc_prefill_supports_views), block_tables' last dim
// contiguous. Everything else (int8 q, other compute kInt8 shapes, masks, odd head dims) goes to generic.
#include "src/cuda/prefill/tc_prefill.h"

#include <cuda_runtime.h>

#include "kvq/error.h"
#include "src/cuda/common/device_info.h"
#include "src/cuda/common/paged.cuh"
#include "src/cuda/hopper/wgmma_prefill.h"
#include "src/cuda/prefill/tc_prefill_launch.cuh"

namespace kvq::cuda {
namespace {

int scale_dtype_code(DType d) { return d == DType::kBFloat16 ? 1 : (d == DType::kFloat16 ? 2 : 0); }

}  // namespace

void launch_tc_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PagedKvCache& kv,
                       const TensorView& block_tables, int64_t max_q_len, PrefillMainloop mainloop, void* stream) {
  if (!detail::tc_prefill_supports_views(args, p, kv, block_tables)) {
    throw Error(ErrorKind::kNotImplemented, "paged_prefill", "path",
                "not implemented: the tensor-core prefill does not serve this problem (expected bf16/fp16 q, "
                "a q-dtype or int8 cache, native compute, no mask, head_dim a multiple of 8 (16 for int8) up to "
                "256, 16-byte aligned pointers and strides); use the generic path");
  }
  const int padded = detail::tc_padded_head_dim(static_cast<int>(p.head_dim));
  const bool kv_int8 = p.kv_dtype == DType::kInt8;

  tc::TcPrefillParams prm{};
  prm.q = args.q.data;
  prm.out = args.out.data;
  prm.lse = args.lse.defined() ? static_cast<float*>(args.lse.data) : nullptr;
  prm.k_cache = kv.k_cache.data;
  prm.v_cache = kv.v_cache.data;
  prm.block_tables = static_cast<const int32_t*>(block_tables.data);
  prm.cu_q_lens = static_cast<const int32_t*>(args.cu_q_lens.data);
  prm.kv_lens = static_cast<const int32_t*>(args.kv_lens.data);
  prm.q_stride_n = args.q.strides[0];
  prm.q_stride_h = args.q.strides[1];
  prm.o_stride_n = args.out.strides[0];
  prm.o_stride_h = args.out.strides[1];
  if (prm.lse != nullptr) {
    prm.lse_stride_n = args.lse.strides[0];
    prm.lse_stride_h = args.lse.strides[1];
  }
  const PagedStrides k = paged_strides(kv.k_cache, kv.layout), v = paged_strides(kv.v_cache, kv.layout);
  prm.k_stride_block = k.block;
  prm.k_stride_head = k.head;
  prm.k_stride_pos = k.pos;
  prm.v_stride_block = v.block;
  prm.v_stride_head = v.head;
  prm.v_stride_pos = v.pos;
  prm.bt_stride = block_tables.strides[0];
  prm.cu_stride = args.cu_q_lens.strides[0];
  prm.kvl_stride = args.kv_lens.strides[0];
  prm.k_scale_mode = kv_int8 ? scale_code(p.k_scale_mode) : kScaleNone;
  prm.v_scale_mode = kv_int8 ? scale_code(p.v_scale_mode) : kScaleNone;
  auto set_scale = [&](const TensorView& s, int mode, const void*& ptr, int& dtype, int64_t& a, int64_t& b,
                       int64_t& c) {
    if (mode == kScaleNone || !s.defined()) return;
    ptr = s.data;
    dtype = scale_dtype_code(s.dtype);
    if (mode == kScalePerChannel) {  // [num_kv_heads, head_dim]
      a = s.strides[0];
      b = s.strides[1];
    } else {  // HND [num_blocks, num_kv_heads, page_size] / NHD [num_blocks, page_size, num_kv_heads]
      const PagedStrides t = paged_strides(s, kv.layout);
      a = t.block;
      b = t.head;
      c = t.pos;
    }
  };
  set_scale(kv.k_scale, prm.k_scale_mode, prm.k_scale, prm.k_scale_dtype, prm.ks_stride_a, prm.ks_stride_b,
            prm.ks_stride_c);
  set_scale(kv.v_scale, prm.v_scale_mode, prm.v_scale, prm.v_scale_dtype, prm.vs_stride_a, prm.vs_stride_b,
            prm.vs_stride_c);
  prm.total_q = static_cast<int>(p.total_q);
  prm.num_kv_heads = static_cast<int>(p.num_kv_heads);
  prm.head_dim = static_cast<int>(p.head_dim);
  prm.num_blocks = static_cast<int>(p.num_blocks);
  prm.max_blocks_per_seq = static_cast<int>(block_tables.shape[1]);
  const int64_t tile_q = tc::tc_tile_q(padded);
  prm.num_q_tiles = static_cast<int>((max_q_len * p.group_size + tile_q - 1) / tile_q);
  prm.causal = p.causal ? 1 : 0;
  prm.local_window = p.local_window;
  prm.global_window = p.global_window;
  prm.gqa_interleaved = p.gqa_layout == GqaLayout::kInterleaved ? 1 : 0;
  prm.sm_scale_log2 = p.softmax_scale * 1.4426950408889634f;
  prm.page_div = tc::FastDiv(static_cast<uint32_t>(p.page_size));
  prm.group_div = tc::FastDiv(static_cast<uint32_t>(p.group_size));
  if (prm.num_q_tiles == 0 || p.batch_size == 0) return;

  const bool q_fp16 = p.q_dtype == DType::kFloat16;
  const bool wg = mainloop == PrefillMainloop::kWgmma || mainloop == PrefillMainloop::kWgmmaPingPong;
  KVQ_INTERNAL_CHECK(wg || mainloop == PrefillMainloop::kMmaSync, "paged_prefill",
                     "expected a tensor-core prefill mainloop (mma_sync, wgmma or wgmma_pingpong), got "
                         << to_string(mainloop));
  if (wg) {
    // The Hopper kernel computes one row offset per token for K and V: their strides must agree.
    KVQ_INTERNAL_CHECK(detail::wg_has_head_dim(padded) && detail::wg_kv_strides_agree(kv) && current_device_is_sm90(),
                       "paged_prefill",
                       "expected the mma.sync mainloop off sm_90, for padded head dims outside KVQ_WG_HEAD_DIMS or "
                       "over K/V views of different strides, got "
                           << to_string(mainloop) << " (padded head dim " << padded << ")");
    const bool qk_int8 = p.compute == ComputeMode::kInt8;
    KVQ_INTERNAL_CHECK(!qk_int8 || mainloop == PrefillMainloop::kWgmma, "paged_prefill",
                       "expected int8 compute on the serial Hopper mainloop, got " << to_string(mainloop));
    hopper::launch_wg_prefill(prm, max_q_len * p.group_size, static_cast<int>(p.batch_size), padded, q_fp16, kv_int8,
                              mainloop == PrefillMainloop::kWgmmaPingPong, qk_int8, stream);
    return;
  }
  KVQ_INTERNAL_CHECK(p.compute == ComputeMode::kNative, "paged_prefill",
                     "expected native compute on the mma.sync mainloop (int8 compute runs on the Hopper one)");
  auto s = static_cast<cudaStream_t>(stream);
  switch (padded) {
#define KVQ_TC_PREFILL_CASE(HD) \
  case HD: tc::launch_tc_prefill_hd<HD>(prm, static_cast<int>(p.batch_size), q_fp16, kv_int8, s); break;
    KVQ_FOR_EACH_TC_HEAD_DIM(KVQ_TC_PREFILL_CASE)
#undef KVQ_TC_PREFILL_CASE
    default:
      throw Error(ErrorKind::kNotImplemented, "paged_prefill", "head_dim",
                  "not implemented: no tensor-core instantiation for head dim " + std::to_string(p.head_dim));
  }
}

}  // namespace kvq::cuda
