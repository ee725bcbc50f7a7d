#!/usr/bin/env bash
# Broker HA benchmark (issue 14): a 3-member etcd cluster (Debian's
# etcd-server, loopback, free ports picked just before, all data under one
# temp dir), 3 broker replicas on it (--store=etcd://, plaintext --insecure,
# --leader-ttl-seconds from -L) and one iommu-agent on the simulated backend
# with 128 devices, registered through the list of replicas. Then:
#
#  1. Throughput, unless -R: at each concurrency of -C, bench/loadgen's
#     mutate mix through the 3 replicas (one channel to the list of their
#     addresses: it reaches the leader), then bench/etcd_load's txn (compare
#     mod_revision + 2 puts) against the same cluster, through the member the
#     brokers use, seconds apart, same client shape. Goal: brokers >= 0.8x
#     etcd's txn rate at 32 clients.
#  2. Failover, unless -F: bench/ha_failover, one writer acknowledged
#     continuously (request ids, wait_for_ready), the leader killed -9 -N
#     times; each trial measures the kill to the first write acknowledged
#     after it, starts the killed replica again as a standby and waits until
#     the writer is acknowledged again. Goal: p50 < 3 s, max < 5 s.
#
#   RESULTS/ha_vs_etcd.csv   brokers (label ha-brokers) and etcd (label etcd-3)
#                            rows, loadgen's columns (bench/load_table.h)
#   RESULTS/ha_vs_etcd.txt   those tables and the brokers/etcd txn ratios
#   RESULTS/ha_failover.csv  one row per trial (bench/ha_failover.cc)
#   RESULTS/ha_failover.txt  the trials, p50, max and the goals, and where the
#                            time went (from the brokers' logs)
#   RESULTS/ha_failover_phases.csv  per trial: kill -> new leader leading,
#                            -> serving, -> acknowledged (seconds)
#   RESULTS/ha-env.txt       machine, flags, etcd members and who led
# Plot: bench/plot.sh ha_failover (docs/bench/ha_failover.png).
# About 3-4 minutes with the defaults.
#
# Usage: bench/ha_load.sh [-o RESULTS] [-d SECONDS] [-C CONCURRENCY_LIST]
#                         [-n TRIALS] [-L TTL_SECONDS] [-R] [-F]
#   RESULTS      default bench/results
#   SECONDS      measured seconds per (side, concurrency); default 5 (+1 warm-up)
#   CONCURRENCY  default 1,32
#   TRIALS       leader kills; default 20
#   TTL_SECONDS  the brokers' --leader-ttl-seconds; default 2, the broker's own
#   -R           skip the throughput phase
#   -F           skip the failover trials
# Environment: BAZEL, BAZEL_STARTUP_OPTS, BENCH_BIN_DIR as in bench/micro.sh
# (BENCH_BIN_DIR must then hold loadgen, etcd_load, ha_failover, iommu-broker
# and iommu-agent); BENCH_TMP: where etcd's data lives (default: mktemp -d
# under /tmp); BENCH_KEEP=1 keeps that dir (every daemon's log) and names it;
# ETCD: the etcd binary (default /usr/bin/etcd).
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench/results
dur=5
conc=1,32
trials=20
ttl=2
throughput=1
failover=1
while getopts "o:d:C:n:L:RFh" opt; do
  case "$opt" in
    o) out="$OPTARG" ;;
    d) dur="$OPTARG" ;;
    C) conc="$OPTARG" ;;
    n) trials="$OPTARG" ;;
    L) ttl="$OPTARG" ;;
    R) throughput=0 ;;
    F) failover=0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  bin=$BENCH_BIN_DIR
  LOADGEN=$bin/loadgen ETCD_LOAD=$bin/etcd_load FAILOVER=$bin/ha_failover
  BROKER=$bin/iommu-broker AGENT=$bin/iommu-agent
