#!/usr/bin/env bash
# Installs what is missing, then builds and runs every test, in four phases:
#   test   bazel test //... (gcc): every test, the QEMU VM tests included
#   asan   the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan   the same tests under ThreadSanitizer
#   fuzz   every libFuzzer target for a bounded number of runs (fuzz/run.sh)
# This is the README's test command; .ci/run calls it and nothing else.
# Arguments go to the first phase's `bazel test`. Every phase runs even if an
# earlier one failed; the script fails if any did.
#
# The sanitizer and fuzz phases build with clang in one output base of their
# own ($IOMMU_SAN_OUTPUT_BASE, default ~/.cache/iommu-broker/bazel-san): a
# different compiler re-runs Bazel's toolchain setup, so sharing the
# workspace's output base would throw away its gcc build. Each config keeps its
# own bazel-out tree there (--platform_suffix), so reruns are incremental.
#
# Which tests run under the sanitizers: every test except those tagged "vm"
# (the QEMU tests boot a guest kernel and run the binaries inside it: they
# test the kernel path, not our memory or threading, and take minutes), and
# except a test tagged "no_asan" / "no_tsan" (none today; a tag needs a
# comment saying why). New tests are included automatically.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

SAN_BASE="${IOMMU_SAN_OUTPUT_BASE:-${XDG_CACHE_HOME:-$HOME/.cache}/iommu-broker/bazel-san}"
SAN_BAZEL=(bazel --output_base="$SAN_BASE")
# Bazel 4 does not expand %workspace% in --test_env, hence the absolute path.
# The suppressions file is not an input Bazel knows of, so its hash goes into
# the test environment: editing it re-runs the tsan tests instead of reusing
# cached results.
TSAN_OPTIONS_VALUE="halt_on_error=1:second_deadlock_stack=1:history_size=4:detect_deadlocks=1:suppressions=$PWD/fuzz/tsan.supp"
TSAN_SUPP_HASH="$(sha256sum fuzz/tsan.supp | cut -c1-16)"
LSAN_OPTIONS_VALUE="suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0"
LSAN_SUPP_HASH="$(sha256sum fuzz/lsan.supp | cut -c1-16)"

summary=()
failures=()
failed=0
PHASE_LOG="$(mktemp)"
TESTS_FILE="$(mktemp)"
trap 'rm -f "$PHASE_LOG" "$TESTS_FILE"' EXIT
phase() {
  local name="$1" start status
  shift
  echo
  echo "=== test.sh: $name: $*"
  start=$(date +%s)
  set +e
  "$@" 2>&1 | tee "$PHASE_LOG"
  status=${PIPESTATUS[0]}
  set -e
  local took=$(($(date +%s) - start))
  if [ "$status" -eq 0 ]; then
    summary+=("$(printf '%-5s ok      %4ds' "$name" "$took")")
  else
    summary+=("$(printf '%-5s FAILED  %4ds  (exit %d)' "$name" "$took" "$status")")
    failed=1
    remember_failures "$name"
  fi
}

# A failed phase's failing targets and the end of each one's log, kept for the
# summary: the end of the output is what a CI page shows, and a long phase
# scrolls the failure itself far out of it.
remember_failures() {
  local name="$1" line target log
  while IFS= read -r line; do
    target="$(sed -E 's/^(FAIL|TIMEOUT): (\S+) .*/\2/' <<<"$line")"
    log="$(sed -nE 's/.*\(see (\S+)\).*/\1/p' <<<"$line")"
    failures+=("--- $name: $target")
    if [ -n "$log" ] && [ -f "$log" ]; then
      while IFS= read -r l; do failures+=("    $l"); done < <(tail -n 30 "$log")
    fi
  done < <(grep -E '^(FAIL|TIMEOUT): //' "$PHASE_LOG" | head -n 6)
  while IFS= read -r line; do failures+=("--- $name: $line"); done \
    < <(grep -E '^(ERROR: |fuzz: .*(FAILED|crash))|FAILED TO BUILD|NO STATUS' "$PHASE_LOG" | head -n 8)
}

phase test bazel test //... "$@"

# The sanitizer builds cannot expand //... themselves: the first phase leaves a
# convenience symlink bazel-<this directory's name> into the workspace's
# output base, which only that output base knows to skip (.bazelignore can
# name it for one directory name only, and CI clones elsewhere). So the
# workspace's own server lists the tests, and the sanitizer builds leave the
# convenience symlinks (bazel-bin, bazel-testlogs) pointing at the gcc build.
if bazel query --noshow_progress 'tests(//...) except attr(tags, "\bmanual\b", //...)' \
    >"$TESTS_FILE"; then
  SAN_TEST=(test --build_tests_only --keep_going --experimental_convenience_symlinks=ignore
            --target_pattern_file="$TESTS_FILE")
  # --keep_going: one target that fails to build does not hide the others' results.
  phase asan "${SAN_BAZEL[@]}" "${SAN_TEST[@]}" --config=asan --test_tag_filters=-vm,-no_asan \
    --test_env=LSAN_OPTIONS="$LSAN_OPTIONS_VALUE" --test_env=LSAN_SUPPRESSIONS_SHA256="$LSAN_SUPP_HASH"
  phase tsan "${SAN_BAZEL[@]}" "${SAN_TEST[@]}" --config=tsan --test_tag_filters=-vm,-no_tsan \
    --test_env=TSAN_OPTIONS="$TSAN_OPTIONS_VALUE" --test_env=TSAN_SUPPRESSIONS_SHA256="$TSAN_SUPP_HASH"
else
  summary+=("asan, tsan: FAILED: bazel query could not list the tests")
  failed=1
fi
# A fresh scratch corpus each time, so the bounded runs start from the seeds
# in the tree; a crash stays in $FUZZ_OUT/<target>/ for copying to
# fuzz/regressions/.
FUZZ_OUT="${TMPDIR:-/tmp}/iommu-broker-fuzz-test"
rm -rf "$FUZZ_OUT"
phase fuzz env FUZZ_OUTPUT_BASE="$SAN_BASE" FUZZ_OUT="$FUZZ_OUT" fuzz/run.sh

echo
echo "=== test.sh: summary"
if ((${#failures[@]})); then
  echo "failures (the end of each failing test's log):"
  printf '%s\n' "${failures[@]}"
  echo
fi
printf '  %s\n' "${summary[@]}"
exit "$failed"
