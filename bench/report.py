#!/usr/bin/env python3
"""Markdown tables from bench/results/: machine, load, scale, micro, goals.

Usage: bench/report.py [RESULTS] [DOC]
Writes the tables between the markers
    <!-- BEGIN GENERATED: bench/report.py -->  ...  <!-- END GENERATED -->
in DOC (default docs/BENCHMARKS.md), and the same fragment alone to
bench/results.md next to DOC (docs/bench/results.md). Everything outside the markers is hand-written and
left alone. A missing CSV gives a line saying so instead of its table.
"""
import csv
import os
import sys

RES = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
DOC = sys.argv[2] if len(sys.argv) > 2 else "docs/BENCHMARKS.md"
BEGIN = "<!-- BEGIN GENERATED: bench/report.py -->"
END = "<!-- END GENERATED -->"


def rows(name):
    p = os.path.join(RES, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return list(csv.DictReader(f))


def table(header, body):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(out)


def num(x, fmt="%.0f"):
    try:
        return fmt % float(x)
    except (TypeError, ValueError):
        return str(x) if x else "-"


def ms(us):
    return num(float(us) / 1000, "%.2f") if us not in (None, "") else "-"


out = []
goals = []

# ---------------------------------------------------------------- machine
p = os.path.join(RES, "machine.txt")
if os.path.exists(p):
    out.append("### Machine (this run)\n")
    with open(p) as f:
        out.append("```\n" + f.read().rstrip() + "\n```\n")

# ---------------------------------------------------------------- load
load = rows("load.csv")
if load is None:
    out.append("_No load results (bench/broker_load.sh did not run)._\n")
else:
    out.append("### Broker load (bench/broker_load.sh)\n")
    out.append("Whole mixes (`op` = all), insecure transport unless the label says mtls. "
               "Ratios are to the no-op (health check) at the same concurrency, same broker "
               "process, same run.\n")
    body = []
    for r in load:
        if r["op"] != "all":
            continue
        body.append([r["label"], r["mix"], r["concurrency"], num(r["qps"]), ms(r["p50_us"]),
                     ms(r["p99_us"]), ms(r["p999_us"]), r["errors"], r["qps_vs_noop"] or "-",
                     r["p50_vs_noop"] or "-", r["p99_vs_noop"] or "-"])
    out.append(table(["transport", "mix", "conc", "QPS", "p50 ms", "p99 ms", "p99.9 ms",
                      "errors", "QPS/noop", "p50/noop", "p99/noop"], body) + "\n")
    out.append("Single RPCs at concurrency 32 (insecure):\n")
    body = [[r["mix"], r["op"], num(r["qps"]), ms(r["p50_us"]), ms(r["p99_us"]),
             ms(r["p999_us"])]
            for r in load if r["label"] == "insecure" and r["concurrency"] == "32"
            and r["op"] != "all"]
    out.append(table(["mix", "op", "QPS", "p50 ms", "p99 ms", "p99.9 ms"], body) + "\n")

    def at(label, mix, c):
        for r in load:
            if (r["label"], r["mix"], r["op"], r["concurrency"]) == (label, mix, "all", str(c)):
                return r
        return None

    m = at("insecure", "mutate", 32)
    if m:
        ok = float(m["qps"]) >= 5000 and float(m["p99_us"]) < 10000
        goals.append(["durable mutations >= 5,000/s with p99 < 10 ms at 32 clients",
                      "%s/s, p99 %s ms" % (num(m["qps"]), ms(m["p99_us"])),
                      "met" if ok else "**not met**"])
    r32, n32 = at("insecure", "read", 32), at("insecure", "noop", 32)
    if r32 and n32:
        ratio = float(r32["qps"]) / float(n32["qps"])
        worst = []
        for c in sorted({int(r["concurrency"]) for r in load if r["label"] == "insecure"}):
            a, b = at("insecure", "read", c), at("insecure", "noop", c)
            if a and b:
                worst.append((float(a["qps"]) / float(b["qps"]), c))
        w = min(worst)
        goals.append(["reads >= 0.5 x the no-op floor's QPS",
                      "%.2f x at 32 clients (%s vs %s/s); lowest %.2f x at %d" %
                      (ratio, num(r32["qps"]), num(n32["qps"]), w[0], w[1]),
                      "met" if ratio >= 0.5 else "**not met**"])

# ---------------------------------------------------------------- scale
summary = rows("scale-summary.csv")
scale = rows("scale.csv")
# bench/run_all.sh also runs the scale test with 10 s heartbeats, into
# RESULTS/scale-hb10s/: shown as a second column.
summary2 = rows(os.path.join("scale-hb10s", "scale-summary.csv"))
scale2 = rows(os.path.join("scale-hb10s", "scale.csv"))
if summary is None:
    out.append("_No scale results (bench/scale.sh did not run)._\n")
else:
    out.append("### Scale (bench/scale.sh)\n")
    kv = {r["key"]: r["value"] for r in summary}
    kv2 = {r["key"]: r["value"] for r in summary2} if summary2 else None
    labels = {
        "nodes": "simulated nodes (one fake_agents process)",
        "devices_per_node": "devices per node",
        "heartbeat_interval_ms": "heartbeat interval (ms)",
        "containers_target": "containers wanted",
        "fill_mode": "how the fill created them",
        "containers_created": "containers created",
        "fill_s": "fill time (s)",
        "fill_per_s": "fill rate (containers/s, 32 outstanding)",
        "start_ms_empty": "broker start-up, empty store (ms to serving)",
        "register_all_nodes_ms": "all nodes registered and READY (ms)",
        "broker_rss_kb_nodes_only": "broker RSS, nodes only (KiB)",
        "broker_rss_kb_at_size": "broker RSS at size (KiB)",
        "broker_hwm_kb_at_size": "broker peak RSS at size (KiB)",
        "fake_agents_rss_kb": "fake_agents RSS (KiB)",
        "broker_cpu_s_total": "broker CPU seconds, whole first life",
        "store_bytes": "store on disk (bytes, after checkpoint)",
        "start_ms_at_size": "broker restart on the full store (ms to serving)",
        "broker_rss_kb_after_start": "broker RSS right after restart (KiB)",
        "restart_to_all_nodes_ready_ms": "restart until every node READY again (ms)",
        "broker_rss_kb_after_restart_ready": "broker RSS after nodes re-registered (KiB)",
        "nodes_timed_out_before_restart": "node timeouts (broker log), first life",
        "nodes_timed_out_after_restart": "node timeouts (broker log), after the restart",
    }
    if kv2:
        out.append(table(["measure", "heartbeat %s ms" % kv.get("heartbeat_interval_ms"),
                          "heartbeat %s ms" % kv2.get("heartbeat_interval_ms")],
                         [[labels.get(k, k), v, kv2.get(k, "-")] for k, v in kv.items()]) + "\n")
    else:
        out.append(table(["measure", "value"],
                         [[labels.get(k, k), v] for k, v in kv.items()]) + "\n")
    if scale:
        out.append("Latency with the nodes registered and no containers (`empty`) and at size "
                   "(`at_size`); place = CreateContainer by selector + DeleteContainer, list = "
                   "ListContainers first page (100) of everything / one node / one tenant.\n")
        body = []
        for hb, rs in ((kv.get("heartbeat_interval_ms"), scale),
                       (kv2.get("heartbeat_interval_ms") if kv2 else None, scale2 or [])):
            body += [[hb, r["label"], r["mix"], r["op"], r["concurrency"], num(r["qps"]),
                      ms(r["p50_us"]), ms(r["p99_us"]), ms(r["p999_us"]), r["errors"]]
                     for r in rs if r["mix"] == "noop" or r["op"] != "all"]
        out.append(table(["heartbeat ms", "store", "mix", "op", "conc", "QPS", "p50 ms",
                          "p99 ms", "p99.9 ms", "errors"], body) + "\n")

# ---------------------------------------------------------------- micro
def micro(name):
    r = rows(name)
    return {} if r is None else {(x["benchmark"], x["n"]): float(x["ns_per_op"]) for x in r}

alloc, ledger, mp = micro("allocator_bench.csv"), micro("ledger_bench.csv"), micro(
    "map_path_bench.csv")
if not (alloc or ledger or mp):
    out.append("_No microbenchmark results (bench/micro.sh did not run)._\n")
else:
    out.append("### Allocator and ledger cost vs size (bench/micro.sh)\n")
    out.append("CPU ns per op, median of the repetitions; growth = cost at 1e6 / cost at 1e3.\n")
    body = []
    names = []
    for d in (alloc, ledger, mp):
        for (b, n) in d:
            if b not in names:
                names.append(b)
    for b in names:
        d = alloc if any(k[0] == b for k in alloc) else ledger if any(
            k[0] == b for k in ledger) else mp
        vals = [d.get((b, n)) for n in ("1000", "10000", "100000", "1000000")]
        growth = vals[3] / vals[0] if vals[0] and vals[3] else None
        body.append([b] + [num(v) if v else "-" for v in vals] +
                    ["%.2f x" % growth if growth else "-"])
    out.append(table(["benchmark", "1e3", "1e4", "1e5", "1e6", "growth 1e3 -> 1e6"], body)
               + "\n")
    out.append("`BM_AllocatorCopy` copies the whole allocator: O(N) by construction (it is "
               "what the broker does to stage a window RPC), so it is shown, not judged.\n")
    for label, d, names_ in (
            ("allocator", alloc, ["BM_AllocatorBestFit", "BM_AllocatorFixedBase"]),
            ("ledger", ledger, ["BM_LedgerDisjoint", "BM_LedgerDisjointManyObjects",
                                "BM_LedgerShared"])):
        parts, ok = [], True
        for b in names_:
            lo, hi = d.get((b, "1000")), d.get((b, "1000000"))
            if lo and hi:
                parts.append("%s %.2f x (%s -> %s ns)" % (b[3:], hi / lo, num(lo), num(hi)))
                ok = ok and hi / lo <= 2
        if parts:
            goals.append(["%s cost at 1e6 <= 2 x its cost at 1e3" % label, "; ".join(parts),
                          "met" if ok else "**not met**"])
    shares, met, missed = [], [], []
    for n, nname in (("1000", "1e3"), ("10000", "1e4"), ("100000", "1e5"), ("1000000", "1e6")):
        for kind in ("Disjoint", "Shared"):
            a = mp.get(("BM_LedgerAsInMapPath" + kind, n))
            b = mp.get(("BM_AgentCoreMapPath" + kind, n))
            if a and b:
                shares.append("%s N=%s: %.1f %%" % (kind.lower(), nname, 100 * a / b))
                (met if a / b < 0.10 else missed).append("%s %s" % (kind.lower(), nname))
    if shares:
        status = ("met" if not missed else "**not met**" if not met else
                  "**not met** at %s; met at %s" % (", ".join(missed), ", ".join(met)))
        goals.append(["the ledger's share of a map < 10 %", "; ".join(shares), status])

if goals:
    out.insert(0, "### Goals\n\n" + table(["goal", "measured", "status"], goals) + "\n")

fragment = "\n".join(out).rstrip() + "\n"
FRAGMENT = os.path.join(os.path.dirname(DOC) or ".", "bench", "results.md")
os.makedirs(os.path.dirname(FRAGMENT), exist_ok=True)
with open(FRAGMENT, "w") as f:
    f.write("<!-- Generated by bench/report.py from %s; do not edit. -->\n\n" % RES + fragment)
if os.path.exists(DOC):
    with open(DOC) as f:
        doc = f.read()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(DOC, "w") as f:
            f.write(head + BEGIN + "\n\n" + fragment + "\n" + END + tail)
        print("report.py: tables written into %s and %s" % (DOC, FRAGMENT))
    else:
        print("report.py: %s has no generated-section markers; wrote %s only" % (DOC, FRAGMENT))
else:
    print("report.py: wrote %s (%s does not exist)" % (FRAGMENT, DOC))
