#!/usr/bin/env bash
# Broker load test: starts a broker (fresh SQLite store in a temp dir,
# --insecure: plaintext gRPC, no authentication) and one iommu-agent on the
# simulated backend with 128 devices, then runs bench/loadgen's noop, read and
# mutate mixes at each concurrency, all against that one broker process.
# Then, unless -T, the same at one concurrency over mTLS (a second broker and
# agent with dev certificates) to show what TLS costs.
# Then, unless -E, broker vs etcd (issue 13's goal: the broker's durable
# mutations >= 1.0x etcd's durable puts): a fresh broker and agent and a
# single-member etcd (Debian's etcd-server, loopback, ports from the kernel),
# both stores in the same temp dir, so on the same file system; at each
# concurrency of -C, loadgen's mutate mix and then bench/etcd_load's put and
# txn (compare mod_revision + 2 puts), seconds apart, same client shape.
#
#   RESULTS/load.csv   loadgen rows (label insecure / mtls), see bench/loadgen.cc
#   RESULTS/load.txt   loadgen's human tables
#   RESULTS/load-env.txt  broker flags and the store's file system
#   RESULTS/vs_etcd.csv   broker (label broker) and etcd (label etcd) rows,
#                         loadgen's columns (bench/load_table.h)
#   RESULTS/vs_etcd.txt   those tables and the broker/etcd ratios, with each
#                         server's CPU per call (from /proc, over the measured
#                         seconds)
#
# Usage: bench/broker_load.sh [-o RESULTS] [-d SECONDS] [-c CONCURRENCY_LIST]
#                             [-m MIXES] [-T] [-E] [-C ETCD_CONCURRENCY_LIST]
#                             [-s STORE_KIND] [-A AGENTS]
#   RESULTS      default bench/results
#   SECONDS      measured seconds per (mix, concurrency); default 5 (+1 warm-up)
#   CONCURRENCY  default 1,2,4,8,16,32,64
#   MIXES        default noop,read,mutate; empty (-m '') skips the main run
#   -T           skip the mTLS point
#   -E           skip broker vs etcd
#   ETCD_CONCURRENCY  broker vs etcd at these concurrencies; default 1,32
#   STORE_KIND   the brokers' --store kind: sqlite (default) or sqlite-kv (the
#                versioned store, server/kv), each in a fresh file
#   AGENTS       sim agents (nodes) in broker vs etcd, the 128 devices split
#                between them; default 1 (every mutation's agent call goes
#                to one node, which does them one at a time)
# Environment: BAZEL, BAZEL_STARTUP_OPTS, BENCH_BIN_DIR as in bench/micro.sh
# (BENCH_BIN_DIR must then hold loadgen, etcd_load, iommu-broker and
# iommu-agent); BENCH_TMP: where the stores live (default: mktemp -d under
# /tmp; it is the disk whose fsync the mutations pay); ETCD: the etcd binary
# (default /usr/bin/etcd, Debian's etcd-server).
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench/results
dur=5
conc=1,2,4,8,16,32,64
mixes=noop,read,mutate
mtls=1
vs_etcd=1
etcd_conc=1,32
store_kind=sqlite
vs_agents=1
while getopts "o:d:c:m:TEC:s:A:h" opt; do
  case "$opt" in
    o) out="$OPTARG" ;;
    d) dur="$OPTARG" ;;
    c) conc="$OPTARG" ;;
    m) mixes="$OPTARG" ;;
    T) mtls=0 ;;
    E) vs_etcd=0 ;;
    C) etcd_conc="$OPTARG" ;;
    s) store_kind="$OPTARG" ;;
    A) vs_agents="$OPTARG" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
case "$vs_agents" in
  1 | 2 | 4 | 8 | 16) ;;
  *) echo "broker_load: -A: agents are 1, 2, 4, 8 or 16 (they split 128 devices), not '$vs_agents'" >&2; exit 2 ;;
esac
case "$store_kind" in
  sqlite | sqlite-kv) ;;
  *) echo "broker_load: -s: the store kind is sqlite or sqlite-kv, not '$store_kind'" >&2; exit 2 ;;
esac

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  LOADGEN=$BENCH_BIN_DIR/loadgen BROKER=$BENCH_BIN_DIR/iommu-broker AGENT=$BENCH_BIN_DIR/iommu-agent
  ETCD_LOAD=$BENCH_BIN_DIR/etcd_load
else
  BAZEL="${BAZEL:-bazel}"
  read -r -a startup <<< "${BAZEL_STARTUP_OPTS:-}"
  "$BAZEL" "${startup[@]}" build -c opt --symlink_prefix=/ \
    //bench:loadgen //bench:etcd_load //server:iommu-broker //agent:iommu-agent
  bin="$("$BAZEL" "${startup[@]}" info -c opt --symlink_prefix=/ bazel-bin 2>/dev/null)"
  LOADGEN=$bin/bench/loadgen BROKER=$bin/server/iommu-broker AGENT=$bin/agent/iommu-agent
  ETCD_LOAD=$bin/bench/etcd_load
