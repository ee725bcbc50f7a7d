// The version of the project's programs and the commit they were built from
// (stamped at build time by scripts/workspace_status.sh through
// //common:build_commit), for --version, registration and the *_build_info
// metrics. Thread-safe: constants.
#ifndef COMMON_VERSION_H_
#define COMMON_VERSION_H_

#include <string>

#include "absl/strings/string_view.h"

namespace iommu {

inline constexpr char kVersion[] = "0.1.0-dev";

// The commit, 12 hex digits with "-dirty" when the tree had changes, or
// "unknown" when built outside a git checkout.
const char* BuildCommit();

// "<program> <version> (commit <commit>)".
std::string VersionLine(absl::string_view program);

// Makes --help list this program's own flags (those defined in the
// project's sources, not Abseil's) under `usage`, and --version print
// VersionLine(program). Call before absl::ParseCommandLine.
void InstallFlagsUsage(absl::string_view program, absl::string_view usage);

}  // namespace iommu

#endif  // COMMON_VERSION_H_
