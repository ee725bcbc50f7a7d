// What the agent's metrics (agent/agent_metrics.h) read from AgentCore: a
// point-in-time summary of its state (AgentCore::Stats(), taken under its
// lock at scrape time), and an observer AgentCore tells how long each map and
// unmap took. Plain types: no metrics library here.
#ifndef AGENT_AGENT_STATS_H_
#define AGENT_AGENT_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace iommu {
namespace agent {

struct AgentStats {
  struct Tenant {
    std::string id;
    uint64_t billed_bytes = 0;  // Distinct host pages pinned, billed to this owner.
    uint64_t mapped_bytes = 0;  // Every mapping of the tenant's memory counted.
    // What the kernel charges for the mappings this tenant's sessions made:
    // each mapping in full (per mapping, not per page; kernel_pin_account.h).
    uint64_t kernel_counted_bytes = 0;
  };
  std::vector<Tenant> tenants;  // Tenants with non-zero usage, by id.
  // Sum of every mapping's size: what the kernel should be charging the agent
  // (VmLck for VFIO type1, VmPin for iommufd), and the agent's bounds on it
  // (UINT64_MAX: none; AgentCore::SetKernelPinLimits).
  uint64_t kernel_counted_bytes = 0;
  uint64_t kernel_pin_bytes_per_tenant_limit = UINT64_MAX;
  uint64_t kernel_pin_bytes_node_limit = UINT64_MAX;
  uint64_t containers = 0;
  uint64_t mappings = 0;  // DMA mappings over all containers.
  // The most mappings any one container holds: the kernel's limit (type1's
  // dma_entry_limit, sim's --sim-max-mappings) applies per address space.
  uint64_t max_container_mappings = 0;
  // The largest per-address-space mapping limit the held containers'
  // geometries report; 0 when no container is held or none is limited
  // (iommufd has no such limit).
  uint64_t mappings_limit = 0;
  uint64_t launcher_sessions = 0;  // Open launcher sessions.
};

// Told about every AgentCore::MapMemory and AgentCore::Unmap call, successful
// or not, with how long it took (validation, ledger and kernel). Called with
// AgentCore's lock held: implementations must be quick and must not call
// back into AgentCore. Thread-safe implementations only.
class AgentCoreObserver {
 public:
  virtual ~AgentCoreObserver() = default;
  virtual void ObserveMap(absl::Duration elapsed) = 0;
  virtual void ObserveUnmap(absl::Duration elapsed) = 0;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_STATS_H_
