#!/usr/bin/env bash
# All tests from a fresh machine: set up, build (CUDA sources too when nvcc is present), run every
# CTest test (CPU backend vs naive fp64, API errors, the installed-package consumer; the GPU suite
# reports SKIPPED without a device), then the Python package's pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
KVQ_WERROR=${KVQ_WERROR:-ON} tools/build.sh
build=${KVQ_BUILD_DIR:-build}
ctest --test-dir "$build" --output-on-failure -j"${KVQ_JOBS:-$(nproc)}"
if [ -x tests/python/run.sh ]; then
  tests/python/run.sh "$build"
else
  echo "python tests: tests/python/run.sh not present"
  exit 1
fi
