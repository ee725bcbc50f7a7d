#!/usr/bin/env bash
# Installs what is missing, then builds and runs every test.
# This is the README's test command; .ci/run calls it and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bazel test //... "$@"
