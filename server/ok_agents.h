// Test-only AgentClient: agents that create every container they are asked
// for (with the q35 + intel-iommu geometry: everything below the MSI hole,
// 4K/2M/1G pages) and accept every destroy, budget and window push. For tests
// and benchmarks of the broker's own logic, where the agent is not under test.
// Thread-safe (stateless).
#ifndef SERVER_OK_AGENTS_H_
#define SERVER_OK_AGENTS_H_

#include <string>

#include "server/agent_client.h"

namespace iommu {

class OkAgents final : public AgentClient {
 public:
  absl::StatusOr<v1::AgentContainer> CreateContainer(
      const AgentEndpoint&, const v1::AgentCreateContainerRequest& req) override {
    v1::AgentContainer c;
    c.set_id(req.container_id());
    c.set_tenant_id(req.tenant_id());
    *c.mutable_devices() = req.devices();
    v1::ContainerGeometry* g = c.mutable_geometry();
    v1::IovaRange* r = g->add_usable_ranges();
    r->set_start(0);
    r->set_last(0xfedfffff);
    g->set_page_size_bitmap(0x40201000);
    g->set_max_mappings(65535);
    return c;
  }
  absl::Status DestroyContainer(const AgentEndpoint&, const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status SetPinBudgets(const AgentEndpoint&, const v1::SetPinBudgetsRequest&) override {
    return absl::OkStatus();
  }
  absl::Status SetWindows(const AgentEndpoint&, const v1::SetWindowsRequest&) override {
    return absl::OkStatus();
  }
};

}  // namespace iommu

#endif  // SERVER_OK_AGENTS_H_
