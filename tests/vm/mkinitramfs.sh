#!/usr/bin/env bash
# Builds the initramfs (gzip'd newc cpio) for the real-kernel VM tests.
#
#   mkinitramfs.sh -o OUT.cpio.gz [options] [BINARY[=/DEST]]...
#
#   -o FILE        output file (required)
#   -m DIR         kernel modules to load at boot: DIR/load-order lists *.ko file names in
#                  DIR, in load order (what `kernels.sh fetch-debian-kernel` makes in
#                  its modules/ directory). Omit for a kernel with everything built in.
#   -c COMMAND     default test command (run with /bin/sh -c in /tmp) when the kernel
#                  command line has no iommu_vm.cmd64=
#   -t SCRIPT      default test script (copied to /etc/iommu-vm/test.sh), same role as -c
#   -a SRC=/DEST   extra file or directory, copied as is (no ldd); repeatable
#   -S             do not strip debug info from the copied binaries and libraries
#
# Each BINARY is copied to /bin/<basename> (or /DEST), with every shared library `ldd`
# names (and the dynamic loader) copied to the same absolute path inside, so dynamically
# linked C++ programs (gRPC, protobuf, absl, SQLite from Debian) run as they do on the host.
# Libraries outside /lib, /lib64, /usr/lib go to /usr/local/lib/iommu-vm, which /init puts
# on LD_LIBRARY_PATH (for Bazel-built shared objects under bazel-out).
#
# The /init it writes: mounts proc, sysfs, devtmpfs on /dev, tmpfs on /tmp /run /dev/shm;
# brings lo up (127.0.0.1 and ::1); loads the modules; binds every QEMU edu device
# (1234:11e8) to vfio-pci with driver_override + drivers_probe; runs the test command
# (iommu_vm.cmd64=BASE64 on the kernel command line, else -c, else -t); prints
#   IOMMU-VM-RESULT rc=<exit status> nonce=<iommu_vm.nonce from the command line>
# then syncs and powers off. A failure in the setup before the test is reported the same
# way with a non-zero rc and a line "IOMMU-VM-SETUP-FAILED: <reason>".
set -euo pipefail

die() { echo "mkinitramfs.sh: ERROR: $*" >&2; exit 1; }
log() { echo "mkinitramfs.sh: $*" >&2; }

OUT="" MODDIR="" CMD="" SCRIPT="" STRIP=1
EXTRAS=()
while getopts "o:m:c:t:a:Sh" opt; do
  case "$opt" in
    o) OUT="$OPTARG" ;;
    m) MODDIR="$OPTARG" ;;
    c) CMD="$OPTARG" ;;
    t) SCRIPT="$OPTARG" ;;
    a) EXTRAS+=("$OPTARG") ;;
    S) STRIP=0 ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ -n "$OUT" ]] || die "-o OUT is required (see -h)"

BUSYBOX="${IOMMU_VM_BUSYBOX:-/bin/busybox}"
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX not found (apt-get install busybox-static)"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' \
  || ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic executable' \
  || die "$BUSYBOX is not statically linked (install busybox-static, not busybox)"
for t in cpio gzip ldd; do command -v "$t" >/dev/null || die "missing tool: $t"; done
STRIPPER=""
if ((STRIP)) && command -v objcopy >/dev/null; then STRIPPER=objcopy; fi

ROOT="$(mktemp -d "${TMPDIR:-/tmp}/iommu-vm-initramfs.XXXXXX")"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/iommu-vm,proc,sys,dev,tmp,run,root,lib/vm-modules,usr/local/lib/iommu-vm,var}
ln -s ../tmp "$ROOT/var/tmp"

# --- busybox and its applets ---
cp "$BUSYBOX" "$ROOT/bin/busybox"
while read -r applet; do
  [[ -n "$applet" && "$applet" != bin/busybox ]] || continue
  # No fallback init: if /init fails the kernel must panic (and QEMU exit), not hang in
  # busybox init until the timeout.
  [[ "$applet" != sbin/init && "$applet" != linuxrc ]] || continue
  [[ -e "$ROOT/$applet" ]] || ln -s /bin/busybox "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)
[[ -e "$ROOT/bin/sh" ]] || ln -s busybox "$ROOT/bin/sh"

