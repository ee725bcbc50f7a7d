// Help text of iommuctl: the top-level page, a noun's page and a command's
// page (RenderHelp), rendered from the command table, the global flags and
// the noun summaries below, wrapped to 80 columns.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/args.h"
#include "client/args_internal.h"
#include "common/byte_size.h"
#include "common/cli_flags.h"

namespace iommu {
namespace client {
namespace {

using cli::Wrap;

// Each noun's one-line summary, for the top of its help page.
struct NounSpec {
  const char* name;
  const char* summary;
};

constexpr NounSpec kNouns[] = {
    {"tenant", "Tenants and their quotas (pinned memory, containers, IOVA window bytes)"},
    {"node", "Nodes (hosts whose agent registered) and their scheduling state"},
    {"device", "PCI devices that a node can pass through"},
    {"container", "Containers: IOMMU address spaces on a node with devices attached"},
    {"window", "IOVA windows reserved inside containers"},
    {"describe", "One object for people: its fields, what it holds and its recent events"},
    {"config", "Contexts: named brokers and credentials kept in iommuctl's config file"},
};

constexpr size_t kHelpWidth = 80;

// What a SIZE is, for help (common/byte_size.h reads it).
std::string SizeHelp() {
  return absl::StrCat(
      "SIZE is ", kByteSizeForms,
      ". Units are case-sensitive, as in Kubernetes: 1Gi is 1073741824 bytes, 1G is "
      "1000000000; 1GB, 1GiB and 4K are refused as ambiguous.");
}

std::string UsageLine(const CommandSpec& c) {
  std::string line = absl::StrCat("iommuctl ", c.FullName());
  if (!c.positional.empty()) {
    absl::StrAppend(&line, c.positional_optional ? " [" : " ", c.positional,
                    c.positional_optional ? "]" : "");
  }
  for (const FlagSpec& f : c.flags) {
    absl::StrAppend(&line, " ", f.required ? "" : "[", cli::FlagUsage(f), f.repeated ? "..." : "",
                    f.required ? "" : "]");
  }
  return line;
}

// `iommuctl <noun> <verb> --help`: the usage line, description, flags and
// examples of `command`, then the global flags.
std::string CommandHelp(const CommandSpec& command) {
  std::string out;
  absl::StrAppend(&out, command.summary, ".\n\nUsage:\n  ", Wrap(UsageLine(command), kHelpWidth, 4),
                  "\n\n", Wrap(command.description, kHelpWidth, 0), "\n");
  if (!command.flags.empty()) {
    absl::StrAppend(&out, "\nFlags:\n");
    absl::StrAppend(&out, cli::RenderFlagList(command.flags, kHelpWidth));
    for (const FlagSpec& f : command.flags) {
      if (f.kind != ValueKind::kSize) continue;
      absl::StrAppend(&out, "\n", Wrap(SizeHelp(), kHelpWidth, 0), "\n");
      break;
    }
  }
  if (!command.examples.empty()) {
    absl::StrAppend(&out, "\nExamples:\n");
    for (const std::string& e : command.examples) absl::StrAppend(&out, "  ", e, "\n");
  }
  absl::StrAppend(&out, "\nGlobal flags (before or after the command):\n");
  absl::StrAppend(&out, cli::RenderFlagList(GlobalFlags(), kHelpWidth));
  return out;
}

// `iommuctl <noun> --help`: the noun's commands and the first example of each.
std::string NounHelp(absl::string_view noun) {
  std::string out;
  const char* summary = "";
  for (const NounSpec& n : kNouns) {
    if (noun == n.name) summary = n.summary;
  }
  absl::StrAppend(&out, summary, ".\n\nUsage:\n  iommuctl ", noun,
                  " <command> [args] [--flags]\n\nCommands:\n");
  size_t width = 0;
  for (const CommandSpec& c : Commands()) {
    if (c.noun == noun) width = std::max(width, c.verb.size());
  }
  for (const CommandSpec& c : Commands()) {
    if (c.noun != noun) continue;
    absl::StrAppendFormat(&out, "  %-*s  %s\n", static_cast<int>(width), c.verb, c.summary);
  }
  absl::StrAppend(&out, "\nExamples:\n");
  for (const CommandSpec& c : Commands()) {
    if (c.noun == noun && !c.examples.empty()) absl::StrAppend(&out, "  ", c.examples[0], "\n");
  }
  absl::StrAppend(&out, "\nRun 'iommuctl ", noun, " <command> --help' for a command's flags.\n");
  return out;
}

// `iommuctl --help`: every command, the global flags, examples and the exit
// status.
std::string TopLevelHelp() {
  std::string out;
  absl::StrAppend(&out,
                  Wrap("iommuctl drives the iommu-broker: tenants and their pinned-memory "
                       "quotas, nodes and their PCI devices, containers (IOMMU address spaces "
                       "with devices attached) and IOVA windows.",
                       kHelpWidth, 0),
                  "\n\nUsage:\n  iommuctl [global flags] <noun> <command> [args] [--flags]\n\n"
                  "Commands:\n");
  size_t width = 0;
  for (const CommandSpec& c : Commands()) width = std::max(width, c.FullName().size());
  for (const CommandSpec& c : Commands()) {
    absl::StrAppendFormat(&out, "  %-*s  %s\n", static_cast<int>(width), c.FullName(), c.summary);
  }
  absl::StrAppend(&out, "\nGlobal flags:\n");
  absl::StrAppend(&out, cli::RenderFlagList(GlobalFlags(), kHelpWidth));
  absl::StrAppend(
      &out, "\n", Wrap(SizeHelp(), kHelpWidth, 0),
      "\n\nExamples:\n"
      "  iommuctl tenant create acme --pinned=64Gi\n"
      "  iommuctl container create --tenant=acme --vendor=10de:2330 --count=1\n"
      "  iommuctl window allocate c-0123456789abcdef --size=2Gi\n"
      "  iommuctl -o json usage --tenant=acme\n"
      "  iommuctl top\n"
      "  iommuctl describe container c-0123456789abcdef\n"
      "\n",
      Wrap("Exit status: 0 success; 1 the broker refused the request or could not "
           "be reached (\"error: CODE: message\" on stderr); 2 usage error.",
           kHelpWidth, 0),
      "\nRun 'iommuctl <noun> --help' or 'iommuctl <noun> <command> --help' for more.\n");
  return out;
}

}  // namespace

std::string RenderHelp(absl::string_view noun, const CommandSpec* command) {
  if (command != nullptr) return CommandHelp(*command);
  if (!noun.empty()) return NounHelp(noun);
  return TopLevelHelp();
}

}  // namespace client
}  // namespace iommu
