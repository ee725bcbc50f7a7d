#!/usr/bin/env bash
# Kernels for the real-kernel VM tests (see tests/vm/README.md).
#
#   kernels.sh fetch-debian-kernel    -> prints DIR; DIR/vmlinuz, DIR/modules/*.ko (decompressed),
#                                        DIR/modules/load-order (file names, load in this order),
#                                        DIR/version (uname -r of that kernel)
#   kernels.sh build-iommufd-kernel   -> prints the path of a bzImage built from
#                                        /usr/src/linux-source-6.12.tar.xz + tests/vm/iommufd.config
#   kernels.sh all                    -> both, one path per line
#   kernels.sh prune                  -> deletes the extracted source and the build tree
#                                        (about 1.9 GB) but keeps the built kernels; the next
#                                        build-iommufd-kernel that misses the cache starts over
#
# Only the path goes to stdout; progress and errors go to stderr. Exit status is non-zero,
# with the reason, on any failure. Both are cached under $IOMMU_VM_CACHE (default
# $HOME/.cache/iommu-broker-vm) and are idempotent: a second call returns the cached result
# at once. Concurrent callers serialise on a lock file in the cache.
#
# Environment:
#   IOMMU_VM_CACHE               cache directory
#   IOMMU_VM_DEBIAN_KERNEL_PKG   exact package to use instead of the newest
#                                linux-image-6.12.*+deb12-amd64-unsigned apt knows
#   IOMMU_VM_LINUX_SOURCE        kernel source tarball (default /usr/src/linux-source-6.12.tar.xz)
#   IOMMU_VM_JOBS                make -j (default: nproc)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${IOMMU_VM_CACHE:-${HOME:-/root}/.cache/iommu-broker-vm}"
FRAGMENT="$HERE/iommufd.config"
SRC_TAR="${IOMMU_VM_LINUX_SOURCE:-/usr/src/linux-source-6.12.tar.xz}"
JOBS="${IOMMU_VM_JOBS:-$(nproc)}"
# Bump when the build recipe below changes in a way that must invalidate cached kernels.
RECIPE_VERSION=1
# Modules the type1 VM needs; their dependencies are added from modules.dep.
DEBIAN_ROOT_MODULES=(vfio_iommu_type1 vfio-pci)

log() { echo "kernels.sh: $*" >&2; }
die() { echo "kernels.sh: ERROR: $*" >&2; exit 1; }

need_tools() {
  local missing=() t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (run tests/vm/deps.sh --install)"
}

# with_lock NAME CMD...: run CMD holding $CACHE/.lock-NAME.
with_lock() {
  local name="$1"; shift
  mkdir -p "$CACHE"
  exec {lockfd}>"$CACHE/.lock-$name"
  if ! flock -n "$lockfd"; then
    log "waiting for another process holding $CACHE/.lock-$name"
    flock "$lockfd"
  fi
  "$@"
  local rc=$?
  flock -u "$lockfd"
  exec {lockfd}>&-
  return $rc
}

# ---------------------------------------------------------------------------------------
# Debian kernel (type1 VM)
# ---------------------------------------------------------------------------------------

newest_debian_pkg() {
  apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' 2>/dev/null \
    | awk '{print $1}' | sort -V | tail -n1
}

