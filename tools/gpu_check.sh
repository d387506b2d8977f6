#!/usr/bin/env bash
# tools/gpu_check.sh — the one-call GPU check, run on a GPU host.
#
# Usage (from the repository root):
#   tools/gpu_check.sh [path/to/kvq_gpu_tests]          (default: .devbin-gpu/kvq_gpu_tests)
# Build here first and copy the statically linked test binary into a git-ignored folder that the
# device call carries, e.g.
#   cmake -S . -B build-gpu -DKVQ_CUDA=ON -DKVQ_CUDA_ARCHS=90a && cmake --build build-gpu --target kvq_gpu_tests
#   mkdir -p .devbin-gpu && cp build-gpu/tests/kvq_gpu_tests .devbin-gpu/   (.devbin-gpu/ in .git/info/exclude)
#   device run: command "tools/gpu_check.sh", carry [".devbin-gpu"]
# What it does: nvidia-smi -L; the whole GPU suite (gtest xml + log); compute-sanitizer memcheck and
# racecheck, synccheck and initcheck on the small and hostile cases (KVQ_SANITIZER_FILTER, KVQ_SANITIZER_TOOLS). Logs go to $OUT (or ./gpu_check_out).
# Exits nonzero when any step fails. Environment knobs:
#   KVQ_GPU_TEST_FILTER   gtest filter of the full run (default: everything)
#   KVQ_GPU_TEST_TIMEOUT  seconds for the full run (default 170)
#   KVQ_SANITIZER_TIMEOUT seconds for each sanitizer run (default 60; synccheck twice that)
set -u
BIN=${1:-.devbin-gpu/kvq_gpu_tests}
OUT=${OUT:-./gpu_check_out}
mkdir -p "$OUT"
FILTER=${KVQ_GPU_TEST_FILTER:-*}
SAN_FILTER=${KVQ_SANITIZER_FILTER:-*Small*:AppendBitExact*/odd*:DequantBitExact*/v1_*:CalibrateBitExact*/bf16:*Hostile*:FusedPrecision*:-*HostileHugeCache*}
SAN_TOOLS=${KVQ_SANITIZER_TOOLS:-memcheck racecheck synccheck initcheck}
TEST_TIMEOUT=${KVQ_GPU_TEST_TIMEOUT:-170}
SAN_TIMEOUT=${KVQ_SANITIZER_TIMEOUT:-60}
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
status=0
summary="$OUT/summary.txt"
: > "$summary"

nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
if [ ! -x "$BIN" ]; then echo "gpu_check: no test binary at $BIN" | tee -a "$summary"; exit 2; fi

echo "== kvq_gpu_tests (filter $FILTER, timeout ${TEST_TIMEOUT}s)"
start=$(date +%s)
timeout "$TEST_TIMEOUT" "$BIN" --gtest_filter="$FILTER" --gtest_output=xml:"$OUT/gpu_tests.xml" --gtest_brief=1 \
  > "$OUT/gpu_tests.log" 2>&1
rc=$?
echo "kvq_gpu_tests: rc=$rc in $(( $(date +%s) - start ))s" | tee -a "$summary"
[ $rc -eq 0 ] || status=1
grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests ran|^kvq_gpu_tests on" "$OUT/gpu_tests.log" | tail -60
if [ -f "$OUT/gpu_tests.xml" ]; then
  python3 - "$OUT/gpu_tests.xml" <<'PY' | tee -a "$summary"
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
tests = failures = skipped = 0
for tc in r.iter('testcase'):
    tests += 1
    if tc.find('failure') is not None: failures += 1
    elif tc.get('result') == 'skipped' or tc.find('skipped') is not None: skipped += 1
print(f"xml: {tests} tests, {tests - failures - skipped} passed, {failures} failed, {skipped} skipped")
PY
fi

for tool in $SAN_TOOLS; do
  echo "== compute-sanitizer --tool $tool (filter $SAN_FILTER)"
  start=$(date +%s)
  # synccheck tracks a bounded number of mbarriers: the decode's and the Hopper prefill's many CTAs
  # overflow the default and then report errors that are not there ("Detected overflow of tracked
  # cuda::barrier structures"); 65536 tracks them all.
  # With that many tracked barriers synccheck is the slowest tool (over 60 s on the H200 for this
  # filter), so it gets twice the time.
  extra=()
  limit=$SAN_TIMEOUT
  [ "$tool" = synccheck ] && extra=(--num-cuda-barriers 65536) && limit=$((2 * SAN_TIMEOUT))
  timeout "$limit" "$SAN" --tool "$tool" "${extra[@]}" --error-exitcode 3 \
    "$BIN" --gtest_filter="$SAN_FILTER" --gtest_brief=1 > "$OUT/$tool.log" 2>&1
  rc=$?
  echo "$tool: rc=$rc in $(( $(date +%s) - start ))s; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|hazard' "$OUT/$tool.log" | tail -1)" | tee -a "$summary"
  grep -E "tests ran|PASSED|FAILED" "$OUT/$tool.log" | tail -5
  [ $rc -eq 0 ] || status=1
done

echo "== summary"; cat "$summary"
exit $status
