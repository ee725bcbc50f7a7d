// One flag style for the project's programs: words joined by '-'
// (--node-timeout-ms), as iommuctl, iommu-launcher, etcd and kubectl write
// them. The daemons define their flags with Abseil, whose names are C++
// identifiers (node_timeout_ms); ParseFlags translates the command line so
// the dashed spelling reaches Abseil's parser, keeps the old underscore
// spelling working with a deprecation warning, and prints --help with the
// dashed names.
//
// TranslateFlagSpelling and RenderFlagsHelp are pure; ParseFlags writes to
// stdout/stderr and may exit, once, at the start of main().
#ifndef COMMON_FLAG_SPELLING_H_
#define COMMON_FLAG_SPELLING_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

struct TranslatedFlags {
  // The command line as Abseil's parser takes it: flag names with '_'.
  std::vector<std::string> args;
  // Underscore spellings given, in order, each with the dashed spelling that
  // replaces it: {"--node_timeout_ms", "--node-timeout-ms"}.
  std::vector<std::pair<std::string, std::string>> deprecated;
  // --help or -h was given.
  bool help = false;
};

// Translates `args` (args[0] is the program) for Abseil: "--a-b[=v]" becomes
// "--a_b[=v]", "--no-a-b" "--noa_b" (a false boolean), "-h" "--help".
// Arguments after "--", values ("--node x", "-5") and flags without a '-'
// or '_' in their name pass unchanged. `known(name)` says whether Abseil has
// a flag named `name` (with underscores).
// INVALID_ARGUMENT naming the flag as given for a name `known` refuses:
// "unknown flag --node-timout-ms (see --help)".
absl::StatusOr<TranslatedFlags> TranslateFlagSpelling(
    const std::vector<std::string>& args, const std::function<bool(absl::string_view)>& known);

// One flag as --help lists it.
struct FlagHelp {
  std::string name;  // With underscores, as defined.
  std::string help;
  std::string default_value;
};

// `usage`, then every flag of `flags` sorted by name, dashed, with its help
// word-wrapped to 80 columns and its default.
std::string RenderFlagsHelp(absl::string_view usage, std::vector<FlagHelp> flags);

// The whole front end of a daemon's main(): translates argv as above and
// hands it to absl::ParseCommandLine. Prints RenderFlagsHelp of the
// project's own flags and exits 0 on --help; prints the error and exits 2
// on an unknown flag; writes one deprecation warning line per underscore
// spelling to stderr. Call after InstallFlagsUsage (common/version.h).
void ParseFlags(int argc, char** argv);

}  // namespace iommu

#endif  // COMMON_FLAG_SPELLING_H_
