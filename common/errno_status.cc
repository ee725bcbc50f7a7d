#include "common/errno_status.h"

#include <string.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace iommu {

std::string ErrnoName(int err) {
  // strerrorname_np (glibc >= 2.32) is thread-safe and returns static storage.
  const char* name = strerrorname_np(err);
  if (name == nullptr) return absl::StrCat("errno ", err);
  return name;
}

absl::StatusCode ErrnoCode(int err) {
  switch (err) {
    case EINVAL:
      return absl::StatusCode::kInvalidArgument;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case ENOSPC:
      return absl::StatusCode::kResourceExhausted;
    case EBUSY:
      return absl::StatusCode::kFailedPrecondition;
    case ENODEV:
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    // A device or kernel failure (EIO), or the agent handing the kernel a
    // bad pointer (EFAULT): neither is the caller's fault nor worth retrying.
    case EIO:
    case EFAULT:
      return absl::StatusCode::kInternal;
    default:
      return absl::ErrnoToStatus(err, "").code();
  }
}

absl::Status ErrnoStatus(int err, absl::string_view context,
                         absl::string_view detail) {
  if (err == 0) {
    return absl::InternalError(
        absl::StrCat(context, ": failed with errno 0 (bug: no error recorded)"));
  }
  // strerrordesc_np is the thread-safe counterpart of strerror.
  const char* desc = strerrordesc_np(err);
  const absl::string_view why =
      !detail.empty() ? detail : (desc != nullptr ? desc : "unknown error");
  return absl::Status(ErrnoCode(err),
                      absl::StrCat(context, ": ", ErrnoName(err), " (", why, ")"));
}

}  // namespace iommu
