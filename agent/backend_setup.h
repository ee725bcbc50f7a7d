// Builds the backend the agent runs on from a BackendPlan (agent_options.h):
// the simulated backend with its fake devices, or a real one (iommufd,
// vfio-type1) over the devices sysfs allows, after checking this process may
// pin guest memory. Used once at start; thread-compatible.
#ifndef AGENT_BACKEND_SETUP_H_
#define AGENT_BACKEND_SETUP_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "agent/agent_options.h"
#include "agent/backend.h"
#include "agent/kernel_ops.h"
#include "agent/memlock_policy.h"
#include "agent/sysfs_devices.h"

namespace iommu {
namespace agent {

// A built backend and what must stay alive with it.
struct BuiltBackend {
  // Declared before `backend` so that it is destroyed after it.
  std::unique_ptr<SysfsDevices> sysfs;  // Real backends only.
  std::unique_ptr<Backend> backend;
  // The kernel-pin bounds AgentCore enforces. Sim: no kernel pins, no bounds.
  MemlockDecision memlock;
  size_t device_count = 0;
  // The mapping limit to report before any container exists: sim's
  // --sim-max-mappings, type1's dma_entry_limit (0 when unknown), 0 for iommufd.
  uint64_t default_mapping_limit = 0;
};

// Builds the backend `plan` names; `ops` (not owned) is the kernel seam and
// must outlive the backend. Sim prints SimBanner to stderr. Errors carry the
// event the agent stops under (WithStartEvent in startup.h): "bad_flag" for
// a --sim-config that cannot be read or fake devices SimBackend refuses;
// "memlock_refused" when this process may not pin what the flags ask
// (EnsureCanPinMemory); "backend_failed" when the real backend cannot be
// created or list its devices.
absl::StatusOr<BuiltBackend> BuildBackend(const BackendPlan& plan, KernelOps* ops);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_BACKEND_SETUP_H_
