// src/cuda/decode/mma_decode.cu — host side of the tensor-core split-KV decode
// (mma_decode_kernel.cuh): the instantiation of a planned form, its occupancy, and the launch. What
// it serves, the split count and the workspace are src/core/kernels.h (the planner's).
//
// Served: the head dims of KVQ_MMA_DECODE_HEAD_DIMS (CMakeLists.txt; KVQ_FOR_EACH_MMA_DECODE_HEAD_DIM
// in the generated kvq_config.h); group_size * q_len <= 16 query rows per (sequence, kv head)
// (<= 8 for head_dim 256); int8 (any scale modes), bf16 and fp16 caches; q bf16 or fp16;
// every K/V row 16-byte aligned (pointer and strides). Anything else takes the CUDA-core split
// kernel. Instantiations: cache dtype {int8, bf16, fp16} x head_dim x n-tiles {1, 2}
// (head_dim 256: 1) = 15 kernels, each also as the bulk-copy (TMA) variant where rows are >= 128
// bytes (14 more), and for int8 caches the bulk variant with int8 Q·Kᵀ (3 more). Which one runs is
// the planner's DecodeVariant (plan.cpp choose_mma_decode_variant: the bulk variant on sm_90 for
// page_size % 16 == 0, KVQ_DECODE_KERNEL=s8 its int8 Q·Kᵀ form for int8 caches, =v5 the per-thread
// cp.async kernel everywhere); the launch falls back to cp.async only where the driver refuses to
// encode the views' tensor maps.
// Workspace (num_splits > 1): [partial_o fp32 [T, Hq, S, D]] [pad to 256 B] [partial_lse fp32 [T, Hq, S]].
#include "src/cuda/decode/mma_decode.h"

#include <cuda_runtime.h>

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#include "kvq/error.h"
#include "kvq_config.h"
#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/common/device_info.h"
#include "src/cuda/common/tensor_map.h"
#include "src/cuda/decode/mma_decode_kernel.cuh"

namespace kvq::cuda {
namespace {

constexpr int kMaxSplits = kMmaDecodeMaxSplits;

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

// The kernel of a problem, its dynamic shared memory and its resident CTAs per SM.
struct KernelInfo {
  void (*fn)(MmaDecodeParams) = nullptr;
  void (*merge)(MmaDecodeParams) = nullptr;
  int smem = 0;
  int ctas_per_sm = 0;
};

template <typename KV, int kD, int kNT, bool kBulk, bool kS8 = false>
KernelInfo info_of() {
  using Tr = MmaDecodeTraits<KV, kD, kNT, kBulk, kS8>;
  // The shared-memory attribute and the occupancy are per device: set and queried once per device
  // (a process may drive several GPUs, each thread its own current device).
  static std::mutex mu;
  static std::vector<int> occupancy_of;  // 0: not yet set on that device
  auto* fn = &mma_decode_kernel<Tr>;
  int dev = 0;
  KVQ_CUDA_CHECK(cudaGetDevice(&dev));
  int occupancy = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (static_cast<int>(occupancy_of.size()) <= dev) occupancy_of.resize(dev + 1, 0);
    if (occupancy_of[dev] == 0) {
      KVQ_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
      int occ = 0;
      KVQ_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, fn, Tr::kThreads, Tr::kSmemBytes));
      occupancy_of[dev] = occ < 1 ? 1 : occ;
    }
    occupancy = occupancy_of[dev];
  }
  KernelInfo k;
  k.fn = fn;
  k.merge = &mma_decode_merge_kernel<kD>;
  k.smem = Tr::kSmemBytes;
  k.ctas_per_sm = std::max(1, occupancy);
  return k;
}

template <typename KV, int kD, bool kBulk, bool kS8 = false>
KernelInfo info_nt(int nt) {
  if constexpr (kD == 256) {
    return info_of<KV, kD, 1, kBulk, kS8>();
  } else {
    return nt == 1 ? info_of<KV, kD, 1, kBulk, kS8>() : info_of<KV, kD, 2, kBulk, kS8>();
  }
}

// The bulk (TMA) forms exist for rows of >= 128 bytes; int8 Q·Kᵀ (s8) for int8 caches only.
template <typename KV, int kD>
KernelInfo info_b(int nt, bool bulk, bool s8, const char* func) {
  if constexpr (kD * sizeof(KV) >= 128) {
    if constexpr (std::is_same_v<KV, int8_t>) {
      if (bulk && s8) return info_nt<KV, kD, true, true>(nt);
    }
    KVQ_INTERNAL_CHECK(!s8, func, "expected int8 Q·Kᵀ (decode variant tma_s8) over an int8 cache only, got a "
                                      << (std::is_same_v<KV, int8_t> ? "int8" : "16-bit") << " cache");
    if (bulk) return info_nt<KV, kD, true>(nt);
  } else {
    KVQ_INTERNAL_CHECK(!bulk && !s8, func,
                       "expected the cp.async decode for K/V rows of " << kD * sizeof(KV)
                           << " bytes (the TMA forms need >= 128), got a TMA variant");
  }
  return info_nt<KV, kD, false>(nt);
}

