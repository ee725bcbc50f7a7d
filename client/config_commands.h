// `iommuctl config ...`: the commands that read and edit the config file of
// contexts (client/config.h) without talking to a broker.
//
// Thread-compatible, like RunIommuctl.
#ifndef CLIENT_CONFIG_COMMANDS_H_
#define CLIENT_CONFIG_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "client/args.h"

namespace iommu {
namespace client {

// Runs `inv` (a command of the "config" noun) against the file at
// `config_path`, printing its result to `out`. INVALID_ARGUMENT for the
// caller's mistakes (no config path, an unknown context, a malformed file:
// exit 2); FAILED_PRECONDITION when there is nothing to print
// (current-context with none set: exit 1); the OS error when the file
// cannot be read or written (exit 1). On error the file is unchanged.
absl::Status RunConfigCommand(const Invocation& inv, const std::string& config_path,
                              std::ostream& out);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_CONFIG_COMMANDS_H_