else
  BAZEL="${BAZEL:-bazel}"
  read -r -a startup <<< "${BAZEL_STARTUP_OPTS:-}"
  "$BAZEL" "${startup[@]}" build -c opt --symlink_prefix=/ //bench:loadgen //bench:etcd_load \
    //bench:ha_failover //server:iommu-broker //agent:iommu-agent
  bin="$("$BAZEL" "${startup[@]}" info -c opt --symlink_prefix=/ bazel-bin 2>/dev/null)"
  LOADGEN=$bin/bench/loadgen ETCD_LOAD=$bin/bench/etcd_load FAILOVER=$bin/bench/ha_failover
  BROKER=$bin/server/iommu-broker AGENT=$bin/agent/iommu-agent
fi
ETCD="${ETCD:-/usr/bin/etcd}"
if [ ! -x "$ETCD" ]; then
  echo "ha_load: $ETCD is missing: install the Debian package etcd-server" \
    "(scripts/setup.sh does)" >&2
  exit 1
fi
command -v curl >/dev/null || { echo "ha_load: curl missing (reads the brokers' /metrics)" >&2; exit 1; }

mkdir -p "$out"
tmp=$(mktemp -d "${BENCH_TMP:-/tmp}/ha-load.XXXXXX")
PIDS=()
# The brokers are not all children of this shell (ha_failover restarts them
# through $tmp/start-broker), so they are stopped by their pid files.
cleanup() {
  local p pids=()
  for f in "$tmp"/b*.pid; do
    [ -s "$f" ] && p=$(cat "$f") && kill -TERM "$p" 2>/dev/null && pids+=("$p")
  done
  for _ in $(seq 1 60); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.05
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "${#PIDS[@]}" -gt 0 ]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
  PIDS=()
}
if [ "${BENCH_KEEP:-0}" = 1 ]; then
  trap 'cleanup; echo "ha_load: logs kept in $tmp"' EXIT
else
  trap 'cleanup; rm -rf "$tmp"' EXIT
fi
trap 'exit 130' INT TERM

# free_ports N: N distinct loopback ports the kernel had free a moment ago
# (etcd members must know each other's peer URLs before they start, and
# clients the replicas' addresses, so port 0 cannot do here).
free_ports() {
  python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}
read -r -a ports <<< "$(free_ports 12)"
etcd_client=("${ports[@]:0:3}") etcd_peer=("${ports[@]:3:3}")
broker_port=("${ports[@]:6:3}") metrics_port=("${ports[@]:9:3}")

# 128 sim devices 0000:01:00.0 .. 0000:04:1f.0, vendor 1234:11e8, one group each.
sim_devices=$(for i in $(seq 0 127); do
  printf '0000:%02x:%02x.0=1234:11e8@%d\n' $((1 + i / 32)) $((i % 32)) $((100 + i))
done | paste -sd,)

start_etcd_cluster() {
  local cluster="" i
  for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:${etcd_peer[$i]}"; done
  for i in 0 1 2; do
    local c=http://127.0.0.1:${etcd_client[$i]} p=http://127.0.0.1:${etcd_peer[$i]}
    "$ETCD" --name="m$i" --data-dir="$tmp/etcd$i" --listen-client-urls="$c" \
      --advertise-client-urls="$c" --listen-peer-urls="$p" --initial-advertise-peer-urls="$p" \
      --initial-cluster="$cluster" --initial-cluster-state=new \
      --initial-cluster-token=iommu-bench >"$tmp/etcd$i.log" 2>&1 &
    PIDS+=($!)
    ETCD_PIDS+=($!)
  done
  ETCD_ENDPOINTS=$(for i in 0 1 2; do echo "127.0.0.1:${etcd_client[$i]}"; done | paste -sd,)
  for _ in $(seq 1 600); do
    etcdctl --endpoints="$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "ha_load: the etcd cluster did not become healthy; member 0's log:" >&2
  tail -n 20 "$tmp/etcd0.log" >&2
  exit 1
}

