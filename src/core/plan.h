// src/core/plan.h — the planner (plan.cpp): every kernel choice of kvq, made on the host before a
// launch, for prefill (plan_prefill(), and the dispatcher for unplanned calls) and decode (per call).
// The CUDA backend executes what the planner resolved (KernelLaunch) and chooses nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::detail {

// ---- what the planner reads besides the call ----

// The tensors' CUDA device as the planner sees it. cuda::device_info (src/cuda/backend.cu) answers
// for a real device, the CPU-only build's stub and CPU tensors give the default (not usable); tests
// pass a fake one.
struct DeviceInfo {
  bool usable = false;  // a CUDA device answered
  int index = 0;        // its device index (the tensors')
  int sm_count = 0;
  bool sm90 = false;    // compute capability 9.0 (H100/H200): the Hopper prefill, the decode's TMA form
  // Resident CTAs per SM of the tensor-core decode instantiation serving (p, max_q_len query rows
  // per sequence, variant) on device `device_index` (the CUDA backend asks the occupancy API).
  // Null: 1.
  int (*mma_decode_ctas_per_sm)(const AttnProblem& p, int64_t max_q_len, DecodeVariant variant,
                                int device_index) = nullptr;
};

// The KVQ_* environment variables that steer kernel choices (docs/api.md "Options"), read when
// planning: a plan keeps what they said when it was made.
struct PlannerEnv {
  bool small_q_decode = true;              // KVQ_SMALL_Q_DECODE; "0": short chunks keep the path's kernel
  std::string prefill_kernel;              // KVQ_PREFILL_KERNEL: "wgmma", "mma"; anything else: automatic
  std::optional<std::string> wg_mainloop;  // KVQ_WG_MAINLOOP: unset or "serial", "pingpong"; else serial, warned
  std::string decode_kernel;               // KVQ_DECODE_KERNEL: "v5", "s8"; anything else: automatic
  std::string decode_path;                 // KVQ_DECODE_PATH: "mma", "split", "tc"; anything else: automatic

  static PlannerEnv from_environment();
};

// cuda::device_info for the device of `q` (CUDA tensors), else the default. require=false: no
// usable device gives the default; require=true: a CUDA error is thrown as the launch would.
DeviceInfo device_info_of(const TensorView& q, bool require);

// ---- the choices, one function each (the same code plans and resolves) ----

// The path a prefill call takes on `device` for `requested` (kAuto: the planner's choice).
PrefillPath resolve_prefill_path(const AttnProblem& p, Device device, PrefillPath requested);

// The tensor-core prefill's mainloop for head_dim and packed_rows (the longest sequence's query
// rows x GQA group): the Hopper kernel on sm_90 for padded head dims of KVQ_WG_HEAD_DIMS from
// kWgMinPackedRows rows (KVQ_PREFILL_KERNEL=wgmma: any rows; =mma: never), in the consumers' order
// of KVQ_WG_MAINLOOP; else mma.sync.
PrefillMainloop choose_tc_mainloop(int64_t head_dim, int64_t packed_rows, const DeviceInfo& dev,
                                   const PlannerEnv& env);
// compute="int8" (kernels.h wg_int8_compute_supports): the Hopper kernel, serial, at every size on
// sm_90 (KVQ_PREFILL_KERNEL=mma: never); kNone where it cannot run, and the launch then takes the
// generic kernel (resolve_prefill_launch does so for any mainloop but kWgmma).
PrefillMainloop choose_wg_int8_mainloop(const DeviceInfo& dev, const PlannerEnv& env);

// The tensor-core decode's form for p: TMA on sm_90 where the shape has it (kernels.h
// mma_decode_has_tma_form), with int8 Q·Kᵀ for int8 caches under KVQ_DECODE_KERNEL=s8; cp.async
// elsewhere and under KVQ_DECODE_KERNEL=v5.
DecodeVariant choose_mma_decode_variant(const AttnProblem& p, const DeviceInfo& dev, const PlannerEnv& env);

// A planned choice as one call can run it: a step down where its views or device lack what the
// choice needs, never up. runnable_tc_mainloop: a Hopper form needs a padded head dim with a Hopper
// instantiation, K and V views of equal strides and an sm_90 device, else (kNone included)
// mma.sync. runnable_mma_decode_variant: a TMA form needs an sm_90 device and the shape's TMA
// instantiation (int8 Q·Kᵀ an int8 cache, else plain TMA), else (kNone included) cp.async.
PrefillMainloop runnable_tc_mainloop(PrefillMainloop planned, const AttnProblem& p, const PagedKvCache& kv,
                                     const DeviceInfo& dev);
DecodeVariant runnable_mma_decode_variant(DecodeVariant planned, const AttnProblem& p, const DeviceInfo& dev);

// ---- prefill ----

// Longest chunk (query tokens per sequence) a plan sends to the tensor-core decode kernel.
constexpr int64_t kSmallQDecodeMaxQLen = 8;