# --- copying with shared libraries ---
declare -A COPIED=()
copy_file() {  # src dest-inside-root [strip]
  local src="$1" dst="$ROOT$2"
  mkdir -p "$(dirname "$dst")"
  cp -L "$src" "$dst"
  chmod u+w "$dst"
  if [[ -n "$STRIPPER" && "${3:-}" == strip ]] && head -c4 "$dst" | grep -q 'ELF'; then
    "$STRIPPER" --strip-debug "$dst" 2>/dev/null || true
  fi
}
copy_libs() {  # binary
  local bin="$1" out line lib
  if ! out="$(ldd "$bin" 2>&1)"; then
    grep -q 'not a dynamic executable\|statically linked' <<<"$out" && return 0
    die "ldd $bin failed: $out"
  fi
  if grep -q 'not found' <<<"$out"; then
    die "ldd $bin: missing libraries: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
  fi
  while read -r line; do
    lib=""
    if [[ "$line" =~ =\>\ (/[^ ]+)\ \( ]]; then lib="${BASH_REMATCH[1]}"
    elif [[ "$line" =~ ^(/[^ ]+)\ \( ]]; then lib="${BASH_REMATCH[1]}"; fi
    [[ -n "$lib" && -z "${COPIED[$lib]:-}" ]] || continue
    COPIED[$lib]=1
    case "$lib" in
      /lib/*|/lib64/*|/usr/lib/*|/usr/lib64/*) copy_file "$lib" "$lib" strip ;;
      *) copy_file "$lib" "/usr/local/lib/iommu-vm/$(basename "$lib")" strip ;;
    esac
  done <<<"$out"
}

for spec in "$@"; do
  src="${spec%%=*}"
  dest="/bin/$(basename "$src")"
  [[ "$spec" == *=* ]] && dest="${spec#*=}"
  [[ -f "$src" ]] || die "binary $src not found"
  [[ -x "$src" ]] || die "$src is not executable"
  [[ -L "$ROOT$dest" ]] && rm -f "$ROOT$dest"  # a project binary wins over a busybox applet
  copy_file "$src" "$dest" strip
  chmod 0755 "$ROOT$dest"
  copy_libs "$src"
done

for spec in "${EXTRAS[@]}"; do
  [[ "$spec" == *=/* ]] || die "-a wants SRC=/DEST, got $spec"
  src="${spec%%=*}" dest="${spec#*=}"
  [[ -e "$src" ]] || die "extra $src not found"
  mkdir -p "$(dirname "$ROOT$dest")"
  cp -a -L "$src" "$ROOT$dest"
done

# --- kernel modules ---
if [[ -n "$MODDIR" ]]; then
  [[ -f "$MODDIR/load-order" ]] || die "$MODDIR/load-order not found"
  while read -r m; do
    [[ -n "$m" ]] || continue
    [[ -f "$MODDIR/$m" ]] || die "module $MODDIR/$m not found"
    cp "$MODDIR/$m" "$ROOT/lib/vm-modules/$m"
  done <"$MODDIR/load-order"
  cp "$MODDIR/load-order" "$ROOT/lib/vm-modules/load-order"
fi

# --- test command ---
if [[ -n "$CMD" ]]; then printf '%s\n' "$CMD" >"$ROOT/etc/iommu-vm/cmd"; fi
if [[ -n "$SCRIPT" ]]; then
  [[ -f "$SCRIPT" ]] || die "test script $SCRIPT not found"
  cp "$SCRIPT" "$ROOT/etc/iommu-vm/test.sh"
  chmod 0755 "$ROOT/etc/iommu-vm/test.sh"
fi

# --- minimal /etc for glibc, getaddrinfo("localhost"), c-ares ---
cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat >"$ROOT/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
EOF
echo 'hosts: files' >"$ROOT/etc/nsswitch.conf"
: >"$ROOT/etc/resolv.conf"
echo iommu-vm >"$ROOT/etc/hostname"

cat >"$ROOT/init" <<'INIT'
#!/bin/sh
# /init of the iommu-broker VM tests (written by tests/vm/mkinitramfs.sh).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TMPDIR=/tmp IOMMU_VM=1
export LD_LIBRARY_PATH=/usr/local/lib/iommu-vm

NONCE=none CMD64= PRINTK=4

finish() {
  echo "IOMMU-VM-RESULT rc=$1 nonce=$NONCE"
  sync
  poweroff -f
  sleep 5
  echo o >/proc/sysrq-trigger 2>/dev/null
  exit "$1"  # kernel panics (init exited); with panic=-1 -no-reboot QEMU exits
}
setup_failed() {
  echo "IOMMU-VM-SETUP-FAILED: $*"
  finish 97
}

mount -t proc proc /proc || setup_failed "mount proc"
for w in $(cat /proc/cmdline); do
  case "$w" in
    iommu_vm.nonce=*) NONCE="${w#iommu_vm.nonce=}" ;;
    iommu_vm.cmd64=*) CMD64="${w#iommu_vm.cmd64=}" ;;
    iommu_vm.printk=*) PRINTK="${w#iommu_vm.printk=}" ;;
  esac
done
mount -t sysfs sysfs /sys || setup_failed "mount sysfs"
mount -t devtmpfs devtmpfs /dev || setup_failed "mount devtmpfs on /dev (CONFIG_DEVTMPFS?)"
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || setup_failed "mount tmpfs /dev/shm"
mount -t tmpfs -o mode=1777 tmpfs /tmp || setup_failed "mount tmpfs /tmp"
mount -t tmpfs -o mode=0755 tmpfs /run || setup_failed "mount tmpfs /run"
hostname iommu-vm

echo "IOMMU-VM: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu(s), $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
if ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 netmask 255.0.0.0 up; then
  echo "IOMMU-VM: lo up: $(ip addr show lo 2>/dev/null | awk '/inet/ {print $2}' | tr '\n' ' ')"
else
  setup_failed "cannot bring lo up (CONFIG_INET?)"
fi

if [ -f /lib/vm-modules/load-order ]; then
  for m in $(cat /lib/vm-modules/load-order); do
    insmod "/lib/vm-modules/$m" || setup_failed "insmod $m"
  done
  echo "IOMMU-VM: loaded modules: $(cat /lib/vm-modules/load-order | tr '\n' ' ')"
fi

EDUS=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x1234 ] && [ "$(cat "$d/device" 2>/dev/null)" = 0x11e8 ] || continue
  bdf="${d##*/}"
  [ -e "$d/iommu_group" ] || setup_failed "$bdf has no iommu_group (IOMMU off? intel_iommu=on, -device intel-iommu)"
  echo vfio-pci >"$d/driver_override" || setup_failed "driver_override $bdf"
  if [ -e "$d/driver" ]; then echo "$bdf" >"$d/driver/unbind"; fi
  echo "$bdf" >/sys/bus/pci/drivers_probe
  drv="$(readlink "$d/driver" 2>/dev/null)"
  [ "${drv##*/}" = vfio-pci ] || setup_failed "$bdf did not bind to vfio-pci (driver: ${drv:-none})"
  group="$(readlink "$d/iommu_group")"; group="${group##*/}"
  cdev="$(ls "$d/vfio-dev" 2>/dev/null | head -n1)"
  echo "IOMMU-VM: edu $bdf -> vfio-pci, group $group${cdev:+, /dev/vfio/devices/$cdev}"
  EDUS="$EDUS $bdf"
done
export IOMMU_VM_EDU_DEVICES="${EDUS# }"
echo "IOMMU-VM: /dev/iommu: $([ -c /dev/iommu ] && echo yes || echo no); /dev/vfio: $(ls /dev/vfio 2>/dev/null | tr '\n' ' ')"

# Keep the test's output readable: only warnings and worse from the kernel from here on
# (DMAR faults are errors and still show). iommu_vm.printk=7 on the command line keeps all.
echo "$PRINTK" >/proc/sys/kernel/printk 2>/dev/null || true
cd /tmp
echo "IOMMU-VM-TEST-BEGIN"
if [ -n "$CMD64" ]; then
  CMD="$(echo "$CMD64" | base64 -d)" || setup_failed "iommu_vm.cmd64 is not base64"
  /bin/sh -c "$CMD"
  rc=$?
elif [ -f /etc/iommu-vm/cmd ]; then
  /bin/sh -c "$(cat /etc/iommu-vm/cmd)"
  rc=$?
elif [ -f /etc/iommu-vm/test.sh ]; then
  /bin/sh /etc/iommu-vm/test.sh
  rc=$?
else
  echo "IOMMU-VM: no test command (iommu_vm.cmd64=, mkinitramfs.sh -c or -t)"
  rc=98
fi
echo "IOMMU-VM-TEST-END"
finish "$rc"
INIT
chmod 0755 "$ROOT/init"

mkdir -p "$(dirname "$OUT")"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -6 -n) >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote $OUT ($(du -h "$OUT" | cut -f1); ${#COPIED[@]} shared libraries)"
