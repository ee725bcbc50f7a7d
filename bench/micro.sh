#!/usr/bin/env bash
# Runs the microbenchmarks in bench/ (optimised build) and writes, per
# benchmark binary, the raw Google Benchmark JSON and a small CSV:
#
#   RESULTS/<binary>.json   --benchmark_format=json output, host context included
#   RESULTS/<binary>.csv    benchmark,n,ns_per_op
#
# ns_per_op is the CPU time of one iteration (one allocate + release, one
# unmap + map, one request validated; see each *_bench.cc), the median over
# the repetitions. CPU time rather than wall time: on a shared 2-core machine
# it is less disturbed by other processes. n is the number of live objects
# (empty for benchmarks without one).
#
# Usage: bench/micro.sh [-o RESULTS] [-r REPETITIONS] [-t MIN_TIME_S]
#                       [-f FILTER_REGEX] [BINARY...]
#   RESULTS      default bench/results
#   REPETITIONS  default 3
#   MIN_TIME_S   default 0.5 (per repetition)
#   BINARY       allocator_bench ledger_bench validation_bench map_path_bench
#                (default: all)
# Environment: BAZEL (default bazel); BAZEL_STARTUP_OPTS, e.g.
# "--output_base=/tmp/bz-bench", to keep the opt build out of a shared
# workspace server's analysis cache; BENCH_BIN_DIR: run the binaries found
# there instead of building (e.g. a saved build of an older commit, for
# before/after comparisons on the same machine).
#
# The 1e6 cases hold a few hundred MB each and take a few seconds to set up;
# a full run takes about 10 minutes on 2 cores. Benchmarks are never part of
# `bazel test //...`.
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench/results
reps=3
min_time=0.5
filter=""
while getopts "o:r:t:f:h" opt; do
  case "$opt" in
    o) out="$OPTARG" ;;
    r) reps="$OPTARG" ;;
    t) min_time="$OPTARG" ;;
    f) filter="$OPTARG" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
binaries=("$@")
if [ "${#binaries[@]}" -eq 0 ]; then
  binaries=(allocator_bench ledger_bench validation_bench map_path_bench)
fi

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  bin="$BENCH_BIN_DIR"
else
  BAZEL="${BAZEL:-bazel}"
  read -r -a startup <<< "${BAZEL_STARTUP_OPTS:-}"
  targets=()
  for b in "${binaries[@]}"; do targets+=("//bench:$b"); done
  # --symlink_prefix=/ : leave the workspace's bazel-* symlinks alone (they
  # point at whatever the last fastbuild made; others rely on them).
  "$BAZEL" "${startup[@]}" build -c opt --symlink_prefix=/ "${targets[@]}"
  bin="$("$BAZEL" "${startup[@]}" info -c opt --symlink_prefix=/ bazel-bin 2>/dev/null)/bench"
fi

mkdir -p "$out"
for b in "${binaries[@]}"; do
  echo "== $b"
  args=(
    --benchmark_out="$out/$b.json" --benchmark_out_format=json
    --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true
    --benchmark_min_time="$min_time"
  )
  [ -n "$filter" ] && args+=(--benchmark_filter="$filter")
  "$bin/$b" "${args[@]}"
  python3 - "$out/$b.json" "$out/$b.csv" <<'EOF'
import csv, json, sys

to_ns = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
with open(sys.argv[1]) as f:
    runs = json.load(f)["benchmarks"]
# With repetitions, keep the median aggregate; with one run, the run itself.
medians = [r for r in runs if r.get("aggregate_name") == "median"]
rows = medians or [r for r in runs if r.get("run_type", "iteration") == "iteration"]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["benchmark", "n", "ns_per_op"])
    for r in rows:
        name = r.get("run_name", r["name"])
        n = r.get("n")
        if n is not None:
            n = int(round(n))
            name = name.rsplit("/", 1)[0]  # the arg is the n column
        w.writerow([name, "" if n is None else n,
                    "%.1f" % (r["cpu_time"] * to_ns[r["time_unit"]])])
EOF
  echo "   -> $out/$b.json $out/$b.csv"
done
