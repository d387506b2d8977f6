// src/core/plan.cpp — the planner: every kernel choice, on the host, before anything launches.
// Prefill: lengths, path, kernel, the kernel's form, split count and workspace (plan_prefill(), and
// the dispatcher for calls without a plan). Decode: the route, its form and split count, per call
// (paged_decode, decode_workspace_size). Then, per call, the plan applied to the call's views
// (resolve_prefill_launch / resolve_decode_launch): the CUDA backend launches exactly that
// KernelLaunch and chooses nothing (a launch that does not match is an internal error there).
//
// Inputs besides the call: the device (DeviceInfo: usable, SM count, sm_90, the tensor-core decode's
// occupancy; cuda::device_info answers, tests pass a fake) and the environment (PlannerEnv: the
// KVQ_* overrides of docs/api.md "Options", read when planning). What each kernel serves is
// src/core/kernels.h, host code shared with the launchers.
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
//   - the kernel serves the shape and views (kernels.h mma_decode_supports_shape/_views: head dim in
//     KVQ_MMA_DECODE_HEAD_DIMS, max_q_len * group_size <= 16 (8 at head dim 256), bf16/fp16 q, int8
//     (fp32 per-token scales) or bf16/fp16 cache, alignment) and a CUDA device is usable;
//   - KVQ_SMALL_Q_DECODE is not "0" (read at planning; "0" keeps kPath, for A/B timing).
// Everything else the decode kernel computes as the prefill paths do (docs/design.md §1; windows,
// global window, GQA layouts, lse, empty rows, q_len 0 sequences, non-finite rules, the hostile
// metadata of docs/api.md). It then takes plan.decode_variant (choose_mma_decode_variant),
// plan.num_splits from the decode split planner (shape, SM count and the variant's occupancy, never
// device data) and its split partials from the workspace:
// workspace_bytes = mma_decode_workspace_bytes(total_q rows, num_splits) (0 for one split), so
// run() stays graph capturable and deterministic for a fixed plan. check_plan_and_workspace holds a
// given kMmaDecode plan to the same conditions.
//
// Form choice. PrefillPlan::mainloop, where the plan runs the tensor-core prefill (path fused with
// kernel kPath on a problem tc_prefill_supports serves; path dequant on the problem over its
// copy): choose_tc_mainloop — the Hopper kernel on sm_90 for padded head dims of KVQ_WG_HEAD_DIMS
// when the longest sequence packs >= kWgMinPackedRows query rows (KVQ_PREFILL_KERNEL=wgmma: any
// rows, =mma: never), serial or ping-pong (KVQ_WG_MAINLOOP); else mma.sync. The packed rows are
// max_q_len (total_q without host lengths, as the launch sizes its tiles) x group_size.
// PrefillPlan::decode_variant (kernel kMmaDecode): choose_mma_decode_variant — TMA on sm_90 where
// mma_decode_has_tma_form (KVQ_DECODE_KERNEL=s8: int8 Q·Kᵀ for int8 caches, =v5: never); else
// cp.async. At run time resolve_prefill_launch takes a form down a step where the call's views or
// device cannot take it (Hopper: equal K/V strides, sm_90; TMA: sm_90), never up.
//
// Decode route (make_decode_plan; KVQ_DECODE_PATH read per call, since each call plans): the
// tensor-core decode wherever mma_decode_supports_shape(p, 1) (=mma: else an error on
// KVQ_DECODE_PATH), the CUDA-core split kernel with =split, the tensor-core prefill with =tc where
// it serves the shape; then resolve_decode_launch: views the tensor-core kernels cannot load take
// the CUDA-core kernel (=mma: an error on k_cache). Workspace: room for the route and that fallback.
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
//   workspace_bytes = sum of the three rounded parts (dequant_workspace, the one definition).
// num_referenced_blocks comes from the plan's host lengths. A run whose device lengths reference
// more blocks than the plan counted must still not write past parts 0/1: the CUDA kernel must
// skip (or fail on) references whose compact id reaches plan.num_referenced_blocks (docs/design.md §3:
// never out of bounds, whatever the metadata holds).
#include "src/core/plan.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvq/error.h"
#include "kvq/kvq.h"
#include "kvq_config.h"
#include "src/core/backend.h"
#include "src/core/kernels.h"
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

