#!/usr/bin/env bash
# tools/device_prep.sh — builds, here, what tools/device_all.sh runs on the GPU host, into
# .devbin/ (git-ignored, carried by the device call): kvq_gpu_tests and the kvq CLI (CUDA, sm_90a,
# static cudart and gtest) and the Python package built for the device's Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KVQ_DEV_BUILD:-build-dev}
py312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DKVQ_CUDA=ON -DKVQ_CUDA_ARCHS=90a >/dev/null
cmake --build "$build" -j"${KVQ_JOBS:-2}" --target kvq kvq_cli kvq_gpu_tests
cmake -S python -B "$build/py312" -DKVQ_BUILD_DIR="$PWD/$build" -DPython_EXECUTABLE="$py312" \
  -DCMAKE_BUILD_TYPE=Release -DKVQ_PY_PACKAGE_DIR="$PWD/$build/py312/package" >/dev/null
cmake --build "$build/py312" -j"${KVQ_JOBS:-2}"
rm -rf .devbin && mkdir -p .devbin
cp "$build/tests/kvq_gpu_tests" "$build/kvq" .devbin/
cp -r "$build/py312/package" .devbin/py
# Stripped and packed into one archive: the three together exceed a device call's 64 MiB carry
# unpacked, about 31 MB packed; tools/device_all.sh unpacks .devbin/bundle.tgz when it is there.
strip .devbin/kvq .devbin/kvq_gpu_tests
find .devbin/py -name '*.so' -exec strip {} \;
tar -C .devbin -czf .devbin/bundle.tgz kvq kvq_gpu_tests py
grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || echo '/.devbin/' >> .git/info/exclude
du -sh .devbin
