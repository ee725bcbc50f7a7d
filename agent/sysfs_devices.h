// SysfsDevices: discovery of the host's PCI functions from sysfs, which of
// them the agent may manage (an allowlist: --devices), whether each can be
// assigned (its whole IOMMU group bound to vfio-pci), and, in managed mode,
// moving a whole IOMMU group to vfio-pci and giving it back.
//
// Reads, per /sys/bus/pci/devices/DDDD:BB:DD.F: vendor, device, the `driver`
// link, the `iommu_group` link, and /sys/kernel/iommu_groups/N/devices.
//
// Assignability rule (strict, on purpose): a device is assignable only when
// every member of its IOMMU group is (a) on the allowlist and (b) bound to
// vfio-pci. The kernel itself would also accept members with no driver or
// bound to pci-stub / pcieport (drivers that never do DMA), e.g. a PCIe
// bridge sharing the group; we refuse those groups rather than reason about
// them, and say which member and which driver blocked it. In managed mode,
// (b) becomes "the agent can rebind it": ClaimGroup moves every member to
// vfio-pci first, and ReleaseGroup gives each back to the driver it had.
//
// A group is never half-claimed: if any member fails to move, the members
// already moved are given back before ClaimGroup returns its error.
//
// The sysfs root is injectable (tests build a tree under TEST_TMPDIR); so is
// a write observer, which tests use to record the order of writes and to
// play the kernel's part (re-linking `driver` after drivers_probe).
//
// Thread-safety: Scan and the path helpers are safe to call concurrently.
// ClaimGroup/ReleaseGroup mutate the host: callers serialise them per group
// (the backends hold their container lock while calling them).
#ifndef AGENT_SYSFS_DEVICES_H_
#define AGENT_SYSFS_DEVICES_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/backend.h"

namespace iommu {
namespace agent {

// Which PCI functions the agent may touch. Entries of the flag, joined by
// ',': a PCI address ("0000:00:04.0") or a VENDOR:DEVICE id pair in hex
// ("1af4:1041"), DEVICE may be '*' ("1af4:*"). An empty filter matches
// nothing: the agent never grabs a device it was not told about.
struct DeviceFilter {
  std::vector<std::string> addresses;
  struct Id {
    uint32_t vendor = 0;
    bool any_device = false;
    uint32_t device = 0;
  };
  std::vector<Id> ids;

  bool Matches(absl::string_view address, uint32_t vendor,
               uint32_t device) const;
};

// Parses the --devices flag. Errors (INVALID_ARGUMENT) name the flag, quote
// the entry and state the rule.
absl::StatusOr<DeviceFilter> ParseDeviceFilter(absl::string_view flag);

// The drivers ClaimGroup displaced, for ReleaseGroup.
struct GroupClaim {
  uint32_t group = 0;
  // (address, previous driver; "" when it had none), in claim order. Only
  // members that ClaimGroup actually moved.
  std::vector<std::pair<std::string, std::string>> moved;
};

struct SysfsOptions {
  std::string root = "/sys";
  // Managed mode: groups bound to host drivers count as assignable and
  // ClaimGroup moves them to vfio-pci.
  bool managed = false;
  // Called after every successful write with the full path and the data.
  std::function<void(const std::string& path, const std::string& data)> on_write;
};

class SysfsDevices final {
 public:
  SysfsDevices(DeviceFilter filter, SysfsOptions options);
  SysfsDevices(const SysfsDevices&) = delete;
  SysfsDevices& operator=(const SysfsDevices&) = delete;

  bool managed() const { return options_.managed; }

  // Every allowlisted PCI function, sorted by address, with vendor/device,
  // driver ("" when unbound), IOMMU group and assignability. Errors: the
  // errno of reading /sys/bus/pci/devices (naming the path). A device whose
  // own attributes cannot be read is listed unassignable with the reason.
  absl::StatusOr<std::vector<BackendDevice>> Scan() const;

  // The addresses in /sys/kernel/iommu_groups/<group>/devices, sorted.
  absl::StatusOr<std::vector<std::string>> GroupMembers(uint32_t group) const;

  // The current driver of `address` ("" when unbound).
  absl::StatusOr<std::string> Driver(const std::string& address) const;

  // The VFIO cdev path of `address`: "/dev/vfio/devices/vfioX" for the one
  // entry vfioX of /sys/bus/pci/devices/<address>/vfio-dev/. NOT_FOUND when
  // the kernel has no cdev for it (VFIO_DEVICE_CDEV off, or not vfio-pci).
  absl::StatusOr<std::string> VfioCdevPath(const std::string& address) const;

  // Managed mode: binds every member of `group` that is not on vfio-pci to
  // vfio-pci (driver_override, unbind, drivers_probe, check the link), in
  // address order. On failure, members already moved are given back and the
  // error names the member and the step. FAILED_PRECONDITION when not
  // managed, or a member is not on the allowlist.
  absl::StatusOr<GroupClaim> ClaimGroup(uint32_t group);

  // Gives every member of `claim` back to its previous driver, in reverse
  // order: clear driver_override, unbind from vfio-pci, drivers_probe.
  // Continues past failures; returns the first. Note: the kernel's vfio-pci
  // unbind blocks until every fd of the device is closed, so call this only
  // after the backend closed its fds (a launcher still holding a device fd
  // makes it wait for that launcher).
  absl::Status ReleaseGroup(const GroupClaim& claim);

 private:
  std::string DevicePath(absl::string_view address) const;
  absl::Status Write(const std::string& path, const std::string& data) const;
  absl::Status BindToVfio(const std::string& address, const std::string& driver);
  absl::Status GiveBack(const std::string& address, const std::string& driver);

  const DeviceFilter filter_;
  const SysfsOptions options_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_SYSFS_DEVICES_H_
