// Helpers shared by the real backends (VfioType1Backend, IommufdBackend):
// the CreateContainer device checks, usable-range trimming, and the table of
// mappings each address space keeps (neither kernel API can list them).
// Pure logic apart from the group claims, made through SysfsDevices.
// Thread-compatible (MappingTable is guarded by its owner's lock).
#ifndef AGENT_REAL_BACKEND_UTIL_H_
#define AGENT_REAL_BACKEND_UTIL_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/backend.h"
#include "agent/sysfs_devices.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

// Checks a CreateContainer request against the scanned devices and the
// devices already held, with the rules of backend.h (errors built by
// ErrnoStatus with `context`): empty or duplicated list, partial group ->
// EINVAL; unknown -> ENODEV; not assignable or held -> EBUSY. Returns the
// IOMMU groups touched, each with its listed addresses, by group number.
absl::StatusOr<std::map<uint32_t, std::vector<std::string>>> ResolveGroups(
    absl::string_view context, const std::vector<BackendDevice>& scanned,
    const std::vector<std::string>& addresses,
    const absl::flat_hash_map<std::string, ContainerHandle>& holder);

// Cuts each inclusive range to whole `granule`-sized pages (start rounded
// up, end rounded down), dropping ranges left empty, and sorts them.
std::vector<IovaRange> TrimRanges(std::vector<IovaRange> ranges,
                                  uint64_t granule);

// The mappings of one address space, by IOVA.
class MappingTable final {
 public:
  void Add(const BackendMapping& m) { by_iova_[m.iova] = m; }
  // Forgets the mappings wholly inside [iova, iova + size); returns their
  // total size.
  uint64_t EraseRange(uint64_t iova, uint64_t size);
  std::vector<BackendMapping> List() const;
  // A mapping that overlaps [iova, iova + size) without lying wholly inside
  // it (one an unmap of that range would cut), or nullptr.
  const BackendMapping* FindCut(uint64_t iova, uint64_t size) const;
  bool empty() const { return by_iova_.empty(); }

 private:
  std::map<uint64_t, BackendMapping> by_iova_;
};

// ---- Persist / adopt (Backend::PersistContainer, AdoptContainer) ----

// The persisted fd name of a device: "device.<address with ':' -> '_'>",
// e.g. "device.0000_00_01.0" (systemd's FDNAME forbids ':').
std::string DeviceFdName(absl::string_view address);

// The persisted fd name of a VFIO group: "group.<N>".
std::string GroupFdName(uint32_t group);

// The fds handed to AdoptContainer, checked against the names the backend
// expects. Owns them until taken; the rest close with it, so an adopt that
// fails anywhere closes every fd it was given.
class AdoptedFds final {
 public:
  explicit AdoptedFds(std::map<std::string, UniqueFd> fds) : fds_(std::move(fds)) {}

  // Checks the names, in this order: each of `expected` present (and a valid
  // fd) -> else FAILED_PRECONDITION "fd <name>: missing (the fd store lost
  // it)"; no other name -> else INVALID_ARGUMENT "unknown fds [a,b] ...".
  // Messages start with `context`.
  absl::Status CheckNames(absl::string_view context,
                          const std::vector<std::string>& expected) const;

  // Removes and returns the fd `name` (empty if absent).
  UniqueFd Take(const std::string& name);

 private:
  std::map<std::string, UniqueFd> fds_;
};

// FAILED_PRECONDITION "<context>: fd <name>: not a <kind> (<why>)", for an
// adopted fd whose check ioctl failed (`why` is that ioctl's status).
absl::Status NotAKind(absl::string_view context, absl::string_view name,
                      absl::string_view kind, const absl::Status& why);

// The journal's mappings as a MappingTable. INVALID_ARGUMENT "<context>:
// mappings: ..." when one is empty, wraps past 2^64, or overlaps another.
absl::StatusOr<MappingTable> MappingTableFrom(absl::string_view context,
                                              const std::vector<BackendMapping>& mappings);

// "[a,b,c]".
std::string DeviceListText(const std::vector<std::string>& addresses);

// With a managed `sysfs`, moves each group of `groups` to vfio-pci
// (SysfsDevices::ClaimGroup), appending each claim to `claims`; unmanaged, does
// nothing. On error the claims made so far stay in `claims`, for the caller's
// ClaimGuard to give back.
absl::Status ClaimGroups(SysfsDevices* sysfs,
                         const std::map<uint32_t, std::vector<std::string>>& groups,
                         std::vector<GroupClaim>* claims);

// Gives claimed groups back to their old drivers, newest claim first;
// failures are logged (the devices stay on vfio-pci, which is safe).
void ReleaseGroupClaims(SysfsDevices* sysfs, const std::vector<GroupClaim>& claims);

// Releases `claims` when it goes out of scope unless Disarm() was called: a
// container create that fails part-way never leaves a group claimed.
class ClaimGuard final {
 public:
  ClaimGuard(SysfsDevices* sysfs, std::vector<GroupClaim>* claims)
      : sysfs_(sysfs), claims_(claims) {}
  ~ClaimGuard() {
    if (armed_) ReleaseGroupClaims(sysfs_, *claims_);
  }
  ClaimGuard(const ClaimGuard&) = delete;
  ClaimGuard& operator=(const ClaimGuard&) = delete;
  void Disarm() { armed_ = false; }

 private:
  SysfsDevices* const sysfs_;
  std::vector<GroupClaim>* const claims_;
  bool armed_ = true;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_REAL_BACKEND_UTIL_H_
