// kvq/types.h — enums shared by the public API. Host-only; compiles without nvcc.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvq {

enum class DType : int8_t { kFloat32, kFloat16, kBFloat16, kInt8, kUInt8, kInt32, kInt64, kBool };
enum class Device : int8_t { kCPU, kCUDA };
// HND: [num_blocks, num_kv_heads, page_size, head_dim]; NHD: [num_blocks, page_size, num_kv_heads, head_dim].
enum class KvLayout : int8_t { kHND, kNHD };
// kGrouped ("AABB"): kv head of q head h is h / group_size. kInterleaved ("ABAB"): h % num_kv_heads.
enum class GqaLayout : int8_t { kGrouped, kInterleaved };
// Scale granularity of an int8 cache (docs/design.md §1). kNone: bf16/fp16 cache, no scales.
enum class ScaleMode : int8_t { kNone, kPerChannel, kPerToken };
// kNative: Q·Kᵀ and P·V in the query's float dtype (bf16/fp16) with fp32 accumulation.
// kInt8: SageAttention-style int8 products (docs/design.md §1 "Compute modes").
enum class ComputeMode : int8_t { kNative, kInt8 };
enum class PrefillPath : int8_t { kAuto, kFused, kDequant, kGeneric };
// The kernel a prefill plan runs (PrefillPlan::kernel), chosen by the planner. kPath: the path's
// own kernel (fused: the tensor-core prefill kernel, mma.sync or Hopper wgmma; dequant; generic).
// kMmaDecode: the tensor-core split-KV decode kernel, for `path=auto` calls whose plan knows every
// sequence has at most 8 query tokens (multi-token decode, speculative verification); see
// docs/api.md "Options" for when it applies and KVQ_SMALL_Q_DECODE=0 to keep kPath.
enum class PrefillKernel : int8_t { kPath, kMmaDecode };
// The tensor-core prefill's mainloop (PrefillPlan::mainloop), chosen by the planner for the plan's
// shape on the device it planned on (docs/api.md "Options": KVQ_PREFILL_KERNEL, KVQ_WG_MAINLOOP).
// kMmaSync: the mma.sync kernel (every GPU). kWgmma / kWgmmaPingPong: the Hopper warp-specialized
// wgmma kernel (sm_90), its consumers in serial or FlashAttention-3's ping-pong order. kNone: the
// plan runs no tensor-core prefill (path generic, kernel kMmaDecode, or a problem it does not serve).
enum class PrefillMainloop : int8_t { kNone, kMmaSync, kWgmma, kWgmmaPingPong };
// The form of the tensor-core decode kernel (PrefillPlan::decode_variant, for kernel kMmaDecode),
// chosen by the planner (KVQ_DECODE_KERNEL). kCpAsync: per-thread cp.async copies (every GPU).
// kTma: K/V tiles by TMA (sm_90, rows >= 128 bytes, page_size % 16 == 0). kTmaS8: kTma with Q·Kᵀ
// on the int8 tensor cores (int8 caches). kNone: the plan does not run that kernel.
enum class DecodeVariant : int8_t { kNone, kCpAsync, kTma, kTmaS8 };

size_t dtype_size(DType dtype);
const char* to_string(DType dtype);
const char* to_string(Device device);
const char* to_string(KvLayout layout);
const char* to_string(GqaLayout layout);
const char* to_string(ScaleMode mode);
const char* to_string(ComputeMode mode);
const char* to_string(PrefillPath path);
const char* to_string(PrefillKernel kernel);
const char* to_string(PrefillMainloop mainloop);
const char* to_string(DecodeVariant variant);

}  // namespace kvq
