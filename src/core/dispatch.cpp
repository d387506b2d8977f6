// src/core/dispatch.cpp — the public entry points (kvq/kvq.h): validate on the host, plan
// (src/core/plan.cpp: every kernel choice), then hand the call to the backend of the tensors'
// device, which runs what the plan resolved to for the call (detail::KernelLaunch).
//
// CPU tensors: the metadata is host memory, so the bounds checks that keep the CPU backend inside
// its buffers (lengths, block ids, mask length, slots) always run; check=true adds the rest.
// CUDA tensors: shape/dtype/option checks here; check=true runs kvq::cuda::check_prefill_data
// (prefill and decode) or is passed on in args.check (append, dequantize_blocks). Nothing reaches
// a backend before every host-side check passed, so a failing call writes nothing.
#include <cstddef>
#include <vector>

#include "kvq/kvq.h"
#include "src/core/backend.h"
#include "src/core/kernels.h"
#include "src/core/plan.h"
#include "src/core/problem.h"
#include "src/core/validate.h"

namespace kvq {
namespace {

// Decode's view as a prefill call of one query per sequence, for the CUDA data checks
// (cu_q_lens absent; p.is_decode set).
PrefillArgs as_prefill_args(const DecodeArgs& a) {
  PrefillArgs pa = detail::decode_as_prefill_args(a);
  pa.check = true;
  return pa;
}

// CUDA tensors in a build without the CUDA backend: refused under the entry point's own name
// (the stubs of src/core/nocuda/ would name the backend function they stand for).
void require_cuda(const char* func) {
  if (!cuda::built())
    throw Error(ErrorKind::kType, func, "device",
                "expected CPU tensors (CUDA tensors need kvq built with CUDA), got cuda");
}

}  // namespace

void paged_prefill(const PrefillArgs& args) {
  constexpr const char* kFunc = "paged_prefill";
  const detail::AttnProblem p = detail::validate_prefill(args, kFunc);
  if (args.q.device == Device::kCPU) {
    detail::check_prefill_data_host(args, p, args.check, kFunc);
    const PrefillPlan plan =
        args.plan ? *args.plan
                  : detail::make_prefill_plan(args, p, args.cu_q_lens.ptr<const int32_t>(),
                                              args.kv_lens.ptr<const int32_t>(), kFunc);
    detail::check_plan_and_workspace(args, p, plan, kFunc);
    cpu::paged_prefill(args, p);
    return;
  }
  require_cuda(kFunc);
  const PrefillPlan plan =
      args.plan ? *args.plan : detail::make_prefill_plan(args, p, nullptr, nullptr, kFunc);
  detail::check_plan_and_workspace(args, p, plan, kFunc);
  if (args.check) cuda::check_prefill_data(args, p);
  // The plan applied to this call's views and device (asked where a form needs it; without a usable
  // device this throws the CUDA error the launch would).
  const detail::DeviceInfo dev = plan.path == PrefillPath::kGeneric ? detail::DeviceInfo{}
                                                                    : detail::device_info_of(args.q, /*require=*/true);
  cuda::paged_prefill(args, p, plan, detail::resolve_prefill_launch(args, p, plan, dev));
}

void paged_decode(const DecodeArgs& args) {
  constexpr const char* kFunc = "paged_decode";
  const detail::AttnProblem p = detail::validate_decode(args, kFunc);
  if (args.q.device == Device::kCPU) {
    detail::check_decode_data_host(args, p, args.check, kFunc);
    cpu::paged_decode(args, p);
    return;
  }
  require_cuda(kFunc);
  // Planned per call: the route, its form, split count and workspace (src/core/plan.cpp).
  const detail::DeviceInfo dev = detail::device_info_of(args.q, /*require=*/true);
  const detail::DecodePlan plan = detail::make_decode_plan(args, p, dev, detail::PlannerEnv::from_environment());
  const size_t needed = plan.workspace_bytes;
  KVQ_CHECK(args.workspace.bytes >= needed, kFunc, "workspace",
            "expected at least " << needed << " bytes (decode_workspace_size), got "
                                 << args.workspace.bytes);
  KVQ_CHECK(needed == 0 || args.workspace.data != nullptr, kFunc, "workspace",
            "expected a non-null data pointer for " << needed << " bytes, got null");
  if (args.check) cuda::check_prefill_data(as_prefill_args(args), p);
  cuda::paged_decode(args, p, detail::resolve_decode_launch(args, p, plan, dev));
}

size_t decode_workspace_size(const DecodeArgs& args) {
  const detail::AttnProblem p = detail::validate_decode(args, "decode_workspace_size");
  if (args.q.device == Device::kCPU) return 0;
  require_cuda("decode_workspace_size");
  // Sized on the tensors' device (the split count depends on its SM count), by the same plan as
  // paged_decode makes: room for the route and the CUDA-core kernel the views may fall back to.
  const detail::DeviceInfo dev = detail::device_info_of(args.q, /*require=*/true);
  return detail::make_decode_plan(args, p, dev, detail::PlannerEnv::from_environment()).workspace_bytes;
}

void append(const AppendArgs& args) {
  constexpr const char* kFunc = "append";
  const detail::AppendProblem ap = detail::validate_append(args, kFunc);
  const detail::CacheInfo& c = ap.cache;
  if (args.k_new.device == Device::kCPU) {
    detail::check_append_data_host(args, ap, kFunc);
    cpu::append(args, ap.num_tokens, c.num_kv_heads, c.head_dim, c.page_size, c.num_blocks,
                c.k_mode, c.v_mode);
    return;
  }
  require_cuda(kFunc);
  cuda::append(args, ap.num_tokens, c.num_kv_heads, c.head_dim, c.page_size, c.num_blocks,
               c.k_mode, c.v_mode);
}

void dequantize_blocks(const DequantArgs& args) {
  constexpr const char* kFunc = "dequantize_blocks";
  const detail::DequantProblem dp = detail::validate_dequant(args, kFunc);
  const detail::CacheInfo& c = dp.cache;
  if (args.cache.device == Device::kCPU) {
    detail::check_dequant_data_host(args, dp, kFunc);
    cpu::dequantize_blocks(args, c.num_kv_heads, c.page_size, c.head_dim, c.k_mode);
    return;
  }
  require_cuda(kFunc);
  cuda::dequantize_blocks(args, c.num_kv_heads, c.page_size, c.head_dim, c.k_mode);
}

void calibrate(const TensorView& x, const TensorView& scale_out, void* stream) {
  detail::validate_calibrate(x, scale_out, "calibrate");
  if (x.device == Device::kCPU) {
    cpu::calibrate(x, scale_out);
    return;
  }
  require_cuda("calibrate");
  cuda::calibrate(x, scale_out, stream);
}

bool cuda_built() { return cuda::built(); }
bool cuda_available() { return cuda::available(); }

}  // namespace kvq
