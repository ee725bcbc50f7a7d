#include "common/version.h"

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace iommu {

extern const char kBuildCommit[];  // Generated: build_commit.cc.

const char* BuildCommit() { return kBuildCommit; }

std::string VersionLine(absl::string_view program) {
  return absl::StrCat(program, " ", kVersion, " (commit ", BuildCommit(), ")");
}

void InstallFlagsUsage(absl::string_view program, absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  // Abseil's default lists only flags defined in a file named after the
  // binary; ours live in main.cc and the libraries under these directories.
  config.contains_help_flags = [](absl::string_view file) {
    for (const char* dir : {"server/", "agent/", "common/", "client/", "launcher/"}) {
      if (absl::StartsWith(file, dir)) return true;
    }
    return false;
  };
  config.version_string = [line = VersionLine(program)] { return line + "\n"; };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace iommu
