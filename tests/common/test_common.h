// tests/common/test_common.h — everything the test helpers offer, in one include:
//   rng.h          Rng: seeded xoshiro256** with its own normal/randint (same data on every platform)
//   half.h         bf16/fp16 <-> float, round-to-nearest-even, written independently of src/
//   tensor.h       HostTensor (owning, strided, poisonable) and dtype-generic element access to views
//   paged_cache.h  PagedCaseSpec -> PagedCase: random K/V quantized like the seed, shuffled tables,
//                  prefill_args()/decode_args(); the quantization definitions (ref_quantize, ...)
//   reference.h    the naive fp64 reference (exact, P-rounded bf16 model, int8 model), naive
//                  append / dequantize_blocks / calibrate
//   compare.h      per-(sequence, head) relative error, the seed's criterion, lse, untouched rows
//   seed_cases.h   the seed's 16 prefill and 8 decode cases and its length generator
#pragma once
#include "tests/common/compare.h"
#include "tests/common/half.h"
#include "tests/common/paged_cache.h"
#include "tests/common/reference.h"
#include "tests/common/rng.h"
#include "tests/common/seed_cases.h"
#include "tests/common/tensor.h"