std::string env_string(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// KVQ_WG_MAINLOOP: the Hopper kernel's consumer order (serial unless "pingpong"); a value that is
// neither is said on stderr once per process.
PrefillMainloop wg_order(const PlannerEnv& env) {
  if (!env.wg_mainloop || *env.wg_mainloop == "serial") return PrefillMainloop::kWgmma;
  if (*env.wg_mainloop == "pingpong") return PrefillMainloop::kWgmmaPingPong;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "kvq: KVQ_WG_MAINLOOP=%s is not serial or pingpong; using serial\n", env.wg_mainloop->c_str());
  return PrefillMainloop::kWgmma;
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

// Whether the tensor-core decode serves the call's shape and views for plan.max_q_len rows per
// sequence with the plan's split count and workspace (no device needed).
bool prefill_mma_decode_serves(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan) {
  if (!mma_decode_supports_shape(p, plan.max_q_len) || !mma_decode_supports_views(args.kv, args.q, p)) return false;
  if (plan.num_splits < 1 || plan.num_splits > kMmaDecodeMaxSplits) return false;
  return plan.workspace_bytes >= mma_decode_workspace_bytes(p, p.total_q, plan.num_splits);
}

// The tensor-core decode's split count for (p, max_q_len, variant) on dev: its planner's rule over
// the device's SM count and the instantiation's CTAs per SM.
int mma_decode_auto_splits(const DeviceInfo& dev, const AttnProblem& p, int64_t max_q_len, DecodeVariant variant) {
  const int ctas = dev.mma_decode_ctas_per_sm ? dev.mma_decode_ctas_per_sm(p, max_q_len, variant, dev.index) : 1;
  return mma_decode_splits(p, 0, dev.sm_count, ctas);
}

// The tensor-core decode as the kernel of `plan` (short chunks): whether it serves the call's shape
// and views for plan.max_q_len query rows per sequence, and if so its form, split count and
// workspace, sized on dev; false, plan untouched, when it does not or no CUDA device is usable.
bool plan_prefill_mma_decode(const PrefillArgs& args, const AttnProblem& p, PrefillPlan& plan, const DeviceInfo& dev,
                             const PlannerEnv& env) {
  if (!mma_decode_supports_shape(p, plan.max_q_len) || !mma_decode_supports_views(args.kv, args.q, p)) return false;
  if (!dev.usable) return false;  // planning CUDA views without a device: the path's kernel
  const DecodeVariant variant = choose_mma_decode_variant(p, dev, env);
  const int splits = mma_decode_auto_splits(dev, p, plan.max_q_len, variant);
  plan.decode_variant = variant;
  plan.num_splits = splits;
  plan.workspace_bytes = mma_decode_workspace_bytes(p, p.total_q, splits);
  return true;
}

// Query rows per sequence the tensor-core prefill's tiles cover: the plan's longest chunk (total_q
// when it has none).
int64_t tc_rows_per_sequence(const AttnProblem& p, const PrefillPlan& plan) {
  return plan.max_q_len > 0 ? plan.max_q_len : p.total_q;
}

// The problem the dequant path's tensor-core kernel solves: over the bf16/fp16 copy.
AttnProblem dequant_problem(const AttnProblem& p, int64_t num_referenced_blocks) {
  AttnProblem p2 = p;
  p2.kv_dtype = p.q_dtype == DType::kInt8 ? DType::kBFloat16 : p.q_dtype;
  p2.k_scale_mode = ScaleMode::kNone;
  p2.v_scale_mode = ScaleMode::kNone;
  p2.num_blocks = num_referenced_blocks;
  return p2;
}

// A contiguous view of a paged cache part of the dequant workspace.
TensorView cache_view(void* data, DType dtype, int64_t n, const AttnProblem& p, int device_index) {
  if (p.layout == KvLayout::kHND)
    return TensorView::make(data, dtype, {n, p.num_kv_heads, p.page_size, p.head_dim}, Device::kCUDA, device_index);
  return TensorView::make(data, dtype, {n, p.page_size, p.num_kv_heads, p.head_dim}, Device::kCUDA, device_index);
}

}  // namespace

PlannerEnv PlannerEnv::from_environment() {
  PlannerEnv e;
  const char* small_q = std::getenv("KVQ_SMALL_Q_DECODE");
  e.small_q_decode = small_q == nullptr || std::string(small_q) != "0";
  e.prefill_kernel = env_string("KVQ_PREFILL_KERNEL");
  if (const char* v = std::getenv("KVQ_WG_MAINLOOP")) e.wg_mainloop = std::string(v);
  e.decode_kernel = env_string("KVQ_DECODE_KERNEL");
  e.decode_path = env_string("KVQ_DECODE_PATH");
  return e;
}