fi

ETCD="${ETCD:-/usr/bin/etcd}"
if [ "$vs_etcd" = 1 ] && [ ! -x "$ETCD" ]; then
  echo "broker_load: $ETCD is missing: install the Debian package etcd-server" \
    "(scripts/setup.sh does), or skip broker vs etcd with -E" >&2
  exit 1
fi

mkdir -p "$out"
tmp=$(mktemp -d "${BENCH_TMP:-/tmp}/broker-load.XXXXXX")
PIDS=()
cleanup() {
  if [ "${#PIDS[@]}" -gt 0 ]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
  PIDS=()
}
trap 'cleanup; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

wait_for_file() {  # FILE WHAT LOG
  for _ in $(seq 1 400); do
    [ -s "$1" ] && return 0
    sleep 0.05
  done
  echo "broker_load: $2 did not start; its log:" >&2
  tail -n 20 "$3" >&2
  exit 1
}

# 128 sim devices 0000:01:00.0 .. 0000:04:1f.0, vendor 1234:11e8, one group each.
sim_devices=$(for i in $(seq 0 127); do
  printf '0000:%02x:%02x.0=1234:11e8@%d\n' $((1 + i / 32)) $((i % 32)) $((100 + i))
done | paste -sd,)

# start_pair DIR TRANSPORT_BROKER TRANSPORT_AGENT [AGENTS]: a broker and
# AGENTS sim agents (default 1): load-node, load-node-2, ..., the 128 devices
# split between them.
start_pair() {
  local dir=$1 tb=$2 ta=$3 agents=${4:-1}
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$BROKER" --listen=127.0.0.1:0 --store="$store_kind:$dir/broker.db" --port-file="$dir/broker.port" \
    $tb 2>"$dir/broker.log" &
  PIDS+=($!)
  BROKER_PID=$!
  wait_for_file "$dir/broker.port" broker "$dir/broker.log"
  BROKER_ADDR=127.0.0.1:$(cat "$dir/broker.port")
  local per=$((128 / agents)) a node devices
  for a in $(seq 1 "$agents"); do
    node=load-node
    [ "$a" -gt 1 ] && node=load-node-$a
    devices=$(tr , '\n' <<< "$sim_devices" | sed -n "$(((a - 1) * per + 1)),$((a * per))p" | paste -sd,)
    # shellcheck disable=SC2086
    "$AGENT" --node="$node" --broker="$BROKER_ADDR" --backend=sim --sim-devices="$devices" \
      --state-dir="$dir/agent-$a-state" --launcher-socket="$dir/launcher-$a.sock" \
      --port-file="$dir/agent-$a.port" $ta \
      2>"$dir/agent-$a.log" &
    PIDS+=($!)
    wait_for_file "$dir/agent-$a.port" agent "$dir/agent-$a.log"
  done
}

