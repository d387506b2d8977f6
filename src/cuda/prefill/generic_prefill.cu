// src/cuda/prefill/generic_prefill.cu — launcher and dtype dispatch of the generic paged prefill
// (generic_kernel.cuh). Instantiations: DTypeQ in {bf16, fp16, int8} x DTypeKV in {int8, bf16,
// fp16}, head_dim at runtime: nine small kernels, so CI compile time stays bounded.
#include "src/cuda/prefill/generic_prefill.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/prefill/generic_kernel.cuh"

namespace kvq::cuda {
namespace {

template <typename DTypeQ, typename DTypeKV>
void launch_typed(const GenericPrefillParams& prm, cudaStream_t stream) {
  using Traits = GenericPrefillTraits;
  using DTypeO = std::conditional_t<std::is_same_v<DTypeQ, int8_t>, __nv_bfloat16, DTypeQ>;
  const int64_t num_warps = prm.total_q * prm.num_qo_heads;
  if (num_warps == 0) return;
  const int64_t grid = (num_warps + Traits::kWarps - 1) / Traits::kWarps;
  KVQ_CHECK(grid < (int64_t{1} << 31), "paged_prefill", "q",
            "expected total_q * num_qo_heads < 2^33 rows for the generic kernel, got " << num_warps);
  generic_prefill_kernel<DTypeQ, DTypeKV, DTypeO>
      <<<static_cast<unsigned>(grid), Traits::kThreads, 0, stream>>>(prm);
  KVQ_LAUNCH_CHECK(stream);
}

template <typename DTypeQ>
void dispatch_kv(const GenericPrefillParams& prm, DType kv_dtype, cudaStream_t stream) {
  switch (kv_dtype) {
    case DType::kInt8: return launch_typed<DTypeQ, int8_t>(prm, stream);
    case DType::kBFloat16: return launch_typed<DTypeQ, __nv_bfloat16>(prm, stream);
    case DType::kFloat16: return launch_typed<DTypeQ, __half>(prm, stream);
    default:
      throw Error(ErrorKind::kType, "paged_prefill", "k_cache",
                  std::string("expected int8, bf16 or fp16, got ") + to_string(kv_dtype));
  }
}

}  // namespace

void launch_generic_prefill(const PrefillArgs& args, const detail::AttnProblem& p, const PagedKvCache& kv,
                            const TensorView& block_tables, void* stream) {
  KVQ_CHECK(p.head_dim >= 1 && p.head_dim <= GenericPrefillTraits::kMaxHeadDim, "paged_prefill", "q",
            "expected head_dim in [1, " << GenericPrefillTraits::kMaxHeadDim << "], got " << p.head_dim);
  GenericPrefillParams prm;
  prm.q = args.q.data;
  prm.q_scale = args.q_scale.defined() ? args.q_scale.ptr<float>() : nullptr;
  if (args.q_scale.defined()) {
    prm.qs_stride_t = args.q_scale.strides[0];
    prm.qs_stride_h = args.q_scale.strides[1];
  }
  // make_paged_params narrows num_blocks to int32 (saturated here, never wrapped); the kernel tests
  // block ids against the 64-bit prm.num_blocks, so a cache of 2^31 blocks serves every int32 id.
  prm.cache = make_paged_params(kv, p.page_size, std::min<int64_t>(p.num_blocks, INT32_MAX), p.k_scale_mode,
                                p.v_scale_mode);
  prm.num_blocks = p.num_blocks;
  prm.block_tables = block_tables.ptr<int32_t>();
  prm.bt_stride = block_tables.strides[0];
  prm.max_blocks_per_seq = static_cast<int32_t>(block_tables.shape[1]);
  prm.cu_q_lens = args.cu_q_lens.ptr<int32_t>();
  prm.kv_lens = args.kv_lens.ptr<int32_t>();
  prm.mask = (p.has_mask && args.mask.defined()) ? static_cast<const uint8_t*>(args.mask.data) : nullptr;
  if (prm.mask != nullptr && args.mask.ndim == 1) prm.mask_stride = args.mask.strides[0];
  if (prm.mask != nullptr) prm.mask_numel = args.mask.numel();
  prm.out = args.out.data;
  prm.lse = (p.has_lse && args.lse.defined()) ? args.lse.ptr<float>() : nullptr;
  prm.q_stride_t = args.q.strides[0];
  prm.q_stride_h = args.q.strides[1];
  prm.o_stride_t = args.out.strides[0];
  prm.o_stride_h = args.out.strides[1];
  if (prm.lse != nullptr) {
    prm.lse_stride_t = args.lse.strides[0];
    prm.lse_stride_h = args.lse.strides[1];
  }
  prm.total_q = p.total_q;
  prm.batch_size = static_cast<int32_t>(p.batch_size);
  prm.num_qo_heads = static_cast<int32_t>(p.num_qo_heads);
  prm.num_kv_heads = static_cast<int32_t>(p.num_kv_heads);
  prm.group_size = static_cast<int32_t>(p.group_size);
  prm.head_dim = static_cast<int32_t>(p.head_dim);
  prm.softmax_scale = p.softmax_scale;
  prm.local_window = p.local_window;
  prm.global_window = p.global_window;
  prm.causal = p.causal;
  prm.gqa_interleaved = p.gqa_layout == GqaLayout::kInterleaved;
  prm.compute_int8 = p.compute == ComputeMode::kInt8;
  if (p.batch_size == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.q_dtype) {
    case DType::kBFloat16: return dispatch_kv<__nv_bfloat16>(prm, p.kv_dtype, s);
    case DType::kFloat16: return dispatch_kv<__half>(prm, p.kv_dtype, s);
    case DType::kInt8: return dispatch_kv<int8_t>(prm, p.kv_dtype, s);
    default:
      throw Error(ErrorKind::kType, "paged_prefill", "q",
                  std::string("expected bf16, fp16 or int8, got ") + to_string(p.q_dtype));
  }
}

}  // namespace kvq::cuda
