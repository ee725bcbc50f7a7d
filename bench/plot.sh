#!/usr/bin/env bash
# Plots (gnuplot, PNG) from the CSVs the other bench/ scripts write:
#   OUT/latency_vs_concurrency.png  p50 and p99 per mix (noop included) vs
#                                   outstanding RPCs (RESULTS/load.csv, insecure rows)
#   OUT/qps_vs_concurrency.png      QPS per mix vs outstanding RPCs
#   OUT/allocator_vs_n.png          window allocator ns/op vs live windows N
#                                   (RESULTS/allocator_bench.csv)
#   OUT/ledger_vs_n.png             ledger and map path ns/op vs live mappings N
#                                   (RESULTS/ledger_bench.csv)
#   OUT/map_path_vs_n.png           AgentCore map path and the ledger's part of it
#                                   (RESULTS/map_path_bench.csv)
#   OUT/ha_failover.png             broker failover time per trial, its p50 and
#                                   the goals (RESULTS/ha_failover.csv, bench/ha_load.sh)
# A plot whose CSV is missing is skipped with a note.
#
# Usage: bench/plot.sh [-r RESULTS] [-o OUT] [PLOT...]
#   defaults bench/results, docs/bench; PLOTs (e.g. ha_failover, qps_vs_concurrency):
#   only those, so one bench's plot can be redrawn without touching the others
set -euo pipefail

cd "$(dirname "$0")/.."
res=bench/results
out=docs/bench
while getopts "r:o:h" opt; do
  case "$opt" in
    r) res="$OPTARG" ;;
    o) out="$OPTARG" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
only=" $* "
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot missing (apt-get install gnuplot-nox)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Splits the CSVs into one "x y [y2]" file per series and prints, per plot, a
# gnuplot "plot" clause listing them.
python3 - "$res" "$tmp" <<'EOF'
import csv, os, sys
res, tmp = sys.argv[1], sys.argv[2]

def rows(name):
    p = os.path.join(res, name)
    if not os.path.exists(p):
        print("plot.sh: no %s, skipping its plot" % p, file=sys.stderr)
        return []
    with open(p) as f:
        return list(csv.DictReader(f))

def write(series, fname):
    with open(os.path.join(tmp, fname), "w") as f:
        for x in sorted(series):
            f.write(" ".join(str(v) for v in (x,) + tuple(series[x])) + "\n")

clauses = {}
load = [r for r in rows("load.csv") if r["label"] == "insecure" and r["op"] == "all"]
lat, qps = [], []
for i, mix in enumerate(m for m in ("noop", "read", "mutate", "place", "list")
                        if any(r["mix"] == m for r in load)):
    s = {int(r["concurrency"]): (float(r["p50_us"]) / 1000, float(r["p99_us"]) / 1000,
                                 float(r["qps"])) for r in load if r["mix"] == mix}
    write(s, "load_%s.dat" % mix)
    f = "'%s/load_%s.dat'" % (tmp, mix)
    lat.append("%s u 1:2 w lp lw 2 pt 7 lc %d dt 1 t '%s p50'" % (f, i + 1, mix))
    lat.append("%s u 1:3 w lp lw 2 pt 5 lc %d dt 2 t '%s p99'" % (f, i + 1, mix))
    qps.append("%s u 1:4 w lp lw 2 pt 7 lc %d t '%s'" % (f, i + 1, mix))
if lat:
    clauses["latency"] = ", ".join(lat)
    clauses["qps"] = ", ".join(qps)

def by_n(files, wanted):
    out = []
    for fname in files:
        for r in rows(fname):
            if r["n"] and (not wanted or r["benchmark"] in wanted):
                out.append(r)
    names = []
    for r in out:
        if r["benchmark"] not in names:
            names.append(r["benchmark"])
    parts = []
    for i, name in enumerate(names):
        s = {int(r["n"]): (float(r["ns_per_op"]),) for r in out if r["benchmark"] == name}
        write(s, name + ".dat")
        parts.append("'%s/%s.dat' u 1:2 w lp lw 2 pt 7 lc %d t '%s'" %
                     (tmp, name, i + 1, name))
    return ", ".join(parts)

