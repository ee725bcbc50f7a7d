#!/usr/bin/env bash
# Example of reusing the harness with the project's own binaries: boots the iommufd kernel
# with iommu-broker, iommu-agent (sim backend) and iommuctl in the initramfs, and drives a
# tiny scenario over gRPC on 127.0.0.1 inside the VM. It proves that the dynamically linked
# binaries (Debian's gRPC, protobuf, absl, SQLite, OpenSSL, c-ares, re2) and the tiny kernel
# fit together (loopback TCP, unix sockets, SQLite locking, memfd, epoll, futex...).
#
#   tests/vm/project_runtime_check.sh [BAZEL_BIN]     (default: bazel-bin of the workspace)
#
# The binaries must have been built first:
#   bazel build //server:iommu-broker //agent:iommu-agent //client:iommuctl
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:-$HERE/../../bazel-bin}"
for b in server/iommu-broker agent/iommu-agent client/iommuctl; do
  [[ -x "$BIN/$b" ]] || { echo "missing $BIN/$b (bazel build it first)" >&2; exit 1; }
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/iommu-vm-project.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/inner.sh" <<'INNER'
set -e
wait_file() { for i in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "no $1"; return 1; }
export IOMMUCTL_INSECURE=1
iommu-broker --insecure --listen=127.0.0.1:7400 --db=/tmp/broker.db --port-file=/tmp/bport >/tmp/broker.log 2>&1 &
wait_file /tmp/bport
mkdir -p /run/iommu-agent
iommu-agent --insecure --node=vm1 --broker=127.0.0.1:7400 --backend=sim \
  --sim-devices=0000:00:04.0=1234:11e8@5 --listen=127.0.0.1:0 --port-file=/tmp/aport \
  --state-dir=/tmp/agent-state >/tmp/agent.log 2>&1 &
wait_file /tmp/aport
for i in $(seq 50); do iommuctl node list | grep -q 'vm1 *ready' && break; sleep 0.2; done
iommuctl tenant create acme --pinned=1Gi
iommuctl node list
iommuctl node list | grep -q 'vm1 *ready'
iommuctl usage
echo "project binaries ran on $(uname -r)"
INNER

K="$("$HERE/kernels.sh" build-iommufd-kernel)"
"$HERE/mkinitramfs.sh" -o "$WORK/initramfs.cpio.gz" -t "$WORK/inner.sh" \
  "$BIN/server/iommu-broker" "$BIN/agent/iommu-agent" "$BIN/client/iommuctl"
"$HERE/run_vm.sh" -k "$K" -i "$WORK/initramfs.cpio.gz" -n 1 -T 120 -l "$WORK/console.log"
