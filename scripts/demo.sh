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
bazel build //server:iommu-broker //agent:iommu-agent //client:iommuctl 2>&1 | tail -n 2

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

echo "==> starting the broker (embedded SQLite store at $STATE/broker.db, plaintext on loopback)"
"$BIN/server/iommu-broker" --listen=127.0.0.1:0 --db="$STATE/broker.db" \
  --port_file="$STATE/broker.port" 2>"$STATE/broker.log" &
PIDS+=($!)
wait_for_file "$STATE/broker.port" broker "$STATE/broker.log"
export IOMMU_BROKER="127.0.0.1:$(cat "$STATE/broker.port")"
echo "    broker at $IOMMU_BROKER"

echo "==> starting one agent, node-1, on the SIMULATED backend (no real IOMMU, no real DMA)"
"$BIN/agent/iommu-agent" --node=node-1 --broker="$IOMMU_BROKER" --backend=sim \
  --sim_devices=0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,0000:00:06.0=8086:1533@7 \
  --launcher_socket="$STATE/launcher.sock" --port_file="$STATE/agent.port" \
  2>"$STATE/agent.log" &
PIDS+=($!)
wait_for_file "$STATE/agent.port" agent "$STATE/agent.log"
sed -n '1,10p' "$STATE/agent.log"

CTL="$BIN/client/iommuctl"
for _ in $(seq 1 100); do
  "$CTL" node get node-1 2>/dev/null | grep -q "ready" && break
  sleep 0.1
done

step() {
  echo
  echo "\$ iommuctl $*"
  "$CTL" "$@"
}

step tenant create acme --pinned=4G --max-containers=4
step node list
step device list --node=node-1
step container create --tenant=acme --node=node-1 --device=0000:00:04.0
CONTAINER=$("$CTL" -o json container list --tenant=acme |
  sed -n 's/.*"id": "\(c-[0-9a-f]*\)".*/\1/p' | head -n 1)
step window allocate "$CONTAINER" --size=1G --align=1G
step window allocate "$CONTAINER" --size=2M
step window list --container="$CONTAINER"
step usage --tenant=acme
WINDOW=$("$CTL" -o json window list --container="$CONTAINER" |
  sed -n 's/.*"id": "\(w-[0-9a-f]*\)".*/\1/p' | head -n 1)
step window release "$WINDOW"
step container delete "$CONTAINER"
step tenant delete acme
step node get node-1

echo
echo "==> scenario done."
if [ -t 0 ]; then
  echo "    The daemons keep running: export IOMMU_BROKER=$IOMMU_BROKER and try"
  echo "    $CTL --help.  Press Ctrl-C to stop."
  wait
fi
