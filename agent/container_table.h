// ContainerTable: the table of containers each real backend (VfioType1Backend,
// IommufdBackend) keeps: handle allocation, lookup by handle, and which
// container holds each device address, so a device is never in two
// containers. ContainerBase is what each backend keeps per container besides
// its kernel fds; the helpers below are the per-container steps both
// backends take the same way.
//
// Thread-safe. The table's own lock guards the handles and the holders only;
// each container's mutable state is guarded by its own `mu`. Lock order: a
// container's `mu` may be held while calling into the table (Erase does so),
// never the reverse.
#ifndef AGENT_CONTAINER_TABLE_H_
#define AGENT_CONTAINER_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/backend.h"
#include "agent/kernel_fds.h"
#include "agent/real_backend_util.h"
#include "agent/sysfs_devices.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

// Per container, in both real backends. A backend derives its Container from
// this and adds its kernel fds; those, being members of the derived struct,
// close before `claims` is destroyed.
struct ContainerBase {
  // Constant once the container is published.
  std::vector<std::string> addresses;
  std::vector<GroupClaim> claims;
  Geometry geometry;

  absl::Mutex mu;
  // Set by DestroyContainer (under `mu`) once the kernel objects are gone: a
  // caller that found the container before that must not use its fds.
  bool destroyed ABSL_GUARDED_BY(mu) = false;
  MappingTable mappings ABSL_GUARDED_BY(mu);
};

// ENOENT "<context>: ENOENT (no container with handle <handle>)".
absl::Status NoContainerError(absl::string_view context, ContainerHandle handle);

// OK while `c` is live; NoContainerError once DestroyContainer ran on it.
absl::Status CheckNotDestroyed(const ContainerBase& c, absl::string_view context,
                               ContainerHandle handle) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);

// Backend::DeviceFds: a dup (O_CLOEXEC, owned by the caller) of each device
// fd, keyed by its address. Errors: the failing dup's, nothing returned.
absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> DupDeviceFds(
    const std::vector<DeviceFd>& devices);

// For Backend::PersistContainer: appends a dup of each device fd, named
// DeviceFdName(address), to `out`. Errors: the failing dup's (what was
// appended before stays in `out`, owned by it).
absl::Status AppendPersistedDeviceFds(const std::vector<DeviceFd>& devices,
                                      std::vector<std::pair<std::string, UniqueFd>>* out);

// What ContainerTable::ScanAndResolve found.
struct ResolvedDevices {
  std::vector<BackendDevice> scanned;  // All of sysfs's allowlisted devices.
  // The IOMMU groups of the listed devices, each with its listed addresses.
  std::map<uint32_t, std::vector<std::string>> groups;
};

template <typename C>
class ContainerTable final {
  static_assert(std::is_base_of_v<ContainerBase, C>, "C must derive from ContainerBase");

 public:
  ContainerTable() = default;
  ContainerTable(const ContainerTable&) = delete;
  ContainerTable& operator=(const ContainerTable&) = delete;

  // The container published under `handle`, shared so that it outlives a
  // concurrent Erase; NoContainerError(context, handle) when there is none.
  absl::StatusOr<std::shared_ptr<C>> Find(ContainerHandle handle,
                                          absl::string_view context) const {
    absl::MutexLock lock(&mu_);
    auto it = containers_.find(handle);
    if (it == containers_.end()) return NoContainerError(context, handle);
    return it->second;
  }

  // Backend::ListMappings: the mappings the container `handle` holds, by
  // IOVA; NoContainerError when there is none.
  absl::StatusOr<std::vector<BackendMapping>> ListMappings(ContainerHandle handle,
                                                           absl::string_view context) const {
    absl::StatusOr<std::shared_ptr<C>> c = Find(handle, context);
    if (!c.ok()) return c.status();
    absl::MutexLock lock(&(*c)->mu);
    return (*c)->mappings.List();
  }

  // Backend::DeviceFds: DupDeviceFds of the container's `devices` (C has a
  // std::vector<DeviceFd> devices, set before it is published);
  // NoContainerError when there is none or it was destroyed.
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> DeviceFds(
      ContainerHandle handle, absl::string_view context) const {
    absl::StatusOr<std::shared_ptr<C>> c = Find(handle, context);
    if (!c.ok()) return c.status();
    absl::MutexLock lock(&(*c)->mu);
    if (absl::Status live = CheckNotDestroyed(**c, context, handle); !live.ok()) return live;
    return DupDeviceFds((*c)->devices);
  }

  // ResolveGroups (real_backend_util.h) against the devices the published
  // containers hold: a held device is EBUSY naming its container.
  absl::StatusOr<std::map<uint32_t, std::vector<std::string>>> ResolveGroups(
      absl::string_view context, const std::vector<BackendDevice>& scanned,
      const std::vector<std::string>& addresses) const {
    absl::MutexLock lock(&mu_);
    return agent::ResolveGroups(context, scanned, addresses, holder_);
  }

  // sysfs->Scan(), then ResolveGroups against that scan. Errors: the scan's,
  // then ResolveGroups'.
  absl::StatusOr<ResolvedDevices> ScanAndResolve(SysfsDevices* sysfs, absl::string_view context,
                                                 const std::vector<std::string>& addresses) const {
    ResolvedDevices out;
    absl::StatusOr<std::vector<BackendDevice>> scanned = sysfs->Scan();
    if (!scanned.ok()) return scanned.status();
    out.scanned = *std::move(scanned);
    absl::StatusOr<std::map<uint32_t, std::vector<std::string>>> groups =
        ResolveGroups(context, out.scanned, addresses);
    if (!groups.ok()) return groups.status();
    out.groups = *std::move(groups);
    return out;
  }

  // Publishes `c` under a new handle (1, 2, ...; never reused) and marks its
  // addresses held by it. The caller checked them with ResolveGroups while
  // holding the lock that serialises its creates.
  ContainerHandle Add(std::shared_ptr<C> c) {
    absl::MutexLock lock(&mu_);
    const ContainerHandle handle = next_handle_++;
    for (const std::string& address : c->addresses) holder_[address] = handle;
    containers_[handle] = std::move(c);
    return handle;
  }

  // Add for AdoptContainer: `c` is published already holding `adopted`, the
  // mappings the kernel kept.
  ContainerHandle Add(std::shared_ptr<C> c, MappingTable adopted) {
    {
      absl::MutexLock lock(&c->mu);
      c->mappings = std::move(adopted);
    }
    return Add(std::move(c));
  }

  // Forgets `handle` and frees the devices it held; a no-op for an unknown
  // handle. Holders of the shared_ptr keep the container until they drop it.
  void Erase(ContainerHandle handle) {
    absl::MutexLock lock(&mu_);
    auto it = containers_.find(handle);
    if (it == containers_.end()) return;
    for (const std::string& address : it->second->addresses) holder_.erase(address);
    containers_.erase(it);
  }

 private:
  mutable absl::Mutex mu_;
  ContainerHandle next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<ContainerHandle, std::shared_ptr<C>> containers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, ContainerHandle> holder_ ABSL_GUARDED_BY(mu_);
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_CONTAINER_TABLE_H_
