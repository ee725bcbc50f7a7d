// IommufdBackend: the "iommufd" backend, over /dev/iommu and the VFIO device
// cdevs (/dev/vfio/devices/vfioX; Linux >= 6.6 with CONFIG_IOMMUFD and
// CONFIG_VFIO_DEVICE_CDEV).
//
// Per container: open /dev/iommu, IOMMU_IOAS_ALLOC; per device open its cdev
// (found at /sys/bus/pci/devices/ADDR/vfio-dev/vfioX),
// VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_ATTACH_IOMMUFD_PT(ioas); then
// IOMMU_IOAS_IOVA_RANGES (two-call pattern), read once and cached.
//
// One iommufd context per container, not one per agent, on purpose: a device
// fd handed to a launcher can issue VFIO_DEVICE_ATTACH_IOMMUFD_PT with any
// object id of the context it is bound to, and VFIO_DEVICE_PCI_HOT_RESET
// with an empty group list covers every device of that context. Sharing one
// context would let a launcher attach its device to another tenant's IOAS
// (DESIGN invariant 7). With one context per container the only IOAS it can
// reach is its own.
//
// Geometry: usable = the IOAS's allowed ranges cut to whole pages; page
// sizes = one bit, max(out_iova_alignment, the host page size), because in
// 6.12 an IOAS exposes no IOMMU page-size list (iommufd maps larger IOMMU
// pages by itself when the memory is contiguous); max_mappings = 0, since
// iommufd has no dma_entry_limit.
//
// Map = IOMMU_IOAS_MAP with FIXED_IOVA (+READABLE/WRITEABLE); Unmap =
// IOMMU_IOAS_UNMAP (bytes from its length field; ENOENT when nothing is
// mapped there). iommufd answers a range that cuts a mapping with ENOENT
// too, and does not check an unmap range's alignment at all (a misaligned
// range holding whole mappings unmaps them); the backend refuses both itself
// first, with EINVAL as backend.h promises: cuts from the mappings it tracks,
// misalignment against the geometry's page size. Size 0 is EINVAL here too
// (the kernel would read iova 0 + length 0 literally). Destroy = VFIO_DEVICE_DETACH_IOMMUFD_PT on every device
// (effective even if a launcher still holds a dup of the device fd), then
// IOMMU_DESTROY(ioas), which unmaps and unpins, then close the device fds and
// the iommufd. If a detach or the destroy fails, the devices are attached
// again and the container is left as it was.
//
// Thread-safe, as VfioType1Backend.
#ifndef AGENT_IOMMUFD_BACKEND_H_
#define AGENT_IOMMUFD_BACKEND_H_

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

// The Geometry of an IOAS from IOMMU_IOAS_IOVA_RANGES; `host_page_size` is
// sysconf(_SC_PAGESIZE) in production. INTERNAL when the alignment is not a
// power of two or no usable range is left.
absl::StatusOr<Geometry> IoasGeometry(const IoasRanges& ranges,
                                      uint64_t host_page_size);

class IommufdBackend final : public Backend {
 public:
  // Checks that /dev/iommu opens (and closes it again). `ops` and `sysfs`
  // are not owned and must outlive the backend.
  static absl::StatusOr<std::unique_ptr<IommufdBackend>> Create(
      KernelOps* ops, SysfsDevices* sysfs, uint64_t host_page_size);

  IommufdBackend(const IommufdBackend&) = delete;
  IommufdBackend& operator=(const IommufdBackend&) = delete;
  ~IommufdBackend() override = default;

  absl::string_view kind() const override { return "iommufd"; }
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

  // Fds: "iommufd" (the container's own context) and "device.<address with
  // ':' -> '_'>" per device (DeviceFdName), each bound to that context and
  // attached to the IOAS. State: "ioas=<decimal IOAS id>".
  absl::StatusOr<PersistedContainer> PersistContainer(ContainerHandle handle) override;
  // Checks, in order: the state parses ("ioas=" and a non-zero u32, else
  // INVALID_ARGUMENT "state: ..."); the journal's mappings are disjoint; the
  // devices as CreateContainer does (held -> FAILED_PRECONDITION); the fd
  // names; IOMMU_IOAS_IOVA_RANGES(ioas) answers through the iommufd fd (it
  // also gives the geometry); each device fd answers VFIO_DEVICE_GET_INFO
  // (which a cdev does only once bound). 6.12 has no ioctl that reports
  // which IOAS a device is attached to short of attaching it again, so the
  // attachment itself is trusted to the journal. No MAP/UNMAP/ATTACH is
  // issued. Group claims are not re-made (as for type1: the devices are
  // already on vfio-pci, and DestroyContainer gives none back).
  absl::StatusOr<ContainerHandle> AdoptContainer(
      const std::vector<std::string>& device_addresses,
      std::map<std::string, UniqueFd> fds, absl::string_view state,
      const std::vector<BackendMapping>& mappings) override;

 private:
  // The fds are set before the container is published and only reset by
  // DestroyContainer, under `mu`, after which `destroyed` is true.
  struct Container : ContainerBase {
    uint32_t ioas_id = 0;
    // Declaration order: device fds close before the iommufd.
    IommufdFd iommufd;
    std::vector<DeviceFd> devices;
  };

  IommufdBackend(KernelOps* ops, SysfsDevices* sysfs, uint64_t host_page_size)
      : ops_(ops), sysfs_(sysfs), host_page_size_(host_page_size) {}

  // Constant after construction.
  KernelOps* const ops_;
  SysfsDevices* const sysfs_;
  const uint64_t host_page_size_;

  // Held for the whole of CreateContainer, AdoptContainer and
  // DestroyContainer, so a device checked free stays free until published.
  absl::Mutex create_mu_;
  ContainerTable<Container> containers_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_IOMMUFD_BACKEND_H_
