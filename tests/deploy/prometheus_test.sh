#!/usr/bin/env bash
# What deploy/prometheus ships is what Prometheus accepts, and the alerts
# behave as their unit tests say:
#   promtool check config prometheus.yml   (also checks the rule files it loads)
#   promtool check rules alerts.yml
#   promtool test rules alerts_test.yml    (each alert firing, and quiet next to it)
# Fails, never skips, without promtool (Debian package `prometheus`, which
# scripts/setup.sh installs).
set -euo pipefail

cd "${TEST_SRCDIR:?run under bazel test}/${TEST_WORKSPACE:?}"
command -v promtool >/dev/null ||
  { echo "FAIL: promtool not found (apt-get install prometheus)" >&2; exit 1; }

# A plain copy, so that relative rule_files resolve the way they do on a host.
WORK="${TEST_TMPDIR:?}/prometheus"
mkdir -p "$WORK"
cp deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml deploy/prometheus/alerts_test.yml "$WORK/"
cd "$WORK"

promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml

# Every alert has a unit test.
for alert in $(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' alerts.yml); do
  grep -q "alertname: $alert\$" alerts_test.yml ||
    { echo "FAIL: alert $alert has no test in alerts_test.yml" >&2; exit 1; }
done
echo "PASS: promtool accepts deploy/prometheus and its alert tests pass"
