#!/usr/bin/env bash
# tools/sanitize.sh — the CPU test suite under AddressSanitizer + UndefinedBehaviorSanitizer, then
# the libFuzzer target over validation + the CPU backend (tests/fuzz/fuzz_api.cpp) for a bounded
# time from the committed seed corpus (tests/fuzz/corpus.txt). CI runs it after tools/test.sh.
#
# One clang build (CPU-only, its own build dir) serves both: everything is compiled with
# -fsanitize=address,undefined -fno-sanitize-recover=all (any report fails the run) plus
# -fsanitize=fuzzer-no-link (coverage for the fuzzer); the fuzz target links -fsanitize=fuzzer.
# Environment: KVQ_SAN_BUILD_DIR (build-asan), KVQ_FUZZ_SECONDS (60), KVQ_SAN_CC / KVQ_SAN_CXX
# (clang-14 / clang++-14, else clang / clang++), KVQ_JOBS (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KVQ_SAN_BUILD_DIR:-build-asan}
secs=${KVQ_FUZZ_SECONDS:-60}
jobs=${KVQ_JOBS:-$(nproc)}
find_clang() {
  cc=${KVQ_SAN_CC:-$(command -v clang-14 || command -v clang || true)}
  cxx=${KVQ_SAN_CXX:-$(command -v clang++-14 || command -v clang++ || true)}
}
find_clang
if [ -z "$cc" ] || [ -z "$cxx" ]; then  # a fresh Debian machine: install it, as tools/setup.sh does
  echo "sanitize: installing clang"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q clang >/dev/null
  find_clang
fi
if [ -z "$cc" ] || [ -z "$cxx" ]; then
  echo "sanitize: no clang found (apt-get install clang)" >&2
  exit 1
fi
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g1 -fsanitize=fuzzer-no-link"
start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DKVQ_CUDA=OFF -DKVQ_BUILD_CLI=OFF -DKVQ_FUZZ=ON \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build "$build" -j"$jobs" --target kvq_tests kvq_fuzz_api
echo "sanitize: built in $(( $(date +%s) - start )) s ($cxx)"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# The CPU suite (CTest label cpu) but the consumer checks (consumer_*: they link separate,
# unsanitized programs against the library) and the 16 full-size seed-matrix prefill cases
# (Seed/SeedPrefill.*: ~10 min under the sanitizers on 2 cores, against ~3.5 min for all the rest;
# their code paths run in the smaller grid, feature and hostile tests, and the unsanitized suite
# runs them in tools/test.sh), and the int8-compute accuracy grid at 1k-128k keys
# (Cpu/Int8Accuracy.*: ~85 s each under the sanitizers, 9 s without; the same code runs at small
# sizes in the int8 compute tests, and tools/test.sh runs the grid).
start=$(date +%s)
ctest --test-dir "$build" -L cpu -E '^consumer_|^Seed/SeedPrefill\.|^Cpu/Int8Accuracy\.' --output-on-failure -j"$jobs"
echo "sanitize: CPU suite clean under ASan+UBSan in $(( $(date +%s) - start )) s"

# The fuzzer: the committed seeds (tests/fuzz/corpus.txt, base64 lines) are written to a scratch
# directory, new inputs go to another (the first one given); a crash, sanitizer report or
# malformed kvq::Error leaves its input and the log under $work.
work=$(mktemp -d "${TMPDIR:-/tmp}/kvq-fuzz.XXXXXX")
log="$work/fuzz.log"
mkdir -p "$work/corpus" "$work/seeds"
n=0
while IFS= read -r line; do
  case "$line" in "#"*) continue ;; esac
  n=$((n + 1))
  printf '%s' "$line" | base64 -d > "$work/seeds/seed-$n"
done < tests/fuzz/corpus.txt
set +e
"$build/tests/kvq_fuzz_api" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus" "$work/seeds" >"$log" 2>&1
rc=$?
set -e
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
if [ $rc -ne 0 ]; then
  tail -60 "$log"
  echo "sanitize: FUZZER FOUND A PROBLEM (rc $rc); inputs and log in $work" >&2
  exit 1
fi
echo "sanitize: fuzz_api ran ${execs:-?} executions in ${secs} s from $n seeds: no crash, no sanitizer report, every refusal well formed"
rm -rf "$work"
