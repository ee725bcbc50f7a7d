#!/bin/sh
# Bazel's --workspace_status_command (see .bazelrc): the commit the binaries
# are built from, stamped into them by //common:build_commit (--version, the
# *_build_info metrics). STABLE_ keys rebuild what uses them when they change.
# Outside a git checkout (a source tarball) the commit is "unknown".
cd "$(dirname "$0")/.." || exit 0
commit=$(git rev-parse --short=12 HEAD 2>/dev/null) || commit=unknown
if [ "$commit" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then
  commit="$commit-dirty"
fi
echo "STABLE_GIT_COMMIT $commit"