# start_etcd DIR: a single-member etcd with its data in DIR/data. Port 0 in
# every URL: the kernel picks the ports and etcd logs the client one, so
# there is nothing to race other processes for. The advertised URLs are then
# not real addresses, which a single member never uses. Sets ETCD_ADDR.
start_etcd() {
  local dir=$1 any=http://127.0.0.1:0 port=""
  mkdir -p "$dir"
  "$ETCD" --name=bench --data-dir="$dir/data" --listen-client-urls=$any \
    --advertise-client-urls=$any --listen-peer-urls=$any --initial-advertise-peer-urls=$any \
    --initial-cluster=bench=$any --initial-cluster-state=new >"$dir/etcd.log" 2>&1 &
  PIDS+=($!)
  local pid=$!
  for _ in $(seq 1 400); do
    port=$(sed -n 's/.*serving insecure client requests on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' \
      "$dir/etcd.log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    echo "broker_load: etcd did not start; its log:" >&2
    tail -n 20 "$dir/etcd.log" >&2
    exit 1
  fi
  ETCD_ADDR=127.0.0.1:$port
  ETCD_PID=$pid
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "broker: --insecure, store $store_kind:$tmp/*/broker.db ($(df -T "$tmp" | awk 'NR==2 {print $2" on "$1}'))"
  echo "agent: one iommu-agent --backend=sim, 128 devices"
  echo "loadgen: one channel (one HTTP/2 connection), one completion-queue thread, closed loop"
} > "$out/load-env.txt"

if [ -n "$mixes" ]; then
  rm -f "$out/load.csv"
  echo "== load: insecure, concurrency $conc, mixes $mixes, ${dur}s each" | tee "$out/load.txt"
  start_pair "$tmp/insecure" --insecure --insecure
  "$LOADGEN" --broker="$BROKER_ADDR" --wait_nodes=1 --mixes="$mixes" --concurrency="$conc" \
    --duration_s="$dur" --warmup_s=1 --csv="$out/load.csv" --label=insecure \
    --server_pid="$BROKER_PID" | tee -a "$out/load.txt"
  grep VmHWM "/proc/$BROKER_PID/status" | sed 's/^/broker after load: /' | tee -a "$out/load-env.txt"
  cleanup
fi

if [ "$mtls" = 1 ] && [ -n "$mixes" ]; then
  echo "== load: mTLS (dev certificates), concurrency 32" | tee -a "$out/load.txt"
  deploy/make-dev-certs.sh --out "$tmp/certs" --agent load-node --tenant bench >/dev/null
  c=$tmp/certs
  start_pair "$tmp/mtls" \
    "--tls-cert=$c/broker.crt --tls-key=$c/broker.key --tls-ca=$c/ca.crt" \
    "--tls-cert=$c/agent-load-node.crt --tls-key=$c/agent-load-node.key --tls-ca=$c/ca.crt"
  "$LOADGEN" --broker="$BROKER_ADDR" --cert="$c/operator-admin.crt" --key="$c/operator-admin.key" \
    --ca="$c/ca.crt" --wait_nodes=1 --mixes="$mixes" --concurrency=32 --duration_s="$dur" \
    --warmup_s=1 --csv="$out/load.csv" --label=mtls --server_pid="$BROKER_PID" \
    | tee -a "$out/load.txt"
  cleanup
fi
if [ "$vs_etcd" = 1 ]; then
  # Both stores fresh, side by side in one temp dir (one file system), both
  # processes up for the whole phase, measured alternately at each
  # concurrency so that machine load drifting over the run hits both sides
  # alike. --read_containers=0: the mutate mix needs only its 8 window
  # containers, which keeps every run's setup well inside the 128 devices.
  v=$tmp/vs-etcd
  rm -f "$out/vs_etcd.csv"
  echo "== broker vs etcd: concurrency $etcd_conc, ${dur}s each, stores on" \
    "$(df -T "$tmp" | awk 'NR==2 {print $2" on "$1}')" | tee "$out/vs_etcd.txt"
  start_pair "$v" --insecure --insecure "$vs_agents"
  start_etcd "$v/etcd"
  {
    echo "etcd: $("$ETCD" --version | head -n 1), single member, data $v/etcd/data"
    echo "etcd_load: one channel, one completion-queue thread, closed loop, 256-byte values"
  } >> "$out/load-env.txt"
  IFS=, read -r -a etcd_levels <<< "$etcd_conc"
  for c in "${etcd_levels[@]}"; do
    "$LOADGEN" --broker="$BROKER_ADDR" --wait_nodes="$vs_agents" --mixes=mutate --concurrency="$c" \
      --read_containers=0 --duration_s="$dur" --warmup_s=1 --csv="$out/vs_etcd.csv" \
      --label=broker --server_pid="$BROKER_PID" | tee -a "$out/vs_etcd.txt"
    "$ETCD_LOAD" --endpoint="$ETCD_ADDR" --mixes=put,txn --concurrency="$c" \
      --duration_s="$dur" --warmup_s=1 --csv="$out/vs_etcd.csv" --label=etcd \
      --server_pid="$ETCD_PID" | tee -a "$out/vs_etcd.txt"
  done
  cleanup
  # The side-by-side table: broker = the whole mutate mix (every RPC of it
  # is one durable commit), etcd = put and txn; ratios broker/etcd.
  python3 - "$out/vs_etcd.csv" <<'PY' | tee -a "$out/vs_etcd.txt"
import csv, sys
rows = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r["op"] == "all":
        rows[(r["label"], r["mix"], int(r["concurrency"]))] = r
print("\n| clients | broker mutations/s | etcd put/s | etcd txn/s | broker/put | broker/txn "
      "| broker p99 ms | put p99 ms | txn p99 ms | p99 broker/put "
      "| broker CPU us/mutation | etcd CPU us/put | etcd CPU us/txn |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for c in sorted({k[2] for k in rows}):
    b, p, t = (rows.get(k) for k in (("broker", "mutate", c), ("etcd", "put", c), ("etcd", "txn", c)))
    if not (b and p and t):
        print(f"| {c} | missing rows for this concurrency |")
        continue
    q = lambda r: float(r["qps"])
    ms = lambda r: float(r["p99_us"]) / 1000
    ratio = lambda x, y: f"{x / y:.2f}x" if y > 0 else "-"
    cpu = lambda r: f"{float(r['server_cpu_us_per_op']):.0f}" if r.get("server_cpu_us_per_op") else "-"
    print(f"| {c} | {q(b):,.0f} | {q(p):,.0f} | {q(t):,.0f} | {ratio(q(b), q(p))} | "
          f"{ratio(q(b), q(t))} | {ms(b):.1f} | {ms(p):.1f} | {ms(t):.1f} | {ratio(ms(b), ms(p))} "
          f"| {cpu(b)} | {cpu(p)} | {cpu(t)} |")
PY
  echo "   -> $out/vs_etcd.csv $out/vs_etcd.txt"
fi
if [ -n "$mixes" ]; then echo "   -> $out/load.csv $out/load.txt"; fi
