#!/usr/bin/env python3
"""Merges the launcher-path benchmark results into RESULTS/launcher_path.{json,csv}.

  bench/launcher_path_report.py RESULTS

Reads RESULTS/launcher_path_sim.json (Google Benchmark JSON of //bench:launcher_path_bench,
written by bench/launcher_path.sh) and RESULTS/launcher_path_vm.txt (the in-VM lines of
bench/vm_map_path.sh); either may be missing. CSV columns:

  where            sim | vm-type1-Ncpu | vm-iommufd-Ncpu (N: the guest's vCPUs)
  path             sim: socket, core, backend; vm: socket, direct-type1, direct-iommufd
  len_bytes        the mapping mapped and unmapped per op
  live             other mappings already in the container (the VM runs use 0)
  us_per_op        one map + one unmap, microseconds, wall time: sim = median over the
                   repetitions of the mean; vm = median of the per-op times
  socket_over_path socket's us_per_op / this row's, same where/len/live (1 for socket)

Prints the table.
"""
import csv
import json
import os
import re
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
rows = []
doc = {}

sim_path = os.path.join(out, "launcher_path_sim.json")
if os.path.exists(sim_path):
    with open(sim_path) as f:
        sim = json.load(f)
    doc["sim"] = {"context": sim.get("context"), "benchmarks": []}
    have_median = any(b.get("aggregate_name") == "median" for b in sim["benchmarks"])
    for b in sim["benchmarks"]:
        if have_median and b.get("aggregate_name") != "median":
            continue
        if not have_median and b.get("run_type") == "aggregate":
            continue
        m = re.match(r"BM_(\w+)/len_kib:(\d+)/live:(\d+)", b["run_name"])
        if not m:
            continue
        ns = b["real_time"] * {"ns": 1, "us": 1e3, "ms": 1e6}[b.get("time_unit", "ns")]
        path = {"socketlist2": "socket-list2"}.get(m.group(1).lower(), m.group(1).lower())
        row = {"where": "sim", "path": path, "len_bytes": int(m.group(2)) * 1024,
               "live": int(m.group(3)), "us_per_op": ns / 1e3}
        rows.append(row)
        doc["sim"]["benchmarks"].append(dict(row, cpu_time_ns=b["cpu_time"], name=b["name"]))

vm_path = os.path.join(out, "launcher_path_vm.txt")
if os.path.exists(vm_path):
    doc["vm"] = []
    with open(vm_path) as f:
        for line in f:
            kv = dict(re.findall(r"(\w+)=(\S+)", line))
            if "path" not in kv:
                continue
            where = kv["where"] + ("-%scpu" % kv["vcpus"] if "vcpus" in kv else "")
            row = {"where": where, "path": kv["path"], "len_bytes": int(kv["len"]), "live": 0,
                   "us_per_op": float(kv["p50_us"])}
            rows.append(row)
            doc["vm"].append(dict(row, iters=int(kv["iters"]), mean_us=float(kv["mean_us"]),
                                  p90_us=float(kv["p90_us"]), min_us=float(kv["min_us"])))

socket = {(r["where"], r["len_bytes"], r["live"]): r["us_per_op"] for r in rows if r["path"] == "socket"}
for r in rows:
    s = socket.get((r["where"], r["len_bytes"], r["live"]))
    r["socket_over_path"] = round(s / r["us_per_op"], 2) if s and r["us_per_op"] > 0 else ""
order = {"socket": 0, "socketlist2": 1, "socket-list2": 1, "core": 2, "backend": 3,
         "direct-iommufd": 4, "direct-type1": 5}
rows.sort(key=lambda r: (r["where"], r["live"], r["len_bytes"], order.get(r["path"], 9)))
doc["rows"] = rows

with open(os.path.join(out, "launcher_path.json"), "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
cols = ["where", "path", "len_bytes", "live", "us_per_op", "socket_over_path"]
with open(os.path.join(out, "launcher_path.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow(dict(r, us_per_op="%.3f" % r["us_per_op"]))

print("%-16s %-15s %9s %6s %12s %17s" % ("where", "path", "len", "live", "us/op", "socket/path"))
for r in rows:
    ln = "%d KiB" % (r["len_bytes"] // 1024) if r["len_bytes"] < 1 << 20 else "%d MiB" % (r["len_bytes"] >> 20)
    print("%-16s %-15s %9s %6d %12.2f %17s" % (r["where"], r["path"], ln, r["live"], r["us_per_op"],
                                              r["socket_over_path"]))
print("-> %s/launcher_path.json %s/launcher_path.csv" % (out, out))
