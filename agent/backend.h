// The backend seam of the node agent: one interface over the host's IOMMU
// API, with one method per kernel operation, so that the iommufd, VFIO type1
// and simulated implementations are interchangeable and every layer above
// (AgentCore, the pinned-page ledger, the launcher socket) is tested against
// the simulated one.
//
// Implementations must be thread-safe: the agent's gRPC threads, the
// registration loop and the launcher socket call them concurrently.
//
// Errors: every failure is a status built by ErrnoStatus (common/errno_status.h)
// naming the backend, the operation, its arguments and the errno, with the
// canonical code proto/agent.proto documents for that errno. A failed call
// changes nothing.
#ifndef AGENT_BACKEND_H_
#define AGENT_BACKEND_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

// One PCI function as the backend sees it (sysfs + IOMMU group).
struct BackendDevice {
  std::string address;  // "DDDD:BB:DD.F"
  uint32_t iommu_group = 0;
  uint32_t vendor_id = 0;
  uint32_t device_id = 0;
  std::string driver;  // "vfio-pci" when ready for passthrough.
  bool assignable = false;
  std::string unassignable_reason;  // Empty when assignable.
};

// An inclusive IOVA range, as IOMMU_IOAS_IOVA_RANGES reports it.
struct IovaRange {
  uint64_t start = 0;
  uint64_t last = 0;  // Inclusive.
};

// What an address space accepts, read once after the devices are attached.
struct Geometry {
  std::vector<IovaRange> usable;  // Sorted, disjoint.
  uint64_t page_size_bitmap = 0;  // Bit n set: 2^n bytes supported.
  uint32_t max_mappings = 0;      // 0: not limited.
};

// One DMA mapping in an address space.
struct BackendMapping {
  uint64_t iova = 0;
  uint64_t size = 0;
  uint64_t vaddr = 0;  // Host virtual address in the agent's process.
  bool readable = false;
  bool writable = false;
};

// What must outlive this process for a container's address space to survive it.
struct PersistedContainer {
  // The kernel objects, each a dup (O_CLOEXEC) the caller owns, with a name unique within the
  // container: 1-64 characters of [A-Za-z0-9._-] (e.g. "container", "group.12", "iommufd",
  // "device.0000_00_01.0" — no ':' because systemd's FDNAME forbids it).
  std::vector<std::pair<std::string, UniqueFd>> fds;
  // Opaque backend data needed to adopt them again (e.g. the IOAS id), at most 256 bytes of
  // printable ASCII.
  std::string state;
};