# Post-order walk of modules.dep: prints module paths (relative to lib/modules/KVER) with
# dependencies first. Args: moddir root-module-names...
module_closure() {
  local moddir="$1"; shift
  awk -v roots="$*" '
    function norm(n) { gsub(/-/, "_", n); return n }
    function base(p,   b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", b); return norm(b) }
    function visit(n,   i, k, d) {
      if (n in seen) return
      seen[n] = 1
      if (!(n in path)) { missing = missing " " n; return }
      k = split(deps[n], d, " ")
      # modules.dep lists dependencies so that the last must be loaded first.
      for (i = k; i >= 1; i--) visit(base(d[i]))
      print path[n]
    }
    FNR == NR && FILENAME ~ /modules\.builtin$/ { builtin[base($1)] = 1; next }
    {
      p = $1; sub(/:$/, "", p); n = base(p); path[n] = p
      $1 = ""; deps[n] = $0
    }
    END {
      k = split(roots, r, " ")
      for (i = 1; i <= k; i++) { n = norm(r[i]); if (n in builtin) continue; visit(n) }
      if (missing != "") { print "MISSING" missing > "/dev/stderr"; exit 3 }
    }' "$moddir/modules.builtin" "$moddir/modules.dep"
}

fetch_debian_kernel_locked() {
  local pkg="$1" out="$CACHE/debian/$pkg"
  if [[ -f "$out/.complete" ]]; then echo "$out"; return 0; fi
  need_tools apt-get dpkg-deb xz
  export PATH="$PATH:/usr/sbin:/sbin"
  local t0=$SECONDS work="$CACHE/debian/.work-$pkg"
  rm -rf "$work" "$out"
  mkdir -p "$work/dl" "$work/root"
  log "downloading $pkg (apt-get download; not installed into /boot)"
  if ! (cd "$work/dl" && apt-get download -q "$pkg" >"$work/apt.log" 2>&1); then
    cat "$work/apt.log" >&2
    die "apt-get download $pkg failed (is the Debian mirror reachable? try apt-get update)"
  fi
  local deb
  deb="$(ls "$work"/dl/*.deb 2>/dev/null | head -n1)"
  [[ -n "$deb" ]] || die "apt-get download produced no .deb for $pkg"
  log "extracting $(basename "$deb") ($(du -h "$deb" | cut -f1))"
  dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb -x $deb failed"

  local kver vmlinuz moddir
  vmlinuz="$(ls "$work"/root/boot/vmlinuz-* 2>/dev/null | head -n1)"
  [[ -n "$vmlinuz" ]] || die "$pkg has no /boot/vmlinuz-*"
  kver="${vmlinuz##*/vmlinuz-}"
  moddir="$work/root/lib/modules/$kver"
  [[ -d "$moddir/kernel" ]] || die "$pkg has no lib/modules/$kver/kernel"
  if [[ ! -f "$moddir/modules.dep" ]]; then
    # The package ships no modules.dep (its postinst runs depmod); make one in the copy.
    need_tools depmod
    depmod -b "$work/root" "$kver" 2>"$work/depmod.log" \
      || { cat "$work/depmod.log" >&2; die "depmod -b $work/root $kver failed"; }
  fi

  local mods
  mods="$(module_closure "$moddir" "${DEBIAN_ROOT_MODULES[@]}")" \
    || die "could not resolve ${DEBIAN_ROOT_MODULES[*]} in $moddir/modules.dep"
  mkdir -p "$work/out/modules"
  cp "$vmlinuz" "$work/out/vmlinuz"
  echo "$kver" >"$work/out/version"
  echo "$pkg" >"$work/out/package"
  : >"$work/out/modules/load-order"
  local m f name
  for m in $mods; do
    f="$moddir/$m"
    name="$(basename "$m")"
    case "$name" in
      *.ko.xz) xz -dc "$f" >"$work/out/modules/${name%.xz}"; name="${name%.xz}" ;;
      *.ko.zst) zstd -qdc "$f" >"$work/out/modules/${name%.zst}"; name="${name%.zst}" ;;
      *.ko.gz) gzip -dc "$f" >"$work/out/modules/${name%.gz}"; name="${name%.gz}" ;;
      *.ko) cp "$f" "$work/out/modules/$name" ;;
      *) die "unexpected module file $m" ;;
    esac
    echo "$name" >>"$work/out/modules/load-order"
  done
  touch "$work/out/.complete"
  mkdir -p "$(dirname "$out")"
  mv "$work/out" "$out"
  rm -rf "$work"
  log "Debian kernel $kver ready in $out ($((SECONDS - t0)) s); modules: $(tr '\n' ' ' <"$out/modules/load-order")"
  echo "$out"
}

fetch_debian_kernel() {
  local pkg="${IOMMU_VM_DEBIAN_KERNEL_PKG:-}"
  if [[ -z "$pkg" ]]; then
    need_tools apt-cache
    pkg="$(newest_debian_pkg)"
    if [[ -z "$pkg" ]]; then
      # No package list yet: use a cached kernel if there is one, else refresh the lists.
      local cached
      cached="$(ls -d "$CACHE"/debian/linux-image-*/.complete 2>/dev/null | sort -V | tail -n1)"
      if [[ -n "$cached" ]]; then
        log "apt-cache knows no linux-image-6.12.*-amd64-unsigned; using cached $(dirname "$cached")"
        dirname "$cached"; return 0
      fi
      if [[ $(id -u) == 0 ]]; then
        log "apt-cache knows no linux-image-6.12.*+deb12-amd64-unsigned; running apt-get update"
        apt-get update -q >&2 || die "apt-get update failed"
        pkg="$(newest_debian_pkg)"
      fi
      [[ -n "$pkg" ]] || die "no linux-image-6.12.*+deb12-amd64-unsigned package known to apt (apt-get update?)"
    fi
  fi
  with_lock debian fetch_debian_kernel_locked "$pkg"
}

# ---------------------------------------------------------------------------------------
# iommufd kernel: tinyconfig + tests/vm/iommufd.config, everything built in
# ---------------------------------------------------------------------------------------

source_version() {
  local v
  v="$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || true)"
  if [[ -z "$v" ]]; then v="$(stat -c '%s-%Y' "$SRC_TAR")"; fi
  echo "$v"
}

iommufd_key() {
  { echo "recipe=$RECIPE_VERSION"; echo "source=$(source_version)"; cat "$FRAGMENT"; } \
    | sha256sum | cut -c1-16
}

