#!/usr/bin/env bash
# Boots a QEMU VM (q35, TCG, emulated Intel IOMMU, QEMU edu devices) on a kernel and an
# initramfs from mkinitramfs.sh, and exits with the exit status of the test run inside.
#
#   run_vm.sh -k KERNEL -i INITRD [options]
#
#   -k FILE      kernel (bzImage / vmlinuz)
#   -i FILE      initramfs from mkinitramfs.sh
#   -c COMMAND   test command, run in the VM with /bin/sh -c (overrides the initramfs's own;
#                passed base64'd on the kernel command line, which is limited to 2 KiB)
#   -n N         number of edu devices (default 1; 0 to 8)
#   -D MASK      edu dma_mask, e.g. 0xffffffffff (default: QEMU's, 28 bits = IOVA < 256 MiB)
#   -m MiB       guest memory (default 1024)
#   -s N         guest CPUs (default 2)
#   -T SECONDS   timeout for the whole run (default 300)
#   -l FILE      console log (default: a new file under ${TMPDIR:-/tmp}); QEMU's own
#                stdout/stderr go to FILE.qemu
#   -A ARGS      extra kernel command line arguments
#   -Q ARG       extra QEMU argument (repeatable)
#   -v           also stream the console to stderr while the VM runs
#
# Exit status: the in-VM test's (from the "IOMMU-VM-RESULT rc=N nonce=X" line /init prints),
# or 90 when that line never appears (timeout, kernel panic, QEMU abort, bad arguments to
# QEMU), in which case the reason and the tail of the console log are printed. The lines
# between IOMMU-VM-TEST-BEGIN and IOMMU-VM-TEST-END (the test's output) are always printed.
set -euo pipefail

die() { echo "run_vm.sh: ERROR: $*" >&2; exit 90; }

KERNEL="" INITRD="" CMD="" NEDU=1 DMA_MASK="" MEM=1024 SMP=2 TIMEOUT=300 LOG="" APPEND="" VERBOSE=0
QEMU_EXTRA=()
while getopts "k:i:c:n:D:m:s:T:l:A:Q:vh" opt; do
  case "$opt" in
    k) KERNEL="$OPTARG" ;;
    i) INITRD="$OPTARG" ;;
    c) CMD="$OPTARG" ;;
    n) NEDU="$OPTARG" ;;
    D) DMA_MASK="$OPTARG" ;;
    m) MEM="$OPTARG" ;;
    s) SMP="$OPTARG" ;;
    T) TIMEOUT="$OPTARG" ;;
    l) LOG="$OPTARG" ;;
    A) APPEND="$OPTARG" ;;
    Q) QEMU_EXTRA+=("$OPTARG") ;;
    v) VERBOSE=1 ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    *) exit 2 ;;
  esac
done
[[ -f "$KERNEL" ]] || die "kernel '$KERNEL' not found (-k)"
[[ -f "$INITRD" ]] || die "initramfs '$INITRD' not found (-i)"
[[ "$NEDU" =~ ^[0-8]$ ]] || die "-n wants 0..8"
QEMU="${IOMMU_VM_QEMU:-qemu-system-x86_64}"
command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install qemu-system-x86)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

if [[ -z "$LOG" ]]; then
  LOG="$(mktemp "${TMPDIR:-/tmp}/iommu-vm-console.XXXXXX.log")"
fi
mkdir -p "$(dirname "$LOG")"
: >"$LOG"
: >"$LOG.qemu"

NONCE="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
KARGS="console=ttyS0 intel_iommu=on panic=-1 init=/iommu-vm-init-failed iommu_vm.nonce=$NONCE"
if [[ -n "$CMD" ]]; then
  KARGS="$KARGS iommu_vm.cmd64=$(printf '%s' "$CMD" | base64 -w0)"