// Whether `name` is a valid PersistedContainer fd name: 1-64 characters of
// [A-Za-z0-9._-].
inline bool IsValidPersistedFdName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char ch : name) {
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

// Whether `state` is a valid PersistedContainer state: at most 256 bytes of
// printable ASCII (0x20-0x7e).
inline bool IsValidPersistedState(absl::string_view state) {
  if (state.size() > 256) return false;
  for (const char ch : state) {
    if (ch < 0x20 || ch > 0x7e) return false;
  }
  return true;
}

// Identifies an address space inside one Backend instance. Opaque to callers;
// never reused while the backend lives.
using ContainerHandle = uint64_t;

class Backend {
 public:
  virtual ~Backend() = default;

  // "sim", "iommufd" or "vfio-type1" (the Node.backend values).
  virtual absl::string_view kind() const = 0;

  // True when no real IOMMU is behind this backend (no real DMA, no pinning).
  virtual bool simulated() const = 0;

  // Every PCI function the agent may manage, with its IOMMU group and whether
  // it can be assigned. Sorted by address.
  virtual absl::StatusOr<std::vector<BackendDevice>> ListDevices() = 0;

  // Allocates an address space and attaches the listed devices to it
  // (iommufd: IOMMU_IOAS_ALLOC + VFIO_DEVICE_BIND_IOMMUFD +
  // VFIO_DEVICE_ATTACH_IOMMUFD_PT; type1: VFIO_GROUP_SET_CONTAINER +
  // VFIO_SET_IOMMU). Every IOMMU group touched must be listed whole. On
  // success the backend owns the address space until DestroyContainer.
  // Errors: empty list or partial group -> EINVAL; unknown device -> ENODEV;
  // device held by another address space or not assignable -> EBUSY.
  virtual absl::StatusOr<ContainerHandle> CreateContainer(
      const std::vector<std::string>& device_addresses) = 0;

  // The address space's usable IOVA ranges, page sizes and mapping limit
  // (IOMMU_IOAS_IOVA_RANGES; VFIO_IOMMU_GET_INFO and its capability chain).
  virtual absl::StatusOr<Geometry> GetGeometry(ContainerHandle handle) = 0;

  // Unmaps everything, detaches the devices and releases the address space.
  // On failure the address space is left as it was.
  virtual absl::Status DestroyContainer(ContainerHandle handle) = 0;

  // Maps [vaddr, vaddr + size) of the agent's memory at [iova, iova + size)
  // (IOMMU_IOAS_MAP with FIXED_IOVA; VFIO_IOMMU_MAP_DMA). The kernel pins the
  // pages until they are unmapped. Errors: size 0, misaligned iova/size/vaddr,
  // no access bit, or outside the usable ranges -> EINVAL; overlap -> EEXIST;
  // mapping limit reached -> ENOSPC.
  virtual absl::Status Map(ContainerHandle handle, uint64_t iova,
                           uint64_t vaddr, uint64_t size, bool readable,
                           bool writable) = 0;

  // Unmaps every mapping inside [iova, iova + size) (IOMMU_IOAS_UNMAP;
  // VFIO_IOMMU_UNMAP_DMA). The range must cover whole mappings: cutting one is
  // EINVAL, a range holding none is ENOENT. Size 0 or a misaligned iova/size
  // is EINVAL even when the range holds whole mappings (type1 refuses it;
  // iommufd's kernel would not, so its backend does). Returns the bytes
  // unmapped, as both kernel APIs do. agent/backend_conformance.h checks
  // these rules on every backend.
  virtual absl::StatusOr<uint64_t> Unmap(ContainerHandle handle, uint64_t iova,
                                         uint64_t size) = 0;

  // The address space's mappings, sorted by IOVA.
  virtual absl::StatusOr<std::vector<BackendMapping>> ListMappings(
      ContainerHandle handle) = 0;

  // New fds for the container's devices, for handing to a launcher over
  // SCM_RIGHTS (DESIGN.md, "Launchers never hold the IOMMU side"): one
  // (address, fd) pair per device, in the order CreateContainer was given,
  // each a dup (O_CLOEXEC) that the caller owns. Only device fds, never the
  // iommufd, container or group fds. iommufd: the bound and attached VFIO
  // device cdev; vfio-type1: the fd from VFIO_GROUP_GET_DEVICE_FD; sim: an
  // O_RDONLY memfd named "sim-device-<address>" (no real device behind it).
  // Errors: unknown handle -> ENOENT; the dup's errno (e.g. EMFILE).
  // The default is for backends with no devices to hand out (test doubles).
  virtual absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>>
  DeviceFds(ContainerHandle handle) {
    return absl::UnimplementedError(
        absl::StrCat(kind(), " backend: DeviceFds is not implemented"));
  }

  // The fds and state that let a later process adopt `handle` (AdoptContainer). Errors:
  // unknown handle -> NOT_FOUND naming the handle; the dup's errno.
  // On error no fd is returned (the dups made so far are closed).
  // The default is for backends that cannot survive a restart (test doubles).
  virtual absl::StatusOr<PersistedContainer> PersistContainer(ContainerHandle handle) {
    return absl::UnimplementedError(absl::StrCat(
        kind(), " backend: PersistContainer is not implemented (container ", handle, ")"));
  }

  // Rebuilds a container an earlier process created, from what its PersistContainer gave
  // (fds by name, state) and the devices it was created with (same order), without touching
  // the mappings the kernel holds: `mappings` (from the journal; the kernel has no list
  // ioctl) become the container's mapping table as they are. Checks each fd is the kind of
  // object its name says and that the devices are attached to it (type1: VFIO_GET_API_VERSION
  // on the container fd, VFIO_GROUP_GET_STATUS shows CONTAINER_SET on each group fd, the device
  // fds answer VFIO_DEVICE_GET_INFO; iommufd: IOMMU_IOAS_IOVA_RANGES on the state's IOAS id
  // answers through the iommufd fd, device fds answer VFIO_DEVICE_GET_INFO; sim: its marker fd
  // is a memfd named as PersistContainer made it). Recomputes the geometry (GetGeometry works
  // on adopted containers). Marks the devices held, as CreateContainer does.
  // Errors (nothing adopted, every fd given is closed): a missing fd -> FAILED_PRECONDITION
  // "fd <name>: missing (the fd store lost it)"; an fd of the wrong kind -> FAILED_PRECONDITION
  // "fd <name>: not a <kind> (...)"; a bad state -> INVALID_ARGUMENT "state: ..."; a device
  // already held by another container -> FAILED_PRECONDITION; unknown extra fd names are an
  // error too (INVALID_ARGUMENT naming them). Never aborts on any input.
  // On success the backend owns the fds (as it owns a created container's) and
  // DestroyContainer works on the new handle exactly as on a created one.
  virtual absl::StatusOr<ContainerHandle> AdoptContainer(
      const std::vector<std::string>& device_addresses,
      std::map<std::string, UniqueFd> fds, absl::string_view state,
      const std::vector<BackendMapping>& mappings) {
    (void)device_addresses;
    (void)fds;  // Closed on return, as promised.
    (void)state;
    (void)mappings;
    return absl::UnimplementedError(
        absl::StrCat(kind(), " backend: AdoptContainer is not implemented"));
  }
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_BACKEND_H_