build_iommufd_kernel_locked() {
  local key="$1" srcver="$2"
  local out="$CACHE/iommufd-kernel/$key"
  if [[ -f "$out/.complete" ]]; then echo "$out/bzImage"; return 0; fi
  need_tools make gcc flex bison bc xz perl tar
  [[ -f /usr/include/libelf.h ]] || die "libelf-dev is missing (run tests/vm/deps.sh --install)"
  local t0=$SECONDS
  local srcdir="$CACHE/src/linux-source-$srcver"
  if [[ ! -f "$srcdir/.extracted" ]]; then
    log "extracting $SRC_TAR into $srcdir (about a minute)"
    rm -rf "$srcdir" "$srcdir.tmp"
    mkdir -p "$srcdir.tmp"
    tar -xf "$SRC_TAR" -C "$srcdir.tmp" || die "tar -xf $SRC_TAR failed"
    local top
    top="$(ls "$srcdir.tmp")"
    [[ $(echo "$top" | wc -l) == 1 && -f "$srcdir.tmp/$top/Makefile" ]] \
      || die "unexpected layout in $SRC_TAR"
    mv "$srcdir.tmp/$top" "$srcdir"
    rmdir "$srcdir.tmp"
    touch "$srcdir/.extracted"
    log "extracted in $((SECONDS - t0)) s"
  fi
  # One build directory per source version, reused so that a changed fragment rebuilds
  # incrementally; the result is copied to a directory named by the cache key.
  local obj="$CACHE/build/linux-$srcver"
  local blog="$CACHE/build/linux-$srcver.log"
  mkdir -p "$obj"
  log "configuring (tinyconfig + $FRAGMENT) in $obj; build log: $blog"
  : >"$blog"
  {
    make -C "$srcdir" O="$obj" tinyconfig &&
    "$srcdir/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$FRAGMENT" &&
    make -C "$srcdir" O="$obj" olddefconfig
  } >>"$blog" 2>&1 || { tail -n 40 "$blog" >&2; die "kernel configuration failed (log: $blog)"; }

  # Every CONFIG_X=y / =N line in the fragment must have survived olddefconfig.
  local bad=() line sym
  while IFS= read -r line; do
    [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]] || continue
    sym="${BASH_REMATCH[1]}"
    grep -qxF "$line" "$obj/.config" || bad+=("$line (got: $(grep -E "^(# )?$sym[= ]" "$obj/.config" || echo unset))")
  done <"$FRAGMENT"
  if ((${#bad[@]})); then
    printf '  %s\n' "${bad[@]}" >&2
    die "options in $FRAGMENT did not stick after olddefconfig (missing dependency?)"
  fi

  log "building bzImage with make -j$JOBS (about 5-6 minutes on 2 cores, first time)"
  local tb=$SECONDS
  make -C "$srcdir" O="$obj" -j"$JOBS" bzImage >>"$blog" 2>&1 \
    || { tail -n 60 "$blog" >&2; die "kernel build failed (log: $blog)"; }
  [[ -f "$obj/arch/x86/boot/bzImage" ]] || die "build finished but $obj/arch/x86/boot/bzImage is missing"
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  cp "$obj/arch/x86/boot/bzImage" "$out.tmp/bzImage"
  cp "$obj/.config" "$out.tmp/config"
  cp "$FRAGMENT" "$out.tmp/iommufd.config"
  echo "$srcver" >"$out.tmp/source-version"
  touch "$out.tmp/.complete"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  log "iommufd kernel ready: $out/bzImage (make: $((SECONDS - tb)) s, total $((SECONDS - t0)) s)"
  echo "$out/bzImage"
}

build_iommufd_kernel() {
  [[ -f "$FRAGMENT" ]] || die "config fragment $FRAGMENT not found"
  [[ -f "$SRC_TAR" ]] || die "$SRC_TAR not found (apt-get install linux-source-6.12)"
  local key srcver
  srcver="$(source_version)"
  key="$(iommufd_key)"
  if [[ -f "$CACHE/iommufd-kernel/$key/.complete" ]]; then
    echo "$CACHE/iommufd-kernel/$key/bzImage"; return 0
  fi
  with_lock iommufd build_iommufd_kernel_locked "$key" "$srcver"
}

case "${1:-}" in
  fetch-debian-kernel) fetch_debian_kernel ;;
  build-iommufd-kernel) build_iommufd_kernel ;;
  all) fetch_debian_kernel; build_iommufd_kernel ;;
  prune) with_lock iommufd rm -rf "$CACHE/src" "$CACHE/build"; log "removed $CACHE/src and $CACHE/build" ;;
  *) echo "usage: $0 fetch-debian-kernel|build-iommufd-kernel|all|prune" >&2; exit 2 ;;
esac
