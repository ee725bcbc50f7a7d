#include "agent/container_table.h"

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/status_macros.h"

namespace iommu {
namespace agent {

absl::Status NoContainerError(absl::string_view context, ContainerHandle handle) {
  return ErrnoStatus(ENOENT, context, absl::StrCat("no container with handle ", handle));
}

absl::Status CheckNotDestroyed(const ContainerBase& c, absl::string_view context,
                               ContainerHandle handle) {
  if (c.destroyed) return NoContainerError(context, handle);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> DupDeviceFds(
    const std::vector<DeviceFd>& devices) {
  std::vector<std::pair<std::string, UniqueFd>> out;
  for (const DeviceFd& d : devices) {
    ASSIGN_OR_RETURN(UniqueFd fd, d.Dup(absl::StrCat("device ", d.address())));
    out.emplace_back(d.address(), std::move(fd));
  }
  return out;
}

absl::Status AppendPersistedDeviceFds(const std::vector<DeviceFd>& devices,
                                      std::vector<std::pair<std::string, UniqueFd>>* out) {
  for (const DeviceFd& d : devices) {
    const std::string name = DeviceFdName(d.address());
    ASSIGN_OR_RETURN(UniqueFd fd, d.Dup(name));
    out->emplace_back(name, std::move(fd));
  }
  return absl::OkStatus();
}

}  // namespace agent
}  // namespace iommu