DeviceInfo device_info_of(const TensorView& q, bool require) {
  if (q.device != Device::kCUDA) return DeviceInfo{};
  return cuda::device_info(q.device_index, require);
}

PrefillMainloop choose_tc_mainloop(int64_t head_dim, int64_t packed_rows, const DeviceInfo& dev,
                                   const PlannerEnv& env) {
  const int padded = tc_padded_head_dim(static_cast<int>(head_dim));
  if (!wg_has_head_dim(padded)) return PrefillMainloop::kMmaSync;
  if (env.prefill_kernel == "mma") return PrefillMainloop::kMmaSync;
  if (!dev.sm90) return PrefillMainloop::kMmaSync;
  if (env.prefill_kernel != "wgmma" && packed_rows < kWgMinPackedRows) return PrefillMainloop::kMmaSync;
  return wg_order(env);
}

PrefillMainloop choose_wg_int8_mainloop(const DeviceInfo& dev, const PlannerEnv& env) {
  // Every size (the generic kernel is the alternative, not mma.sync); serial order only.
  if (!dev.sm90 || env.prefill_kernel == "mma") return PrefillMainloop::kNone;
  return PrefillMainloop::kWgmma;
}

DecodeVariant choose_mma_decode_variant(const AttnProblem& p, const DeviceInfo& dev, const PlannerEnv& env) {
  if (env.decode_kernel == "v5") return DecodeVariant::kCpAsync;
  if (!mma_decode_has_tma_form(p) || !dev.sm90) return DecodeVariant::kCpAsync;
  // KVQ_DECODE_KERNEL=s8: int8 Q·Kᵀ (as fast as fp16 Q·Kᵀ on the H200, docs/perf-notes.md).
  return p.kv_dtype == DType::kInt8 && env.decode_kernel == "s8" ? DecodeVariant::kTmaS8 : DecodeVariant::kTma;
}

PrefillMainloop runnable_tc_mainloop(PrefillMainloop planned, const AttnProblem& p, const PagedKvCache& kv,
                                     const DeviceInfo& dev) {
  const bool wg = planned == PrefillMainloop::kWgmma || planned == PrefillMainloop::kWgmmaPingPong;
  if (wg && wg_has_head_dim(tc_padded_head_dim(static_cast<int>(p.head_dim))) && wg_kv_strides_agree(kv) && dev.sm90)
    return planned;
  return PrefillMainloop::kMmaSync;
}

DecodeVariant runnable_mma_decode_variant(DecodeVariant planned, const AttnProblem& p, const DeviceInfo& dev) {
  if ((planned == DecodeVariant::kTma || planned == DecodeVariant::kTmaS8) && dev.sm90 && mma_decode_has_tma_form(p))
    return planned == DecodeVariant::kTmaS8 && p.kv_dtype != DType::kInt8 ? DecodeVariant::kTma : planned;
  return DecodeVariant::kCpAsync;
}

