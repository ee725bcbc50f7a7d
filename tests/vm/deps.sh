#!/usr/bin/env bash
# Debian packages the VM tests need. `deps.sh` lists the missing ones and exits 1 if any
# is missing; `deps.sh --install` installs them (root, apt-get). `deps.sh --list` prints all.
# The integrator's scripts/setup.sh should install the same list.
set -euo pipefail
PKGS=(
  qemu-system-x86          # qemu-system-x86_64 with the intel-iommu and edu devices
  busybox-static           # /init and the shell inside the VM
  cpio gzip xz-utils kmod  # initramfs, module decompression, depmod
  zstd                     # (modules of future Debian kernels may be .ko.zst)
  file binutils            # mkinitramfs.sh: static check, objcopy --strip-debug
  linux-source-6.12        # source of the iommufd kernel
  gcc libc6-dev make flex bison bc libelf-dev libssl-dev perl  # kernel build, edu_smoke
)
if [[ "${1:-}" == --list ]]; then printf '%s\n' "${PKGS[@]}"; exit 0; fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]})) || { echo "deps.sh: all ${#PKGS[@]} packages present" >&2; exit 0; }
if [[ "${1:-}" == --install ]]; then
  echo "deps.sh: installing ${missing[*]}" >&2
  apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
  exit 0
fi
echo "deps.sh: missing packages: ${missing[*]} (tests/vm/deps.sh --install)" >&2
exit 1
