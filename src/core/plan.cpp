// src/core/plan.cpp — prefill planning: lengths, path choice and workspace sizing, all on the host.
//
// plan_prefill() validates the call's shapes and options, then reads the lengths from host
// arrays, so that paged_prefill() with the plan makes no device-to-host copy and can be captured
// in a CUDA graph. Without host lengths the plan holds upper bounds.
//
// Path choice. CPU tensors: kGeneric always (the CPU backend serves every shape). CUDA tensors:
// a requested path is kept (validation already refused kDequant for bf16/fp16 caches); kAuto
// picks kFused (the tensor-core kernel, for int8 and bf16/fp16 caches alike) when head_dim has a
// fast instantiation (KVQ_FAST_HEAD_DIMS) and there is no mask, else kGeneric.
//
// Workspace layout of the kDequant path (CUDA), offsets from Workspace::data, every part starting
// on a 256-byte boundary (each part's size is rounded up to a multiple of 256):
//   part 0  K  [num_referenced_blocks, <block shape of the cache in its layout>] in the output
//              dtype (q's float dtype, bf16 when q is int8): num_referenced_blocks * page_size *
//              num_kv_heads * head_dim * 2 bytes, e.g. HND [n, num_kv_heads, page_size, head_dim].
//   part 1  V  same shape and dtype as part 0.
//   part 2  remapped block table, int32 [batch_size, max_blocks_per_seq] row-major: entry (b, i)
//              for i < ceil(kv_len_b / page_size) holds the compact block id, the rank of (b, i)
//              in the row-major order of all referenced (sequence, block) pairs; others hold -1
//              (the compact mode of dequantize_blocks).
//   workspace_bytes = sum of the three rounded parts.
// num_referenced_blocks comes from the plan's host lengths. A run whose device lengths reference
// more blocks than the plan counted must still not write past parts 0/1: the CUDA kernel must
// skip (or fail on) references whose compact id reaches plan.num_referenced_blocks (docs/design.md §3:
// never out of bounds, whatever the metadata holds).
#include "src/core/plan.h"

#include <algorithm>
#include <string>
#include <vector>

#include "kvq/error.h"
#include "kvq/kvq.h"
#include "kvq_config.h"
#include "src/core/validate.h"

