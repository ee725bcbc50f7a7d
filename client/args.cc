// The command table assembled (Commands(): the rows of args_*_commands.cc,
// which of them name objects, and the request fields each fills) and what
// reads it: FindCommand, IsNoun, the Invocation's flag getters, and the
// small checks args.h exports. Parsing, help and completion are in
// args_parse.cc, args_help.cc and args_completion.cc.
#include "client/args.h"

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/args_internal.h"

namespace iommu {
namespace client {

FlagSpec Flag(std::string name, ValueKind kind, std::string value_name, std::string help,
              bool required, bool repeated) {
  FlagSpec f;
  f.name = std::move(name);
  f.kind = kind;
  f.value_name = std::move(value_name);
  f.help = std::move(help);
  f.required = required;
  f.repeated = repeated;
  return f;
}

namespace {

// Every command, grouped by noun in the order help lists them.
std::vector<CommandSpec> BuildCommands() {
  std::vector<CommandSpec> c;
  AddTenantCommands(&c);
  AddNodeCommands(&c);
  AddContainerCommands(&c);
  AddWindowCommands(&c);
  AddDescribeCommands(&c);
  AddFleetCommands(&c);
  AddLocalCommands(&c);
  return c;
}

// ---------------------------------------------------------------- requests

// The request fields a command's positional argument and flags fill, for
// BuildRequest (client/request_builder.h). A command missing here, or a flag
// not listed, is built by its handler's own code.
struct RequestMapping {
  std::string positional_field;
  std::map<std::string, std::string> flag_fields;
};

const std::map<std::string, RequestMapping>& RequestFields() {
  static const auto* quota = new std::map<std::string, std::string>{
      {"pinned", "quota.pinned_bytes"},
      {"max-containers", "quota.max_containers"},
      {"window-bytes", "quota.window_bytes"}};
  static const auto* fields = new std::map<std::string, RequestMapping>{
      {"tenant create", {"tenant_id", *quota}},
      {"tenant get", {"tenant_id", {}}},
      {"tenant list", {"", {{"selector", "label_selector"}}}},
      {"tenant set-quota", {"tenant_id", *quota}},
      {"tenant label", {"tenant_id", {{"remove", "remove_keys"}}}},
      {"tenant delete", {"tenant_id", {}}},
      {"node get", {"node", {}}},
      {"node cordon", {"node", {}}},
      {"node uncordon", {"node", {}}},
      {"node drain", {"node", {{"delete-containers", "delete_containers"}}}},
      {"node delete", {"node", {{"force", "force"}}}},
      {"device list", {"", {{"node", "node"}}}},
      {"container create",
       {"",
        {{"tenant", "tenant_id"},
         {"name", "name"},
         {"node", "node"},
         {"device", "devices"},
         {"vendor", "selector.vendor_id"},
         {"device-id", "selector.device_id"},
         {"count", "selector.count"},
         {"budget", "pin_budget_bytes"}}}},
      {"container get", {"container_id", {}}},
      {"container list",
       {"", {{"tenant", "tenant_id"}, {"node", "node"}, {"selector", "label_selector"}}}},
      {"container delete", {"container_id", {}}},
      {"container set-budget", {"container_id", {{"budget", "pin_budget_bytes"}}}},
      {"container label", {"container_id", {{"remove", "remove_keys"}}}},
      {"container grant", {"container_id", {{"launcher-uid", "launcher_uid"}}}},
      {"window allocate",
       {"container_id", {{"size", "size"}, {"align", "alignment"}, {"base", "base"}}}},
      {"window release", {"window_id", {}}},
      {"window list", {"", {{"container", "container_id"}, {"tenant", "tenant_id"}}}},
      {"usage", {"", {{"tenant", "tenant_id"}, {"node", "node"}}}},
  };
  return *fields;
}

}  // namespace

// ---------------------------------------------------------------- public

std::string CommandSpec::FullName() const {
  return verb.empty() ? noun : absl::StrCat(noun, " ", verb);
}

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = [] {
    auto* c = new std::vector<CommandSpec>(BuildCommands());
    for (CommandSpec& spec : *c) {
      static const auto* kNamed = new std::set<std::string>{
          "tenant create",    "tenant get",       "tenant list",         "tenant set-quota",
          "node list",        "node get",         "node cordon",         "node uncordon",
          "device list",      "container create", "container get",       "container list",
          "container set-budget", "window allocate", "window list", "config get-contexts"};
      spec.names_objects = kNamed->count(spec.FullName()) > 0;
      auto fields = RequestFields().find(spec.FullName());
      if (fields != RequestFields().end()) {
        spec.positional_field = fields->second.positional_field;
        spec.flag_fields = fields->second.flag_fields;
      }
    }
    return c;
  }();
  return *commands;
}

const CommandSpec* FindCommand(absl::string_view noun, absl::string_view verb) {
  for (const CommandSpec& c : Commands()) {
    if (c.noun == noun && c.verb == verb) return &c;
  }
  return nullptr;
}

bool IsStructured(OutputFormat format) {
  return format == OutputFormat::kJson || format == OutputFormat::kYaml ||
         format == OutputFormat::kJsonPath;
}

bool IsNoun(absl::string_view noun) {
  for (const CommandSpec& c : Commands()) {
    if (c.noun == noun) return true;
  }
  return false;
}

bool Invocation::Has(absl::string_view flag) const {
  return flags.find(std::string(flag)) != flags.end();
}

std::string Invocation::String(absl::string_view flag) const {
  auto it = flags.find(std::string(flag));
  return it == flags.end() || it->second.empty() ? "" : it->second.back().text;
}

uint64_t Invocation::Number(absl::string_view flag) const {
  auto it = flags.find(std::string(flag));
  return it == flags.end() || it->second.empty() ? 0 : it->second.back().number;
}

absl::Duration Invocation::Duration(absl::string_view flag) const {
  auto it = flags.find(std::string(flag));
  return it == flags.end() || it->second.empty() ? absl::ZeroDuration()
                                                 : it->second.back().duration;
}

std::vector<std::string> Invocation::Strings(absl::string_view flag) const {
  std::vector<std::string> out;
  auto it = flags.find(std::string(flag));
  if (it == flags.end()) return out;
  for (const FlagValue& v : it->second) out.push_back(v.text);
  return out;
}

absl::Status ValidateContextName(absl::string_view what, absl::string_view name) {
  if (name.empty() || name.size() > 63) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a context name is 1-63 characters, got \"", name, "\""));
  }
  for (const char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' &&
        c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": a context name has only letters, digits, '.', '_' and '-', got \"", name,
          "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace client
}  // namespace iommu
