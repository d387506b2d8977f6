// src/cuda/append/append.cu — launchers and dtype dispatch of append and calibrate
// (append_kernel.cuh). Instantiations: input {fp32, bf16, fp16} x cache {int8, bf16, fp16}.
#include "src/cuda/append/append.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/append/append_kernel.cuh"

namespace kvq::cuda {
namespace {

template <typename DTypeIn, typename DTypeCache>
void launch_append_typed(const AppendParams& prm, cudaStream_t stream) {
  const int64_t warps = prm.num_tokens * prm.num_kv_heads * 2;
  if (warps == 0) return;
  const int64_t grid = (warps + AppendTraits::kWarps - 1) / AppendTraits::kWarps;
  append_kernel<DTypeIn, DTypeCache><<<static_cast<unsigned>(grid), AppendTraits::kThreads, 0, stream>>>(prm);
  KVQ_LAUNCH_CHECK(stream);
}

template <typename DTypeIn>
void append_dispatch_cache(const AppendParams& prm, DType cache_dtype, cudaStream_t stream) {
  switch (cache_dtype) {
    case DType::kInt8: return launch_append_typed<DTypeIn, int8_t>(prm, stream);
    case DType::kBFloat16: return launch_append_typed<DTypeIn, __nv_bfloat16>(prm, stream);
    case DType::kFloat16: return launch_append_typed<DTypeIn, __half>(prm, stream);
    default:
      throw Error(ErrorKind::kType, "append", "k_cache",
                  std::string("expected int8, bf16 or fp16, got ") + to_string(cache_dtype));
  }
}

}  // namespace

void launch_append(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
                   int64_t page_size, int64_t num_blocks, ScaleMode k_mode, ScaleMode v_mode) {
  KVQ_CHECK(head_dim >= 1 && head_dim <= 32 * AppendTraits::kMaxDimsPerLane, "append", "k_new",
            "expected head_dim in [1, 256], got " << head_dim);
  AppendParams prm;
  prm.k_new = args.k_new.data;
  prm.v_new = args.v_new.data;
  prm.slot_mapping = args.slot_mapping.data;
  prm.slot_int64 = args.slot_mapping.dtype == DType::kInt64;
  prm.k_stride_n = args.k_new.strides[0];
  prm.k_stride_h = args.k_new.strides[1];
  prm.v_stride_n = args.v_new.strides[0];
  prm.v_stride_h = args.v_new.strides[1];
  // make_paged_params narrows num_blocks to int32 (unused here: slots are bounded by num_slots).
  prm.cache = make_paged_params(args.kv, page_size, std::min<int64_t>(num_blocks, INT32_MAX), k_mode, v_mode);
  prm.num_tokens = num_tokens;
  prm.num_kv_heads = static_cast<int32_t>(num_kv_heads);
  prm.head_dim = static_cast<int32_t>(head_dim);
  prm.num_slots = num_blocks * page_size;
  KVQ_CHECK(args.k_new.dtype == args.v_new.dtype, "append", "v_new",
            "expected the dtype of k_new (" << to_string(args.k_new.dtype) << "), got " << to_string(args.v_new.dtype));
  auto s = static_cast<cudaStream_t>(args.stream);
  const DType cache_dtype = args.kv.k_cache.dtype;
  switch (args.k_new.dtype) {
    case DType::kFloat32: return append_dispatch_cache<float>(prm, cache_dtype, s);
    case DType::kBFloat16: return append_dispatch_cache<__nv_bfloat16>(prm, cache_dtype, s);
    case DType::kFloat16: return append_dispatch_cache<__half>(prm, cache_dtype, s);
    default:
      throw Error(ErrorKind::kType, "append", "k_new",
                  std::string("expected fp32, bf16 or fp16, got ") + to_string(args.k_new.dtype));
  }
}

int64_t find_nonfinite_appended(const AppendArgs& args, int64_t num_tokens, int64_t num_kv_heads,
                                int64_t head_dim, int64_t page_size, int64_t num_blocks) {
  const int64_t warps = num_tokens * num_kv_heads * 2;
  if (warps == 0) return -1;
  AppendParams prm;
  prm.k_new = args.k_new.data;
  prm.v_new = args.v_new.data;
  prm.slot_mapping = args.slot_mapping.data;
  prm.slot_int64 = args.slot_mapping.dtype == DType::kInt64;
  prm.k_stride_n = args.k_new.strides[0];
  prm.k_stride_h = args.k_new.strides[1];
  prm.v_stride_n = args.v_new.strides[0];
  prm.v_stride_h = args.v_new.strides[1];
  prm.num_tokens = num_tokens;
  prm.num_kv_heads = static_cast<int32_t>(num_kv_heads);
  prm.head_dim = static_cast<int32_t>(head_dim);
  prm.num_slots = num_blocks * page_size;
  auto s = static_cast<cudaStream_t>(args.stream);
  unsigned long long* flag = nullptr;
  KVQ_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&flag), sizeof(*flag), s));
  const unsigned long long init = ~0ull;
  unsigned long long found = init;
  cudaError_t err = cudaMemcpyAsync(flag, &init, sizeof(init), cudaMemcpyHostToDevice, s);
  if (err == cudaSuccess) {
    const int64_t grid = (warps + AppendTraits::kWarps - 1) / AppendTraits::kWarps;
    const dim3 g(static_cast<unsigned>(grid));
    switch (args.k_new.dtype) {
      case DType::kFloat32: append_find_nonfinite_kernel<float><<<g, AppendTraits::kThreads, 0, s>>>(prm, flag); break;
      case DType::kBFloat16: append_find_nonfinite_kernel<__nv_bfloat16><<<g, AppendTraits::kThreads, 0, s>>>(prm, flag); break;
      default: append_find_nonfinite_kernel<__half><<<g, AppendTraits::kThreads, 0, s>>>(prm, flag); break;
    }
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) err = cudaMemcpyAsync(&found, flag, sizeof(found), cudaMemcpyDeviceToHost, s);
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  cudaFreeAsync(flag, s);
  KVQ_CUDA_CHECK(err);
  return found == init ? -1 : static_cast<int64_t>(found);
}