a = by_n(["allocator_bench.csv"], None)
if a:
    clauses["allocator"] = a
l = by_n(["ledger_bench.csv"], None)
if l:
    clauses["ledger"] = l
m = by_n(["map_path_bench.csv"], None)
if m:
    clauses["map_path"] = m
ha = rows("ha_failover.csv")
if ha:
    s = {int(r["trial"]): (float(r["failover_s"]),) for r in ha}
    write(s, "ha_failover.dat")
    t = sorted(v[0] for v in s.values())
    n = len(t)
    p50 = t[n // 2] if n % 2 else (t[n // 2 - 1] + t[n // 2]) / 2
    f = "'%s/ha_failover.dat'" % tmp
    clauses["ha_failover"] = ", ".join([
        "%s u 1:2 w lp lw 2 pt 7 lc 1 t 'kill -9 of the leader -> first acknowledged write (%s)'"
        % (f, ha[0]["label"] or "?"),
        "%f w l lw 2 lc 3 t 'p50 %.2f s, max %.2f s (%d trials)'" % (p50, p50, t[-1], n),
        "3 w l lw 1 dt 2 lc 2 t 'goal: p50 < 3 s'",
        "5 w l lw 1 dt 2 lc 7 t 'goal: max < 5 s'"])
    ph = rows("ha_failover_phases.csv")
    if ph:
        write({int(r["trial"]): (float(r["serving_s"]),) for r in ph}, "ha_serving.dat")
        clauses["ha_failover"] += (", '%s/ha_serving.dat' u 1:2 w lp lw 1 pt 6 lc 4 "
                                   "t 'kill -9 -> new leader serving (from the broker logs)'" % tmp)
for k, v in clauses.items():
    with open(os.path.join(tmp, k + ".clause"), "w") as f:
        f.write(v + "\n")
EOF

common="set terminal pngcairo noenhanced size 1000,620 font 'sans,10'; set grid; set key outside right top"
plot() {  # NAME TITLE SETTINGS PNG
  [ -s "$tmp/$1.clause" ] || return 0
  [ "$only" = "  " ] || [[ "$only" == *" $4 "* ]] || return 0
  gnuplot -e "$common; set output '$out/$4.png'; set title '$2'; $3; plot $(cat "$tmp/$1.clause")"
  echo "   -> $out/$4.png"
}
plot latency "Broker latency vs concurrency (closed loop, one client; insecure)" \
  "set logscale x 2; set logscale y; set xlabel 'outstanding RPCs'; set ylabel 'latency (ms)'" \
  latency_vs_concurrency
plot qps "Broker throughput vs concurrency (closed loop, one client; insecure)" \
  "set logscale x 2; set logscale y; set xlabel 'outstanding RPCs'; set ylabel 'RPCs/s'" \
  qps_vs_concurrency
plot allocator "Window allocator: cost of one op vs live windows" \
  "set logscale x; set logscale y; set xlabel 'live windows N'; set ylabel 'ns/op (CPU)'" \
  allocator_vs_n
plot ledger "Ledger: cost of one op vs live mappings" \
  "set logscale x; set logscale y; set xlabel 'live mappings N'; set ylabel 'ns/op (CPU)'" \
  ledger_vs_n
plot map_path "Map path (AgentCore + SimBackend) and its ledger calls vs live mappings" \
  "set logscale x; set logscale y; set xlabel 'live mappings N'; set ylabel 'ns/op (CPU)'" \
  map_path_vs_n
plot ha_failover "Broker failover: 3 replicas on a 3-member etcd, one writer retrying by request id" \
  "set key below; set xlabel 'trial'; set ylabel 'seconds'; set yrange [0:*]; set offsets 0.5, 0.5, graph 0.15, 0; set xtics 1" \
  ha_failover
