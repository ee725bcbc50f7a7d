#!/usr/bin/env bash
# The one command that regenerates every benchmark result, plot and table:
#   1. bench/results/machine.txt   CPU, memory, kernel, disk, fsync latency
#   2. bench/micro.sh              allocator/ledger/validation/map-path CSVs
#   3. bench/broker_load.sh        load.csv (noop/read/mutate x concurrency, + mTLS)
#                                  vs_etcd.csv (mutate vs etcd put/txn at 1 and 32)
#   4. bench/scale.sh              scale.csv, scale-summary.csv (1,000 nodes), and
#                                  again with 10 s heartbeats into scale-hb10s/
#   5. bench/ha_load.sh            ha_vs_etcd.csv (3 brokers vs etcd txn on a
#                                  3-member etcd), ha_failover.csv (20 leader kills)
#   6. bench/plot.sh               docs/bench/*.png
#   7. bench/report.py             the tables inside docs/BENCHMARKS.md (between
#                                  its GENERATED markers) and docs/bench/results.md
# About 20 minutes on 2 cores with the defaults below; run it on an otherwise
# idle machine (every number is disturbed by other processes, the load and
# scale tests most). Never part of `bazel test //...`.
#
# Usage: bench/run_all.sh [-q]
#   -q  quick smoke run (tiny durations and sizes; numbers not meaningful),
#       everything written under a new /tmp/bench-quick.* dir, not the tree
# Environment: BAZEL, BAZEL_STARTUP_OPTS as in bench/micro.sh;
#   MICRO_REPS (default 3), MICRO_MIN_TIME (0.3 s), LOAD_SECONDS (5),
#   SCALE_NODES (1000), SCALE_CONTAINERS (100000), SCALE_FILL_MAX_S (420),
#   HA_TRIALS (20).
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench/results
doc=docs/BENCHMARKS.md
micro_reps=${MICRO_REPS:-3}
micro_time=${MICRO_MIN_TIME:-0.3}
load_s=${LOAD_SECONDS:-5}
nodes=${SCALE_NODES:-1000}
containers=${SCALE_CONTAINERS:-100000}
fill_max=${SCALE_FILL_MAX_S:-420}
ha_trials=${HA_TRIALS:-20}
micro_filter=()
if [ "${1:-}" = "-q" ]; then
  micro_reps=1 micro_time=0.01 load_s=1 nodes=20 containers=500 fill_max=30 ha_trials=2
  micro_filter=(-f '/1000$|accepted')
  # Keep the committed results and docs: everything goes to a temp dir.
  out=$(mktemp -d /tmp/bench-quick.XXXXXX)
  doc=$out/docs/BENCHMARKS.md
  mkdir -p "$out/docs"
  cp docs/BENCHMARKS.md "$doc"
fi
mkdir -p "$out"
t_start=$(date +%s)

echo "== machine"
{
  echo "date:    $(date -u +%FT%TZ)"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "cpu:     $(nproc) x $(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
  echo "memory:  $(free -h | awk '/^Mem:/ {print $2}')"
  echo "kernel:  $(uname -r) ($(systemd-detect-virt 2>/dev/null || echo 'virt: ?'))"
  dev=$(df --output=source /tmp | tail -n 1)
  echo "disk:    /tmp on $dev, $(df --output=fstype /tmp | tail -n 1), rotational=$(cat "/sys/block/$(basename "$dev")/queue/rotational" 2>/dev/null || echo '?')"
  f=$(mktemp /tmp/fsync-probe.XXXXXX)
  t=$(dd if=/dev/zero of="$f" bs=4k count=300 oflag=dsync 2>&1 | awk '/copied/ {print $(NF-3)}')
  rm -f "$f"
  echo "fsync:   $(awk -v t="$t" 'BEGIN {printf "%.2f ms per 4 KiB O_DSYNC write (dd, 300 writes)", t * 1000 / 300}')"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, at start)"
} | tee "$out/machine.txt"

echo "== micro (bench/micro.sh -r $micro_reps -t $micro_time)"
bench/micro.sh -o "$out" -r "$micro_reps" -t "$micro_time" "${micro_filter[@]}"

echo "== load (bench/broker_load.sh -d $load_s)"
bench/broker_load.sh -o "$out" -d "$load_s"

echo "== scale (bench/scale.sh -n $nodes -N $containers -t $fill_max)"
bench/scale.sh -o "$out" -n "$nodes" -N "$containers" -t "$fill_max" -d 3
echo "== scale again with 10 s heartbeats (the broker's heartbeat cost out of the way)"
bench/scale.sh -o "$out/scale-hb10s" -n "$nodes" -N "$containers" -t "$fill_max" -d 3 -b 10000

echo "== broker HA on a 3-member etcd (bench/ha_load.sh -d $load_s -n $ha_trials)"
bench/ha_load.sh -o "$out" -d "$load_s" -n "$ha_trials"

echo "== plots"
bench/plot.sh -r "$out" -o "$(dirname "$doc")/bench"

echo "== tables"
python3 bench/report.py "$out" "$doc"
echo "run_all: done in $(( $(date +%s) - t_start )) s"
