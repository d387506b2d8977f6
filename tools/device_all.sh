#!/usr/bin/env bash
# tools/device_all.sh — the one-call build-check-time run on a GPU host (H100/H200).
#
# Build here first (no GPU needed), into the git-ignored folder .devbin that the call carries:
#   tools/device_prep.sh            (CUDA 90a build: kvq_gpu_tests, the kvq CLI, the Python module for 3.12)
# Then: device run, command "tools/device_all.sh", carry ".devbin/bundle.tgz" (all three packed,
# ~31 MB; unpacked they exceed a call's 64 MiB), or only what the steps need (".devbin/kvq_gpu_tests"
# for the suites, ".devbin/py" for python/peers/hf_bench, ".devbin/kvq" for demo and bench).
# Steps, each logged under $OUT/logs (returned as one archive, logs.tgz, plus summary.txt):
#   suite: the GPU suite + compute-sanitizer memcheck/racecheck/synccheck/initcheck (tools/gpu_check.sh);
#   suite_other_decode / suite_other_prefill: the decode tests under the other decode routes and
#   the tensor-core decode's other forms (KVQ_DECODE_KERNEL=v5, s8), the
#   prefill tests under each prefill mainloop; sanitize_wgmma: the sanitizers forced through the
#   Hopper prefill; python: the Python suite on CUDA tensors (torch there); demo: `kvq demo --json`;
#   peers: bench/peers.py (kvq vs torch SDPA flash/cuDNN and the mojo_opset PR #361 design, same
#   process, same GPU); hf_bench: bench/transformers_e2e.py.
# STEPS (env) picks a subset, e.g. STEPS="suite peers". On an H200 the suites and sanitizers take
# about 8.5 minutes and peers + python about 2.5: run them as two calls (a call stops at 10 minutes).
set -u
OUT=${OUT:-./device_out}
LOGS="$OUT/logs"
mkdir -p "$LOGS"
STEPS=${STEPS:-"suite suite_other_decode suite_other_prefill sanitize_wgmma python demo peers"}
summary="$OUT/summary.txt"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
# synccheck's mbarrier tracking overflows its default on these kernels (tools/gpu_check.sh says why).
nb_flag() { [ "$1" = synccheck ] && echo "--num-cuda-barriers 65536"; }
# Carry ".devbin/bundle.tgz" (everything, packed) or the unpacked files the steps need.
if [ -f .devbin/bundle.tgz ]; then tar -C .devbin -xzf .devbin/bundle.tgz; fi
nvidia-smi -L | tee "$LOGS/nvidia-smi.txt" | tee -a "$summary"
export PYTHONPATH="$PWD/.devbin/py${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
for step in $STEPS; do
  start=$(date +%s)
  case $step in
    suite)
      OUT="$LOGS/gpu" tools/gpu_check.sh .devbin/kvq_gpu_tests > "$LOGS/gpu_check.log" 2>&1
      rc=$?
      cat "$LOGS/gpu/summary.txt" >> "$summary" ;;
    suite_other_decode)
      # The decode tests again with decode forced through the CUDA-core split kernel and through
      # the tensor-core prefill kernel (both kept selectable beside the default tensor-core decode).
      rc=0
      for route in split tc; do
        KVQ_DECODE_PATH=$route timeout 120 .devbin/kvq_gpu_tests --gtest_filter='*Decode*:*Graph*:-*Mma*' --gtest_brief=1 \
          > "$LOGS/suite_${route}_decode.log" 2>&1 || rc=1
        echo "KVQ_DECODE_PATH=$route: $(grep -E "^\[  (PASSED|FAILED) " "$LOGS/suite_${route}_decode.log" | head -3 | tr '\n' ' ')" >> "$summary"
      done
      # The tensor-core decode's other forms: per-thread cp.async (v5) and int8 Q·Kᵀ (s8).
      for kern in v5 s8; do
        KVQ_DECODE_KERNEL=$kern timeout 120 .devbin/kvq_gpu_tests --gtest_filter='*Decode*:*Graph*:ForceMma*:*MmaDecode*:*SmallQ*' \
          --gtest_brief=1 > "$LOGS/suite_${kern}_decode.log" 2>&1 || rc=1
        echo "KVQ_DECODE_KERNEL=$kern: $(grep -E "^\[  (PASSED|FAILED) " "$LOGS/suite_${kern}_decode.log" | head -3 | tr '\n' ' ')" >> "$summary"
      done ;;
    suite_other_prefill)
      # The prefill tests again with the tensor-core prefill's mainloop forced each way: the Hopper
      # wgmma kernel for every shape (also the small ones the default leaves to mma.sync), and the
      # mma.sync kernel (the default below 4096 packed rows and on GPUs other than sm_90).
      rc=0
      for k in wgmma mma; do
        KVQ_PREFILL_KERNEL=$k timeout 240 .devbin/kvq_gpu_tests --gtest_filter='*Prefill*:Tc*:*Fused*:*HostilePrefill*:*ServingSoak*' \
          --gtest_brief=1 > "$LOGS/suite_${k}_prefill.log" 2>&1 || rc=1
        echo "KVQ_PREFILL_KERNEL=$k: $(grep -E "^\[  (PASSED|FAILED) " "$LOGS/suite_${k}_prefill.log" | head -3 | tr '\n' ' ')" >> "$summary"
      done
      # The Hopper kernel's other consumer order (ping-pong), kept selectable for A/B runs.
      KVQ_PREFILL_KERNEL=wgmma KVQ_WG_MAINLOOP=pingpong timeout 240 .devbin/kvq_gpu_tests \
        --gtest_filter='*Prefill*:Tc*:*Fused*:*HostilePrefill*' --gtest_brief=1 > "$LOGS/suite_wgmma_pingpong_prefill.log" 2>&1 || rc=1
      echo "KVQ_WG_MAINLOOP=pingpong: $(grep -E "^\[  (PASSED|FAILED) " "$LOGS/suite_wgmma_pingpong_prefill.log" | head -3 | tr '\n' ' ')" >> "$summary"
      # compute-sanitizer on the ping-pong order (named barriers between the consumers).
      for tool in racecheck synccheck; do
        KVQ_PREFILL_KERNEL=wgmma KVQ_WG_MAINLOOP=pingpong timeout 60 compute-sanitizer --tool $tool $(nb_flag $tool) --error-exitcode 1 \
          .devbin/kvq_gpu_tests --gtest_filter='SmallPrefill*:*HostilePrefill*:SmallWgmma*' --gtest_brief=1 \
          > "$LOGS/sanitize_pingpong_$tool.log" 2>&1 || rc=1
        echo "pingpong $tool: $(grep -E "SUMMARY|^\[  (PASSED|FAILED) " "$LOGS/sanitize_pingpong_$tool.log" | tail -2 | tr '\n' ' ')" >> "$summary"
      done ;;
    sanitize_wgmma)
      # compute-sanitizer on the small and hostile prefill cases with every one forced through the
      # Hopper kernel (the default sends small shapes to the mma.sync kernel, which "suite" covers).
      rc=0
      for tool in ${KVQ_SANITIZER_TOOLS:-memcheck racecheck synccheck initcheck}; do
        KVQ_PREFILL_KERNEL=wgmma timeout ${KVQ_SANITIZER_TIMEOUT:-60} compute-sanitizer --tool $tool $(nb_flag $tool) --error-exitcode 1 \
          .devbin/kvq_gpu_tests --gtest_filter='SmallPrefill*:*HostilePrefill*:SmallWgmma*:TcPrefill.*' --gtest_brief=1 \
          > "$LOGS/sanitize_wgmma_$tool.log" 2>&1 || rc=1
        echo "wgmma $tool: $(grep -E "SUMMARY|^\[  (PASSED|FAILED) " "$LOGS/sanitize_wgmma_$tool.log" | tail -2 | tr '\n' ' ')" >> "$summary"
      done ;;
    python)
      KVQ_HF_TEST_OUT="$OUT/transformers_test.json" timeout ${PY_TIMEOUT:-240} python3 -m pytest tests/python -q -ra -s \
        -p no:cacheprovider > "$LOGS/pytest.log" 2>&1
      rc=$?
      grep -E "transformers|greedy|logits|KV memory|passed|failed|SKIPPED" "$LOGS/pytest.log" | tail -25 >> "$summary" ;;
    demo)
      timeout 180 .devbin/kvq demo --json > "$LOGS/demo.log" 2>"$LOGS/demo.err"
      rc=$?
      tail -1 "$LOGS/demo.log" > "$OUT/demo.json"
      grep -E "rel_err|PASS|FAIL|prefill |decode " "$LOGS/demo.log" >> "$summary" ;;
    peers)
      timeout ${PEERS_TIMEOUT:-300} python3 bench/peers.py ${PEERS_ARGS:-} --out "$OUT/peers.json" > "$LOGS/peers.log" 2>&1
      rc=$?
      cat "$LOGS/peers.log" >> "$summary"
      python3 bench/report.py "$OUT/peers.json" --md "$OUT/peers.md" --png "$OUT/peers.png" >> "$summary" 2>&1 ;;
    hf_bench)
      # End-to-end generate() tokens/s, kvq's int8 cache vs sdpa with the bf16 cache (HF_ARGS, e.g. --quick).
      timeout ${HF_TIMEOUT:-280} python3 bench/transformers_e2e.py ${HF_ARGS:-} --out "$OUT/transformers_e2e.json" \
        > "$LOGS/transformers_e2e.log" 2>&1
      rc=$?
      tail -15 "$LOGS/transformers_e2e.log" >> "$summary" ;;
    *) say "unknown step $step"; rc=2 ;;
  esac
  say "== step $step: rc=$rc in $(( $(date +%s) - start )) s"
done
tar -C "$OUT" -czf "$OUT/logs.tgz" logs && rm -rf "$LOGS"
cat "$summary" | tail -80
