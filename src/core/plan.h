// src/core/plan.h — prefill planning shared by plan_prefill() and the dispatcher (plan.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvq/views.h"
#include "src/core/problem.h"

namespace kvq::detail {

// The path a prefill call takes on `device` for `requested` (kAuto: the planner's choice).
PrefillPath resolve_prefill_path(const AttnProblem& p, Device device, PrefillPath requested);

// Longest chunk (query tokens per sequence) a plan sends to the tensor-core decode kernel.
constexpr int64_t kSmallQDecodeMaxQLen = 8;

// Why a call cannot run on the tensor-core decode kernel (PrefillKernel::kMmaDecode) under `plan`
// (its path, max_q_len, num_splits, workspace_bytes), or "" when it can: the one definition the
// planner chooses by and check_plan_and_workspace holds a given plan to (plan.cpp).
std::string small_q_decode_refusal(const PrefillArgs& args, const AttnProblem& p, const PrefillPlan& plan);

// Bytes of the dequant path's workspace (layout in plan.cpp).
size_t dequant_workspace_bytes(const AttnProblem& p, int64_t num_referenced_blocks);

// The plan of a validated call. Null host lengths: upper bounds (total_q, max_blocks_per_seq *
// page_size). Host lengths are checked (names cu_q_lens_host / kv_lens_host).
PrefillPlan make_prefill_plan(const PrefillArgs& args, const AttnProblem& p,
                              const int32_t* cu_q_lens_host, const int32_t* kv_lens_host,
                              const char* func);

// A given plan against the call (device, batch, rows, path) and the workspace against the plan.
void check_plan_and_workspace(const PrefillArgs& args, const AttnProblem& p,
                              const PrefillPlan& plan, const char* func);

}  // namespace kvq::detail
