#!/usr/bin/env bash
# Build the kvq Python extension against an existing kvq CMake build tree and run the Python tests.
#
#   tests/python/run.sh [KVQ_BUILD_DIR] [pytest args...]
#
# KVQ_BUILD_DIR (argument or environment; default: build) must hold libkvq.a (cmake --build <dir> --target kvq).
# The module is built in <KVQ_BUILD_DIR>/python and the package assembled in <KVQ_BUILD_DIR>/python/package,
# which is put first on PYTHONPATH. PYTHON picks the interpreter; by default the first of python3 and
# /usr/bin/python3 that has numpy and pytest. Exits with pytest's status (5, "no tests ran", is an error).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

build="${KVQ_BUILD_DIR:-build}"
if [[ $# -gt 0 && "$1" != -* ]]; then
  build="$1"
  shift
fi
[[ "$build" = /* ]] || build="$root/$build"
if [[ ! -f "$build/libkvq.a" ]]; then
  echo "run.sh: $build/libkvq.a not found; build it first: cmake --build $build --target kvq" >&2
  exit 2
fi

py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  for cand in python3 /usr/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import numpy, pytest" >/dev/null 2>&1; then
      py="$(command -v "$cand")"
      break
    fi
  done
fi
if [[ -z "$py" ]]; then
  echo "run.sh: no python3 with numpy and pytest found (apt-get install python3-numpy python3-pytest)" >&2
  exit 2
fi
echo "run.sh: python $("$py" -c 'import sys; print(sys.version.split()[0])') ($py), kvq build $build"

pybuild="$build/python"
cmake -S "$root/python" -B "$pybuild" -DKVQ_BUILD_DIR="$build" -DPython_EXECUTABLE="$py" \
  -DCMAKE_BUILD_TYPE=Release >"$pybuild.configure.log" 2>&1 || { cat "$pybuild.configure.log" >&2; exit 1; }
cmake --build "$pybuild" -j"${KVQ_JOBS:-2}"

export PYTHONPATH="$pybuild/package${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
# Test paths among the arguments replace the default (the whole tests/python folder).
targets=("$here")
for a in "$@"; do
  if [[ "$a" != -* && -e "$a" ]]; then
    targets=()
    break
  fi
done
exec "$py" -m pytest "${targets[@]}" -ra "$@"