# $tmp/start-broker INDEX: starts replica INDEX in the background (pid in
# $tmp/bINDEX.pid, log appended to $tmp/bINDEX.log) and returns once its
# /metrics shows it as leader or standby. ha_failover runs it to restart a
# killed replica, so it is a file, not a function.
write_start_broker() {
  cat >"$tmp/start-broker" <<EOF
#!/bin/sh
set -eu
i=\$1
set -- ${broker_port[*]}; shift "\$i"; port=\$1
set -- ${metrics_port[*]}; shift "\$i"; mport=\$1
"$BROKER" --listen=127.0.0.1:\$port --metrics-address=127.0.0.1:\$mport \\
  --store=etcd://$ETCD_ENDPOINTS --etcd-prefix=/ha-bench --replica-name=b\$i \\
  --leader-ttl-seconds=$ttl --shutdown-grace-ms=500 --insecure >>"$tmp/b\$i.log" 2>&1 &
echo \$! >"$tmp/b\$i.pid"
for _ in \$(seq 1 400); do
  if curl -sf --max-time 1 http://127.0.0.1:\$mport/metrics 2>/dev/null |
      grep -q '^iommu_broker_leader{.*} [01]\$'; then
    exit 0
  fi
  kill -0 "\$(cat "$tmp/b\$i.pid")" 2>/dev/null || break
  sleep 0.05
done
echo "start-broker: replica \$i did not come up; its log:" >&2
tail -n 20 "$tmp/b\$i.log" >&2
exit 1
EOF
  chmod +x "$tmp/start-broker"
}

ETCD_PIDS=()
start_etcd_cluster
write_start_broker
for i in 0 1 2; do "$tmp/start-broker" "$i"; done
BROKERS=$(for i in 0 1 2; do echo "127.0.0.1:${broker_port[$i]}"; done | paste -sd,)
"$AGENT" --node=ha-node --broker="$BROKERS" --listen=127.0.0.1:0 --backend=sim \
  --sim-devices="$sim_devices" --launcher-socket="$tmp/launcher.sock" \
  --state-dir="$tmp/agent-state" --port-file="$tmp/agent.port" --insecure \
  --registration-max-backoff=200ms 2>"$tmp/agent.log" &
PIDS+=($!)
AGENT_PID=$!
for _ in $(seq 1 400); do [ -s "$tmp/agent.port" ] && break; sleep 0.05; done
[ -s "$tmp/agent.port" ] || { echo "ha_load: agent did not start:" >&2; tail -n 20 "$tmp/agent.log" >&2; exit 1; }

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "cpu: $(nproc) x $(lscpu | sed -n 's/^Model name: *//p' | head -n 1); load $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "etcd: $("$ETCD" --version | head -n 1), 3 members, data under $tmp ($(df -T "$tmp" | awk 'NR==2 {print $2" on "$1}'))"
  echo "brokers: 3 replicas, --store=etcd://$ETCD_ENDPOINTS --leader-ttl-seconds=$ttl --insecure"
  echo "agent: one iommu-agent --backend=sim, 128 devices, --broker=<the 3 replicas>"
  echo "loadgen: --broker=<the 3 replicas> --wait_for_ready, one channel, one completion-queue thread, closed loop"
  echo "etcd_load: one channel to member 0 (the brokers' first endpoint), closed loop, 256-byte values"
  etcdctl --endpoints="$ETCD_ENDPOINTS" endpoint status -w simple 2>/dev/null | sed 's/^/etcd status at start: /'
} > "$out/ha-env.txt"

