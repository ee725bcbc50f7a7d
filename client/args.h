// Command-line grammar of iommuctl and its parser.
//
//   iommuctl [global flags] <noun> <verb> [args] [--flags]
//
// Provides the command table (every command, its positional argument, its
// flags, the request fields they fill and its help text), ParseCommandLine(),
// which turns argv into a typed Invocation, the help renderers and bash
// completion. Flags, their value kinds ("2Mi", "0x1000", "10de:2330", "5s")
// and the help layout of a flag list come from common/cli_flags.h, the
// parser iommu-launcher shares.
//
// Everything here is pure: no I/O, no environment access, no gRPC. All
// functions are thread-safe; the command table is immutable after first use.
// Every error is INVALID_ARGUMENT whose message names the offending flag or
// word; the caller reports it as a usage error (exit code 2).
#ifndef CLIENT_ARGS_H_
#define CLIENT_ARGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/cli_flags.h"

namespace iommu {
namespace client {

// Used when neither --broker nor $IOMMU_BROKER is given.
inline constexpr char kDefaultBrokerAddress[] = "127.0.0.1:7400";
// Environment variable naming the broker (read by the caller, not here).
inline constexpr char kBrokerEnvVar[] = "IOMMU_BROKER";
// Environment variables for the transport flags (--cert, --key, --ca,
// --trust-domain; IOMMUCTL_INSECURE=1 for --insecure).
inline constexpr char kCertEnvVar[] = "IOMMUCTL_CERT";
inline constexpr char kKeyEnvVar[] = "IOMMUCTL_KEY";
inline constexpr char kCaEnvVar[] = "IOMMUCTL_CA";
inline constexpr char kTrustDomainEnvVar[] = "IOMMUCTL_TRUST_DOMAIN";
inline constexpr char kInsecureEnvVar[] = "IOMMUCTL_INSECURE";
// Environment variable naming the config file of contexts (client/config.h).
inline constexpr char kConfigEnvVar[] = "IOMMUCTL_CONFIG";

// The flag table types and value parsers are common/cli_flags.h's, shared
// with iommu-launcher.
using cli::FlagSpec;
using cli::FlagValue;
using cli::ParsePciId;
using cli::ParseSize;
using cli::ParseUint;
using cli::ValueKind;

// One command: `noun verb`, or a single word (`usage`, `version`, `help`),
// in which case verb is empty.
struct CommandSpec {
  std::string noun;
  std::string verb;
  // Name of the single positional argument ("ID", "NAME"), empty when the
  // command takes none.
  std::string positional;
  bool positional_optional = false;  // Only `help` has an optional one.
  std::string summary;               // One line, for the command lists.
  std::string description;           // Paragraph(s) for `--help`.
  std::vector<FlagSpec> flags;
  std::vector<std::string> examples;
  // True for commands that change state: they carry a request id.
  bool mutation = false;
  // False for commands that never talk to the broker (help).
  bool needs_broker = true;
  // True when the command prints objects that `-o name` can name (lists,
  // and the commands answering one tenant, node, container or window).
  bool names_objects = false;
  // How BuildRequest (client/request_builder.h) fills the command's request
  // message by reflection: the field the positional argument goes to
  // ("tenant_id"; empty: none), and the field each flag goes to, by flag
  // name ("pinned" -> "quota.pinned_bytes"). Flags not listed are read by
  // the command's own code.
  std::string positional_field;
  std::map<std::string, std::string> flag_fields;

