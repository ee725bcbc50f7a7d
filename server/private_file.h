// Checks that a file holding secrets (the store, with every node's token
// signing key; the broker's TLS private key) is private to its owner: no
// permission bit for group or others. The broker refuses to start on such a
// file rather than serve from it, because anyone on the node who can read it
// can forge launcher grants or impersonate the broker.
//
// Thread-safe (no state).
#ifndef SERVER_PRIVATE_FILE_H_
#define SERVER_PRIVATE_FILE_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iommu {

// OK when the file at `path` (symlinks followed) has no group or other
// permission bit, or when it does not exist and `must_exist` is false.
// FAILED_PRECONDITION naming `what`, the path, its mode and the fix
// ("chmod 600 <path>") when it has; UNAVAILABLE when it cannot be stat'ed.
absl::Status CheckPrivateFile(absl::string_view what, const std::string& path, bool must_exist);

// The rule for a private key provisioned by someone else: no permission bit
// for others, and for the group at most read, and only when the file's
// group is this process's own (effective) group. That is how a root-owned
// key is handed to a service user without handing it to anyone else: the
// systemd layout (root:iommu-broker 0640) and Kubernetes' fsGroup (0440).
// FAILED_PRECONDITION as CheckPrivateFile otherwise.
// `own_gid` is the process's effective gid (a parameter for tests).
absl::Status CheckKeyFile(absl::string_view what, const std::string& path, gid_t own_gid);

// The same check for a file already open as `fd` (named `path` in errors).
absl::Status CheckPrivateFd(absl::string_view what, const std::string& path, int fd);

// "0644": the permission bits of `mode`, in octal, as chmod takes them.
std::string ModeString(mode_t mode);

}  // namespace iommu

#endif  // SERVER_PRIVATE_FILE_H_