fi
[[ -n "$APPEND" ]] && KARGS="$KARGS $APPEND"
((${#KARGS} < 2000)) || die "kernel command line too long (${#KARGS} bytes; put the command in the initramfs with mkinitramfs.sh -c/-t)"

EDU_DEV="edu"
[[ -n "$DMA_MASK" ]] && EDU_DEV="edu,dma_mask=$DMA_MASK"
ARGS=(-machine q35 -accel tcg -cpu max -m "$MEM" -smp "$SMP"
      -nodefaults -display none -monitor none -no-reboot
      -serial "file:$LOG"
      -kernel "$KERNEL" -initrd "$INITRD" -append "$KARGS"
      -device intel-iommu,caching-mode=on)
for ((i = 0; i < NEDU; i++)); do ARGS+=(-device "$EDU_DEV"); done
ARGS+=("${QEMU_EXTRA[@]}")

echo "run_vm.sh: booting $(basename "$KERNEL") with $NEDU edu device(s), ${MEM} MiB, $SMP cpu(s), timeout ${TIMEOUT}s; console: $LOG" >&2
TAILPID=""
if ((VERBOSE)); then
  tail -n +1 -F "$LOG" >&2 2>/dev/null &
  TAILPID=$!
fi
t0=$(date +%s.%N)
set +e
timeout -k 10 "$TIMEOUT" "$QEMU" "${ARGS[@]}" </dev/null >>"$LOG.qemu" 2>&1
qrc=$?
set -e
t1=$(date +%s.%N)
if [[ -n "$TAILPID" ]]; then sleep 0.5; kill "$TAILPID" 2>/dev/null || true; wait "$TAILPID" 2>/dev/null || true; fi
ELAPSED="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"

# The console log has CRLF line ends; strip CRs for matching and printing.
result_line="$(tr -d '\r' <"$LOG" | grep -a -E "^IOMMU-VM-RESULT rc=[0-9]+ nonce=$NONCE\$" | tail -n1 || true)"

print_test_output() {
  tr -d '\r' <"$LOG" | awk '/^IOMMU-VM-TEST-BEGIN$/ {on = 1; next} /^IOMMU-VM-TEST-END$/ {on = 0} on'
}

if [[ -n "$result_line" ]]; then
  rc="${result_line#IOMMU-VM-RESULT rc=}"
  rc="${rc%% *}"
  echo "----- test output (from $LOG) -----"
  print_test_output
  echo "-----------------------------------"
  if [[ "$rc" == 0 ]]; then
    echo "run_vm.sh: PASS: in-VM test exited 0 (VM ran ${ELAPSED}s)"
  else
    tr -d '\r' <"$LOG" | grep -a '^IOMMU-VM-SETUP-FAILED' || true
    echo "run_vm.sh: FAIL: in-VM test exited $rc (VM ran ${ELAPSED}s); console log: $LOG"
    echo "----- last 40 console lines -----"
    tr -d '\r' <"$LOG" | tail -n 40
  fi
  exit "$rc"
fi

reason="no IOMMU-VM-RESULT line for nonce $NONCE"
if [[ $qrc == 124 || $qrc == 137 ]]; then
  reason="$reason: timed out after ${TIMEOUT}s"
elif grep -a -q 'Kernel panic' "$LOG"; then
  reason="$reason: kernel panic"
elif [[ $qrc != 0 ]]; then
  reason="$reason: QEMU exited with status $qrc"
else
  reason="$reason: the VM powered off or rebooted without it"
fi
echo "run_vm.sh: FAIL: $reason (VM ran ${ELAPSED}s)"
echo "run_vm.sh: QEMU: $QEMU ${ARGS[*]}"
if [[ -s "$LOG.qemu" ]]; then
  echo "----- QEMU output ($LOG.qemu; errors first, then the last lines) -----"
  grep -a -m 5 -i -E 'error|abort|assert|fatal|hw_error' "$LOG.qemu" || true
  echo "..."
  tail -n 12 "$LOG.qemu"
fi
echo "----- last 60 console lines ($LOG) -----"
tr -d '\r' <"$LOG" | tail -n 60
exit 90
