#!/usr/bin/env bash
# Broker scale test: one broker (--insecure, fresh SQLite store) and NODES
# simulated nodes served by ONE bench/fake_agents process (see its header:
# 1,000 iommu-agent processes do not fit on 2 cores, and the broker is what is
# measured), then CONTAINERS containers created through the broker with
# placement by selector. Measures:
#   - placement (CreateContainer by selector + DeleteContainer) and list
#     latency when the broker is empty and again at size (bench/loadgen,
#     mixes noop, place, list; concurrency 1 and 16);
#   - the fill itself (containers/s), the broker's RSS at size;
#   - start-up: the broker restarted on the full store, time until it serves
#     (its port file is written after the store is loaded and the server
#     listens) and until every node has re-registered and is READY again;
#   - the fake agents' heartbeat latency (they heartbeat at the broker's
#     interval, default 1 s: NODES heartbeats/s) and how many times a node
#     timed out, before, during and after the fill. Real agents heartbeat
#     each on its own; the fake ones use HEARTBEAT_THREADS synchronous
#     threads (default NODES/25, at least 8), so a heartbeat slower than
#     HEARTBEAT_THREADS/NODES seconds delays the next nodes' beats and shows
#     as the harness's lateness, not the broker's. Registrations, at start
#     and after the restart, run on as many threads of their own (real
#     agents register each on its own).
# The fill names each container's node and device (round-robin over the
# nodes) unless -S, which fills by selector (placement reads the broker's
# placement index, O(log nodes) per create; before it, a walk over every
# node's devices made a fill by selector take an hour at 1,000 nodes).
# Placement latency is measured by selector either way, empty and at size.
# If the fill does not reach CONTAINERS within FILL_MAX_S, what it reached is
# reported and measured.
#
#   RESULTS/scale.csv          loadgen rows, label "empty" or "at_size"
#   RESULTS/scale-summary.csv  key,value: nodes, containers, rss, start-up ...
#   RESULTS/scale.txt          everything printed, incl. fake_agents' stats
#
# Usage: bench/scale.sh [-o RESULTS] [-n NODES] [-N CONTAINERS] [-t FILL_MAX_S]
#                       [-d SECONDS] [-b HEARTBEAT_MS] [-H HEARTBEAT_THREADS] [-S]
#                       [-F "BROKER FLAGS"]
#   defaults: bench/results, 1000 nodes, 100000 containers, 600 s, 5 s, 1000 ms
#   (the broker's node timeout is set to 5 heartbeat intervals, its default ratio);
#   -F adds flags to both broker starts, e.g. -F --max-concurrent-registrations=0
# Environment: BAZEL, BAZEL_STARTUP_OPTS, BENCH_BIN_DIR (loadgen, fake_agents,
# iommu-broker), BENCH_TMP as in bench/broker_load.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench/results
nodes=1000
containers=100000
fill_max=600
dur=5
hb_ms=1000
hb_threads=""
fill_how=--fill_explicit
broker_flags=()
while getopts "o:n:N:t:d:b:H:SF:h" opt; do
  case "$opt" in
    o) out="$OPTARG" ;;
    n) nodes="$OPTARG" ;;
    N) containers="$OPTARG" ;;
    t) fill_max="$OPTARG" ;;
    d) dur="$OPTARG" ;;
    b) hb_ms="$OPTARG" ;;
    H) hb_threads="$OPTARG" ;;
    S) fill_how=--nofill_explicit ;;
    F) read -r -a broker_flags <<< "$OPTARG" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
[ -n "$hb_threads" ] || hb_threads=$(( nodes / 25 > 8 ? nodes / 25 : 8 ))
# 10% spare devices so placement never runs out at CONTAINERS.
devices_per_node=$(( (containers * 11 / 10 + nodes - 1) / nodes + 1 ))

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  LOADGEN=$BENCH_BIN_DIR/loadgen BROKER=$BENCH_BIN_DIR/iommu-broker FAKE=$BENCH_BIN_DIR/fake_agents
else
  BAZEL="${BAZEL:-bazel}"
  read -r -a startup <<< "${BAZEL_STARTUP_OPTS:-}"
  "$BAZEL" "${startup[@]}" build -c opt --symlink_prefix=/ \
    //bench:loadgen //bench:fake_agents //server:iommu-broker
  bin="$("$BAZEL" "${startup[@]}" info -c opt --symlink_prefix=/ bazel-bin 2>/dev/null)"
  LOADGEN=$bin/bench/loadgen BROKER=$bin/server/iommu-broker FAKE=$bin/bench/fake_agents
fi

