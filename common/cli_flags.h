// Table-driven command-line flags, shared by iommuctl (client/args.h) and
// iommu-launcher (launcher/cli.h): a program lists its flags as FlagSpecs and
// this library reads them from argv, checks each value against its kind, and
// renders the flag list for --help.
//
// Grammar: "--name=value" or "--name value"; a switch is "--name", or
// "--name=true" / "--name=false" (also 1 / 0). A flag given twice is refused
// unless it is `repeated`. An unknown flag is refused with the closest known
// name when one is within edit distance 2: "unknown flag --sockt (did you
// mean --socket?)".
//
// Every error is INVALID_ARGUMENT whose message starts with the flag as the
// user wrote it ("--size: ..."), so a program can print it as a usage error.
// Pure: no I/O, no environment. Every function is thread-safe.
#ifndef COMMON_CLI_FLAGS_H_
#define COMMON_CLI_FLAGS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace iommu {
namespace cli {

// How a flag's value is read.
enum class ValueKind {
  kSwitch,    // No value: "--delete-containers" (or "=true" / "=false").
  kString,    // Any text.
  kSize,      // Bytes (common/byte_size.h): 4096, 0x1000, 4Ki, 2Mi, 1Gi, 1G (10^9).
  kUint32,    // Decimal or 0x hex, fits 32 bits.
  kUint64,    // Decimal or 0x hex, fits 64 bits (addresses).
  kPciId,     // PCI id: hex as lspci writes it, 0x optional ("8086" is 0x8086), <= ffff.
  kPciIds,    // A kPciId, or VENDOR:DEVICE ("10de:2330"): the device in FlagValue::second.
  kDuration,  // "5s", "1500ms", "1m"; a bare number is seconds. > 0.
};

// One flag of a program or command.
struct FlagSpec {
  std::string name;  // Without dashes: "pinned".
  ValueKind kind = ValueKind::kString;
  std::string value_name;  // For help: "SIZE". Empty for switches.
  std::string help;
  bool required = false;
  bool repeated = false;  // May be given several times.
  // kString only: "--name=" is a value (the program checks it) rather than
  // "--name: must not be empty".
  bool allow_empty = false;
  // Non-empty for a flag that no longer exists: giving it, with or without
  // a value, is "--name: <removed>". Help does not list it and suggestions
  // never name it.
  std::string removed;
};

// A parsed flag value: the text as given, and the number for numeric kinds
// (sizes, integers, PCI ids, switches as 0/1). Durations are in `duration`.
struct FlagValue {
  std::string text;
  uint64_t number = 0;
  // kPciIds given as VENDOR:DEVICE: the device id (number is the vendor's).
  bool has_second = false;
  uint64_t second = 0;
  absl::Duration duration;
};

// Flags given, by name: every value of each, in the order given.
using FlagValues = std::map<std::string, std::vector<FlagValue>>;

// ---------------------------------------------------------------- values
// `flag` names the flag in messages ("--size").

// A byte count as common/byte_size.h's ParseByteSize reads it (Kubernetes
// quantities: plain bytes, Ki Mi Gi Ti binary, k M G T decimal, or 0x hex).
// Refuses ambiguous units ("1GB"), fractions and overflow.
absl::StatusOr<uint64_t> ParseSize(absl::string_view flag, absl::string_view text);
// Decimal or 0x hex; refuses values above `max`.
absl::StatusOr<uint64_t> ParseUint(absl::string_view flag, absl::string_view text, uint64_t max);
// A PCI vendor or device id in hex, as lspci, sysfs and the agent's
// --sim-devices write it: 1-4 hex digits, "0x" optional ("8086", "0x8086",
// "10DE"). Never decimal.
absl::StatusOr<uint32_t> ParsePciId(absl::string_view flag, absl::string_view text);
// "5s", "250ms", "2m", or a bare number of seconds; must be > 0 and finite.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view flag, absl::string_view text);

// Checks `text` against `spec.kind` and returns the value.
absl::StatusOr<FlagValue> ParseValue(const FlagSpec& spec, absl::string_view text);

// ---------------------------------------------------------------- parsing

// The flag named `name` in `flags`, or nullptr.
const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags, absl::string_view name);

// One "--name" or "--name=value" argument, split at the first '='.
struct FlagArg {
  std::string name;
  bool has_value = false;
  std::string value;
};
// `arg` must start with "--".
FlagArg SplitFlag(absl::string_view arg);

// Reads the value of one occurrence of `spec`, given as `arg`: the inline
// value, else (for flags that are not switches) the next argument
// args[*i + 1], advancing *i past it; a switch without a value is "true".
// On failure *i is unchanged and the error is "--name: needs a value
// (--name=VALUE)", the removed flag's message, or the value's error.
absl::StatusOr<FlagValue> TakeValue(const FlagSpec& spec, const FlagArg& arg,
                                    const std::vector<std::string>& args, size_t* i);

// Adds `value` to `values` under `spec.name`; "--name: given more than once"
// when `spec` is not repeated and already has one.
absl::Status AddValue(const FlagSpec& spec, FlagValue value, FlagValues* values);

// "unknown flag --name<where> (did you mean --x?)", suggesting from the
// names of `flags` that are not removed. `where` is appended as given, e.g.
// " for \"container create\"".
absl::Status UnknownFlag(absl::string_view name, absl::string_view where,
                         const std::vector<FlagSpec>& flags);

// Parses a command line made only of flags (`args` excludes the program
// name), e.g. iommu-launcher's. A word that is not a flag is "unexpected
// argument \"word\"". Required flags are not checked here (a program may
// take them from elsewhere).
absl::StatusOr<FlagValues> ParseFlags(const std::vector<FlagSpec>& flags,
                                      const std::vector<std::string>& args);

// ---------------------------------------------------------------- messages

// Levenshtein distance between `a` and `b`.
size_t EditDistance(absl::string_view a, absl::string_view b);

// " (did you mean <prefix><c>?)" for the candidate closest to `word` within
// distance 2 (the alphabetically first among equals), or "" when none is.
std::string Suggest(absl::string_view word, const std::vector<std::string>& candidates,
                    absl::string_view prefix);

// ---------------------------------------------------------------- help

// Word-wraps `text` to `width` columns; every line but the first starts with
// `indent` spaces, and the first line is taken to start at column `indent`
// too (the caller printed what precedes it). Keeps the paragraph breaks
// ('\n') of `text`. A word longer than a line gets a line of its own.
std::string Wrap(absl::string_view text, size_t width, size_t indent);

// "--name=VALUE" for flags with a value, "--name" for switches.
std::string FlagUsage(const FlagSpec& flag);

// One line per flag that is not removed: "  --name=VALUE  help", the help
// aligned in one column and wrapped under itself to `width` columns, with
// " Required." and " Repeatable." appended where they apply (unless the
// help already says "repeatable"). Every line ends in '\n'.
std::string RenderFlagList(const std::vector<FlagSpec>& flags, size_t width);

}  // namespace cli
}  // namespace iommu

#endif  // COMMON_CLI_FLAGS_H_
