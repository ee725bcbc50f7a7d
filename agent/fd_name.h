// The names fds are stored under in an FdStore (agent/fd_store.h) and sent
// to the fd holder (agent/fd_holder_protocol.h). One rule for both, kept
// conservative: systemd's FDNAME= forbids ':' (LISTEN_FDNAMES separates names
// with it) and control characters, and the holder protocol separates names
// with spaces.
//
// Thread-safe (a pure function).
#ifndef AGENT_FD_NAME_H_
#define AGENT_FD_NAME_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

inline constexpr size_t kMaxFdNameLength = 200;

// OK for 1-200 characters of [A-Za-z0-9._-]; otherwise INVALID_ARGUMENT
// "fd name: ..." naming the rule that failed (empty, too long, or the first
// character outside the set and its position).
absl::Status ValidateFdName(absl::string_view name);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_FD_NAME_H_
