#!/usr/bin/env python3
"""What one write costs in bench/ha_load.sh's throughput phase.

Usage: ha_cost.py TMP CONCURRENCY_LIST

Reads TMP/snap-{brokers,etcd}-C-{0,1} (written by ha_load.sh's snapshot()
before and after each side's run at concurrency C: CPU seconds per daemon,
the brokers' and etcd member 0's counters) and prints, per side, the run's
writes and, per write, the CPU of each kind of daemon, the raft proposals and
WAL fsyncs of etcd, and the txns and range reads the brokers sent to etcd. A broker write is
one RPC of loadgen's mutate mix answered OK; an etcd write is one txn etcd
applied. The counters span the whole run, warm-up and setup included, so
these are ratios over the same interval, not loadgen's measured window.
"""
import re
import sys

MUTATIONS = ("AllocateWindow", "ReleaseWindow", "CreateContainer", "DeleteContainer")
LINE = re.compile(r"^(\S+?)(\{[^}]*\})? (\S+)$")


def read(path):
    """Sums every "name{labels} value" line over the replicas."""
    out = {}
    for line in open(path):
        m = LINE.match(line.strip())
        if m:
            key = m.group(1) + (m.group(2) or "")
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def delta(tmp, side, c):
    before = read(f"{tmp}/snap-{side}-{c}-0")
    after = read(f"{tmp}/snap-{side}-{c}-1")
    return {k: after[k] - before.get(k, 0.0) for k in after}


def pick(d, prefix, **labels):
    total = 0.0
    for k, v in d.items():
        if k == prefix or k.startswith(prefix + "{"):
            if all(f'{n}="{val}"' in k for n, val in labels.items()):
                total += v
    return total


def main():
    tmp, levels = sys.argv[1], sys.argv[2].split(",")
    print("\nPer write, over each side's whole run (counters: brokers' /metrics, etcd member 0's "
          "/metrics; CPU: /proc/PID/stat of every daemon):")
    print("| clients | side | writes | broker CPU ms | etcd CPU ms (3 members) | agent CPU ms "
          "| raft proposals | WAL fsyncs (member 0) | broker->etcd txns | broker->etcd ranges "
          "| broker commits |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for c in levels:
        for side in ("brokers", "etcd"):
            try:
                d = delta(tmp, side, c)
            except OSError as e:
                print(f"| {c} | {side} | no snapshot: {e} |")
                continue
            if side == "brokers":
                writes = sum(pick(d, "iommu_broker_rpc_duration_seconds_count", method=m, code="OK")
                             for m in MUTATIONS)
            else:
                writes = pick(d, "etcd_mvcc_txn_total")
            if writes <= 0:
                print(f"| {c} | {side} | 0 |")
                continue
            per = lambda v: v / writes
            print(f"| {c} | {side} | {writes:,.0f} | {per(d.get('cpu_brokers', 0)) * 1000:.2f} | "
                  f"{per(d.get('cpu_etcd', 0)) * 1000:.2f} | {per(d.get('cpu_agent', 0)) * 1000:.2f} | "
                  f"{per(pick(d, 'etcd_server_proposals_committed_total')):.2f} | "
                  f"{per(pick(d, 'etcd_disk_wal_fsync_duration_seconds_count')):.2f} | "
                  f"{per(pick(d, 'iommu_broker_etcd_round_trip_seconds_count', op='txn')):.2f} | "
                  f"{per(pick(d, 'iommu_broker_etcd_round_trip_seconds_count', op='range')):.2f} | "
                  f"{per(pick(d, 'iommu_broker_store_commit_duration_seconds_count')):.2f} |")
            ranges = pick(d, "iommu_broker_etcd_round_trip_seconds_count", op="range")
            rtt = pick(d, "iommu_broker_etcd_round_trip_seconds_sum", op="range") / max(ranges, 1)
            # Range reads on the write path are serial under the broker's
            # lock (a retried request id's answer); worth a note only when a
            # run makes them often enough to bound its rate.
            if side == "brokers" and rtt > 0 and ranges / writes >= 0.01:
                notes.append(f"{c} clients: the brokers' etcd range reads took {rtt * 1000:.2f} ms "
                             f"on average, {ranges / writes:.2f} per write; taken one at a time "
                             f"(the broker reads a retried request id's answer under its lock), "
                             f"they alone allow at most {writes / ranges / rtt:,.0f} writes/s")
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
