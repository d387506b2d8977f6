// src/cuda/decode/decode.cu — workspace layout and launch of the CUDA-core split-KV decode
// (decode_kernel.cuh) and its merge; its split count and workspace size are the planner's
// (src/core/kernels.h split_decode_splits / split_decode_workspace_bytes). No host sync and no
// allocation: capturable in a graph.
//
// Instantiations: DTypeQ {bf16, fp16} x DTypeKV {int8, bf16, fp16} x kTpk (threads per key row)
// chosen from head_dim so one 16-byte vector per thread covers the row: int8 {4, 8, 16} for
// head_dim <= 64, 128, 256; 16-bit caches {8, 16, 32}.
// Workspace (num_splits > 1): [partial_o fp32 [B, Hq, S, D]] [pad to 256 B] [partial_lse fp32 [B, Hq, S]].
#include "src/cuda/decode/decode.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/decode/decode_kernel.cuh"

namespace kvq::cuda {
namespace {

constexpr int kGroupTile = detail::kSplitDecodeGroupTile;

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

template <typename Traits>
void launch_traits(const DecodeParams& prm, cudaStream_t stream) {
  dim3 grid(static_cast<unsigned>(prm.batch_size) * prm.num_splits,
            static_cast<unsigned>(prm.num_kv_heads * prm.num_head_tiles));
  decode_kernel<Traits><<<grid, Traits::kThreads, 0, stream>>>(prm);
  KVQ_LAUNCH_CHECK(stream);
  if (prm.num_splits > 1) {
    const unsigned rows = static_cast<unsigned>(prm.batch_size) * prm.num_qo_heads;
    decode_merge_kernel<typename Traits::DTypeQ><<<rows, 128, 0, stream>>>(prm);
    KVQ_LAUNCH_CHECK(stream);
  }
}

template <typename DTypeQ, typename DTypeKV>
void dispatch_tpk(const DecodeParams& prm, cudaStream_t stream) {
  constexpr int kVec = VecTraits<DTypeKV>::kN;
  const int vecs = (prm.head_dim + kVec - 1) / kVec;  // 16-byte vectors per row
  const int base = kVec == 16 ? 4 : 8;
  if (vecs <= base) return launch_traits<DecodeTraits<DTypeQ, DTypeKV, (kVec == 16 ? 4 : 8)>>(prm, stream);
  if (vecs <= 2 * base) return launch_traits<DecodeTraits<DTypeQ, DTypeKV, (kVec == 16 ? 8 : 16)>>(prm, stream);
  return launch_traits<DecodeTraits<DTypeQ, DTypeKV, (kVec == 16 ? 16 : 32)>>(prm, stream);
}

template <typename DTypeQ>
void dispatch_kv(const DecodeParams& prm, DType kv_dtype, cudaStream_t stream) {
  switch (kv_dtype) {
    case DType::kInt8: return dispatch_tpk<DTypeQ, int8_t>(prm, stream);
    case DType::kBFloat16: return dispatch_tpk<DTypeQ, __nv_bfloat16>(prm, stream);
    case DType::kFloat16: return dispatch_tpk<DTypeQ, __half>(prm, stream);
    default:
      throw Error(ErrorKind::kType, "paged_decode", "k_cache",
                  std::string("expected int8, bf16 or fp16, got ") + to_string(kv_dtype));
  }
}

bool rows_aligned(const TensorView& t, int64_t elem_bytes) {
  const int64_t vec_elems = 16 / elem_bytes;
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return false;
  if (t.shape[3] % vec_elems != 0) return false;
  for (int i = 0; i < 3; ++i)
    if (t.strides[i] % vec_elems != 0) return false;
  return true;
}

}  // namespace

void launch_decode(const DecodeArgs& args, const detail::AttnProblem& p, int num_splits, void* stream) {
  if (p.batch_size == 0 || p.num_qo_heads == 0) return;
  KVQ_CHECK(p.head_dim >= 1 && p.head_dim <= 256, "paged_decode", "q",
            "expected head_dim in [1, 256], got " << p.head_dim);
  KVQ_INTERNAL_CHECK(num_splits >= 1 && num_splits <= detail::kSplitDecodeMaxSplits, "paged_decode",
                     "expected 1.." << detail::kSplitDecodeMaxSplits << " splits for the CUDA-core decode, got "
                                    << num_splits);
  const size_t need = detail::split_decode_workspace_bytes(p, num_splits);
  KVQ_CHECK(need == 0 || (args.workspace.data != nullptr && args.workspace.bytes >= need), "paged_decode", "workspace",
            "expected at least " << need << " bytes (decode_workspace_size) for " << num_splits << " splits, got "
                                 << args.workspace.bytes << " bytes" << (args.workspace.data ? "" : " (null)"));
  DecodeParams prm;
  prm.q = args.q.data;
  prm.cache = make_paged_params(args.kv, p.page_size, p.num_blocks, p.k_scale_mode, p.v_scale_mode);
  prm.block_tables = args.block_tables.ptr<int32_t>();
  prm.bt_stride = args.block_tables.strides[0];
  prm.max_blocks_per_seq = static_cast<int32_t>(args.block_tables.shape[1]);
  prm.kv_lens = args.kv_lens.ptr<int32_t>();
  prm.out = args.out.data;
  prm.lse = (p.has_lse && args.lse.defined()) ? args.lse.ptr<float>() : nullptr;
  prm.q_stride_b = args.q.strides[0];
  prm.q_stride_h = args.q.strides[1];
  prm.o_stride_b = args.out.strides[0];
  prm.o_stride_h = args.out.strides[1];
  if (prm.lse != nullptr) {
    prm.lse_stride_b = args.lse.strides[0];
    prm.lse_stride_h = args.lse.strides[1];
  }
  if (num_splits > 1) {
    const size_t rows = static_cast<size_t>(p.batch_size) * p.num_qo_heads * num_splits;
    prm.partial_o = static_cast<float*>(args.workspace.data);
    prm.partial_lse = reinterpret_cast<float*>(static_cast<char*>(args.workspace.data) +
                                               align256(rows * p.head_dim * sizeof(float)));
  }
  prm.batch_size = static_cast<int32_t>(p.batch_size);
  prm.num_qo_heads = static_cast<int32_t>(p.num_qo_heads);
  prm.num_kv_heads = static_cast<int32_t>(p.num_kv_heads);
  prm.group_size = static_cast<int32_t>(p.group_size);
  prm.num_head_tiles = static_cast<int32_t>((p.group_size + kGroupTile - 1) / kGroupTile);
  prm.head_dim = static_cast<int32_t>(p.head_dim);
  prm.num_splits = num_splits;
  prm.scale_log2 = p.softmax_scale * 1.4426950408889634f;
  prm.local_window = p.local_window;
  prm.global_window = p.global_window;
  prm.gqa_interleaved = p.gqa_layout == GqaLayout::kInterleaved;
  const int64_t eb = static_cast<int64_t>(dtype_size(p.kv_dtype));
  prm.vec_aligned = rows_aligned(args.kv.k_cache, eb) && rows_aligned(args.kv.v_cache, eb);
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.q_dtype) {
    case DType::kBFloat16: return dispatch_kv<__nv_bfloat16>(prm, p.kv_dtype, s);
    case DType::kFloat16: return dispatch_kv<__half>(prm, p.kv_dtype, s);
    default:
      throw Error(ErrorKind::kType, "paged_decode", "q",
                  std::string("expected bf16 or fp16, got ") + to_string(p.q_dtype));
  }
}

}  // namespace kvq::cuda
