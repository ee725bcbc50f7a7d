// ErrnoStatus: the one place where an errno becomes an absl::Status in the
// node agent and the launcher socket (common/unix_socket.h). Backends call it at the failing operation with a context naming
// the operation and its arguments, so that every kernel (or simulated kernel)
// error reads like
//   "sim MAP_DMA container=3 iova=0x1000 size=0x2000 vaddr=0x7f..: EEXIST
//    (overlaps mapping 0x1000-0x1fff)".
// Thread-safe (pure functions).
#ifndef COMMON_ERRNO_STATUS_H_
#define COMMON_ERRNO_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iommu {

// The symbolic name of an errno value ("EEXIST"), or "errno N" when unknown.
std::string ErrnoName(int err);

// The canonical code for an errno, as proto/agent.proto documents it:
// EINVAL -> INVALID_ARGUMENT, EEXIST -> ALREADY_EXISTS, ENOSPC ->
// RESOURCE_EXHAUSTED, EBUSY -> FAILED_PRECONDITION, ENODEV/ENOENT ->
// NOT_FOUND, EPERM/EACCES -> PERMISSION_DENIED; also EIO/EFAULT -> INTERNAL;
// other values follow absl::ErrnoToStatus (e.g. ENOMEM -> RESOURCE_EXHAUSTED).
absl::StatusCode ErrnoCode(int err);

// Returns a non-OK status with ErrnoCode(err) and the message
// "<context>: <ERRNAME> (<detail>)". An empty `detail` is replaced by
// strerror's text. `err` must not be 0 (that would be a bug at the call site;
// it is reported as INTERNAL rather than as success).
absl::Status ErrnoStatus(int err, absl::string_view context,
                         absl::string_view detail = "");

}  // namespace iommu

#endif  // COMMON_ERRNO_STATUS_H_