# snapshot FILE: what one write costs, read before and after each side's
# run: CPU seconds of every daemon (/proc/PID/stat utime + stime), the
# brokers' RPC, commit and etcd-call counters, and member 0's raft
# proposals, WAL fsyncs and txns (every member applies every proposal).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
snapshot() {
  local i
  {
    for i in 0 1 2; do echo "cpu_etcd $(cpu_s "${ETCD_PIDS[$i]}")"; done
    for i in 0 1 2; do echo "cpu_brokers $(cpu_s "$(cat "$tmp/b$i.pid")")"; done
    echo "cpu_agent $(cpu_s "$AGENT_PID")"
    for i in 0 1 2; do
      curl -sf --max-time 2 "http://127.0.0.1:${metrics_port[$i]}/metrics" | grep -E \
        '^iommu_broker_(rpc_duration_seconds_count|store_commit_duration_seconds_count|etcd_round_trip_seconds_(count|sum))' \
        || true
    done
    curl -sf --max-time 2 "http://127.0.0.1:${etcd_client[0]}/metrics" | grep -E \
      '^etcd_(server_proposals_committed_total|disk_wal_fsync_duration_seconds_count|mvcc_txn_total) ' \
      || true
  } > "$1"
}

if [ "$throughput" = 1 ]; then
  rm -f "$out/ha_vs_etcd.csv"
  echo "== 3 brokers vs etcd txn on one 3-member cluster: concurrency $conc, ${dur}s each" \
    | tee "$out/ha_vs_etcd.txt"
  IFS=, read -r -a levels <<< "$conc"
  for c in "${levels[@]}"; do
    snapshot "$tmp/snap-brokers-$c-0"
    "$LOADGEN" --broker="$BROKERS" --wait_for_ready --wait_nodes=1 --mixes=mutate \
      --concurrency="$c" --read_containers=0 --duration_s="$dur" --warmup_s=1 \
      --csv="$out/ha_vs_etcd.csv" --label=ha-brokers | tee -a "$out/ha_vs_etcd.txt"
    snapshot "$tmp/snap-brokers-$c-1"
    snapshot "$tmp/snap-etcd-$c-0"
    "$ETCD_LOAD" --endpoint="127.0.0.1:${etcd_client[0]}" --mixes=txn --concurrency="$c" \
      --duration_s="$dur" --warmup_s=1 --key_prefix=ha-etcd-load/ \
      --csv="$out/ha_vs_etcd.csv" --label=etcd-3 | tee -a "$out/ha_vs_etcd.txt"
    snapshot "$tmp/snap-etcd-$c-1"
  done
  python3 - "$out/ha_vs_etcd.csv" <<'PY' | tee -a "$out/ha_vs_etcd.txt"
import csv, sys
rows = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r["op"] == "all":
        rows[(r["label"], int(r["concurrency"]))] = r
print("\n| clients | 3 brokers mutations/s | etcd txn/s (3 members) | brokers/txn "
      "| brokers p50 / p99 ms | txn p50 / p99 ms | goal >= 0.8x at 32 |")
print("|---|---|---|---|---|---|---|")
for c in sorted({k[1] for k in rows}):
    b, t = rows.get(("ha-brokers", c)), rows.get(("etcd-3", c))
    if not (b and t):
        print(f"| {c} | missing rows for this concurrency |")
        continue
    ratio = float(b["qps"]) / float(t["qps"]) if float(t["qps"]) > 0 else 0
    ms = lambda r, p: float(r[p]) / 1000
    goal = ("met" if ratio >= 0.8 else "**NOT met**") if c == 32 else "-"
    print(f"| {c} | {float(b['qps']):,.0f} | {float(t['qps']):,.0f} | {ratio:.2f}x | "
          f"{ms(b, 'p50_us'):.1f} / {ms(b, 'p99_us'):.1f} | {ms(t, 'p50_us'):.1f} / "
          f"{ms(t, 'p99_us'):.1f} | {goal} |")
