#!/usr/bin/env bash
# Configures and builds kvq into ${KVQ_BUILD_DIR:-build}. CUDA sources are built when nvcc is found
# (for sm_90a and sm_80; override with KVQ_CUDA_ARCHS), else the build is CPU-only and says so.
# KVQ_CUDA=ON|OFF|AUTO forces the choice; KVQ_BUILD_TARGETS (e.g. "kvq_cli") builds only those
# targets (default: everything, tests included); KVQ_JOBS sets the parallel jobs; KVQ_WERROR=ON|OFF
# makes compiler warnings in kvq's own code errors (tools/test.sh: ON).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KVQ_BUILD_DIR:-build}
args=(-DCMAKE_BUILD_TYPE=Release)
[ -n "${KVQ_CUDA_ARCHS:-}" ] && args+=("-DKVQ_CUDA_ARCHS=${KVQ_CUDA_ARCHS}")
[ -n "${KVQ_CUDA:-}" ] && args+=("-DKVQ_CUDA=${KVQ_CUDA}")
[ -n "${KVQ_WERROR:-}" ] && args+=("-DKVQ_WERROR=${KVQ_WERROR}")
cmake -S . -B "$build" "${args[@]}" >/dev/null
targets=()
for t in ${KVQ_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build" -j"${KVQ_JOBS:-$(nproc)}" "${targets[@]}"
