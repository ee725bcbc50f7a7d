#!/usr/bin/env bash
# Host side of the real-kernel product tests: boots a VM with iommu-broker, iommu-agent
# (a REAL backend), iommuctl, vm_dma_test and backend_conformance, two edu devices, and
# runs tests/vm/vm_e2e.sh inside: first the backend conformance suite
# (agent/backend_conformance.h; type1 VM: vfio; iommufd VM: iommufd and vfio), then the
# product test (see vm_dma_test.cc for what is proved).
#
#   tests/vm/vm_dma.sh type1   [BROKER AGENT IOMMUCTL VM_DMA_TEST CONFORMANCE FDHOLDER]   Debian 6.12, --backend=vfio
#   tests/vm/vm_dma.sh iommufd [BROKER AGENT IOMMUCTL VM_DMA_TEST CONFORMANCE FDHOLDER]   built kernel, --backend=iommufd
#
# Binaries default to the workspace's bazel-bin (bazel build them first); under
# `bazel test //tests/vm:vm_type1_test` / `:vm_iommufd_test` Bazel passes them.
# Fails, never skips, when the VM cannot run. Prints the timings.
# Environment: IOMMU_VM_CACHE, IOMMU_VM_TIMEOUT (default 300 s), IOMMU_VM_KEEP=1,
# VM_DMA_PARTS (default abcdefh: which parts of vm_dma_test run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"
WHICH="${1:-}"
case "$WHICH" in
  type1) BACKEND=vfio ;;
  iommufd) BACKEND=iommufd ;;
  *) echo "usage: $0 type1|iommufd [BROKER AGENT IOMMUCTL VM_DMA_TEST CONFORMANCE FDHOLDER]" >&2; exit 2 ;;
esac
shift
BIN="$HERE/../../bazel-bin"
BROKER="${1:-$BIN/server/iommu-broker}"
AGENT="${2:-$BIN/agent/iommu-agent}"
CTL="${3:-$BIN/client/iommuctl}"
TESTBIN="${4:-$BIN/tests/vm/vm_dma_test}"
CONFORMANCE="${5:-$BIN/agent/backend_conformance_main}"
FDHOLDER="${6:-$BIN/agent/iommu-fdholder}"
for b in "$BROKER" "$AGENT" "$CTL" "$TESTBIN" "$CONFORMANCE" "$FDHOLDER"; do
  [[ -x "$b" ]] || { echo "vm_dma.sh: FAIL: missing binary $b (bazel build it first)" >&2; exit 1; }
done

if [[ -z "${IOMMU_VM_CACHE:-}" && -n "${TEST_TMPDIR:-}" ]]; then
  export IOMMU_VM_CACHE="$(getent passwd "$(id -u)" | cut -d: -f6)/.cache/iommu-broker-vm"
fi
TIMEOUT="${IOMMU_VM_TIMEOUT:-300}"
if [[ -n "${TEST_TMPDIR:-}" ]]; then
  WORK="$TEST_TMPDIR/vm-dma-$WHICH"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/iommu-vm-dma.XXXXXX")"
  [[ "${IOMMU_VM_KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
fi
LOGS="${TEST_UNDECLARED_OUTPUTS_DIR:-$WORK}"
mkdir -p "$LOGS"

declare -a SUMMARY=()
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_ALL=$(now)
step() {  # name cmd...; stdout kept in STEP_OUT
  local name="$1" t rc=0
  shift
  t=$(now)
  echo "=== $name" >&2
  STEP_OUT="$("$@")" || rc=$?
  SUMMARY+=("$(printf '%-46s %7ss%s' "$name" "$(since "$t")" "$( ((rc)) && echo "  FAILED (rc $rc)")")")
  return $rc
}
finish() {
  local rc=$1
  echo
  echo "vm_dma ($WHICH, --backend=$BACKEND) timings (console log in $LOGS):"
  printf '  %s\n' "${SUMMARY[@]}"
  printf '  %-46s %7ss\n' "total" "$(since "$T_ALL")"
  if ((rc == 0)); then echo "vm_dma $WHICH: PASS"; else echo "vm_dma $WHICH: FAIL (rc $rc)"; fi
  exit "$rc"
}

step "check Debian packages (deps.sh)" "$HERE/deps.sh" || finish 1
MODS=()
if [[ "$WHICH" == type1 ]]; then
  step "fetch Debian kernel + vfio modules" "$HERE/kernels.sh" fetch-debian-kernel || finish 1
  KERNEL="$STEP_OUT/vmlinuz"
  MODS=(-m "$STEP_OUT/modules")
else
  step "build iommufd kernel (cached)" "$HERE/kernels.sh" build-iommufd-kernel || finish 1
  KERNEL="$STEP_OUT"
fi
step "mkinitramfs (broker, agent, iommuctl, tests)" "$HERE/mkinitramfs.sh" \
  -o "$WORK/initramfs.cpio.gz" "${MODS[@]}" \
  -a "$HERE/vm_e2e.sh=/bin/vm_e2e.sh" \
  -c "/bin/sh /bin/vm_e2e.sh $BACKEND --parts=${VM_DMA_PARTS:-abcdefh}" \
  "$BROKER=/bin/iommu-broker" "$AGENT=/bin/iommu-agent" "$CTL=/bin/iommuctl" \
  "$TESTBIN=/bin/vm_dma_test" "$CONFORMANCE=/bin/backend_conformance" \
  "$FDHOLDER=/bin/iommu-fdholder" \
  "$(command -v setpriv)=/usr/bin/setpriv" || finish 1
rc=0
step "VM $WHICH: conformance + agent --backend=$BACKEND + vm_dma_test" "$HERE/run_vm.sh" \
  -k "$KERNEL" -i "$WORK/initramfs.cpio.gz" -n 2 -T "$TIMEOUT" \
  -l "$LOGS/$WHICH-console.log" || rc=$?
echo "$STEP_OUT"
# The pass criterion is the in-VM status; also insist on the conformance suite's and the
# test's own PASS lines and on the agent having used the backend that was asked for.
if ((rc == 0)); then
  want_conformance=(vfio-type1)
  [[ "$WHICH" == iommufd ]] && want_conformance=(iommufd vfio-type1)
  for kind in "${want_conformance[@]}"; do
    grep -q "^backend_conformance $kind: PASS" <<<"$STEP_OUT" \
      || { echo "vm_dma.sh: no 'backend_conformance $kind: PASS' line"; rc=1; }
  done
  grep -q '^vm_dma_test: PASS' <<<"$STEP_OUT" || { echo "vm_dma.sh: no 'vm_dma_test: PASS' line"; rc=1; }
  want_used="$BACKEND"; [[ "$BACKEND" == vfio ]] && want_used="vfio-type1|vfio"
  grep -Eq "^vm_e2e: agent backend requested=$BACKEND used=($want_used)( |\$)" <<<"$STEP_OUT" \
    || { echo "vm_dma.sh: the agent did not use backend $BACKEND"; rc=1; }
fi
echo "--- DMAR faults on the console (expected after unmaps):"
tr -d '\r' <"$LOGS/$WHICH-console.log" | grep -a 'DMAR:.*fault' | head -n 10 || true
finish "$rc"
