#!/usr/bin/env bash
# End-to-end proof of the VM harness, with no project code:
#   type1    Debian's 6.12 kernel + vfio modules, two edu devices, edu_smoke type1
#   iommufd  the tinyconfig kernel built from tests/vm/iommufd.config, two edu devices,
#            edu_smoke iommufd and then edu_smoke type1 (that kernel has both)
#
#   tests/vm/smoke.sh [type1|iommufd|all]     (default all)
#
# Fails (never skips) when anything is missing: packages, the Debian mirror, the kernel
# build, QEMU, the sentinel line. Also the Bazel test //tests/vm:vm_smoke_test.
# Environment: IOMMU_VM_CACHE (kernel cache), IOMMU_VM_TIMEOUT (per VM, default 300 s),
# IOMMU_VM_KEEP=1 keeps the work directory (initramfs, console logs) for debugging.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"
WHICH="${1:-all}"
case "$WHICH" in type1|iommufd|all) ;; *) echo "usage: $0 [type1|iommufd|all]" >&2; exit 2 ;; esac

# Under `bazel test` HOME may point into the sandbox: keep the kernel cache in the real home.
if [[ -z "${IOMMU_VM_CACHE:-}" && -n "${TEST_TMPDIR:-}" ]]; then
  export IOMMU_VM_CACHE="$(getent passwd "$(id -u)" | cut -d: -f6)/.cache/iommu-broker-vm"
fi
TIMEOUT="${IOMMU_VM_TIMEOUT:-300}"
if [[ -n "${TEST_TMPDIR:-}" ]]; then
  WORK="$TEST_TMPDIR/vm"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/iommu-vm-smoke.XXXXXX")"
  [[ "${IOMMU_VM_KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
fi
# Console logs: next to the rest, or in Bazel's undeclared outputs (bazel-testlogs/.../outputs).
LOGS="${TEST_UNDECLARED_OUTPUTS_DIR:-$WORK}"
mkdir -p "$LOGS"

passed=0 failed=0
declare -a SUMMARY=()
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() {  # name cmd...: runs cmd, records its time; its stdout is kept in $STEP_OUT
  local name="$1" t
  shift
  t=$(now)
  echo "=== $name" >&2
  if STEP_OUT="$("$@")"; then
    SUMMARY+=("$(printf '%-44s %7ss' "$name" "$(since "$t")")")
  else
    local rc=$?
    SUMMARY+=("$(printf '%-44s %7ss  FAILED (rc %d)' "$name" "$(since "$t")" "$rc")")
    return $rc
  fi
}
vm() {  # name run_vm.sh args...
  local name="$1"
  shift
  if step "$name" "$HERE/run_vm.sh" -T "$TIMEOUT" "$@"; then
    echo "$STEP_OUT"; passed=$((passed + 1))
  else
    echo "$STEP_OUT"; failed=$((failed + 1))
  fi
}
finish() {
  echo
  echo "VM smoke timings (work dir $WORK, console logs in $LOGS):"
  printf '  %s\n' "${SUMMARY[@]}"
  echo "vm smoke: $passed passed, $failed failed"
  ((failed == 0 && passed > 0))
}
trap_fail() { failed=$((failed + 1)); finish || true; exit 1; }

step "check Debian packages (tests/vm/deps.sh)" "$HERE/deps.sh" || trap_fail
step "compile edu_smoke (gcc -static)" \
  gcc -static -O2 -Wall -o "$WORK/edu_smoke" "$HERE/edu_smoke.c" || trap_fail

if [[ "$WHICH" == type1 || "$WHICH" == all ]]; then
  step "fetch Debian kernel + vfio modules" "$HERE/kernels.sh" fetch-debian-kernel || trap_fail
  DEB="$STEP_OUT"
  step "mkinitramfs (type1, modules)" "$HERE/mkinitramfs.sh" -o "$WORK/type1.cpio.gz" \
    -m "$DEB/modules" -c '/bin/edu_smoke type1' "$WORK/edu_smoke" || trap_fail
  vm "VM type1 on $(cat "$DEB/version")" -k "$DEB/vmlinuz" -i "$WORK/type1.cpio.gz" -n 2 \
    -l "$LOGS/type1-console.log"
fi

if [[ "$WHICH" == iommufd || "$WHICH" == all ]]; then
  step "build iommufd kernel (cached by config hash)" "$HERE/kernels.sh" build-iommufd-kernel \
    || trap_fail
  BZ="$STEP_OUT"
  step "mkinitramfs (iommufd, no modules)" "$HERE/mkinitramfs.sh" -o "$WORK/iommufd.cpio.gz" \
    -c '/bin/edu_smoke iommufd && /bin/edu_smoke type1' "$WORK/edu_smoke" || trap_fail
  vm "VM iommufd + type1 on iommufd kernel" -k "$BZ" -i "$WORK/iommufd.cpio.gz" -n 2 \
    -l "$LOGS/iommufd-console.log"
fi

finish
