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
// Kernel choice (PrefillPlan::kernel). kPath (the path's own kernel) unless every condition below
// holds; then kMmaDecode: the tensor-core split-KV decode kernel (src/cuda/decode/mma_decode.cu),
// which serves up to 16 query rows per (sequence, kv head) and reads each K/V byte once per GQA
// group, where the prefill kernel's 64-row tiles would be mostly empty (multi-token decode,
// speculative verification). The conditions (small_q_decode_refusal, the one definition):
//   - the plan has host lengths (cu_q_lens_host): plan.max_q_len is the real longest chunk, 1..8;
//   - CUDA tensors, path=auto resolved to kFused (a forced path keeps its kernel);
//   - causal, or max_q_len == 1 (the kernel is causal within the chunk: query i at
//     kv_len - q_len + i; a single query sees every key either way); no mask; native compute (int8
//     compute is the prefill kernels' SageAttention recipe, int8 q included);
//   - the kernel serves the shape and views (cuda::plan_prefill_mma_decode: head dim in
//     KVQ_MMA_DECODE_HEAD_DIMS,
//     max_q_len * group_size <= 16 (8 at head dim 256), bf16/fp16 q, int8 (fp32 per-token scales)
//     or bf16/fp16 cache, alignment);
//   - KVQ_SMALL_Q_DECODE is not "0" (read at planning; "0" keeps kPath, for A/B timing).
// Everything else the decode kernel computes as the prefill paths do (docs/design.md §1; windows,
// global window, GQA layouts, lse, empty rows, q_len 0 sequences, non-finite rules, the hostile
// metadata of docs/api.md). It then takes plan.num_splits from the decode planner (shape and SM
// count, never device data) and its split partials from the workspace:
// workspace_bytes = mma_decode_workspace_bytes(total_q rows, num_splits) (0 for one split), so
// run() stays graph capturable and deterministic for a fixed plan. check_plan_and_workspace holds a
// given kMmaDecode plan to the same conditions.
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
#include <cstdlib>
#include <string>
#include <vector>

#include "kvq/error.h"
#include "kvq/kvq.h"
#include "kvq_config.h"
#include "src/core/backend.h"
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

// KVQ_SMALL_Q_DECODE=0: plans keep the path's kernel for short chunks (A/B timing).
bool small_q_decode_enabled() {
  const char* env = std::getenv("KVQ_SMALL_Q_DECODE");
  return env == nullptr || std::string(env) != "0";
}

// The conditions on the call and its plan, before the kernel's own (shape, views, splits).
std::string small_q_call_refusal(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan) {
  if (args.q.device != Device::kCUDA) return "CPU tensors";
  if (args.path != PrefillPath::kAuto)
    return std::string("path ") + to_string(args.path) + " (forced paths keep their kernel; the decode kernel is chosen under path auto)";
  if (plan.path != PrefillPath::kFused) return std::string("path auto resolved to ") + to_string(plan.path);
  if (plan.max_q_len < 1 || plan.max_q_len > kSmallQDecodeMaxQLen)
    return "max_q_len " + std::to_string(plan.max_q_len) + " (the decode kernel takes 1.." +
           std::to_string(kSmallQDecodeMaxQLen) + " query tokens per sequence)";
  if (p.has_mask) return "a mask";
  if (!p.causal && plan.max_q_len > 1)
    return "causal=false with max_q_len " + std::to_string(plan.max_q_len) + " (the decode kernel is causal within the chunk)";
  if (p.compute != ComputeMode::kNative) return "int8 compute (the decode kernel computes in the query's 16-bit dtype)";
  return "";
}

}  // namespace

std::string small_q_decode_refusal(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan) {
  std::string why = small_q_call_refusal(args, p, plan);
  if (why.empty() && !cuda::prefill_mma_decode_serves(args, p, plan))
    why = "a shape, views or split plan the decode kernel does not serve (head_dim " KVQ_MMA_DECODE_HEAD_DIMS_TEXT
          ", bf16/fp16 q, "
          "int8/bf16/fp16 cache, max_q_len * group_size <= 16 (8 at head_dim 256), 16-byte aligned K/V rows, "
          "4-byte aligned q rows, fp32 per-token scales; num_splits and workspace_bytes as its planner sets them)";
  return why;
}

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
  plan.kernel = PrefillKernel::kPath;
  plan.num_splits = 1;
  plan.workspace_bytes =
      plan.path == PrefillPath::kDequant ? dequant_workspace_bytes(p, plan.num_referenced_blocks) : 0;
  // Short chunks on the decode kernel (header): only with real host lengths.
  if (cu_q_lens_host != nullptr && small_q_decode_enabled() && small_q_call_refusal(args, p, plan).empty()) {
    PrefillPlan trial = plan;
    if (cuda::plan_prefill_mma_decode(args, p, trial)) {
      trial.kernel = PrefillKernel::kMmaDecode;
      plan = trial;
    }
  }
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
  KVQ_CHECK(plan.kernel == PrefillKernel::kPath || plan.kernel == PrefillKernel::kMmaDecode, func, "plan",
            "expected kernel path or mma_decode, got " << static_cast<int>(plan.kernel));
  if (plan.kernel == PrefillKernel::kMmaDecode) {
    const std::string why = small_q_decode_refusal(args, p, plan);
    KVQ_CHECK(why.empty(), func, "plan",
              "expected a call the plan's kernel (mma_decode) serves, got " << why << "; plan again for this call");
  }
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