  // "container create", or "usage".
  std::string FullName() const;
};

// Every iommuctl command, grouped by noun in the order help lists them.
const std::vector<CommandSpec>& Commands();

// The command named `noun verb` (verb empty for single-word commands), or
// nullptr.
const CommandSpec* FindCommand(absl::string_view noun, absl::string_view verb);

// True when some command uses `noun` as its first word.
bool IsNoun(absl::string_view noun);

// -o table (for people), -o wide (the table with more columns), -o json and
// -o yaml (the same fields, for scripts), -o name (one kind/id a line,
// kubectl's "-o name": tenant/acme, container/c-0123456789abcdef), and
// -o jsonpath=TEMPLATE (client/jsonpath.h: chosen fields of the JSON).
enum class OutputFormat { kTable, kWide, kJson, kYaml, kName, kJsonPath };

// True for the formats that print every answer as data (json, yaml,
// jsonpath) rather than a view for people: describe, top and confirmations
// then print the answer itself.
bool IsStructured(OutputFormat format);

// Flags that apply to every command; accepted before or after the command.
struct GlobalOptions {
  std::string broker;                  // host:port.
  // Transport: mTLS with this certificate, key and CA bundle (PEM files), or
  // plaintext with insecure. Empty: from $IOMMUCTL_CERT/_KEY/_CA (resolved by
  // the caller, like the broker address).
  std::string cert;
  std::string key;
  std::string ca;
  std::string trust_domain;            // Empty: iommu.local.
  bool insecure = false;
  // --context: the config file's context to take the settings above from
  // (client/config.h); empty when not given.
  std::string context;
  OutputFormat output = OutputFormat::kTable;
  // The template of -o jsonpath=TEMPLATE, already checked to parse.
  std::string output_template;
  // Tables without their header row (--no-headers), for scripts.
  bool no_headers = false;
  absl::Duration timeout = absl::Seconds(5);
  std::string request_id;              // Empty: generate one per mutation.
  // --verbose: the client's own info lines (certificates loaded, ...) on
  // stderr too; without it only its warnings and errors.
  bool verbose = false;
};

// The result of parsing a command line.
struct Invocation {
  GlobalOptions global;
  // Help was asked for (--help, -h, or the `help` command). help_noun and
  // help_command say about what: both empty for the top level.
  bool help = false;
  std::string help_noun;
  const CommandSpec* help_command = nullptr;
  // The command to run when !help. Never null then.
  const CommandSpec* command = nullptr;
  // The positional argument, when the command takes one (else empty).
  std::string positional;
  // Flags given, by name; each value already checked against its kind.
  cli::FlagValues flags;

  bool Has(absl::string_view flag) const;
  // The last value given for `flag`; empty / 0 when absent.
  std::string String(absl::string_view flag) const;
  uint64_t Number(absl::string_view flag) const;
  // The last value given for a duration flag; absl::ZeroDuration() when absent.
  absl::Duration Duration(absl::string_view flag) const;
  // Every value given for a repeated flag, in order.
  std::vector<std::string> Strings(absl::string_view flag) const;
};

// Parses argv[1..] (`args` excludes the program name). `default_broker` is
// used when --broker is absent (the caller resolves $IOMMU_BROKER).
// On success the Invocation either asks for help or names a command with all
// required flags present and every value well-formed. On failure returns
// INVALID_ARGUMENT naming the flag or word, e.g.
//   "--pinned: \"1GB\" is ambiguous: write 1Gi (2^30 bytes) or 1G (10^9 bytes) ...".
absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& args,
                                            absl::string_view default_broker);

// A hint for a usage error in `args`: "Run 'iommuctl container create --help'
// for usage." naming the deepest command or noun recognised in `args`.
std::string UsageHint(const std::vector<std::string>& args);

// Help text: the top level (noun and command empty), one noun's commands, or
// one command (its usage line, description, flags and examples).
std::string RenderHelp(absl::string_view noun, const CommandSpec* command);

// A bash completion script defining _iommuctl and registering it for
// iommuctl: nouns, verbs and each command's flags (plus the global flags),
// all generated from Commands() and the global flag table.
std::string RenderBashCompletion();

// Value parsers (ParseSize, ParseUint, ParsePciId above) name `flag` in
// their messages. ParseTimeout: "5s", "250ms", "2m", or a bare number of
// seconds; must be > 0.
inline absl::StatusOr<absl::Duration> ParseTimeout(absl::string_view flag,
                                                   absl::string_view text) {
  return cli::ParseDuration(flag, text);
}
// A context name of the config file (client/config.h): 1-63 characters of
// letters, digits, '.', '_' and '-'. INVALID_ARGUMENT naming `what` otherwise.
absl::Status ValidateContextName(absl::string_view what, absl::string_view name);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_ARGS_H_
