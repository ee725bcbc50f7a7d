// Internal to the args library (client/args.h): what its files share, and
// nothing else may include. The command table is written in three files, one
// per group of commands (args_object_commands.cc, args_view_commands.cc,
// args_local_commands.cc) and assembled by Commands() in args.cc; the global
// flags are args_global_flags.cc's; the parser (args_parse.cc), the help
// (args_help.cc) and the completion script (args_completion.cc) read them.
//
// Like args.h: pure, thread-safe, errors are INVALID_ARGUMENT.
#ifndef CLIENT_ARGS_INTERNAL_H_
#define CLIENT_ARGS_INTERNAL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/args.h"

namespace iommu {
namespace client {

// A FlagSpec, written the short way the tables write them (args.cc).
FlagSpec Flag(std::string name, ValueKind kind, std::string value_name, std::string help,
              bool required = false, bool repeated = false);

// The rows of the command table, appended to `c` group by group in the order
// help lists them (BuildCommands in args.cc calls them in this order).
// args_object_commands.cc: the broker's objects.
void AddTenantCommands(std::vector<CommandSpec>* c);
void AddNodeCommands(std::vector<CommandSpec>* c);  // And `device list`.
void AddContainerCommands(std::vector<CommandSpec>* c);
void AddWindowCommands(std::vector<CommandSpec>* c);
// args_view_commands.cc: views for people (describe, top, usage, version).
void AddDescribeCommands(std::vector<CommandSpec>* c);
void AddFleetCommands(std::vector<CommandSpec>* c);
// args_local_commands.cc: commands that never need a broker (completion,
// config, help).
void AddLocalCommands(std::vector<CommandSpec>* c);

// The flags every command takes, before or after it (args_global_flags.cc).
const std::vector<FlagSpec>& GlobalFlags();

// Applies one global flag to `inv` (args_global_flags.cc): sets its field of
// inv->global, or inv->help. INVALID_ARGUMENT for a bad --context or -o.
absl::Status ApplyGlobal(const FlagSpec& spec, const FlagValue& value, Invocation* inv);

// `s` in double quotes, as usage errors name words.
inline std::string Quote(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

// A usage error: INVALID_ARGUMENT with `message`.
inline absl::Status Usage(absl::string_view message) { return absl::InvalidArgumentError(message); }

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_ARGS_INTERNAL_H_
