#!/usr/bin/env bash
# How fast a fleet is back after a broker outage: starts a broker (--insecure,
# fresh store) and N sim agents, waits until every node is READY, kills the
# broker (SIGKILL), keeps it away for OUTAGE seconds, starts it again on the
# same port and store, and times how long until every node is READY again.
# Agents retry registration with a capped, jittered backoff
# (--registration_max_backoff, 1 s, never above the heartbeat interval), so
# this should stay within about two heartbeat intervals (--heartbeat_interval_ms,
# 1000 here, the default).
#
#   RESULTS/fleet_return.txt   one line per round: seconds until all READY
#
# Usage: bench/fleet_return.sh [-o RESULTS] [-n AGENTS] [-s OUTAGE_SECONDS] [-r ROUNDS]
# Environment: BAZEL, BAZEL_STARTUP_OPTS, BENCH_BIN_DIR (holding iommu-broker,
# iommu-agent and iommuctl) as in bench/micro.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench/results
agents=10
outage=8
rounds=3
while getopts "o:n:s:r:h" opt; do
  case "$opt" in
    o) out="$OPTARG" ;;
    n) agents="$OPTARG" ;;
    s) outage="$OPTARG" ;;
    r) rounds="$OPTARG" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  BROKER=$BENCH_BIN_DIR/iommu-broker AGENT=$BENCH_BIN_DIR/iommu-agent CTL=$BENCH_BIN_DIR/iommuctl
else
  BAZEL="${BAZEL:-bazel}"
  read -r -a startup <<< "${BAZEL_STARTUP_OPTS:-}"
  "$BAZEL" "${startup[@]}" build -c opt --symlink_prefix=/ \
    //server:iommu-broker //agent:iommu-agent //client:iommuctl
  bin="$("$BAZEL" "${startup[@]}" info -c opt --symlink_prefix=/ bazel-bin 2>/dev/null)"
  BROKER=$bin/server/iommu-broker AGENT=$bin/agent/iommu-agent CTL=$bin/client/iommuctl
fi

mkdir -p "$out"
tmp=$(mktemp -d /tmp/fleet-return.XXXXXX)
PIDS=()
BROKER_PID=
cleanup() {
  kill -KILL ${BROKER_PID:+"$BROKER_PID"} "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap 'cleanup; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
start_broker() {
  "$BROKER" --listen="$addr" --db="$tmp/broker.db" --insecure >>"$tmp/broker.log" 2>&1 &
  BROKER_PID=$!
}
ready_nodes() {
  "$CTL" --insecure --broker="$addr" --timeout=1s node list 2>/dev/null | grep -cw ready || true
}
seconds_since() {  # NANOSECONDS
  awk -v ns=$(($(date +%s%N) - $1)) 'BEGIN { printf "%.2f", ns / 1e9 }'
}
# Waits until every node is READY (gives up after 60 s); prints when the
# broker first answered and when all were READY, in seconds since START_NS.
wait_all_ready() {
  local serving=""
  for _ in $(seq 1 1200); do
    local n
    n=$(ready_nodes)
    if [ -z "$serving" ] && "$CTL" --insecure --broker="$addr" --timeout=1s node list >/dev/null 2>&1; then
      serving=$(seconds_since "$START_NS")
    fi
    if [ "$n" -ge "$agents" ]; then
      echo "broker answering after ${serving}s, all $agents READY after $(seconds_since "$START_NS")s"
      return 0
    fi
    sleep 0.05
  done
  echo "fleet_return: the nodes were not all READY within 60 s" >&2
  return 1
}

START_NS=$(date +%s%N)
start_broker
for i in $(seq 1 "$agents"); do
  "$AGENT" --node="node-$i" --broker="$addr" --backend=sim --insecure \
    --sim-devices="0000:00:04.0=1234:11e8@5" --launcher-socket="$tmp/l$i.sock" \
    --state-dir="$tmp/agent-$i-state" --listen=127.0.0.1:0 >>"$tmp/agent-$i.log" 2>&1 &
  PIDS+=($!)
done
wait_all_ready >/dev/null

# The rounds run in this shell, not in a pipeline's subshell: a broker
# restarted there was not the one cleanup kills, and it held the pipe open,
# so the script never ended.
report=$out/fleet_return.txt
: >"$report"
say() { echo "$*" | tee -a "$report"; }
say "== fleet return: $agents sim agents, broker away ${outage}s (SIGKILL), $(date -u +%FT%TZ)"
for r in $(seq 1 "$rounds"); do
  kill -KILL "$BROKER_PID"
  wait "$BROKER_PID" 2>/dev/null || true
  sleep "$outage"
  START_NS=$(date +%s%N)
  start_broker
  say "round $r: $(wait_all_ready) (since the broker's restart)"
done
