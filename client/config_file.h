// Reading and writing iommuctl's configuration file (client/config.h says
// what it holds).
//
// Writes are atomic (a private temporary file in the same directory, synced,
// renamed over the old one) so that a crash or a full disk never leaves a
// half-written file, and the file is created 0600 in a 0700 directory: it
// names the paths of private keys.
//
// Thread-compatible: concurrent writers of one path race (the last rename
// wins), as with kubectl's kubeconfig.
#ifndef CLIENT_CONFIG_FILE_H_
#define CLIENT_CONFIG_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/views.pb.h"

namespace iommu {
namespace client {

// The configuration file's path: $IOMMUCTL_CONFIG if set and non-empty,
// else $XDG_CONFIG_HOME/iommuctl/config, else $HOME/.config/iommuctl/config;
// empty when none of those variables is set.
std::string DefaultConfigPath();

// The configuration in `path`. A file that does not exist is an empty
// configuration (NotFound is not an error: most users never write one).
// Errors: the OS error naming the path for an unreadable file; INVALID_ARGUMENT
// from ParseConfig for a malformed one; INVALID_ARGUMENT for a file over
// 1 MiB.
absl::StatusOr<iommu::ctl::CliConfig> LoadConfigFile(absl::string_view path);

// Replaces `path` with `config` atomically (see the file comment), creating
// its directory (0700) when missing. On error the old file is unchanged.
absl::Status SaveConfigFile(absl::string_view path, const iommu::ctl::CliConfig& config);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_CONFIG_FILE_H_
