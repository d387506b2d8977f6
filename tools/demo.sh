#!/usr/bin/env bash
# The main job from a fresh machine: set up, build, run `kvq demo` (GPU when present, else CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
exec "${KVQ_BUILD_DIR:-build}/kvq" demo "$@"
