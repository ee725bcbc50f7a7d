#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts the broker on its
# embedded SQLite store and one agent on the SIMULATED backend, then drives a
# short scenario through iommuctl, printing each step.
#
# On a terminal the daemons keep running after the scenario until Ctrl-C;
# otherwise (CI, pipes) everything stops when the scenario ends. Either way
# Ctrl-C stops everything cleanly. State lives in .demo/ (wiped each run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

scripts/setup.sh
echo "==> building"
bazel build //server:iommu-broker //agent:iommu-agent //client:iommuctl //launcher:iommu-launcher \
  2>&1 | tail -n 2

BIN=$ROOT/bazel-bin
STATE=$ROOT/.demo
rm -rf "$STATE"
mkdir -p "$STATE"

PIDS=()
cleanup() {
  trap - INT TERM EXIT
  if [ "${#PIDS[@]}" -gt 0 ]; then
    echo
    echo "==> stopping daemons (SIGTERM)"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
    echo "    stopped; logs in $STATE/"
  fi
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
  exit 1
}

echo "==> making a dev CA and certificates (deploy/make-dev-certs.sh): every channel is mTLS"
deploy/make-dev-certs.sh --out "$STATE/certs" --agent node-1 --tenant acme | sed 's/^/    /'
CERTS=$STATE/certs
tls() { echo "--tls_cert=$CERTS/$1.crt" "--tls_key=$CERTS/$1.key" "--tls_ca=$CERTS/ca.crt"; }

echo "==> starting the broker (embedded SQLite store at $STATE/broker.db, mTLS on loopback)"
# shellcheck disable=SC2046
"$BIN/server/iommu-broker" --listen=127.0.0.1:0 --db="$STATE/broker.db" $(tls broker) \
  --port_file="$STATE/broker.port" 2>"$STATE/broker.log" &
PIDS+=($!)
wait_for_file "$STATE/broker.port" broker "$STATE/broker.log"
export IOMMU_BROKER="127.0.0.1:$(cat "$STATE/broker.port")"
echo "    broker at $IOMMU_BROKER"

echo "==> starting one agent, node-1, on the SIMULATED backend (no real IOMMU, no real DMA)"
# shellcheck disable=SC2046
"$BIN/agent/iommu-agent" --node=node-1 --broker="$IOMMU_BROKER" --backend=sim $(tls agent-node-1) \
  --sim_devices=0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,0000:00:06.0=8086:1533@7 \
  --launcher_socket="$STATE/launcher.sock" --port_file="$STATE/agent.port" \
  --state_dir="$STATE/agent-state" \
  2>"$STATE/agent.log" &
PIDS+=($!)
wait_for_file "$STATE/agent.port" agent "$STATE/agent.log"
sed -n '1,10p' "$STATE/agent.log"

CTL="$BIN/client/iommuctl"
# iommuctl acts as the operator; its identity is the certificate's SAN URI.
export IOMMUCTL_CERT=$CERTS/operator-admin.crt IOMMUCTL_KEY=$CERTS/operator-admin.key
export IOMMUCTL_CA=$CERTS/ca.crt
for _ in $(seq 1 100); do
  "$CTL" node get node-1 2>/dev/null | grep -q "ready" && break
  sleep 0.1
done

step() {
  echo
  echo "\$ iommuctl $*"
  "$CTL" "$@"
}

json_field() {  # json_field KEY < json: the first string value of KEY
  sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p" | head -n 1
}

step tenant create acme --pinned=1G --max-containers=4
step node list
step device list --node=node-1
step container create --tenant=acme --node=node-1 --device=0000:00:04.0 --budget=512M
C1=$("$CTL" -o json container list --tenant=acme | json_field id)
step window allocate "$C1" --size=1G --align=1G
step window allocate "$C1" --size=2M
step container create --tenant=acme --node=node-1 --device=0000:00:05.0
# Ids are random, so list order says nothing about which is new: take the one that is not C1.
C2=$("$CTL" -o json container list --tenant=acme | sed -n 's/.*"id": "\(c-[0-9a-f]*\)".*/\1/p' \
  | grep -vx "$C1" | head -n 1)
step window allocate "$C2" --size=1G --base=0x100000000
step usage --tenant=acme

echo
echo "==> as tenant acme (its own certificate): its containers only, and no node management"
as_acme() { IOMMUCTL_CERT=$CERTS/tenant-acme.crt IOMMUCTL_KEY=$CERTS/tenant-acme.key step "$@"; }
as_acme container list
as_acme node cordon node-1 || echo "    (refused, exit $?: tenants cannot manage nodes)"

echo
echo "==> two VM launchers map the SAME 64 MiB of guest memory, one into each container"
GUEST=/dev/shm/iommu-broker-demo-$$
truncate -s 64M "$GUEST"
for c in "$C1" "$C2"; do
  TOKEN=$("$CTL" container grant "$c" --token-only)
  base=$("$CTL" -o json window list --container="$c" | json_field base)
  echo "\$ IOMMU_LAUNCHER_TOKEN=… iommu-launcher --socket=$STATE/launcher.sock --file=$GUEST --map=0:64M@$base --hold"
  IOMMU_LAUNCHER_TOKEN=$TOKEN "$BIN/launcher/iommu-launcher" --socket="$STATE/launcher.sock" \
    --file="$GUEST" --map="0:64M@$base" --hold < <(sleep 3600) > "$STATE/launcher-$c.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q '^ready' "$STATE/launcher-$c.log" && break; sleep 0.1; done
  sed 's/^/    /' "$STATE/launcher-$c.log"
done
rm -f "$GUEST"  # The agent and the launchers hold it open; the name is not needed.
sleep 2  # One heartbeat carries the ledger to the broker.
echo "    (billed once, mapped twice: DEDUP-SAVED is what double billing would have cost)"
step usage --tenant=acme
step top
step describe container "$C1"

echo
echo "==> the launchers exit; their mappings and billing go with them"
kill -TERM "${PIDS[@]:2}" 2>/dev/null || true
wait "${PIDS[@]:2}" 2>/dev/null || true
PIDS=("${PIDS[@]:0:2}")
sleep 2
step usage --tenant=acme
WINDOW=$("$CTL" -o json window list --container="$C1" | json_field id)
step window release "$WINDOW"
step container delete "$C1"
step container delete "$C2"
step tenant delete acme
step node get node-1

echo
echo "==> scenario done."
if [ -t 0 ]; then
  echo "    The daemons keep running. Try:"
  echo "      export IOMMU_BROKER=$IOMMU_BROKER IOMMUCTL_CA=$IOMMUCTL_CA \\"
  echo "        IOMMUCTL_CERT=$IOMMUCTL_CERT IOMMUCTL_KEY=$IOMMUCTL_KEY"
  echo "      $CTL --help"
  echo "    Press Ctrl-C to stop."
  wait
fi