namespace kvq {

std::vector<int> fast_head_dims() { return std::vector<int>{KVQ_FAST_HEAD_DIMS}; }

namespace detail {
namespace {

constexpr size_t kWorkspaceAlign = 256;

size_t round_up(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool is_fast_head_dim(int64_t head_dim) {
  const std::vector<int> dims = fast_head_dims();
  return std::find(dims.begin(), dims.end(), static_cast<int>(head_dim)) != dims.end();
}

}  // namespace

PrefillPath resolve_prefill_path(const AttnProblem& p, Device device, PrefillPath requested) {
  if (device == Device::kCPU) return PrefillPath::kGeneric;
  if (requested != PrefillPath::kAuto) return requested;
  return is_fast_head_dim(p.head_dim) && !p.has_mask ? PrefillPath::kFused : PrefillPath::kGeneric;
}

size_t dequant_workspace_bytes(const AttnProblem& p, int64_t num_referenced_blocks) {
  const size_t kv_bytes = static_cast<size_t>(num_referenced_blocks) * p.page_size *
                          p.num_kv_heads * p.head_dim * 2;
  const size_t table_bytes = static_cast<size_t>(p.batch_size) * p.max_blocks_per_seq * 4;
  return 2 * round_up(kv_bytes) + round_up(table_bytes);
}

PrefillPlan make_prefill_plan(const PrefillArgs& args, const AttnProblem& p,
                              const int32_t* cu_q_lens_host, const int32_t* kv_lens_host,
                              const char* func) {
  PrefillPlan plan;
  plan.device = args.q.device;
  plan.batch_size = p.batch_size;
  plan.total_q = p.total_q;
  const int64_t max_kv = p.max_blocks_per_seq * p.page_size;

  if (cu_q_lens_host) {
    KVQ_CHECK(cu_q_lens_host[0] == 0, func, "cu_q_lens_host",
              "expected cu_q_lens_host[0] = 0, got " << cu_q_lens_host[0]);
    for (int64_t b = 0; b < p.batch_size; ++b) {
      const int64_t q_len = int64_t{cu_q_lens_host[b + 1]} - cu_q_lens_host[b];
      KVQ_CHECK(q_len >= 0, func, "cu_q_lens_host",
                "expected non-decreasing values, got cu_q_lens_host[" << b + 1 << "] = "
                    << cu_q_lens_host[b + 1] << " < cu_q_lens_host[" << b
                    << "] = " << cu_q_lens_host[b]);
      plan.max_q_len = std::max(plan.max_q_len, q_len);
    }
    KVQ_CHECK(cu_q_lens_host[p.batch_size] <= p.total_q, func, "cu_q_lens_host",
              "expected cu_q_lens_host[" << p.batch_size << "] <= total_q = " << p.total_q
                                         << " (the rows of q), got "
                                         << cu_q_lens_host[p.batch_size]);
  } else {
    plan.max_q_len = p.batch_size > 0 ? p.total_q : 0;
  }

  if (kv_lens_host) {
    for (int64_t b = 0; b < p.batch_size; ++b) {
      const int64_t kv_len = kv_lens_host[b];
      KVQ_CHECK(kv_len >= 0 && kv_len <= max_kv, func, "kv_lens_host",
                "expected kv_lens_host[" << b << "] in [0, max_blocks_per_seq * page_size = "
                                         << max_kv << "], got " << kv_len);
      plan.max_kv_len = std::max(plan.max_kv_len, kv_len);
      plan.num_referenced_blocks += ceil_div(kv_len, p.page_size);
    }
  } else {
    plan.max_kv_len = p.batch_size > 0 ? max_kv : 0;
    plan.num_referenced_blocks = p.batch_size * p.max_blocks_per_seq;
  }

  plan.path = resolve_prefill_path(p, plan.device, args.path);
  plan.num_splits = 1;
  plan.workspace_bytes =
      plan.path == PrefillPath::kDequant ? dequant_workspace_bytes(p, plan.num_referenced_blocks) : 0;
  return plan;
}

void check_plan_and_workspace(const PrefillArgs& args, const AttnProblem& p,
                              const PrefillPlan& plan, const char* func) {
  const Device device = args.q.device;
  KVQ_CHECK(plan.device == device, func, "plan",
            "expected a plan for " << to_string(device) << " tensors, got a plan for "
                                   << to_string(plan.device) << " tensors");
  KVQ_CHECK(plan.batch_size == p.batch_size, func, "plan",
            "expected batch_size " << p.batch_size << " (from kv_lens), got a plan for batch_size "
                                   << plan.batch_size);
  KVQ_CHECK(plan.total_q == p.total_q, func, "plan",
            "expected total_q " << p.total_q << " (from q), got a plan for total_q " << plan.total_q);
  KVQ_CHECK(plan.path == PrefillPath::kFused || plan.path == PrefillPath::kDequant ||
                plan.path == PrefillPath::kGeneric,
            func, "plan",
            "expected a resolved path (fused, dequant or generic), got " << to_string(plan.path));
  KVQ_CHECK(plan.path != PrefillPath::kDequant || p.kv_dtype == DType::kInt8, func, "plan",
            "expected a path for a " << to_string(p.kv_dtype)
                                     << " cache (dequant needs an int8 cache), got dequant");
  KVQ_CHECK(device == Device::kCPU || args.path == PrefillPath::kAuto || plan.path == args.path,
            func, "plan",
            "expected path " << to_string(args.path) << " (args.path), got a plan for "
                             << to_string(plan.path));
  KVQ_CHECK(plan.num_splits >= 1, func, "plan",
            "expected num_splits >= 1, got " << plan.num_splits);
  KVQ_CHECK(args.workspace.bytes >= plan.workspace_bytes, func, "workspace",
            "expected at least " << plan.workspace_bytes << " bytes (plan.workspace_bytes, path "
                                 << to_string(plan.path) << "), got " << args.workspace.bytes);
  KVQ_CHECK(plan.workspace_bytes == 0 || args.workspace.data != nullptr, func, "workspace",
            "expected a non-null data pointer for " << plan.workspace_bytes
                                                    << " bytes, got null");
}

}  // namespace detail

PrefillPlan plan_prefill(const PrefillArgs& args, const int32_t* cu_q_lens_host,
                         const int32_t* kv_lens_host) {
  constexpr const char* kFunc = "plan_prefill";
  const detail::AttnProblem p = detail::validate_prefill(args, kFunc);
  return detail::make_prefill_plan(args, p, cu_q_lens_host, kv_lens_host, kFunc);
}

}  // namespace kvq