void launch_calibrate(const TensorView& x, const TensorView& scale_out, void* stream) {
  CalibrateParams prm;
  prm.x = x.data;
  prm.stride_n = x.strides[0];
  prm.stride_h = x.strides[1];
  prm.scale_out = scale_out.ptr<float>();
  prm.out_stride_h = scale_out.strides[0];
  prm.out_stride_d = scale_out.strides[1];
  prm.num_tokens = x.shape[0];
  prm.num_kv_heads = static_cast<int32_t>(x.shape[1]);
  prm.head_dim = static_cast<int32_t>(x.shape[2]);
  const int64_t cols = static_cast<int64_t>(prm.num_kv_heads) * prm.head_dim;
  if (cols == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned gx = static_cast<unsigned>((cols + 255) / 256);
  calibrate_init_kernel<<<gx, 256, 0, s>>>(prm);
  KVQ_LAUNCH_CHECK(s);
  const unsigned gy = static_cast<unsigned>(std::clamp<int64_t>((prm.num_tokens + 63) / 64, 1, 1024));
  dim3 grid(gx, gy);
  switch (x.dtype) {
    case DType::kFloat32: calibrate_amax_kernel<float><<<grid, 256, 0, s>>>(prm); break;
    case DType::kBFloat16: calibrate_amax_kernel<__nv_bfloat16><<<grid, 256, 0, s>>>(prm); break;
    case DType::kFloat16: calibrate_amax_kernel<__half><<<grid, 256, 0, s>>>(prm); break;
    default:
      throw Error(ErrorKind::kType, "calibrate", "x",
                  std::string("expected fp32, bf16 or fp16, got ") + to_string(x.dtype));
  }
  KVQ_LAUNCH_CHECK(s);
  calibrate_finalize_kernel<<<gx, 256, 0, s>>>(prm);
  KVQ_LAUNCH_CHECK(s);
}

}  // namespace kvq::cuda
