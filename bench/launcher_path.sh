#!/usr/bin/env bash
# The launcher socket's share of the agent map path, simulated backend, one process
# (//bench:launcher_path_bench): map + unmap through LauncherClient -> socket ->
# LauncherServer/LauncherSessions -> AgentCore -> SimBackend, versus AgentCore and
# SimBackend called directly, at 0 and 1e4 live mappings. Benchmark, not a test.
#
#   bench/launcher_path.sh [-r REPETITIONS] [-t MIN_SECONDS] [-o RESULTS]
#
# Writes RESULTS/launcher_path_sim.json (Google Benchmark JSON; default bench/results),
# then bench/launcher_path_report.py merges it with the VM numbers of bench/vm_map_path.sh
# (if present) into RESULTS/launcher_path.{json,csv} and prints the table.
# BENCH_BIN_DIR=DIR runs DIR/launcher_path_bench instead of building it (-c opt).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPS=5
MIN_TIME=0.5
OUT="$HERE/results"
while getopts "r:t:o:h" o; do
  case "$o" in
    r) REPS="$OPTARG" ;;
    t) MIN_TIME="$OPTARG" ;;
    o) OUT="$OPTARG" ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
if [[ -n "${BENCH_BIN_DIR:-}" ]]; then
  BIN="$BENCH_BIN_DIR/launcher_path_bench"
else
  (cd "$HERE/.." && bazel build -c opt //bench:launcher_path_bench)
  BIN="$(cd "$HERE/.." && bazel info -c opt bazel-bin 2>/dev/null)/bench/launcher_path_bench"
fi
mkdir -p "$OUT"
"$BIN" --benchmark_repetitions="$REPS" --benchmark_min_time="$MIN_TIME" \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$OUT/launcher_path_sim.json" --benchmark_out_format=json
python3 "$HERE/launcher_path_report.py" "$OUT"