// Why a call cannot run on the tensor-core decode kernel (PrefillKernel::kMmaDecode) under `plan`
// (its path, max_q_len, num_splits, workspace_bytes), or "" when it can: the one definition the
// planner chooses by and check_plan_and_workspace holds a given plan to (plan.cpp).
std::string small_q_decode_refusal(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan);

// Bytes of the dequant path's workspace (layout in plan.cpp).
size_t dequant_workspace_bytes(const AttnProblem& p, int64_t num_referenced_blocks);

// The dequant path's workspace as views (layout in plan.cpp): the bf16/fp16 copy of the referenced
// blocks, its compact block table, and the problem the tensor-core kernel then solves over them.
struct DequantWorkspace {
  AttnProblem p;          // p over the copy: q's float dtype, no scales, num_referenced_blocks blocks
  PagedKvCache kv;        // parts 0 and 1
  TensorView block_tables;  // part 2
  size_t bytes = 0;       // dequant_workspace_bytes
};
DequantWorkspace dequant_workspace(const PrefillArgs& args, const AttnProblem& p, int64_t num_referenced_blocks);

// The plan of a validated call. Null host lengths: upper bounds (total_q, max_blocks_per_seq *
// page_size). Host lengths are checked (names cu_q_lens_host / kv_lens_host). Without dev/env:
// the tensors' device (when a choice needs it) and the environment.
PrefillPlan make_prefill_plan(const PrefillArgs& args, const AttnProblem& p,
                              const int32_t* cu_q_lens_host, const int32_t* kv_lens_host,
                              const char* func);
PrefillPlan make_prefill_plan(const PrefillArgs& args, const AttnProblem& p,
                              const int32_t* cu_q_lens_host, const int32_t* kv_lens_host,
                              const char* func, const DeviceInfo& dev, const PlannerEnv& env);

// A given plan against the call (device, batch, rows, path, kernel) and the workspace against the plan.
void check_plan_and_workspace(const PrefillArgs& args, const AttnProblem& p,
                              const PrefillPlan& plan, const char* func);

// ---- what the CUDA backend launches ----

enum class LaunchKernel : int8_t {
  kGeneric,          // generic_prefill (src/cuda/prefill/generic_prefill.cu)
  kTcPrefill,        // the tensor-core prefill over the call's cache (mainloop: mma.sync or Hopper)
  kDequantPrefill,   // dequantize_blocks into the workspace, then the tensor-core prefill over it
  kMmaDecode,        // the tensor-core split-KV decode (decode, or short prefill chunks)
  kSplitDecode,      // the CUDA-core split-KV decode
};
const char* to_string(LaunchKernel kernel);

// One call's kernel, as the backend runs it: a plan applied to the call's views and device.
struct KernelLaunch {
  LaunchKernel kernel = LaunchKernel::kGeneric;
  PrefillMainloop mainloop = PrefillMainloop::kNone;  // kTcPrefill, kDequantPrefill: kMmaSync / kWgmma*
  DecodeVariant variant = DecodeVariant::kNone;       // kMmaDecode: kCpAsync / kTma / kTmaS8
  int num_splits = 1;                                 // kMmaDecode, kSplitDecode
  int64_t max_q_len = 0;                              // query rows per sequence the launch covers
};

// The plan applied to this call (after check_plan_and_workspace and the data checks): the views
// and the run's device can only take a plan's choice down a step — the Hopper mainloop needs equal
// K/V strides and an sm_90 device, else mma.sync; the TMA decode an sm_90 device, else cp.async;
// path fused under auto takes the generic kernel where the tensor-core kernel cannot load the views.
// A forced path that cannot be served is an error here (kvq::Error on `path`), with the texts the
// backend used to raise.
KernelLaunch resolve_prefill_launch(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan,
                                    const DeviceInfo& dev);

// ---- decode (planned per call; no public plan) ----

struct DecodePlan {
  KernelLaunch launch;           // the route chosen from the shape, device and KVQ_DECODE_PATH
  bool forced = false;           // KVQ_DECODE_PATH=mma: views the kernel cannot load are an error
  int split_num_splits = 1;      // the CUDA-core kernel's split count (its route, or the fallback)
  size_t workspace_bytes = 0;    // decode_workspace_size: room for the route and its fallback
};

// Throws the KVQ_DECODE_PATH=mma error for a shape the tensor-core decode does not serve.
DecodePlan make_decode_plan(const DecodeArgs& args, const AttnProblem& p, const DeviceInfo& dev,
                            const PlannerEnv& env);
// The views decide between the route and the CUDA-core fallback (alignment); throws the
// KVQ_DECODE_PATH=mma error (on k_cache) for views the tensor-core decode cannot load.
KernelLaunch resolve_decode_launch(const DecodeArgs& args, const AttnProblem& p, const DecodePlan& plan,
                                   const DeviceInfo& dev);

}  // namespace kvq::detail
