// src/cuda/common/scale_code.h — the int code of a kvq::ScaleMode in kernel params.
//
// The tensor-core prefill's params (mma.sync and Hopper wgmma) carry each scale mode as an int
// (TcPrefillParams::k_scale_mode / v_scale_mode; an int field keeps the struct's layout and the
// kernels' register use as they are). The codes are made from ScaleMode here and nowhere else: the
// host fills the fields with scale_code, the kernels compare them with the constants below.
// Plain C++ (no CUDA headers); the constants are enumerators, so device code compares with them too.
#pragma once
#include "kvq/types.h"

namespace kvq::cuda {

constexpr int scale_code(ScaleMode m) {
  return m == ScaleMode::kPerChannel ? 1 : (m == ScaleMode::kPerToken ? 2 : 0);
}

enum : int {
  kScaleNone = scale_code(ScaleMode::kNone),
  kScalePerChannel = scale_code(ScaleMode::kPerChannel),
  kScalePerToken = scale_code(ScaleMode::kPerToken),
};

}  // namespace kvq::cuda
