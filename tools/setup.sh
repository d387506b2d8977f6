#!/usr/bin/env bash
# Installs what kvq builds and tests with on a fresh Debian machine (no-op for what is already there).
set -euo pipefail
need=()
dpkg -s cmake >/dev/null 2>&1 || need+=(cmake)
dpkg -s g++ >/dev/null 2>&1 || need+=(g++)
[ -f /usr/lib/x86_64-linux-gnu/libgtest.a ] || [ -f /usr/lib/libgtest.a ] || need+=(libgtest-dev)
[ -f /usr/include/pybind11/pybind11.h ] || need+=(pybind11-dev)
[ -f /usr/include/dlpack/dlpack.h ] || need+=(libdlpack-dev)
dpkg -s python3-numpy >/dev/null 2>&1 || need+=(python3-numpy)
dpkg -s python3-pytest >/dev/null 2>&1 || need+=(python3-pytest)
dpkg -s python3-dev >/dev/null 2>&1 || need+=(python3-dev)
dpkg -s python3-venv >/dev/null 2>&1 || need+=(python3-venv)  # python3 -m venv (README, Python)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null
fi
echo "setup: done"
