#!/usr/bin/env bash
# The main job from a fresh machine: set up, build what this machine can run, run `kvq demo`.
#
# A usable NVIDIA GPU (`nvidia-smi -L` lists one): the CUDA backend is built (when nvcc is found)
# into ${KVQ_BUILD_DIR:-build}. No GPU: a CPU-only build (-DKVQ_CUDA=OFF: no CUDA kernel is
# compiled, even where nvcc is installed) into ${KVQ_BUILD_DIR:-build-cpu}, so it never flips a CUDA
# build dir to CPU-only. Only the `kvq` binary is built. tools/test.sh (and CI) still build every
# CUDA source when nvcc exists. Arguments go to `kvq demo` (e.g. --random-queries, --json).
# KVQ_DEMO_DRY_RUN=1 prints the choice and exits; KVQ_NVIDIA_SMI names the nvidia-smi to ask (the
# tests use both).
set -euo pipefail
cd "$(dirname "$0")/.."
if gpus=$("${KVQ_NVIDIA_SMI:-nvidia-smi}" -L 2>/dev/null) && grep -q '^GPU ' <<<"$gpus"; then
  build=${KVQ_BUILD_DIR:-build}
  cuda=${KVQ_CUDA:-AUTO}
  echo "demo.sh: GPU found ($(grep -m1 '^GPU ' <<<"$gpus")): CUDA build (KVQ_CUDA=$cuda), build dir $build"
else
  build=${KVQ_BUILD_DIR:-build-cpu}
  cuda=${KVQ_CUDA:-OFF}
  echo "demo.sh: no usable GPU (nvidia-smi -L lists none): CPU-only build (-DKVQ_CUDA=$cuda), build dir $build"
fi
[ "${KVQ_DEMO_DRY_RUN:-0}" = 1 ] && exit 0
tools/setup.sh
KVQ_BUILD_DIR="$build" KVQ_CUDA="$cuda" KVQ_BUILD_TARGETS=kvq_cli tools/build.sh
exec "$build/kvq" demo "$@"
