// VfioType1Backend: the "vfio-type1" backend, over the legacy VFIO container
// API (/dev/vfio/vfio + /dev/vfio/<group>, VFIO_TYPE1v2_IOMMU), for kernels
// without iommufd (e.g. Debian's 6.12 kernel).
//
// Per container: open /dev/vfio/vfio; per IOMMU group of the listed devices
// open /dev/vfio/N, require VFIO_GROUP_FLAGS_VIABLE, VFIO_GROUP_SET_CONTAINER;
// then VFIO_SET_IOMMU(TYPE1v2) once; VFIO_IOMMU_GET_INFO (usable ranges from
// CAP_IOVA_RANGE, the mapping limit from DMA_AVAIL as it stands right after
// creation, page sizes from iova_pgsizes) read once and cached; one device fd
// per device with VFIO_GROUP_GET_DEVICE_FD. Every fd stays in the agent;
// DeviceFds hands out dups of the device fds only.
//
// Map = VFIO_IOMMU_MAP_DMA at the agent's own virtual address, Unmap =
// VFIO_IOMMU_UNMAP_DMA (bytes unmapped from the struct's size field; a
// range holding no mapping, which type1 reports as 0 bytes, becomes ENOENT
// as backend.h promises). Destroy = unmap everything (UNMAP_DMA with
// VFIO_DMA_UNMAP_FLAG_ALL, falling back to one unmap per known mapping),
// close the device fds, VFIO_GROUP_UNSET_CONTAINER, close groups and
// container; with a managed SysfsDevices, give the groups back to their
// drivers. If a launcher still holds a device fd, UNSET_CONTAINER fails with
// EBUSY: the mappings are already gone (nothing stays pinned), the group
// stays attached to the emptied container until that launcher closes its fd,
// and a warning is logged.
//
// Thread-safe. Creates and destroys are serialised; Map/Unmap on different
// containers run concurrently (one lock per container).
#ifndef AGENT_VFIO_TYPE1_BACKEND_H_
#define AGENT_VFIO_TYPE1_BACKEND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/backend.h"
#include "agent/container_table.h"
#include "agent/kernel_fds.h"
#include "agent/kernel_ops.h"
#include "agent/real_backend_util.h"
#include "agent/sysfs_devices.h"

namespace iommu {
namespace agent {

// The Geometry a container reports, from its VFIO_IOMMU_GET_INFO: usable =
// the CAP_IOVA_RANGE ranges cut to whole smallest pages; page sizes =
// iova_pgsizes; max_mappings = DMA_AVAIL (0 when the kernel has no such cap).
// FAILED_PRECONDITION when the kernel reports no page sizes or no
// CAP_IOVA_RANGE (kernels before 5.4), since guessing the reserved ranges
// (e.g. the MSI window) would be unsafe.
absl::StatusOr<Geometry> Type1Geometry(const Type1Info& info);

class VfioType1Backend final : public Backend {
 public:
  // Checks the host once: /dev/vfio/vfio opens, VFIO_GET_API_VERSION is
  // VFIO_API_VERSION (0) and VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) holds.
  // Errors: the failing open/ioctl (e.g. NOT_FOUND for a missing
  // /dev/vfio/vfio); FAILED_PRECONDITION for a wrong version or no TYPE1v2.
  // `ops` and `sysfs` are not owned and must outlive the backend.
  static absl::StatusOr<std::unique_ptr<VfioType1Backend>> Create(
      KernelOps* ops, SysfsDevices* sysfs);

  VfioType1Backend(const VfioType1Backend&) = delete;
  VfioType1Backend& operator=(const VfioType1Backend&) = delete;
  ~VfioType1Backend() override;

  absl::string_view kind() const override { return "vfio-type1"; }
  bool simulated() const override { return false; }

  absl::StatusOr<std::vector<BackendDevice>> ListDevices() override;
  absl::StatusOr<ContainerHandle> CreateContainer(
      const std::vector<std::string>& device_addresses) override;
  absl::StatusOr<Geometry> GetGeometry(ContainerHandle handle) override;
  absl::Status DestroyContainer(ContainerHandle handle) override;
  absl::Status Map(ContainerHandle handle, uint64_t iova, uint64_t vaddr,
                   uint64_t size, bool readable, bool writable) override;
  absl::StatusOr<uint64_t> Unmap(ContainerHandle handle, uint64_t iova,
                                 uint64_t size) override;
  absl::StatusOr<std::vector<BackendMapping>> ListMappings(
      ContainerHandle handle) override;
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> DeviceFds(
      ContainerHandle handle) override;

  // Fds: "container", "group.<N>" per IOMMU group, "device.<address with
  // ':' -> '_'>" per device (DeviceFdName). State: empty (the groups follow
  // from the devices' sysfs groups).
  absl::StatusOr<PersistedContainer> PersistContainer(ContainerHandle handle) override;
  // Checks, in order: the state is empty; the journal's mappings are
  // disjoint; the devices as CreateContainer does (held -> EBUSY, i.e.
  // FAILED_PRECONDITION); the fd names (missing, then unknown ones); the
  // container fd answers VFIO_GET_API_VERSION; each group fd answers
  // VFIO_GROUP_GET_STATUS with CONTAINER_SET; each device fd answers
  // VFIO_DEVICE_GET_INFO; VFIO_IOMMU_GET_INFO (the IOMMU is set) gives the
  // geometry, whose max_mappings is DMA_AVAIL plus the adopted mappings
  // (the kernel counts those against the limit already). No MAP/UNMAP is
  // issued. Group claims are not re-made: the groups are already bound to
  // vfio-pci, and DestroyContainer of an adopted container gives no group
  // back to its old driver (the process that claimed it is gone).
  absl::StatusOr<ContainerHandle> AdoptContainer(
      const std::vector<std::string>& device_addresses,
      std::map<std::string, UniqueFd> fds, absl::string_view state,
      const std::vector<BackendMapping>& mappings) override;

 private:
  // Declaration order is teardown order reversed: device fds close first,
  // then groups, then the container.
  // The fds are set before the container is published and only reset by
  // DestroyContainer, under `mu`, after which `destroyed` is true.
  struct Container : ContainerBase {
    ContainerFd container;
    std::vector<GroupFd> groups;
    std::vector<DeviceFd> devices;
  };

  VfioType1Backend(KernelOps* ops, SysfsDevices* sysfs) : ops_(ops), sysfs_(sysfs) {}

  // Constant after construction.
  KernelOps* const ops_;
  SysfsDevices* const sysfs_;

  // Held for the whole of CreateContainer, AdoptContainer and
  // DestroyContainer, so a device checked free stays free until published.
  absl::Mutex create_mu_;
  ContainerTable<Container> containers_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_VFIO_TYPE1_BACKEND_H_
