#!/usr/bin/env bash
# The systemd units in deploy/systemd are accepted by systemd as shipped:
#   * `systemd-analyze verify` prints nothing (it reports unknown keys, bad
#     values and missing binaries as warnings and still exits 0, so any output
#     is a failure). It needs ExecStart= to exist, so the units are checked in
#     a temporary copy whose ExecStart points at the binaries just built;
#   * their hardening stays where it is: `systemd-analyze security --offline`
#     exposure at most 2.0 (agent) and 1.5 (broker), and the agent's grant is
#     exactly CAP_IPC_LOCK, LimitMEMLOCK=infinity and the VFIO/iommufd devices;
#   * the sysusers.d file parses (`systemd-sysusers --dry-run`);
#   * every --flag in ExecStart= is one the daemon defines (its --help), spelled
#     with '-' (the '_' spellings are deprecated);
#   * the environment-file examples name only variables and flags that exist.
# Fails, never skips, when a tool is missing (scripts/setup.sh installs systemd
# and etcd-server).
set -euo pipefail

cd "${TEST_SRCDIR:?run under bazel test}/${TEST_WORKSPACE:?}"
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"
WORK="${TEST_TMPDIR:?}/systemd"
mkdir -p "$WORK"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

for tool in systemd-analyze systemd-sysusers; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (apt-get install systemd)" >&2; exit 1; }
done

exec_start() {  # UNIT: its ExecStart= with the continuation lines joined
  awk '/^ExecStart=/ { on = 1 } on { line = $0; cont = sub(/\\$/, "", line); printf "%s ", line; if (!cont) exit }' "$1"
}

declare -A BINARY=(
  [iommu-broker]="$PWD/server/iommu-broker"
  [iommu-agent]="$PWD/agent/iommu-agent"
)

for unit in iommu-broker iommu-agent; do
  src="deploy/systemd/$unit.service"
  bin="${BINARY[$unit]}"
  [ -x "$bin" ] || { fail "$bin is not an executable"; continue; }
  grep -q "^ExecStart=/usr/local/bin/$unit " "$src" || fail "$src: ExecStart= is not /usr/local/bin/$unit"
  sed "s#^ExecStart=/usr/local/bin/$unit #ExecStart=$bin #" "$src" >"$WORK/$unit.service"

  # 1. verify: silent, or it failed.
  out="$(cd "$WORK" && systemd-analyze verify "./$unit.service" 2>&1)" || fail "$unit: verify exited $?"
  if [ -n "$out" ]; then
    fail "$unit: systemd-analyze verify printed:"
    echo "$out" | sed 's/^/    /' >&2
  fi

  # 2. flags: each --name in ExecStart= is defined by the binary.
  known="$("$bin" --help 2>&1 | sed -n 's/^  --\([a-z0-9-]*\)$/\1/p' | sort -u)" || true
  [ -n "$known" ] || fail "$unit: --help lists no flags"
  used="$(exec_start "$src" | grep -o -- ' --[a-z0-9_-]*=' | tr -d ' =' | sed 's/^--//' | sort -u)"
  for flag in $used; do
    case "$flag" in *_*) fail "$unit: ExecStart= spells --$flag with '_' (deprecated; use '-')" ;; esac
    grep -qx "$flag" <<<"$known" || fail "$unit: ExecStart= passes --$flag, which $unit does not define"
  done
done

# 3. Hardening budget (systemd's own exposure score, 0 = locked down, 10 = none).
declare -A MAX_EXPOSURE=([iommu-broker]=1.5 [iommu-agent]=2.0)
for unit in iommu-broker iommu-agent; do
  [ -f "$WORK/$unit.service" ] || continue
  if ! report="$(cd "$WORK" && systemd-analyze security --offline=true \
      --threshold="$(awk -v t="${MAX_EXPOSURE[$unit]}" 'BEGIN { print int(t * 10) }')" \
      "./$unit.service" 2>&1)"; then
    fail "$unit: exposure above ${MAX_EXPOSURE[$unit]}:"
    echo "$report" | grep -E '✗|Overall' | sed 's/^/    /' >&2
  fi
done