// d is one of KVQ_FOR_EACH_MMA_DECODE_HEAD_DIM (mma_decode_supports_shape holds before any call).
template <typename KV>
KernelInfo info_d(int64_t d, int nt, bool bulk, bool s8, const char* func) {
  switch (d) {
#define KVQ_MMA_DECODE_CASE(HD) \
  case HD: return info_b<KV, HD>(nt, bulk, s8, func);
    KVQ_FOR_EACH_MMA_DECODE_HEAD_DIM(KVQ_MMA_DECODE_CASE)
#undef KVQ_MMA_DECODE_CASE
    default:
      throw Error(ErrorKind::kNotImplemented, "paged_decode", "head_dim",
                  "not implemented: the tensor-core decode has no instantiation for head dim " + std::to_string(d));
  }
}

// The instantiation of `variant` for the shape (mma_decode_supports_shape holds before any call).
KernelInfo kernel_for(const detail::AttnProblem& p, int64_t max_q_len, DecodeVariant variant, const char* func) {
  KVQ_INTERNAL_CHECK(variant == DecodeVariant::kCpAsync || variant == DecodeVariant::kTma ||
                         variant == DecodeVariant::kTmaS8,
                     func, "expected a tensor-core decode variant (cp_async, tma or tma_s8), got " << to_string(variant));
  const int nt = detail::mma_decode_n_tiles(p, max_q_len);
  const bool bulk = variant != DecodeVariant::kCpAsync, s8 = variant == DecodeVariant::kTmaS8;
  switch (p.kv_dtype) {
    case DType::kInt8: return info_d<int8_t>(p.head_dim, nt, bulk, s8, func);
    case DType::kBFloat16: return info_d<__nv_bfloat16>(p.head_dim, nt, bulk, s8, func);
    default: return info_d<__half>(p.head_dim, nt, bulk, s8, func);
  }
}

// A tensor map over one cache view [blocks, a, b, D] (common/tensor_map.h): box 128 bytes of D x 16
// positions.
bool encode_cache_map(CUtensorMap* map, const TensorView& t, KvLayout layout, int64_t page_size,
                      int64_t num_kv_heads, int64_t eb, bool pos_first) {
  const PagedStrides st = paged_strides(t, layout);
  return encode_paged_cache_map(map, t.data, static_cast<int>(eb), t.shape[3], page_size, num_kv_heads, t.shape[0],
                                st.block, st.head, st.pos, 16u, pos_first);
}

}  // namespace

int mma_decode_ctas_per_sm(const detail::AttnProblem& p, int64_t max_q_len, DecodeVariant variant) {
  return kernel_for(p, max_q_len, variant, "paged_decode").ctas_per_sm;
}

