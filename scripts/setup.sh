#!/usr/bin/env bash
# Installs the Debian 12 packages iommu-broker needs to build and test.
# Idempotent: when everything is present it changes nothing and says so.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap g++ pkg-config
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libgrpc++-dev libabsl-dev prometheus-cpp-dev libsqlite3-dev libssl-dev
  # tests
  libgtest-dev libgmock-dev python3 sqlite3
  clang-14 libclang-rt-14-dev   # sanitizer builds and libFuzzer (fuzz/run.sh)
)
# The real-kernel VM tests (QEMU, busybox, kernel build): one list, kept
# with the harness.
mapfile -t VM_PACKAGES < <("$(dirname "$0")/../tests/vm/deps.sh" --list)
PACKAGES+=("${VM_PACKAGES[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present; nothing to do"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
