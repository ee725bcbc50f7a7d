// The simulated backend's devices, as specs (agent/sim_backend.h): parsed
// from the agent's --sim-devices flag or a --sim-config file.
//
// Device specs, one per device:
//   ADDRESS=VENDOR:DEVICE@GROUP[!DRIVER]
//   e.g. "0000:00:04.0=1234:11e8@5"; "0000:00:06.0=8086:10d3@7!host"
// VENDOR and DEVICE are hex, GROUP decimal. "!DRIVER" marks a device bound to
// a host driver: it and every device of its IOMMU group are unassignable.
// The flag form joins specs with ','; the config-file form has one spec per
// line, '#' starting a comment.
#ifndef AGENT_SIM_DEVICES_H_
#define AGENT_SIM_DEVICES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

// The driver of an assignable device: a spec names any other.
inline constexpr absl::string_view kVfioPci = "vfio-pci";

// One fake device, as parsed from a spec.
struct SimDeviceSpec {
  std::string address;
  uint32_t vendor_id = 0;
  uint32_t device_id = 0;
  uint32_t iommu_group = 0;
  // Empty when the device is bound to vfio-pci; else the host driver holding
  // it (which makes its whole group unassignable).
  std::string host_driver;
};

// Parses the flag form: specs joined by ','. Empty input gives no devices.
// Errors (INVALID_ARGUMENT) quote the offending spec and state the rule.
absl::StatusOr<std::vector<SimDeviceSpec>> ParseSimDevices(absl::string_view specs);

// Parses the config-file form: one spec per line, blank lines and '#'
// comments ignored. Errors name the line number.
absl::StatusOr<std::vector<SimDeviceSpec>> ParseSimConfig(absl::string_view text);

// Reads and parses a config file. Errors: the errno of open/read as a status
// naming the path (e.g. NOT_FOUND), or the parse error prefixed by the path.
absl::StatusOr<std::vector<SimDeviceSpec>> ReadSimConfigFile(const std::string& path);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_SIM_DEVICES_H_