std::string small_q_decode_refusal(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan) {
  std::string why = small_q_call_refusal(args, p, plan);
  if (why.empty() && !prefill_mma_decode_serves(args, p, plan))
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

DequantWorkspace dequant_workspace(const PrefillArgs& args, const AttnProblem& p, int64_t num_referenced_blocks) {
  DequantWorkspace w;
  w.p = dequant_problem(p, num_referenced_blocks);
  w.bytes = dequant_workspace_bytes(p, num_referenced_blocks);
  const size_t kv_bytes = static_cast<size_t>(num_referenced_blocks) * p.page_size * p.num_kv_heads * p.head_dim * 2;
  char* base = static_cast<char*>(args.workspace.data);
  auto at = [&](size_t offset) -> void* { return base != nullptr ? base + offset : nullptr; };
  const int dev = args.q.device_index;
  w.kv.layout = p.layout;
  w.kv.k_cache = cache_view(at(0), w.p.kv_dtype, num_referenced_blocks, p, dev);
  w.kv.v_cache = cache_view(at(round_up(kv_bytes)), w.p.kv_dtype, num_referenced_blocks, p, dev);
  w.block_tables = TensorView::make(at(2 * round_up(kv_bytes)), DType::kInt32, {p.batch_size, p.max_blocks_per_seq},
                                    Device::kCUDA, dev);
  return w;
}

PrefillPlan make_prefill_plan(const PrefillArgs& args, const AttnProblem& p,
                              const int32_t* cu_q_lens_host, const int32_t* kv_lens_host,
                              const char* func) {
  // The device is asked only where a choice depends on it (CUDA tensors off the generic path).
  DeviceInfo dev;
  if (args.q.device == Device::kCUDA && resolve_prefill_path(p, Device::kCUDA, args.path) != PrefillPath::kGeneric)
    dev = device_info_of(args.q, /*require=*/false);
  return make_prefill_plan(args, p, cu_q_lens_host, kv_lens_host, func, dev, PlannerEnv::from_environment());
}

PrefillPlan make_prefill_plan(const PrefillArgs& args, const AttnProblem& p,
                              const int32_t* cu_q_lens_host, const int32_t* kv_lens_host,
                              const char* func, const DeviceInfo& dev, const PlannerEnv& env) {
  PrefillPlan plan;
  plan.device = args.q.device;
  plan.batch_size = p.batch_size;
  plan.total_q = p.total_q;
  const int64_t max_kv = p.max_blocks_per_seq * p.page_size;

  // The host lengths are checked as the call's own metadata is (validate.h), under their names here.
  if (cu_q_lens_host) {
    check_cu_q_lens_values(func, "cu_q_lens_host", cu_q_lens_host, p.batch_size, p.total_q);
    for (int64_t b = 0; b < p.batch_size; ++b)
      plan.max_q_len = std::max(plan.max_q_len, int64_t{cu_q_lens_host[b + 1]} - cu_q_lens_host[b]);
  } else {
    plan.max_q_len = p.batch_size > 0 ? p.total_q : 0;
  }

  if (kv_lens_host) {
    for (int64_t b = 0; b < p.batch_size; ++b) {
      const int64_t kv_len = kv_lens_host[b];
      check_kv_len_value(func, "kv_lens_host", b, kv_len, p.max_blocks_per_seq, p.page_size);
      plan.max_kv_len = std::max(plan.max_kv_len, kv_len);
      plan.num_referenced_blocks += ceil_div(kv_len, p.page_size);
    }
  } else {
    plan.max_kv_len = p.batch_size > 0 ? max_kv : 0;
    plan.num_referenced_blocks = p.batch_size * p.max_blocks_per_seq;
  }

  plan.path = resolve_prefill_path(p, plan.device, args.path);
  plan.kernel = PrefillKernel::kPath;
  plan.mainloop = PrefillMainloop::kNone;
  plan.decode_variant = DecodeVariant::kNone;
  plan.num_splits = 1;
  plan.workspace_bytes =
      plan.path == PrefillPath::kDequant ? dequant_workspace_bytes(p, plan.num_referenced_blocks) : 0;
  // Short chunks on the decode kernel (header): only with real host lengths.
  if (cu_q_lens_host != nullptr && env.small_q_decode && small_q_call_refusal(args, p, plan).empty()) {
    PrefillPlan trial = plan;
    if (plan_prefill_mma_decode(args, p, trial, dev, env)) {
      trial.kernel = PrefillKernel::kMmaDecode;
      plan = trial;
    }
  }
  // The tensor-core prefill's mainloop, where the plan runs that kernel (header).
  if (plan.device == Device::kCUDA && plan.kernel == PrefillKernel::kPath) {
    const int64_t packed_rows = tc_rows_per_sequence(p, plan) * p.group_size;
    if (plan.path == PrefillPath::kFused && wg_int8_compute_supports(p))
      plan.mainloop = choose_wg_int8_mainloop(dev, env);
    else if (plan.path == PrefillPath::kFused && tc_prefill_supports(p))
      plan.mainloop = choose_tc_mainloop(p.head_dim, packed_rows, dev, env);
    if (plan.path == PrefillPath::kDequant && tc_prefill_supports(dequant_problem(p, plan.num_referenced_blocks)))
      plan.mainloop = choose_tc_mainloop(p.head_dim, packed_rows, dev, env);
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
  KVQ_CHECK(plan.mainloop == PrefillMainloop::kNone || plan.mainloop == PrefillMainloop::kMmaSync ||
                plan.mainloop == PrefillMainloop::kWgmma || plan.mainloop == PrefillMainloop::kWgmmaPingPong,
            func, "plan",
            "expected mainloop none, mma_sync, wgmma or wgmma_pingpong, got " << static_cast<int>(plan.mainloop));
  KVQ_CHECK(plan.decode_variant == DecodeVariant::kNone || plan.decode_variant == DecodeVariant::kCpAsync ||
                plan.decode_variant == DecodeVariant::kTma || plan.decode_variant == DecodeVariant::kTmaS8,
            func, "plan",
            "expected decode_variant none, cp_async, tma or tma_s8, got " << static_cast<int>(plan.decode_variant));
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

const char* to_string(LaunchKernel kernel) {
  switch (kernel) {
    case LaunchKernel::kGeneric: return "generic";
    case LaunchKernel::kTcPrefill: return "tc_prefill";
    case LaunchKernel::kDequantPrefill: return "dequant_prefill";
    case LaunchKernel::kMmaDecode: return "mma_decode";
    case LaunchKernel::kSplitDecode: return "split_decode";
  }
  return "unknown_launch_kernel";
}

KernelLaunch resolve_prefill_launch(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan,
                                    const DeviceInfo& dev) {
  constexpr const char* kFunc = "paged_prefill";
  KernelLaunch launch;
  launch.max_q_len = tc_rows_per_sequence(p, plan);
  switch (plan.path) {
    case PrefillPath::kFused:
      if (plan.kernel == PrefillKernel::kMmaDecode) {
        launch.kernel = LaunchKernel::kMmaDecode;
        launch.variant = runnable_mma_decode_variant(plan.decode_variant, p, dev);
        launch.num_splits = plan.num_splits;
        launch.max_q_len = plan.max_q_len;
        return launch;
      }
      if (tc_prefill_supports(p) && tc_prefill_supports_views(args, p, args.kv, args.block_tables)) {
        launch.kernel = LaunchKernel::kTcPrefill;
        launch.mainloop = runnable_tc_mainloop(plan.mainloop, p, args.kv, dev);
        // int8 compute runs on the Hopper mainloop only; elsewhere the generic kernel serves it.
        if (p.compute == ComputeMode::kNative || launch.mainloop == PrefillMainloop::kWgmma) return launch;
        launch.mainloop = PrefillMainloop::kNone;
      }
      if (args.path == PrefillPath::kFused)
        throw Error(ErrorKind::kValue, kFunc, "path",
                    "expected a problem the fused (tensor-core) path serves (fast head_dim, no mask, 16-byte "
                    "aligned views; int8 compute: head_dim 128 or 256 on an sm_90 GPU), got head_dim " +
                        std::to_string(p.head_dim) + (p.has_mask ? " with a mask" : "") +
                        (p.compute == ComputeMode::kInt8 ? " with int8 compute" : "") +
                        " (path=fused was forced; use auto or generic)");
      launch.kernel = LaunchKernel::kGeneric;
      return launch;
    case PrefillPath::kDequant: {
      const DequantWorkspace w = dequant_workspace(args, p, plan.num_referenced_blocks);
      if (!tc_prefill_supports(w.p)) {
        throw Error(ErrorKind::kValue, kFunc, "path",
                    "expected a problem the tensor-core kernel serves after dequantization (fast head_dim, no mask, "
                    "native compute), got head_dim " + std::to_string(p.head_dim) + (p.has_mask ? " with a mask" : "") +
                        (p.compute == ComputeMode::kInt8 ? " with int8 compute" : "") + " (path=dequant was forced)");
      }
      KVQ_CHECK(args.workspace.data != nullptr && args.workspace.bytes >= w.bytes, kFunc, "workspace",
                "expected at least " << w.bytes << " bytes for the dequant path, got " << args.workspace.bytes);
      if (!tc_prefill_supports_views(args, w.p, w.kv, w.block_tables)) {
        throw Error(ErrorKind::kValue, kFunc, "path",
                    "expected 16-byte aligned q/out pointers and strides for the tensor-core kernel, got views it "
                    "cannot load (path=dequant was forced; use auto or generic)");
      }
      launch.kernel = LaunchKernel::kDequantPrefill;
      launch.mainloop = runnable_tc_mainloop(plan.mainloop, w.p, w.kv, dev);
      return launch;
    }
    case PrefillPath::kGeneric:
    case PrefillPath::kAuto:
      break;
  }
  launch.kernel = LaunchKernel::kGeneric;
  return launch;
}

DecodePlan make_decode_plan(const DecodeArgs& args, const AttnProblem& p, const DeviceInfo& dev,
                            const PlannerEnv& env) {
  DecodePlan plan;
  const std::string& force = env.decode_path;
  plan.split_num_splits = split_decode_splits(p, args.num_splits, dev.sm_count);
  const size_t split_bytes = split_decode_workspace_bytes(p, plan.split_num_splits);
  plan.workspace_bytes = split_bytes;
  KernelLaunch& launch = plan.launch;
  launch.kernel = LaunchKernel::kSplitDecode;
  launch.num_splits = plan.split_num_splits;
  launch.max_q_len = 1;
  if (p.batch_size == 0) return plan;
  // The tensor-core decode (default), unless KVQ_DECODE_PATH=split or =tc.
  if (force != "split" && force != "tc") {
    const bool served = mma_decode_supports_shape(p, 1);
    KVQ_CHECK(served || force != "mma", "paged_decode", "KVQ_DECODE_PATH",
              "not implemented: the tensor-core decode kernel (KVQ_DECODE_PATH=mma) serves head_dim "
              KVQ_MMA_DECODE_HEAD_DIMS_TEXT " with "
              "group_size <= 16 (<= 8 at head_dim 256), bf16/fp16 q, no mask; got head_dim "
                  << p.head_dim << ", group_size " << p.group_size);
    if (served) {
      launch.kernel = LaunchKernel::kMmaDecode;
      launch.variant = choose_mma_decode_variant(p, dev, env);
      launch.num_splits = args.num_splits > 0 ? mma_decode_splits(p, args.num_splits, 0, 0)
                                              : mma_decode_auto_splits(dev, p, 1, launch.variant);
      plan.forced = force == "mma";
      plan.workspace_bytes = std::max(split_bytes, mma_decode_workspace_bytes(p, p.batch_size, launch.num_splits));
      return plan;
    }
  }
  // KVQ_DECODE_PATH=tc: the tensor-core prefill with one query row per sequence, where it serves the shape.
  if (force == "tc" && tc_prefill_supports(decode_as_prefill(p))) {
    launch.kernel = LaunchKernel::kTcPrefill;
    launch.mainloop = choose_tc_mainloop(p.head_dim, p.group_size, dev, env);
    launch.num_splits = 1;
    plan.workspace_bytes = std::max(split_bytes, tc_decode_workspace_bytes(p));
  }
  return plan;
}

KernelLaunch resolve_decode_launch(const DecodeArgs& args, const AttnProblem& p, const DecodePlan& plan,
                                   const DeviceInfo& dev) {
  KernelLaunch launch = plan.launch;
  KernelLaunch split;
  split.kernel = LaunchKernel::kSplitDecode;
  split.num_splits = plan.split_num_splits;
  split.max_q_len = 1;
  if (launch.kernel == LaunchKernel::kMmaDecode) {
    const bool views = mma_decode_supports_views(args.kv, args.q, p);
    KVQ_CHECK(views || !plan.forced, "paged_decode", "k_cache",
              "not implemented: the tensor-core decode kernel (KVQ_DECODE_PATH=mma) needs 16-byte aligned K/V rows "
              "(data pointer and strides), 4-byte aligned q rows and fp32 per-token scales");
    if (!views) return split;
    launch.variant = runnable_mma_decode_variant(launch.variant, p, dev);
    return launch;
  }
  if (launch.kernel == LaunchKernel::kTcPrefill) {
    PrefillArgs pa;  // the views the tensor-core prefill reads besides the cache (q, out)
    pa.q = args.q;
    pa.out = args.out;
    const AttnProblem pp = decode_as_prefill(p);
    if (!tc_prefill_supports_views(pa, pp, args.kv, args.block_tables)) return split;
    launch.mainloop = runnable_tc_mainloop(launch.mainloop, pp, args.kv, dev);
    return launch;
  }
  return launch;
}

}  // namespace detail

PrefillPlan plan_prefill(const PrefillArgs& args, const int32_t* cu_q_lens_host,
                         const int32_t* kv_lens_host) {
  constexpr const char* kFunc = "plan_prefill";
  const detail::AttnProblem p = detail::validate_prefill(args, kFunc);
  return detail::make_prefill_plan(args, p, cu_q_lens_host, kv_lens_host, kFunc);
}

}  // namespace kvq
