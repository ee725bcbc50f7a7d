#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts the broker on its
# embedded SQLite store and one agent on the SIMULATED backend, then drives a
# short scenario through iommuctl, printing each step.
#
# On a terminal the daemons keep running after the scenario until Ctrl-C;
# otherwise (CI, pipes) everything stops when the scenario ends. Either way
# Ctrl-C stops everything cleanly, and no process of the demo outlives it.
# State lives in .demo/ (wiped each run).
#
# Every step that fails stops the demo with "demo: FAILED: ..." on stderr and
# a non-zero exit, and the demo checks its own headline (the same 64 MiB
# mapped into two containers is billed once; billing back to 0 after the
# launchers exit) before it says "scenario done".
#
# For tests (tests/demo_test.sh): IOMMU_DEMO_BIN=DIR takes the binaries from
# DIR/{server,agent,client,launcher}/ and skips setup.sh and the build;
# IOMMU_DEMO_STATE=DIR keeps state there instead of .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() {
  echo "demo: FAILED: $*" >&2
  exit 1
}
# A command that fails outside a check of its own still says which one.
trap 'echo "demo: FAILED: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

if [ -n "${IOMMU_DEMO_BIN:-}" ]; then
  BIN=$IOMMU_DEMO_BIN
else
  scripts/setup.sh
  echo "==> building"
  bazel build //server:iommu-broker //agent:iommu-agent //client:iommuctl //launcher:iommu-launcher \
    2>&1 | tail -n 2
  BIN=$ROOT/bazel-bin
fi
for b in server/iommu-broker agent/iommu-agent client/iommuctl launcher/iommu-launcher; do
  [ -x "$BIN/$b" ] || die "$BIN/$b: not found or not executable"
done
command -v python3 >/dev/null || die "python3 not found (scripts/setup.sh installs it)"
STATE=${IOMMU_DEMO_STATE:-$ROOT/.demo}
rm -rf "$STATE"
mkdir -p "$STATE"

