#!/usr/bin/env bash
# Builds every libFuzzer target in //fuzz with clang (ASan + UBSan + coverage,
# `--config=fuzz`) and runs each one from its seed corpus.
#
#   fuzz/run.sh            bounded: -runs=20000 per target, 2500 for broker
#                          (about two minutes in all)
#   fuzz/run.sh --long     -max_total_time=600 per target (FUZZ_SECONDS overrides)
#   fuzz/run.sh TARGET...  only these (validation window_allocator ledger
#                          grant_token launcher_sessions broker)
#
# The clang build lives in its own Bazel output base ($FUZZ_OUTPUT_BASE,
# default ~/.cache/iommu-broker/bazel-san, shared with scripts/test.sh's
# --config=asan and --config=tsan phases) so it never invalidates the
# workspace's gcc build. Inputs that grow coverage are kept in a scratch copy
# of the corpus ($FUZZ_OUT/<target>/corpus, default /tmp/iommu-broker-fuzz, not in the tree); a crash is
# written to $FUZZ_OUT/<target>/ and the script exits non-zero. To keep a
# crash as a regression, copy it to fuzz/regressions/<target>/ with a name
# saying what broke: `bazel test //fuzz:all` replays it from then on.
set -euo pipefail

cd "$(dirname "$0")/.."
ALL=(validation window_allocator ledger grant_token launcher_sessions broker)
LONG=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --long) LONG=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) targets+=("$arg") ;;
  esac
done
[ "${#targets[@]}" -eq 0 ] && targets=("${ALL[@]}")

OUTPUT_BASE="${FUZZ_OUTPUT_BASE:-${XDG_CACHE_HOME:-$HOME/.cache}/iommu-broker/bazel-san}"
BAZEL=(bazel --output_base="$OUTPUT_BASE")

labels=()
for t in "${targets[@]}"; do labels+=("//fuzz:${t}_fuzzer"); done
echo "fuzz: building ${targets[*]} with clang (output base $OUTPUT_BASE)"
# --experimental_convenience_symlinks=ignore: bazel-bin and bazel-testlogs
# keep pointing at the workspace's gcc build. grep drops a harmless linker
# note that -fsanitize=fuzzer prints per target.
set +e
"${BAZEL[@]}" build --config=fuzz --experimental_convenience_symlinks=ignore "${labels[@]}" 2>&1 |
  grep -v "Cannot export local symbol"
build_status="${PIPESTATUS[0]}"
set -e
if [ "$build_status" -ne 0 ]; then
  echo "fuzz: FAILED: the clang build of ${labels[*]} failed" >&2
  exit 1
fi
BIN="$("${BAZEL[@]}" info --config=fuzz bazel-bin 2>/dev/null)/fuzz"

status=0
for t in "${targets[@]}"; do
  out="${FUZZ_OUT:-${TMPDIR:-/tmp}/iommu-broker-fuzz}/$t"
  mkdir -p "$out/corpus"
  cp -n fuzz/corpus/"$t"/* "$out/corpus/" 2>/dev/null || true
  seeds=("$out/corpus")
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  if [ "$LONG" -eq 1 ]; then
    MODE=(-max_total_time="${FUZZ_SECONDS:-600}")
  elif [ "$t" = broker ]; then
    # Each input drives a whole Broker (about 20 ms under ASan, against well
    # under 1 ms for the other targets): fewer runs keep the phase short.
    MODE=(-runs="${FUZZ_BROKER_RUNS:-2500}")
  else
    MODE=(-runs="${FUZZ_RUNS:-20000}")
  fi
  start=$(date +%s)
  if "$BIN/${t}_fuzzer" "${MODE[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$out/" "${seeds[@]}" >"$out/log" 2>&1; then
    echo "fuzz: $t ok in $(( $(date +%s) - start ))s ($(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$out/log" | cut -d' ' -f2) runs)"
  else
    status=1
    echo "fuzz: $t FAILED in $(( $(date +%s) - start ))s; see $out/log:"
    grep -E "invariant broken|ERROR: |runtime error|SUMMARY|Test unit written" "$out/log" | head -8
  fi
done
exit "$status"
