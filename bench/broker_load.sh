#!/usr/bin/env bash
# Broker load test: starts a broker (fresh SQLite store in a temp dir,
# --insecure: plaintext gRPC, no authentication) and one iommu-agent on the
# simulated backend with 128 devices, then runs bench/loadgen's noop, read and
# mutate mixes at each concurrency, all against that one broker process.
# Then, unless -T, the same at one concurrency over mTLS (a second broker and
# agent with dev certificates) to show what TLS costs.
#
#   RESULTS/load.csv   loadgen rows (label insecure / mtls), see bench/loadgen.cc
#   RESULTS/load.txt   loadgen's human tables
#   RESULTS/load-env.txt  broker flags and the store's file system
#
# Usage: bench/broker_load.sh [-o RESULTS] [-d SECONDS] [-c CONCURRENCY_LIST]
#                             [-m MIXES] [-T]
#   RESULTS      default bench/results
#   SECONDS      measured seconds per (mix, concurrency); default 5 (+1 warm-up)
#   CONCURRENCY  default 1,2,4,8,16,32,64
#   MIXES        default noop,read,mutate
#   -T           skip the mTLS point
# Environment: BAZEL, BAZEL_STARTUP_OPTS, BENCH_BIN_DIR as in bench/micro.sh
# (BENCH_BIN_DIR must then hold loadgen, iommu-broker and iommu-agent);
# BENCH_TMP: where the store lives (default: mktemp -d under /tmp; it is the
# disk whose fsync the mutations pay).
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench/results
dur=5
conc=1,2,4,8,16,32,64
mixes=noop,read,mutate
mtls=1
while getopts "o:d:c:m:Th" opt; do
  case "$opt" in
    o) out="$OPTARG" ;;
    d) dur="$OPTARG" ;;
    c) conc="$OPTARG" ;;
    m) mixes="$OPTARG" ;;
    T) mtls=0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  LOADGEN=$BENCH_BIN_DIR/loadgen BROKER=$BENCH_BIN_DIR/iommu-broker AGENT=$BENCH_BIN_DIR/iommu-agent
else
  BAZEL="${BAZEL:-bazel}"
  read -r -a startup <<< "${BAZEL_STARTUP_OPTS:-}"
  "$BAZEL" "${startup[@]}" build -c opt --symlink_prefix=/ \
    //bench:loadgen //server:iommu-broker //agent:iommu-agent
  bin="$("$BAZEL" "${startup[@]}" info -c opt --symlink_prefix=/ bazel-bin 2>/dev/null)"
  LOADGEN=$bin/bench/loadgen BROKER=$bin/server/iommu-broker AGENT=$bin/agent/iommu-agent
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

# start_pair DIR TRANSPORT_BROKER TRANSPORT_AGENT: a broker and a sim agent.
start_pair() {
  local dir=$1 tb=$2 ta=$3
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$BROKER" --listen=127.0.0.1:0 --db="$dir/broker.db" --port_file="$dir/broker.port" \
    $tb 2>"$dir/broker.log" &
  PIDS+=($!)
  BROKER_PID=$!
  wait_for_file "$dir/broker.port" broker "$dir/broker.log"
  BROKER_ADDR=127.0.0.1:$(cat "$dir/broker.port")
  # shellcheck disable=SC2086
  "$AGENT" --node=load-node --broker="$BROKER_ADDR" --backend=sim --sim_devices="$sim_devices" \
    --launcher_socket="$dir/launcher.sock" --port_file="$dir/agent.port" $ta \
    2>"$dir/agent.log" &
  PIDS+=($!)
  wait_for_file "$dir/agent.port" agent "$dir/agent.log"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "broker: --insecure, store $tmp/*/broker.db ($(df -T "$tmp" | awk 'NR==2 {print $2" on "$1}'))"
  echo "agent: one iommu-agent --backend=sim, 128 devices"
  echo "loadgen: one channel (one HTTP/2 connection), one completion-queue thread, closed loop"
} > "$out/load-env.txt"

rm -f "$out/load.csv"
echo "== load: insecure, concurrency $conc, mixes $mixes, ${dur}s each" | tee "$out/load.txt"
start_pair "$tmp/insecure" --insecure --insecure
"$LOADGEN" --broker="$BROKER_ADDR" --wait_nodes=1 --mixes="$mixes" --concurrency="$conc" \
  --duration_s="$dur" --warmup_s=1 --csv="$out/load.csv" --label=insecure | tee -a "$out/load.txt"
grep VmHWM "/proc/$BROKER_PID/status" | sed 's/^/broker after load: /' | tee -a "$out/load-env.txt"
cleanup

if [ "$mtls" = 1 ]; then
  echo "== load: mTLS (dev certificates), concurrency 32" | tee -a "$out/load.txt"
  deploy/make-dev-certs.sh --out "$tmp/certs" --agent load-node --tenant bench >/dev/null
  c=$tmp/certs
  start_pair "$tmp/mtls" \
    "--tls_cert=$c/broker.crt --tls_key=$c/broker.key --tls_ca=$c/ca.crt" \
    "--tls_cert=$c/agent-load-node.crt --tls_key=$c/agent-load-node.key --tls_ca=$c/ca.crt"
  "$LOADGEN" --broker="$BROKER_ADDR" --cert="$c/operator-admin.crt" --key="$c/operator-admin.key" \
    --ca="$c/ca.crt" --wait_nodes=1 --mixes="$mixes" --concurrency=32 --duration_s="$dur" \
    --warmup_s=1 --csv="$out/load.csv" --label=mtls | tee -a "$out/load.txt"
  cleanup
fi
echo "   -> $out/load.csv $out/load.txt"