# 4. The privilege each unit is given, exactly.
expect_line() {  # FILE LINE: LINE is present verbatim
  grep -qxF -- "$2" "$1" || fail "$1: expected the line '$2'"
}
broker=deploy/systemd/iommu-broker.service
agent=deploy/systemd/iommu-agent.service
for line in "CapabilityBoundingSet=" "AmbientCapabilities=" "NoNewPrivileges=yes" \
    "PrivateDevices=yes" "ProtectSystem=strict" "StateDirectory=iommu-broker" "User=iommu-broker" \
    "Type=notify" "NotifyAccess=main" "WatchdogSec=30s" "RestartPreventExitStatus=2"; do
  expect_line "$broker" "$line"
done
for line in "CapabilityBoundingSet=CAP_IPC_LOCK" "AmbientCapabilities=CAP_IPC_LOCK" \
    "LimitMEMLOCK=infinity" "NoNewPrivileges=yes" "DevicePolicy=closed" "ProtectSystem=strict" \
    "RuntimeDirectory=iommu-agent" "Type=notify" "NotifyAccess=main" "WatchdogSec=30s" \
    "RestartPreventExitStatus=2"; do
  expect_line "$agent" "$line"
done
devices="$(grep '^DeviceAllow=' "$agent" | sort | tr '\n' ' ')"
want="DeviceAllow=/dev/iommu rw DeviceAllow=/dev/vfio/vfio rw DeviceAllow=char-vfio rw DeviceAllow=char-vfio-dev rw "
[ "$devices" = "$want" ] || fail "$agent: DeviceAllow= lines are '$devices', want '$want'"
exec_start "$agent" | grep -q -- ' --launcher-socket=/run/iommu-agent/' ||
  fail "$agent: the launcher socket is not in RuntimeDirectory /run/iommu-agent"

# 5. sysusers.d: parses, and creates the users and groups the units name.
mkdir -p "$WORK/root/etc"
if ! out="$(systemd-sysusers --dry-run --root="$WORK/root" "$PWD/deploy/systemd/iommu-broker.sysusers" 2>&1)"; then
  fail "systemd-sysusers rejected deploy/systemd/iommu-broker.sysusers:"
  echo "$out" | sed 's/^/    /' >&2
fi
grep -q "Creating user 'iommu-broker'" <<<"$out" || fail "sysusers: no user iommu-broker"
grep -q "Creating group 'iommu-launcher'" <<<"$out" || fail "sysusers: no group iommu-launcher"

# 6. The environment files: every variable the broker's example sets is one
# its unit reads, and the --flags inside them are the broker's; every ETCD_X
# of the etcd member's example is a flag (--x) of Debian's etcd.
unit_vars="$(grep -o '\${\?IOMMU_[A-Z_]*' "$broker" | tr -d '${' | sort -u)"
for var in $(sed -nE 's/^#?(IOMMU_[A-Z_]+)=.*/\1/p' deploy/systemd/broker.env.example | sort -u); do
  grep -qx "$var" <<<"$unit_vars" || fail "broker.env.example sets $var, which $broker does not read"
done
broker_flags="$("${BINARY[iommu-broker]}" --help 2>&1 | sed -n 's/^  --\([a-z0-9-]*\)$/\1/p' | sort -u)" || true
for flag in $(grep -o -- '--[a-z0-9_-]*=' deploy/systemd/broker.env.example | tr -d '=' | sed 's/^--//' | sort -u); do
  grep -qx "$flag" <<<"$broker_flags" || fail "broker.env.example passes --$flag, which iommu-broker does not define"
done
command -v etcd >/dev/null || { echo "FAIL: etcd not found (apt-get install etcd-server)" >&2; exit 1; }
etcd_flags="$(etcd --help 2>&1 | sed -nE 's/^ *--([a-z0-9-]+).*/\1/p' | sort -u)"
for var in $(sed -nE 's/^(ETCD_[A-Z_]+)=.*/\1/p' deploy/systemd/etcd.env.example); do
  flag="$(tr 'A-Z_' 'a-z-' <<<"${var#ETCD_}")"
  grep -qx "$flag" <<<"$etcd_flags" || fail "etcd.env.example sets $var, but etcd has no --$flag"
done

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "PASS: deploy/systemd units verify cleanly"
