// Symbolic names of the ioctls the agent's real backends issue
// (agent/kernel_uapi.h), for error messages, test logs and the
// iommu_agent_kernel_errors_total{call} label. Thread-safe (pure).
#ifndef AGENT_IOCTL_NAMES_H_
#define AGENT_IOCTL_NAMES_H_

#include <string>

namespace iommu {
namespace agent {

// Symbolic name of an ioctl request of agent/kernel_uapi.h ("IOMMU_IOAS_MAP"),
// or "ioctl 0x..." when unknown.
std::string IoctlName(unsigned long request);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_IOCTL_NAMES_H_
