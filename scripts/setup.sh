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
  libsystemd-dev   # sd_pid_notify_with_fds, sd_listen_fds_with_names: the agent's systemd fd store
  golang-etcd-server-dev   # etcd v3's API protos: //third_party/etcd:etcd_cc_grpc generates C++ stubs from them
  openssl   # deploy/make-dev-certs.sh: the dev CA and certificates (demo, tests)
  # tests
  libgtest-dev libgmock-dev python3 sqlite3
  clang-14 libclang-rt-14-dev   # sanitizer builds and libFuzzer (fuzz/run.sh)
  dpkg-dev                      # apt-get source: Abseil for --config=tsan (third_party/debian_absl.bzl)
  libbenchmark-dev              # microbenchmarks (bench/)
  gnuplot-nox                   # bench/plot.sh: docs/bench/*.png
  etcd-server etcd-client       # a real etcd: bench/broker_load.sh's etcd row, tests/etcd_smoke_test
  prometheus python3-yaml       # deploy/ checks: promtool, YAML manifests (tests/deploy);
                                # a real Prometheus for tests/prometheus_e2e_test
)
# The real-kernel VM tests (QEMU, busybox, kernel build): one list, kept
# with the harness.
mapfile -t VM_PACKAGES < <("$(dirname "$0")/../tests/vm/deps.sh" --list)
PACKAGES+=("${VM_PACKAGES[@]}")

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --config=tsan compiles Abseil from Debian's source package, which Bazel
# fetches with `apt-get source` (third_party/debian_absl.bzl). That needs
# deb-src entries: mirror the deb entries of this Debian release's own suites
# (not third-party repositories, which may publish no sources), once.
SRC_DEB822=/etc/apt/sources.list.d/iommu-broker-src.sources
SRC_ONELINE=/etc/apt/sources.list.d/iommu-broker-src.list
if [ ! -e "$SRC_DEB822" ] && [ ! -e "$SRC_ONELINE" ]; then
  rel="$(. /etc/os-release && echo "$VERSION_CODENAME")"
  shopt -s nullglob
  deb822=(/etc/apt/sources.list.d/*.sources)
  oneline=(/etc/apt/sources.list.d/*.list)
  [ -e /etc/apt/sources.list ] && oneline+=(/etc/apt/sources.list)
  shopt -u nullglob
  # deb822 stanzas whose Suites are all "$rel" or "$rel-<something>".
  src822=""
  [ "${#deb822[@]}" -gt 0 ] && src822="$(awk -v rel="$rel" 'BEGIN { RS = ""; ORS = "\n\n" }
    /(^|\n)Types:[^\n]*deb/ && match($0, /(^|\n)Suites:[^\n]*/) {
      n = split(substr($0, RSTART, RLENGTH), w, /[ \t\n]+/); ok = 1
      for (i = 1; i <= n; i++) if (w[i] != "" && w[i] != "Suites:" && w[i] !~ ("^" rel "(-[a-z]+)?$")) ok = 0
      if (ok) { sub(/Types:[^\n]*/, "Types: deb-src"); print }
    }' "${deb822[@]}")"
  # One-line entries: deb [options] URI SUITE COMPONENT...
  srcline=""
  [ "${#oneline[@]}" -gt 0 ] && srcline="$(awk -v rel="$rel" '$1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) ~ ("^" rel "(-[a-z]+)?$")) { $1 = "deb-src"; print }
    }' "${oneline[@]}")"
  if [ -z "$src822$srcline" ]; then
    echo "setup: found no deb entries for Debian $rel in /etc/apt to add deb-src entries for" >&2
    exit 1
  fi
  echo "setup: adding deb-src entries for Debian $rel (Abseil's source for --config=tsan)"
  if [ -n "$src822" ]; then printf '%s\n' "$src822" | $SUDO tee "$SRC_DEB822" >/dev/null; fi
  if [ -n "$srcline" ]; then printf '%s\n' "$srcline" | $SUDO tee "$SRC_ONELINE" >/dev/null; fi
  $SUDO apt-get update -qq
fi

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

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
