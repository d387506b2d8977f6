// src/cuda/prefill/dequant_blocks.cu — launchers of dequant_kernel.cuh. Instantiations: input
// {int8, bf16, fp16} x output {bf16, fp16}.
#include "src/cuda/prefill/dequant_blocks.h"

#include <cuda_runtime.h>

#include <cstdint>

#include "src/cuda/common/cuda_check.cuh"
#include "src/cuda/common/paged.cuh"
#include "src/cuda/prefill/dequant_kernel.cuh"

namespace kvq::cuda {
namespace {

template <typename DTypeIn, typename DTypeOut>
void launch_copy(const DequantParams& prm, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(prm.num_kv_heads) * prm.page_size;
  const int64_t chunks = (rows + DequantTraits::kRowsPerCta - 1) / DequantTraits::kRowsPerCta;
  dim3 grid(static_cast<unsigned>(prm.width), static_cast<unsigned>(prm.batch_size), static_cast<unsigned>(chunks));
  dequant_copy_kernel<DTypeIn, DTypeOut><<<grid, DequantTraits::kThreads, 0, stream>>>(prm);
  KVQ_LAUNCH_CHECK(stream);
}

template <typename DTypeIn>
void dispatch_out(const DequantParams& prm, DType out_dtype, cudaStream_t stream) {
  switch (out_dtype) {
    case DType::kBFloat16: return launch_copy<DTypeIn, __nv_bfloat16>(prm, stream);
    case DType::kFloat16: return launch_copy<DTypeIn, __half>(prm, stream);
    default:
      throw Error(ErrorKind::kType, "dequantize_blocks", "out",
                  std::string("expected bf16 or fp16, got ") + to_string(out_dtype));
  }
}

}  // namespace

void launch_dequant_blocks(const DequantLaunch& d, void* stream) {
  DequantParams prm;
  prm.cache = d.cache.data;
  const PagedStrides c = paged_strides(d.cache, d.layout);
  prm.c_stride_block = c.block;
  prm.c_stride_head = c.head;
  prm.c_stride_pos = c.pos;
  prm.mode = d.cache.dtype == DType::kInt8 ? d.mode : ScaleMode::kNone;
  if (prm.mode != ScaleMode::kNone) {
    prm.scale = d.scale.data;
    prm.scale_dtype = d.scale.dtype;
    if (prm.mode == ScaleMode::kPerChannel) {
      prm.s_stride_a = d.scale.strides[0];
      prm.s_stride_b = d.scale.strides[1];
    } else {
      const PagedStrides s = paged_strides(d.scale, d.layout);
      prm.s_stride_a = s.block;
      prm.s_stride_b = s.head;
      prm.s_stride_c = s.pos;
    }
  }
  prm.block_tables = d.block_tables.ptr<int32_t>();
  prm.bt_stride = d.block_tables.strides[0];
  prm.width = static_cast<int32_t>(d.block_tables.shape[1]);
  prm.kv_lens = d.kv_lens.ptr<int32_t>();
  prm.out = d.out.data;
  const PagedStrides o = paged_strides(d.out, d.layout);
  prm.o_stride_block = o.block;
  prm.o_stride_head = o.head;
  prm.o_stride_pos = o.pos;
  prm.num_out_blocks = d.out.shape[0];
  prm.num_blocks = d.cache.shape[0];  // int64: never narrowed (a wrapped count refused every block)
  prm.batch_size = static_cast<int32_t>(d.block_tables.shape[0]);
  prm.num_kv_heads = static_cast<int32_t>(d.num_kv_heads);
  prm.page_size = static_cast<int32_t>(d.page_size);
  prm.head_dim = static_cast<int32_t>(d.head_dim);
  if (d.out_block_tables.defined()) {
    prm.out_table = d.out_block_tables.data;
    prm.out_table_int64 = d.out_block_tables.dtype == DType::kInt64;
    prm.ot_stride_b = d.out_block_tables.strides[0];
    prm.ot_stride_i = d.out_block_tables.strides[1];
    prm.out_width = static_cast<int32_t>(d.out_block_tables.shape[1]);
  }
  if (prm.batch_size == 0 || prm.width == 0) return;
  {  // grid limits, checked before anything (the remapped table included) is written
    const int64_t rows = static_cast<int64_t>(prm.num_kv_heads) * prm.page_size;
    const int64_t chunks = (rows + DequantTraits::kRowsPerCta - 1) / DequantTraits::kRowsPerCta;
    KVQ_CHECK(chunks <= 65535 && prm.batch_size <= 65535, "dequantize_blocks", "cache",
              "expected num_kv_heads * page_size <= " << 65535 * DequantTraits::kRowsPerCta
                                                      << " and batch_size <= 65535, got " << rows << " and "
                                                      << prm.batch_size);
  }
  auto s = static_cast<cudaStream_t>(stream);
  if (prm.out_table != nullptr && d.write_table) {
    dequant_table_kernel<<<1, DequantTraits::kScanThreads, 0, s>>>(prm);
    KVQ_LAUNCH_CHECK(s);
  }
  switch (d.cache.dtype) {
    case DType::kInt8: return dispatch_out<int8_t>(prm, d.out.dtype, s);
    case DType::kBFloat16: return dispatch_out<__nv_bfloat16>(prm, d.out.dtype, s);
    case DType::kFloat16: return dispatch_out<__half>(prm, d.out.dtype, s);
    default:
      throw Error(ErrorKind::kType, "dequantize_blocks", "cache",
                  std::string("expected int8, bf16 or fp16, got ") + to_string(d.cache.dtype));
  }
}

}  // namespace kvq::cuda
