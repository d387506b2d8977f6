// src/cpu/precision.cpp — the CPU backend's accumulation switch. In fp64 mode (tests only) the
// attention runs in double end to end and skips rounding P, which makes it the oracle: exact
// attention over the dequantized cache. The flag is read once at the start of each call.
#include <atomic>

#include "src/core/backend.h"

namespace kvq::cpu {

namespace {
std::atomic<bool> g_fp64_accumulation{false};
}  // namespace

void set_fp64_accumulation(bool on) { g_fp64_accumulation.store(on, std::memory_order_relaxed); }

bool fp64_accumulation() { return g_fp64_accumulation.load(std::memory_order_relaxed); }

}  // namespace kvq::cpu
