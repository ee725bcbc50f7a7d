#!/usr/bin/env bash
# scripts/demo.sh, the README's first command, run non-interactively against
# the binaries Bazel built (IOMMU_DEMO_BIN), its output through a pipe as in
# `./scripts/demo.sh | tee demo.log`:
#   * it exits 0 and its output shows the headline: the same 64 MiB mapped
#     into two containers billed once (pinned 64MiB, mapped 128MiB,
#     DEDUP-SAVED 64MiB), then back to 0 after the launchers exit;
#   * its output ends when it does (no leftover holds the pipe open), and no
#     process of its session is left behind (issue 15: two `sleep 3600` stdin
#     feeders outlived it and kept `| tee` waiting for an hour);
#   * a demo that cannot run fails loudly: non-zero exit, "demo: FAILED: ...".
set -euo pipefail

cd "${TEST_SRCDIR:?run under bazel test}/${TEST_WORKSPACE:?}"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# The processes whose session is $1, one "pid args" per line.
session_members() {
  local stat pid rest sid
  for stat in /proc/[0-9]*/stat; do
    pid=${stat#/proc/}; pid=${pid%/stat}
    rest=$(sed 's/^.*) //' "$stat" 2>/dev/null) || continue
    # After the command: state ppid pgrp session ...
    sid=$(echo "$rest" | awk '{print $4}')
    [ "$sid" = "$1" ] || continue
    echo "$pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
  done
}

export IOMMU_DEMO_BIN=$PWD IOMMU_DEMO_STATE=$TEST_TMPDIR/demo
SIDFILE=$TEST_TMPDIR/demo.sid
OUT=$TEST_TMPDIR/demo.out

# The demo leads a session of its own, so whatever it leaves behind is found.
# timeout bounds the pipe: a leftover holding it open would keep cat waiting.
rc=0
timeout 240 bash -c '
  { setsid -w bash -c "echo \$\$ >\"\$0\"; exec scripts/demo.sh" "$1" 2>&1
    echo "demo exit status: $?"; } | cat >"$2"' _ "$SIDFILE" "$OUT" || rc=$?
sed 's/^/| /' "$OUT"
[ "$rc" = 0 ] || fail "the demo's output did not end within 240s (exit $rc): something holds it open"
grep -qx "demo exit status: 0" "$OUT" || fail "the demo did not exit 0: $(grep 'demo exit status' "$OUT")"

# The headline, from the usage tables: TENANT PINNED QUOTA USE MAPPED DEDUP-SAVED ...
grep -Eq '^acme +64\.0MiB +[^ ]+ +[^ ]+ +128\.0MiB +64\.0MiB ' "$OUT" ||
  fail "no usage row with pinned 64.0MiB, mapped 128.0MiB, DEDUP-SAVED 64.0MiB"
after=$(sed -n '/the launchers exit/,$p' "$OUT")
echo "$after" | grep -Eq '^acme +0B +[^ ]+ +[^ ]+ +0B +0B ' ||
  fail "no usage row back at 0B after the launchers exited"
grep -q "scenario done" "$OUT" || fail "the demo did not say the scenario is done"
grep -q "demo: FAILED" "$OUT" && fail "the demo reported a failure"

sid=$(cat "$SIDFILE" 2>/dev/null || true)
if [ -z "$sid" ]; then
  fail "the demo did not start (no session id)"
else
  left=$(session_members "$sid")
  if [ -n "$left" ]; then
    fail "processes of the demo outlived it: $left"
    echo "$left" | awk '{print $1}' | xargs -r kill -9 2>/dev/null || true
  fi
  [ ! -e "/dev/shm/iommu-broker-demo-$sid" ] || fail "the guest memory file is left in /dev/shm"
fi

# A step that cannot run fails loudly.
rc=0
IOMMU_DEMO_BIN=$TEST_TMPDIR/nowhere scripts/demo.sh >"$TEST_TMPDIR/bad.out" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "the demo exited 0 without its binaries"
grep -q "demo: FAILED: .*nowhere/server/iommu-broker: not found" "$TEST_TMPDIR/bad.out" ||
  fail "no clear message without binaries: $(cat "$TEST_TMPDIR/bad.out")"

[ "$failures" = 0 ] || exit 1
echo "PASS: the demo shows its headline, ends its output and leaves no process behind"