PY
  python3 bench/ha_cost.py "$tmp" "$conc" | tee -a "$out/ha_vs_etcd.txt"
  # Which member the brokers talked to (etcd_load used member 0).
  for i in 0 1 2; do
    echo "etcd member $i served $(curl -sf --max-time 2 "http://127.0.0.1:${etcd_client[$i]}/metrics" \
      | awk '/^grpc_server_handled_total\{.*grpc_method="Range"/ {n += $2} END {print n + 0}') Range calls"
  done | tee -a "$out/ha-env.txt"
  echo "   -> $out/ha_vs_etcd.csv $out/ha_vs_etcd.txt"
fi

if [ "$failover" = 1 ]; then
  rm -f "$out/ha_failover.csv"
  echo "== failover: $trials x kill -9 of the leader, --leader-ttl-seconds=$ttl" \
    | tee "$out/ha_failover.txt"
  pid_files=$(for i in 0 1 2; do echo "$tmp/b$i.pid"; done | paste -sd,)
  logs=$(for i in 0 1 2; do echo "$tmp/b$i.log"; done | paste -sd,)
  # A trial that cannot be measured ends the run; what was measured stays.
  "$FAILOVER" --brokers="$BROKERS" --pid_files="$pid_files" --logs="$logs" --restart_cmd="$tmp/start-broker" \
    --trials="$trials" --csv="$out/ha_failover.csv" --label="leader_ttl_seconds=$ttl" \
    | tee -a "$out/ha_failover.txt" || rc=$?
  # Where each failover's time went, from the brokers' logs (wall clock, ms):
  # kill -> the new leader serving (lease expiry, the standby's next poll,
  # loading the state) and serving -> the writer's acknowledgment (the
  # client's reconnect to the new address).
  python3 - "$out/ha_failover.csv" "$out/ha_failover_phases.csv" "$tmp"/b?.log <<'PY' \
    | tee -a "$out/ha_failover.txt"
import csv, datetime, re, statistics, sys
events = []
for path in sys.argv[3:]:
    for line in open(path, errors="replace"):
        m = re.match(r"ts=(\S+)Z .*event=(leading|serving) ", line)
        if m:
            t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
            events.append((t.timestamp() * 1000, m.group(2)))
events.sort()
rows = list(csv.DictReader(open(sys.argv[1])))
out = csv.writer(open(sys.argv[2], "w"))
out.writerow(["trial", "leading_s", "serving_s", "failover_s"])
print("\ntrial  kill->leading s  kill->serving s  serving->acknowledged s")
phases = []
for r in rows:
    k = float(r["killed_unix_ms"])
    lead = next((t for t, e in events if e == "leading" and t > k), None)
    serve = next((t for t, e in events if e == "serving" and lead and t >= lead), None)
    if lead is None or serve is None:
        print(f"{r['trial']:>5}  (no leading/serving event after the kill in the logs)")
        continue
    lead_s, serve_s, fo = (lead - k) / 1000, (serve - k) / 1000, float(r["failover_s"])
    phases.append((lead_s, serve_s, fo - serve_s))
    out.writerow([r["trial"], f"{lead_s:.3f}", f"{serve_s:.3f}", f"{fo:.4f}"])
    print(f"{r['trial']:>5}  {lead_s:15.3f}  {serve_s:15.3f}  {fo - serve_s:23.3f}")
if phases:
    med = lambda i: statistics.median(p[i] for p in phases)
    mx = lambda i: max(p[i] for p in phases)
    print(f"p50    {med(0):15.3f}  {med(1):15.3f}  {med(2):23.3f}")
    print(f"max    {mx(0):15.3f}  {mx(1):15.3f}  {mx(2):23.3f}")
PY
  echo "   -> $out/ha_failover.csv $out/ha_failover_phases.csv $out/ha_failover.txt"
fi
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/ha-env.txt"
if [ "${rc:-0}" != 0 ]; then
  echo "ha_load: ha_failover failed (exit $rc); the brokers' logs:" >&2
  for i in 0 1 2; do echo "--- b$i" >&2; tail -n 8 "$tmp/b$i.log" >&2; done
  exit "$rc"
fi
