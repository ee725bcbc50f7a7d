#!/usr/bin/env bash
# The agent map path on a real kernel: map + unmap of 4 KiB and 2 MiB through the agent's
# launcher socket (real backend) versus the same map + unmap as direct ioctls on the
# process's own container, inside QEMU VMs with an emulated Intel IOMMU and edu devices
# (the tests/vm harness). Benchmark, not a test: nothing here is in `bazel test //...`.
#
#   bench/vm_map_path.sh [-s SECONDS] [-c VCPUS] [-o RESULTS] [type1|iommufd|all]
#
#   type1    Debian 6.12 kernel: direct VFIO_IOMMU_{MAP,UNMAP}_DMA vs agent --backend=vfio
#   iommufd  the built tinyconfig+iommufd kernel: direct IOMMU_IOAS_{MAP,UNMAP} (and type1,
#            which that kernel also has) vs agent --backend=iommufd
#
# -s: seconds of measurement per route and length (default 3). -c: guest CPUs (default 2;
# with 1 the launcher and the agent share one vCPU, so a request is an in-guest context
# switch instead of a wakeup of the other vCPU, which under TCG is a host thread that a
# busy host may not run for milliseconds). Raw lines go to
# RESULTS/launcher_path_vm.txt (default bench/results); bench/launcher_path_report.py then
# merges them with the sim numbers into RESULTS/launcher_path.{json,csv} and prints the
# table. QEMU TCG emulates every instruction of the guest, so absolute times are far above
# bare metal (or KVM); the ratio socket/direct is what to read.
# BENCH_BIN_DIR=DIR uses DIR/{iommu-broker,iommu-agent,vm_map_bench} instead of building.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
VM="$ROOT/tests/vm"
SECS=3
VCPUS=2
OUT="$HERE/results"
while getopts "s:c:o:h" o; do
  case "$o" in
    s) SECS="$OPTARG" ;;
    c) VCPUS="$OPTARG" ;;
    o) OUT="$OPTARG" ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
WHICH="${1:-all}"
case "$WHICH" in type1|iommufd) KINDS=("$WHICH") ;; all) KINDS=(type1 iommufd) ;;
  *) echo "vm_map_path.sh: unknown '$WHICH' (type1|iommufd|all)" >&2; exit 2 ;; esac

if [[ -n "${BENCH_BIN_DIR:-}" ]]; then
  BROKER="$BENCH_BIN_DIR/iommu-broker"; AGENT="$BENCH_BIN_DIR/iommu-agent"; BENCH="$BENCH_BIN_DIR/vm_map_bench"
else
  (cd "$ROOT" && bazel build -c opt //server:iommu-broker //agent:iommu-agent //bench:vm_map_bench)
  BIN="$(cd "$ROOT" && bazel info -c opt bazel-bin 2>/dev/null)"
  BROKER="$BIN/server/iommu-broker"; AGENT="$BIN/agent/iommu-agent"; BENCH="$BIN/bench/vm_map_bench"
fi
for b in "$BROKER" "$AGENT" "$BENCH"; do [[ -x "$b" ]] || { echo "vm_map_path.sh: missing $b" >&2; exit 1; }; done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vm-map-path.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
RAW="$OUT/launcher_path_vm.txt"
: >"$WORK/raw"
"$VM/deps.sh" >/dev/null
rc=0
for kind in "${KINDS[@]}"; do
  MODS=()
  if [[ "$kind" == type1 ]]; then
    K="$("$VM/kernels.sh" fetch-debian-kernel)"; KERNEL="$K/vmlinuz"; MODS=(-m "$K/modules")
    BACKEND=vfio; DIRECT="type1"
  else
    KERNEL="$("$VM/kernels.sh" build-iommufd-kernel)"
    BACKEND=iommufd; DIRECT="iommufd type1"
  fi
  "$VM/mkinitramfs.sh" -o "$WORK/$kind.cpio.gz" "${MODS[@]}" \
    -a "$HERE/vm_map_path_inside.sh=/bin/vm_map_path_inside.sh" \
    -c "/bin/sh /bin/vm_map_path_inside.sh $BACKEND $SECS $DIRECT" \
    "$BROKER=/bin/iommu-broker" "$AGENT=/bin/iommu-agent" "$BENCH=/bin/vm_map_bench" >/dev/null
  echo "=== VM $kind (agent --backend=$BACKEND; direct: $DIRECT; ${SECS}s per route and length; $VCPUS vCPUs)" >&2
  krc=0
  "$VM/run_vm.sh" -k "$KERNEL" -i "$WORK/$kind.cpio.gz" -n 1 -s "$VCPUS" -T $((120 + 12 * SECS)) \
    -l "$WORK/$kind-console.log" >"$WORK/$kind.out" || krc=$?
  tr -d '\r' <"$WORK/$kind.out" | grep -a -E '^vm_map_(bench|path)' >&2 || true
  if ((krc != 0)); then
    echo "vm_map_path.sh: VM $kind failed (rc $krc):" >&2; tail -n 40 "$WORK/$kind.out" >&2; rc=1; continue
  fi
  tr -d '\r' <"$WORK/$kind.out" | grep -a '^vm_map_bench: path=' | sed "s/^/where=vm-$kind vcpus=$VCPUS /" >>"$WORK/raw"
done
# Keep the other kernel's lines when only one was run.
if [[ -f "$RAW" ]]; then
  for kind in "${KINDS[@]}"; do sed -i "/^where=vm-$kind vcpus=$VCPUS /d" "$RAW"; done
  cat "$RAW" >>"$WORK/raw"
fi
sort -o "$RAW" "$WORK/raw"
python3 "$HERE/launcher_path_report.py" "$OUT"
exit $rc
