#!/usr/bin/env bash
# bench/tc_build.sh — builds the standalone tensor-core prefill harness (bench/tc_prefill_bench.cu)
# without the rest of the CUDA backend. Usage: bench/tc_build.sh <out_dir> [arch, default 90a] [generated dir].
set -euo pipefail
out=${1:-.devbin-tc}; arch=${2:-90a}; gen=${3:-build-tc/generated}
mkdir -p "$out/obj"
flags=(${EXTRA_FLAGS:-} -std=c++20 -O3 --expt-relaxed-constexpr -gencode=arch=compute_${arch},code=sm_${arch} -I. -Iinclude -I"$gen" -lineinfo -Xptxas=-warn-spills)
pids=()
for f in src/cuda/prefill/tc_prefill*.cu bench/tc_prefill_bench.cu; do
  nvcc "${flags[@]}" -Xcompiler -fopenmp -c "$f" -o "$out/obj/$(basename "$f").o" &
  pids+=($!)
  if (( ${#pids[@]} >= ${JOBS:-2} )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
for f in src/core/error.cpp src/core/views.cpp src/core/types.cpp; do
  g++ -std=c++20 -O2 -I. -Iinclude -c "$f" -o "$out/obj/$(basename "$f").o"
done
nvcc -gencode=arch=compute_${arch},code=sm_${arch} "$out"/obj/*.o -o "$out/tc_bench" -lgomp
echo "built $out/tc_bench"