# Children: the daemons, then the launchers. Each launcher reads its stdin
# from a FIFO whose write end the demo holds, so no helper
# process exists and closing the write end ends the launcher.
PIDS=()
GUEST=""
cleanup() {
  local rc=$?
  trap - INT TERM EXIT ERR
  if [ "${#PIDS[@]}" -gt 0 ]; then
    echo
    echo "==> stopping daemons (SIGTERM)"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
    echo "    stopped; logs in $STATE/"
  fi
  [ -z "$GUEST" ] || rm -f "$GUEST"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_file() {
  for _ in $(seq 1 200); do
    [ -s "$1" ] && return 0
    sleep 0.05
  done
  echo "demo: $2 did not start; its log:" >&2
  cat "$3" >&2
  die "$2 did not start"
}

echo "==> making a dev CA and certificates (deploy/make-dev-certs.sh): every channel is mTLS"
deploy/make-dev-certs.sh --out "$STATE/certs" --agent node-1 --tenant acme | sed 's/^/    /'
CERTS=$STATE/certs
tls() { echo "--tls-cert=$CERTS/$1.crt" "--tls-key=$CERTS/$1.key" "--tls-ca=$CERTS/ca.crt"; }

echo "==> starting the broker (embedded SQLite store at $STATE/broker.db, mTLS on loopback)"
# shellcheck disable=SC2046
"$BIN/server/iommu-broker" --listen=127.0.0.1:0 --db="$STATE/broker.db" $(tls broker) \
  --port-file="$STATE/broker.port" >"$STATE/broker.log" 2>&1 &
PIDS+=($!)
wait_for_file "$STATE/broker.port" broker "$STATE/broker.log"
export IOMMU_BROKER="127.0.0.1:$(cat "$STATE/broker.port")"
echo "    broker at $IOMMU_BROKER"

echo "==> starting one agent, node-1, on the SIMULATED backend (no real IOMMU, no real DMA)"
# shellcheck disable=SC2046
"$BIN/agent/iommu-agent" --node=node-1 --broker="$IOMMU_BROKER" --backend=sim $(tls agent-node-1) \
  --sim-devices=0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,0000:00:06.0=8086:1533@7 \
  --launcher-socket="$STATE/launcher.sock" --port-file="$STATE/agent.port" \
  --state-dir="$STATE/agent-state" \
  >"$STATE/agent.log" 2>&1 &
PIDS+=($!)
wait_for_file "$STATE/agent.port" agent "$STATE/agent.log"
sed -n '1,10p' "$STATE/agent.log"

CTL="$BIN/client/iommuctl"
# iommuctl acts as the operator; its identity is the certificate's SAN URI.
export IOMMUCTL_CERT=$CERTS/operator-admin.crt IOMMUCTL_KEY=$CERTS/operator-admin.key
export IOMMUCTL_CA=$CERTS/ca.crt
ready=0
for _ in $(seq 1 100); do
  if "$CTL" node get node-1 2>/dev/null | grep -q "ready"; then ready=1; break; fi
  sleep 0.1
done
[ "$ready" = 1 ] || die "node-1 did not become ready in 10s; agent log: $STATE/agent.log"

step() {  # step ARGS...: shows and runs `iommuctl ARGS`; a refusal ends the demo.
  echo
  echo "\$ iommuctl $*"
  "$CTL" "$@" || die "iommuctl $* exited $?"
}

ctl_json() {  # ctl_json ARGS...: `iommuctl -o json ARGS` for the script itself.
  "$CTL" -o json "$@" || die "iommuctl -o json $* exited $?"
}

json() {  # json EXPR < JSON: prints the Python expression EXPR over the document d.
  python3 -c 'import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1], {"d": d})
print("\n".join(map(str, v)) if isinstance(v, list) else v)' "$1"
}

# usage_is PINNED MAPPED SAVED: acme's usage is exactly that, in bytes.
usage_is() {
  [ "$(ctl_json usage --tenant=acme |
       json '"%s %s %s" % tuple(d["tenants"][0][k] for k in ("pinned_bytes", "mapped_bytes", "dedup_saved_bytes"))')" \
    = "$1 $2 $3" ]
}
# await_usage PINNED MAPPED SAVED WHAT: waits up to 10s (heartbeats carry the
# ledger to the broker) for acme's usage to be that; dies naming WHAT if not.
await_usage() {
  for _ in $(seq 1 100); do
    usage_is "$1" "$2" "$3" && return 0
    sleep 0.1
  done
  echo "demo: acme's usage is not what it should be; iommuctl usage says:" >&2
  "$CTL" usage --tenant=acme >&2 || true
  die "$4 (want pinned=$1 mapped=$2 dedup-saved=$3 bytes)"
}

MiB=$((1 << 20))
LAUNCHER_WINDOW_SIZE=$((1 << 30))  # The window each launcher maps its 64 MiB into.

step tenant create acme --pinned=1Gi --max-containers=4
step node list
step device list --node=node-1
# Each container is named after the VM it serves; every command below takes
# the name where it takes an id.
C1=vm-a
C2=vm-b
step container create --tenant=acme --node=node-1 --device=0000:00:04.0 --budget=512Mi \
  --name=$C1 --label=demo=dedup
step window allocate $C1 --size=1Gi --align=1Gi
step window allocate $C1 --size=2Mi
step container create --tenant=acme --node=node-1 --device=0000:00:05.0 --name=$C2 --label=demo=dedup
[ "$(ctl_json container list -l demo=dedup | json 'len(d["containers"])')" = 2 ] ||
  die "container list -l demo=dedup does not show both containers"
step window allocate $C2 --size=1Gi --base=0x100000000
step usage --tenant=acme

echo
echo "==> as tenant acme (its own certificate): its containers only, and no node management"
as_acme() { IOMMUCTL_CERT=$CERTS/tenant-acme.crt IOMMUCTL_KEY=$CERTS/tenant-acme.key "$@"; }
as_acme step container list
echo
echo "\$ iommuctl node cordon node-1"
rc=0
as_acme "$CTL" node cordon node-1 2>"$STATE/cordon.err" || rc=$?
sed 's/^/    /' "$STATE/cordon.err"
[ "$rc" = 1 ] && grep -q PERMISSION_DENIED "$STATE/cordon.err" ||
  die "a tenant's node cordon was not refused with PERMISSION_DENIED (exit $rc)"
echo "    (refused, exit $rc: tenants cannot manage nodes)"

echo
echo "==> two VM launchers map the SAME 64 MiB of guest memory, one into each container"
GUEST=/dev/shm/iommu-broker-demo-$$
truncate -s 64M "$GUEST"
for c in "$C1" "$C2"; do
  TOKEN=$("$CTL" container grant "$c" --token-only) || die "iommuctl container grant $c failed"
  # The launcher's window is the 1 GiB one (C1 also has a 2 MiB window, and
  # windows list in id order, which is random).
  base=$(ctl_json window list --container="$c" |
         json '[w["base"] for w in d["windows"] if int(w["size"]) == '"$LAUNCHER_WINDOW_SIZE"']')
  [ "$(echo "$base" | grep -c .)" = 1 ] ||
    die "container $c: expected one window of $LAUNCHER_WINDOW_SIZE bytes, found: ${base:-none}"
  base=$(printf '0x%x' "$base")
  log="$STATE/launcher-$c.log"
  fifo="$STATE/launcher-$c.stdin"
  mkfifo "$fifo"
  echo "\$ IOMMU_LAUNCHER_TOKEN=… iommu-launcher --socket=$STATE/launcher.sock --file=$GUEST --map=0:64Mi@$base --hold"
  IOMMU_LAUNCHER_TOKEN=$TOKEN "$BIN/launcher/iommu-launcher" --socket="$STATE/launcher.sock" \
    --file="$GUEST" --map="0:64Mi@$base" --hold <"$fifo" >"$log" 2>&1 &
  PIDS+=($!)
  # Its stdin stays open (no EOF) while the demo holds the FIFO's write end;
  # no helper process is needed, and the fd closes when the demo exits.
  exec {fd}>"$fifo"
  started=0
  for _ in $(seq 1 100); do
    if grep -q '^ready' "$log"; then started=1; break; fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  sed 's/^/    /' "$log"
  [ "$started" = 1 ] || die "iommu-launcher for $c did not map its memory (log above)"
done
rm -f "$GUEST"  # The agent and the launchers hold it open; the name is not needed.
GUEST=""
await_usage $((64 * MiB)) $((128 * MiB)) $((64 * MiB)) \
  "the same 64 MiB mapped into two containers is not billed once"
echo "    (billed once, mapped twice: DEDUP-SAVED is what double billing would have cost)"
step usage --tenant=acme
step top
step describe container "$C1"

echo
echo "==> the launchers exit; their mappings and billing go with them"
kill -TERM "${PIDS[@]:2}" 2>/dev/null || true
wait "${PIDS[@]:2}" 2>/dev/null || true
PIDS=("${PIDS[@]:0:2}")
await_usage 0 0 0 "billing did not go back to 0 after the launchers exited"
step usage --tenant=acme
WINDOW=$(ctl_json window list --container="$C1" | json 'd["windows"][0]["id"]')
step window release "$WINDOW"
step container delete "$C1"
step container delete "$C2"
step tenant delete acme
step node get node-1

echo
echo "==> scenario done: the same 64 MiB mapped into two containers was billed once"
echo "    (pinned 64MiB, mapped 128MiB, DEDUP-SAVED 64MiB) and billing went back to 0"
echo "    when the launchers exited."
if [ -t 0 ] && [ -t 1 ]; then
  echo "    The daemons keep running. Try:"
  echo "      export IOMMU_BROKER=$IOMMU_BROKER IOMMUCTL_CA=$IOMMUCTL_CA \\"
  echo "        IOMMUCTL_CERT=$IOMMUCTL_CERT IOMMUCTL_KEY=$IOMMUCTL_KEY"
  echo "      $CTL --help"
  echo "    Press Ctrl-C to stop."
  wait
fi
