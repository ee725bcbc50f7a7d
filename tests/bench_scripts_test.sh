#!/usr/bin/env bash
# The benchmark scripts run end to end at a tiny scale against the binaries
# Bazel built, and write what they promise. They are otherwise run by hand,
# so nothing noticed when one stopped working (fleet_return.sh started every
# agent on one --state-dir: all but one exited and the run waited forever).
#   * broker_load.sh: every mix over plaintext and mTLS, then broker vs etcd
#     with two agents; every row without errors, the CPU-per-call column
#     filled for each whole mix, the broker-vs-etcd table written;
#   * fleet_return.sh: two agents all READY again after a broker kill -9;
#   * ha_load.sh: 3 brokers on a 3-member etcd, mutations and etcd txns
#     without errors, one leader kill -9 with no acknowledged write lost.
# No figure is checked: timings belong to the benchmarks themselves.
set -euo pipefail

cd "${TEST_SRCDIR:?run under bazel test}/${TEST_WORKSPACE:?}"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

bin=$TEST_TMPDIR/bin
mkdir -p "$bin"
for f in server/iommu-broker agent/iommu-agent client/iommuctl bench/loadgen bench/etcd_load; do
  ln -sf "$PWD/$f" "$bin/"
done
export BENCH_BIN_DIR=$bin

load=$TEST_TMPDIR/load
if ! timeout 300 bench/broker_load.sh -o "$load" -m noop,read,mutate -c 1 -d 1 -C 1 -A 2 \
  >"$TEST_TMPDIR/load.out" 2>&1; then
  tail -n 40 "$TEST_TMPDIR/load.out" >&2
  fail "broker_load.sh did not finish"
fi
# label,mix,op,concurrency,ops,seconds,qps,p50_us,p99_us,p999_us,errors,...,server_cpu_us_per_op
# With CPU=0 the CPU-per-call column may be empty (no server pid given).
check_rows() {  # FILE LABEL MIX...
  local file=$1 label=$2 mix
  shift 2
  for mix in "$@"; do
    local row
    row=$(awk -F, -v l="$label" -v m="$mix" '$1 == l && $2 == m && $3 == "all"' "$file" | head -n 1)
    if [ -z "$row" ]; then
      fail "$file: no '$label' row for mix $mix"
      continue
    fi
    IFS=, read -r -a col <<<"$row"
    [ "${col[4]}" -gt 0 ] || fail "$file: $label $mix completed no call: $row"
    [ "${col[10]}" = 0 ] || fail "$file: $label $mix had errors: $row"
    [ "${CPU:-1}" = 0 ] || [ -n "${col[14]:-}" ] ||
      fail "$file: $label $mix has no server CPU per call: $row"
  done
}
check_rows "$load/load.csv" insecure noop read mutate
check_rows "$load/load.csv" mtls noop read mutate
check_rows "$load/vs_etcd.csv" broker mutate
check_rows "$load/vs_etcd.csv" etcd put txn
grep -q '^| 1 | [0-9]' "$load/vs_etcd.txt" || fail "vs_etcd.txt has no broker-vs-etcd row at 1 client"

fleet=$TEST_TMPDIR/fleet
if ! timeout 180 bench/fleet_return.sh -o "$fleet" -n 2 -s 1 -r 1 >"$TEST_TMPDIR/fleet.out" 2>&1; then
  tail -n 40 "$TEST_TMPDIR/fleet.out" >&2
  fail "fleet_return.sh did not finish"
fi
grep -q 'round 1: .*all 2 READY' "$fleet/fleet_return.txt" 2>/dev/null ||
  fail "fleet_return.txt does not say both nodes came back: $(cat "$fleet/fleet_return.txt" 2>&1)"

ha=$TEST_TMPDIR/ha
ln -sf "$PWD/bench/ha_failover" "$bin/"
if ! timeout 300 bench/ha_load.sh -o "$ha" -d 1 -C 1 -n 1 >"$TEST_TMPDIR/ha.out" 2>&1; then
  tail -n 40 "$TEST_TMPDIR/ha.out" >&2
  fail "ha_load.sh did not finish"
fi
CPU=0 check_rows "$ha/ha_vs_etcd.csv" ha-brokers mutate
CPU=0 check_rows "$ha/ha_vs_etcd.csv" etcd-3 txn
grep -q '^trials that lost an acknowledged write: 0 ' "$ha/ha_failover.txt" 2>/dev/null ||
  fail "ha_failover.txt: $(grep -i 'lost' "$ha/ha_failover.txt" 2>&1)"
grep -q '^failover over 1 of 1 trials' "$ha/ha_failover.txt" ||
  fail "ha_failover.txt: the trial did not complete: $(cat "$ha/ha_failover.txt" 2>&1)"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "PASS"
