// src/core/types.cpp — sizes and names of the public enums (kvq/types.h).
#include "kvq/types.h"

#include "kvq/error.h"

namespace kvq {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kInt8: return 1;
    case DType::kUInt8: return 1;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kBool: return 1;
  }
  throw Error(ErrorKind::kValue, "dtype_size", "dtype",
              "expected a kvq::DType, got " + std::to_string(static_cast<int>(dtype)));
}

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "fp32";
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kBool: return "bool";
  }
  return "unknown_dtype";
}

const char* to_string(Device device) {
  switch (device) {
    case Device::kCPU: return "cpu";
    case Device::kCUDA: return "cuda";
  }
  return "unknown_device";
}

const char* to_string(KvLayout layout) {
  switch (layout) {
    case KvLayout::kHND: return "HND";
    case KvLayout::kNHD: return "NHD";
  }
  return "unknown_layout";
}

const char* to_string(GqaLayout layout) {
  switch (layout) {
    case GqaLayout::kGrouped: return "grouped";
    case GqaLayout::kInterleaved: return "interleaved";
  }
  return "unknown_gqa_layout";
}

const char* to_string(ScaleMode mode) {
  switch (mode) {
    case ScaleMode::kNone: return "none";
    case ScaleMode::kPerChannel: return "per_channel";
    case ScaleMode::kPerToken: return "per_token";
  }
  return "unknown_scale_mode";
}

const char* to_string(ComputeMode mode) {
  switch (mode) {
    case ComputeMode::kNative: return "native";
    case ComputeMode::kInt8: return "int8";
  }
  return "unknown_compute_mode";
}

const char* to_string(PrefillPath path) {
  switch (path) {
    case PrefillPath::kAuto: return "auto";
    case PrefillPath::kFused: return "fused";
    case PrefillPath::kDequant: return "dequant";
    case PrefillPath::kGeneric: return "generic";
  }
  return "unknown_path";
}

const char* to_string(PrefillKernel kernel) {
  switch (kernel) {
    case PrefillKernel::kPath: return "path";
    case PrefillKernel::kMmaDecode: return "mma_decode";
  }
  return "unknown_prefill_kernel";
}

const char* to_string(PrefillMainloop mainloop) {
  switch (mainloop) {
    case PrefillMainloop::kNone: return "none";
    case PrefillMainloop::kMmaSync: return "mma_sync";
    case PrefillMainloop::kWgmma: return "wgmma";
    case PrefillMainloop::kWgmmaPingPong: return "wgmma_pingpong";
  }
  return "unknown_prefill_mainloop";
}

const char* to_string(DecodeVariant variant) {
  switch (variant) {
    case DecodeVariant::kNone: return "none";
    case DecodeVariant::kCpAsync: return "cp_async";
    case DecodeVariant::kTma: return "tma";
    case DecodeVariant::kTmaS8: return "tma_s8";
  }
  return "unknown_decode_variant";
}

}  // namespace kvq
