// SimBackend: the simulated IOMMU backend ("sim"). It keeps fake PCI devices
// and address spaces in memory and applies the rules the kernel's iommufd and
// VFIO type1 drivers apply (alignment, usable ranges, overlap, whole-mapping
// unmap, mapping-count limit, whole IOMMU groups, devices bound to host
// drivers), so that every layer above the backend seam can be tested and
// demonstrated without a kernel. Nothing is pinned and no DMA happens.
//
// It is a production library too (`iommu-agent --backend=sim`), not testonly.
// Fault injection (set_next_error) is for tests.
//
// Its devices come from specs (agent/sim_devices.h).
//
// Thread-safe: every method may be called concurrently.
#ifndef AGENT_SIM_BACKEND_H_
#define AGENT_SIM_BACKEND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/backend.h"
#include "agent/sim_devices.h"

namespace iommu {
namespace agent {

// x86 defaults, as type1 and iommufd report them on a typical Intel host:
// usable [0, 0xfedfffff] and [0xfef00000, 0x7fffffffff] (the MSI window
// 0xfee00000-0xfeefffff reserved, 39-bit address width), page sizes
// 4K|2M|1G, 65535 mappings (type1's dma_entry_limit).
Geometry DefaultX86Geometry();

// The operations fault injection can fail.
enum class SimOp {
  kListDevices,
  kCreateContainer,
  kGetGeometry,
  kDestroyContainer,
  kMap,
  kUnmap,
  kListMappings,
  kDeviceFds,
  kPersistContainer,
  kAdoptContainer,
};

// The name of the one fd the sim persists per container.
inline constexpr char kSimContainerFdName[] = "sim-container";

class SimBackend final : public Backend {
 public:
  // Builds a backend over `devices` whose address spaces all report
  // `geometry`. Errors (INVALID_ARGUMENT): a malformed or duplicate address,
  // unsorted/overlapping usable ranges, an empty page-size bitmap.
  static absl::StatusOr<std::unique_ptr<SimBackend>> Create(
      std::vector<SimDeviceSpec> devices,
      Geometry geometry = DefaultX86Geometry());

  SimBackend(const SimBackend&) = delete;
  SimBackend& operator=(const SimBackend&) = delete;
  ~SimBackend() override = default;

  // Makes the next call of `op` fail with `err` (an errno value, e.g. EIO)
  // before it changes anything. One-shot; a later call replaces a pending one.
  void set_next_error(SimOp op, int err);

  // Unmap gate, for tests of what may run while an unmap is in the kernel:
  // while blocked, every Unmap call waits (holding no lock of the backend, so
  // other calls proceed) until UnblockUnmaps. Off by default.
  void BlockUnmaps();
  void UnblockUnmaps();
  // Waits until at least `n` Unmap calls are waiting at the gate.
  void AwaitBlockedUnmaps(int n);
  // Unmap calls made so far (refused ones included), for tests counting how
  // many backend calls a teardown takes.
  uint64_t unmap_calls();
  // The same gate for DestroyContainer.
  void BlockDestroys();
  void UnblockDestroys();
  void AwaitBlockedDestroys(int n);

  absl::string_view kind() const override { return "sim"; }
  bool simulated() const override { return true; }

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
  // The sim has no device fds: each address comes with a fresh O_RDONLY
  // memfd named "sim-device-<address>", so the launcher handoff path
  // (SCM_RIGHTS, fd ownership) runs end to end. No ioctl works on it.
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> DeviceFds(
      ContainerHandle handle) override;

  // The sim has no kernel object, so it makes one stand-in per container: a
  // memfd named "sim-container-<handle>" (made on the first Persist, kept by
  // the container until it is destroyed). PersistContainer returns one fd,
  // named kSimContainerFdName, a dup of that memfd, and an empty state.
  absl::StatusOr<PersistedContainer> PersistContainer(ContainerHandle handle) override;
  // Requires exactly one fd, kSimContainerFdName, whose /proc/self/fd link
  // starts with "/memfd:sim-container", and an empty state; then checks the
  // devices as CreateContainer does and recreates the container with
  // `mappings` (which must be non-empty, non-wrapping and disjoint). Errors,
  // in the order checked: missing fd; unknown extra fds; wrong kind; bad
  // state; bad mappings (INVALID_ARGUMENT "mappings: ..."); the device errors
  // of CreateContainer (held -> EBUSY, i.e. FAILED_PRECONDITION). The
  // container keeps the adopted memfd as its stand-in.
  absl::StatusOr<ContainerHandle> AdoptContainer(
      const std::vector<std::string>& device_addresses,
      std::map<std::string, UniqueFd> fds, absl::string_view state,
      const std::vector<BackendMapping>& mappings) override;

 private:
  struct Container {
    std::vector<std::string> devices;
    std::map<uint64_t, BackendMapping> mappings;  // By IOVA.
    // The stand-in for the kernel object; empty until the first Persist.
    UniqueFd marker;
  };

  // The CreateContainer device checks (errors built with `context`).
  absl::Status CheckDevicesLocked(absl::string_view context,
                                  const std::vector<std::string>& addresses)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SimBackend(std::vector<BackendDevice> devices, Geometry geometry);

  // Returns the pending injected error for `op` (and clears it) as a status
  // with `context`, or OK when none is pending.
  absl::Status TakeInjectedErrorLocked(SimOp op, absl::string_view context)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The container for `handle`, or nullptr.
  Container* FindLocked(ContainerHandle handle)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::vector<BackendDevice> devices_;  // Sorted by address.
  const Geometry geometry_;
  const uint64_t granule_;  // Smallest page size.

  absl::Mutex mu_;
  ContainerHandle next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<ContainerHandle, Container> containers_ ABSL_GUARDED_BY(mu_);
  // Device address -> the container holding it.
  absl::flat_hash_map<std::string, ContainerHandle> holder_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int, int> next_error_ ABSL_GUARDED_BY(mu_);  // SimOp -> errno.

  // The unmap gate; its own mutex, never held with mu_.
  absl::Mutex gate_mu_;
  bool unmaps_blocked_ ABSL_GUARDED_BY(gate_mu_) = false;
  int unmaps_waiting_ ABSL_GUARDED_BY(gate_mu_) = 0;
  uint64_t unmap_calls_ ABSL_GUARDED_BY(gate_mu_) = 0;
  bool destroys_blocked_ ABSL_GUARDED_BY(gate_mu_) = false;
  int destroys_waiting_ ABSL_GUARDED_BY(gate_mu_) = 0;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_SIM_BACKEND_H_