mkdir -p "$out"
tmp=$(mktemp -d "${BENCH_TMP:-/tmp}/broker-scale.XXXXXX")
BROKER_PID="" FAKE_PID=""
stop() {  # PID...: SIGTERM and wait
  for p in "$@"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
trap 'stop "$FAKE_PID" "$BROKER_PID"; cp "$tmp/fake.log" "$out/scale-fake_agents.txt" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

log=$out/scale.txt
summary=$out/scale-summary.csv
rm -f "$out/scale.csv"
echo "key,value" > "$summary"
note() { echo "$1,$2" >> "$summary"; echo "  $1 = $2" | tee -a "$log"; }
now_ms() { date +%s%3N; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# A fixed port, so the fake agents find the broker again after its restart.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BROKER_ADDR=127.0.0.1:$port
start_broker() {  # sets BROKER_PID and START_MS (ms to serving)
  rm -f "$tmp/broker.port"
  local t0
  t0=$(now_ms)
  "$BROKER" --insecure --listen="$BROKER_ADDR" --db="$tmp/broker.db" --port-file="$tmp/broker.port" \
    --heartbeat-interval-ms="$hb_ms" --node-timeout-ms=$((hb_ms * 5)) "${broker_flags[@]}" \
    2>>"$tmp/broker.log" &
  BROKER_PID=$!
  for _ in $(seq 1 60000); do
    [ -s "$tmp/broker.port" ] && break
    kill -0 "$BROKER_PID" 2>/dev/null || { tail "$tmp/broker.log" >&2; exit 1; }
    sleep 0.01
  done
  START_MS=$(( $(now_ms) - t0 ))
}

echo "== scale: $nodes nodes x $devices_per_node devices, target $containers containers," \
  "heartbeat ${hb_ms} ms ($(date -u +%FT%TZ))" | tee "$log"
note nodes "$nodes"
note devices_per_node "$devices_per_node"
note heartbeat_interval_ms "$hb_ms"
note containers_target "$containers"
note heartbeat_threads "$hb_threads"
note broker_flags "${broker_flags[*]:-}"

start_broker
note start_ms_empty "$START_MS"
"$FAKE" --broker="$BROKER_ADDR" --nodes="$nodes" --devices_per_node="$devices_per_node" \
  --heartbeat_threads="$hb_threads" --register_threads="$hb_threads" --ready_file="$tmp/fake.ready" > "$tmp/fake.log" 2>&1 &
FAKE_PID=$!
t0=$(now_ms)
"$LOADGEN" --broker="$BROKER_ADDR" --wait_nodes="$nodes" --mixes= | tee -a "$log"
note register_all_nodes_ms "$(( $(now_ms) - t0 ))"
note broker_rss_kb_nodes_only "$(rss_kb "$BROKER_PID")"

echo "== latency with $nodes nodes and no containers" | tee -a "$log"
"$LOADGEN" --broker="$BROKER_ADDR" --mixes=noop,place,list --concurrency=1,16 \
  --duration_s="$dur" --warmup_s=1 --csv="$out/scale.csv" --label=empty | tee -a "$log"

timeouts() { grep -c 'event=node_unavailable' "$tmp/broker.log" || true; }
note nodes_timed_out_before_fill "$(timeouts)"

echo "== fill: $containers containers ($fill_how), 100 tenants, 32 outstanding" | tee -a "$log"
note fill_mode "${fill_how#--}"
t0=$(now_ms)
"$LOADGEN" --broker="$BROKER_ADDR" --fill="$containers" --fill_tenants=100 --fill_concurrency=32 \
  --fill_max_s="$fill_max" "$fill_how" --mixes= | tee "$tmp/fill.txt" | tee -a "$log"
fill_ms=$(( $(now_ms) - t0 ))
made=$(sed -n 's/^fill: created \([0-9]*\) .*/\1/p' "$tmp/fill.txt")
note containers_created "${made:-0}"
note fill_s "$(awk -v m="$fill_ms" 'BEGIN {printf "%.1f", m / 1000}')"
note fill_per_s "$(awk -v m="$fill_ms" -v n="${made:-0}" 'BEGIN {printf "%.0f", n * 1000 / m}')"
note broker_rss_kb_at_size "$(rss_kb "$BROKER_PID")"
note broker_hwm_kb_at_size "$(hwm_kb "$BROKER_PID")"
note fake_agents_rss_kb "$(rss_kb "$FAKE_PID")"
note nodes_timed_out_by_end_of_fill "$(timeouts)"

echo "== latency at size" | tee -a "$log"
"$LOADGEN" --broker="$BROKER_ADDR" --mixes=noop,place,list --concurrency=1,16 \
  --duration_s="$dur" --warmup_s=1 --csv="$out/scale.csv" --label=at_size | tee -a "$log"
note broker_cpu_s_total "$(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$BROKER_PID/stat")"

note nodes_timed_out_before_restart "$(timeouts)"

echo "== restart on the full store" | tee -a "$log"
stop "$BROKER_PID"
mv "$tmp/broker.log" "$tmp/broker-1.log"
sqlite3 "$tmp/broker.db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null 2>&1 || true
note store_bytes "$(du -cb "$tmp"/broker.db* | awk 'END {print $1}')"
t0=$(now_ms)
start_broker
note start_ms_at_size "$START_MS"
note broker_rss_kb_after_start "$(rss_kb "$BROKER_PID")"
"$LOADGEN" --broker="$BROKER_ADDR" --wait_nodes="$nodes" --mixes= | tee -a "$log"
note restart_to_all_nodes_ready_ms "$(( $(now_ms) - t0 ))"
sleep 3
note broker_rss_kb_after_restart_ready "$(rss_kb "$BROKER_PID")"

echo "== fake_agents' heartbeat stats (every 10 s; hb_* in us)" | tee -a "$log"
cat "$tmp/fake.log" | tee -a "$log"
note nodes_timed_out_after_restart "$(grep -c 'event=node_unavailable' "$tmp/broker.log" || true)"
echo "   -> $out/scale.csv $summary $log"
