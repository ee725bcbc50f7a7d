#!/usr/bin/env bash
# Teardown of a launcher session holding many mappings on a real kernel (issue 12 item 3):
# one QEMU VM per backend (the tests/vm harness), each running iommu-broker, iommu-agent and
# bench/vm_teardown_bench: N one-page mappings (default 65535, type1's dma_entry_limit) in
# one session, then the session closed while heartbeat-like GetInventory calls and the
# broker's node state are sampled every 50 ms. Benchmark, not a test: nothing here is in
# `bazel test //...`.
#
#   bench/vm_teardown.sh [-n MAPPINGS] [-o RESULTS] [type1|iommufd|all]
#
#   type1    Debian 6.12 kernel, agent --backend=vfio (VFIO_IOMMU_UNMAP_DMA of each run)
#   iommufd  the built tinyconfig+iommufd kernel, agent --backend=iommufd (IOMMU_IOAS_UNMAP)
#
# Raw lines go to RESULTS/vm_teardown.txt (default bench/results); a table is printed.
# Columns: map_s (time to make the N mappings through the launcher socket), kernel_ms (close
# -> the agent's VmLck+VmPin back to its value before mapping), ledger_ms (close -> usage 0
# in GetInventory), inv_p99/max_ms (GetInventory latency during teardown; idle p99 for
# reference), left_ready (the broker ever saw the node other than READY).
# BENCH_BIN_DIR=DIR uses DIR/{iommu-broker,iommu-agent,vm_teardown_bench} instead of building.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/.."
VM="$ROOT/tests/vm"
N=65535
OUT="$HERE/results"
while getopts "n:o:h" o; do
  case "$o" in
    n) N="$OPTARG" ;;
    o) OUT="$OPTARG" ;;
    *) sed -n '2,21p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
WHICH="${1:-all}"
case "$WHICH" in type1|iommufd) KINDS=("$WHICH") ;; all) KINDS=(type1 iommufd) ;;
  *) echo "vm_teardown.sh: unknown '$WHICH' (type1|iommufd|all)" >&2; exit 2 ;; esac

if [[ -n "${BENCH_BIN_DIR:-}" ]]; then
  BROKER="$BENCH_BIN_DIR/iommu-broker"; AGENT="$BENCH_BIN_DIR/iommu-agent"
  BENCH="$BENCH_BIN_DIR/vm_teardown_bench"
else
  (cd "$ROOT" && bazel build -c opt //server:iommu-broker //agent:iommu-agent //bench:vm_teardown_bench)
  BIN="$(cd "$ROOT" && bazel info -c opt bazel-bin 2>/dev/null)"
  BROKER="$BIN/server/iommu-broker"; AGENT="$BIN/agent/iommu-agent"; BENCH="$BIN/bench/vm_teardown_bench"
fi
for b in "$BROKER" "$AGENT" "$BENCH"; do [[ -x "$b" ]] || { echo "vm_teardown.sh: missing $b" >&2; exit 1; }; done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vm-teardown.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
RAW="$OUT/vm_teardown.txt"
touch "$RAW"
"$VM/deps.sh" >/dev/null
rc=0
for kind in "${KINDS[@]}"; do
  MODS=()
  if [[ "$kind" == type1 ]]; then
    K="$("$VM/kernels.sh" fetch-debian-kernel)"; KERNEL="$K/vmlinuz"; MODS=(-m "$K/modules")
    BACKEND=vfio
  else
    KERNEL="$("$VM/kernels.sh" build-iommufd-kernel)"
    BACKEND=iommufd
  fi
  "$VM/mkinitramfs.sh" -o "$WORK/$kind.cpio.gz" "${MODS[@]}" \
    -a "$HERE/vm_teardown_inside.sh=/bin/vm_teardown_inside.sh" \
    -c "/bin/sh /bin/vm_teardown_inside.sh $BACKEND $N" \
    "$BROKER=/bin/iommu-broker" "$AGENT=/bin/iommu-agent" "$BENCH=/bin/vm_teardown_bench" >/dev/null
  echo "=== VM $kind (agent --backend=$BACKEND; $N mappings)" >&2
  krc=0
  start=$(date +%s)
  "$VM/run_vm.sh" -k "$KERNEL" -i "$WORK/$kind.cpio.gz" -n 1 -T $((300 + N / 40)) \
    -l "$WORK/$kind-console.log" >"$WORK/$kind.out" || krc=$?
  echo "VM $kind: $(( $(date +%s) - start )) s" >&2
  tr -d '\r' <"$WORK/$kind.out" | grep -a -E '^(vm_teardown|ts=)' >&2 || true
  if ((krc != 0)); then
    echo "vm_teardown.sh: VM $kind failed (rc $krc):" >&2; tail -n 40 "$WORK/$kind.out" >&2; rc=1; continue
  fi
  line="$(tr -d '\r' <"$WORK/$kind.out" | grep -a '^vm_teardown_bench: mappings=' | tail -n 1)"
  sed -i "/^where=vm-$kind mappings=$N /d" "$RAW"
  echo "where=vm-$kind ${line#vm_teardown_bench: } date=$(date -u +%Y-%m-%dT%H:%MZ)" >>"$RAW"
done
sort -o "$RAW" "$RAW"
python3 - "$RAW" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
    rows.append(kv)
cols = [("where", "where"), ("mappings", "mappings"), ("map_s", "map_s"),
        ("teardown_kernel_ms", "kernel_ms"), ("teardown_ledger_ms", "ledger_ms"),
        ("inv_idle_p99_ms", "inv_idle_p99_ms"), ("inv_p99_ms", "inv_p99_ms"),
        ("inv_max_ms", "inv_max_ms"), ("node_left_ready", "left_ready"),
        ("locked_kib_mapped", "locked_kib_mapped"), ("locked_kib_after", "locked_kib_after")]
print("| " + " | ".join(h for _, h in cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join(r.get(k, "") for k, _ in cols) + " |")
PY
exit $rc