void launch_mma_decode(const MmaDecodeLaunch& L, const detail::AttnProblem& p, int num_splits, DecodeVariant variant,
                       void* stream) {
  if (p.batch_size == 0 || p.num_qo_heads == 0 || L.max_q_len < 1) return;
  KVQ_CHECK(detail::mma_decode_supports_shape(p, L.max_q_len) && num_splits >= 1 && num_splits <= kMaxSplits, L.func, "plan",
            "expected a shape the tensor-core decode kernel serves with 1.." << kMaxSplits << " splits, got head_dim "
                << p.head_dim << ", " << L.max_q_len << " x " << p.group_size << " rows per kv head, " << num_splits
                << " splits");
  const size_t need = detail::mma_decode_workspace_bytes(p, L.total_rows, num_splits);
  KVQ_CHECK(need == 0 || (L.workspace.data != nullptr && L.workspace.bytes >= need), L.func, "workspace",
            "expected at least " << need << " bytes for " << num_splits << " splits, got " << L.workspace.bytes
                                 << " bytes" << (L.workspace.data ? "" : " (null)"));
  MmaDecodeParams prm;
  prm.q = L.q.data;
  prm.q_bf16 = p.q_dtype == DType::kBFloat16;
  prm.cache = make_paged_params(*L.kv, p.page_size, p.num_blocks, p.k_scale_mode, p.v_scale_mode);
  prm.block_tables = L.block_tables.ptr<int32_t>();
  prm.bt_stride = L.block_tables.strides[0];
  prm.max_blocks_per_seq = static_cast<int32_t>(L.block_tables.shape[1]);
  prm.kv_lens = L.kv_lens.ptr<int32_t>();
  prm.cu_q_lens = L.cu_q_lens.defined() ? L.cu_q_lens.ptr<int32_t>() : nullptr;
  prm.out = L.out.data;
  prm.lse = L.lse.defined() ? L.lse.ptr<float>() : nullptr;
  prm.q_stride_t = L.q.strides[0];
  prm.q_stride_h = L.q.strides[1];
  prm.o_stride_t = L.out.strides[0];
  prm.o_stride_h = L.out.strides[1];
  if (prm.lse != nullptr) {
    prm.lse_stride_t = L.lse.strides[0];
    prm.lse_stride_h = L.lse.strides[1];
  }
  if (num_splits > 1) {
    const size_t rows = static_cast<size_t>(L.total_rows) * p.num_qo_heads * num_splits;
    prm.partial_o = static_cast<float*>(L.workspace.data);
    prm.partial_lse =
        reinterpret_cast<float*>(static_cast<char*>(L.workspace.data) + align256(rows * p.head_dim * sizeof(float)));
  }
  prm.batch_size = static_cast<int32_t>(p.batch_size);
  prm.num_qo_heads = static_cast<int32_t>(p.num_qo_heads);
  prm.num_kv_heads = static_cast<int32_t>(p.num_kv_heads);
  prm.group_size = static_cast<int32_t>(p.group_size);
  prm.max_q_len = static_cast<int32_t>(L.max_q_len);
  // cu_q_lens entries are int32: capping the row count there changes no test against it.
  prm.total_rows = static_cast<int32_t>(std::min<int64_t>(L.total_rows, INT32_MAX));
  prm.num_splits = num_splits;
  prm.scale_log2 = p.softmax_scale * 1.4426950408889634f;
  prm.local_window = p.local_window;
  prm.global_window = p.global_window;
  prm.gqa_interleaved = p.gqa_layout == GqaLayout::kInterleaved;
  prm.page_aligned = p.page_size % 16 == 0;
  const int64_t eb = static_cast<int64_t>(dtype_size(p.kv_dtype));
  prm.k_blk_bytes = static_cast<uint32_t>(prm.cache.stride_block * eb);
  prm.k_head_bytes = static_cast<uint32_t>(prm.cache.stride_head * eb);
  prm.k_pos_bytes = static_cast<uint32_t>(prm.cache.stride_pos * eb);
  prm.v_blk_bytes = static_cast<uint32_t>(prm.cache.v_stride_block * eb);
  prm.v_head_bytes = static_cast<uint32_t>(prm.cache.v_stride_head * eb);
  prm.v_pos_bytes = static_cast<uint32_t>(prm.cache.v_stride_pos * eb);
  // The TMA forms as planned: an sm_90 device and the shape's TMA instantiation (plan.cpp
  // runnable_mma_decode_variant took the form down before the launch where they are missing).
  const bool bulk = variant == DecodeVariant::kTma || variant == DecodeVariant::kTmaS8;
  KVQ_INTERNAL_CHECK(!bulk || (detail::mma_decode_has_tma_form(p) && current_device_is_sm90()), L.func,
                     "expected the cp.async decode off sm_90 or for a shape without TMA tiles (rows >= 128 bytes, "
                     "page_size % 16 == 0), got variant " << to_string(variant));
  if (bulk) {
    const KvLayout layout = L.kv->layout;
    // Position as the map's dim 1 when its stride is the smaller one (HND), heads otherwise.
    const PagedStrides ks = paged_strides(L.kv->k_cache, layout);
    prm.tma_pos_first = ks.pos < ks.head;
    // The maps are encoded from this call's pointers: where the driver refuses them, cp.async.
    if (!encode_cache_map(&prm.tma_k, L.kv->k_cache, layout, p.page_size, p.num_kv_heads, eb, prm.tma_pos_first) ||
        !encode_cache_map(&prm.tma_v, L.kv->v_cache, layout, p.page_size, p.num_kv_heads, eb, prm.tma_pos_first))
      variant = DecodeVariant::kCpAsync;
  }
  const KernelInfo k = kernel_for(p, L.max_q_len, variant, L.func);
  auto s = static_cast<cudaStream_t>(stream);
  dim3 grid(static_cast<unsigned>(p.batch_size) * num_splits, static_cast<unsigned>(p.num_kv_heads));
  k.fn<<<grid, 128, k.smem, s>>>(prm);
  KVQ_LAUNCH_CHECK(s);
  if (num_splits > 1) {
    // One CTA per (row, q head); multi-token: per (sequence, row < max_q_len, q head).
    const int64_t units = L.cu_q_lens.defined() ? p.batch_size * L.max_q_len : L.total_rows;
    // On sm_90 the merge is a programmatic dependent launch: it is set up, and its CTAs become
    // resident, while the split kernel finishes, instead of after (at batch 1 the launch gap is a
    // large part of the decode's time). It waits for the split kernel's results before reading
    // them. KVQ_DECODE_PDL=0: a plain launch (A/B runs).
    static const bool pdl_off = [] {
      const char* e = std::getenv("KVQ_DECODE_PDL");
      return e != nullptr && std::strcmp(e, "0") == 0;
    }();
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(units * p.num_qo_heads));
    cfg.blockDim = dim3(128);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = (!pdl_off && current_device_is_sm90()) ? 1 : 0;
    KVQ_CUDA_CHECK(cudaLaunchKernelEx(&cfg, k.merge, prm));
    KVQ_LAUNCH_CHECK(s);
  }
}

}  // namespace kvq::cuda
