// DeleteNode refuses a node while a create on it is in flight (its devices
// are reserved, the container not yet recorded), and only that node: a
// reservation elsewhere in the fleet does not hold it back.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"
#include "server/test_nodes.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

const Identity kOperator{Role::kOperator, "ops"};

// OkAgents whose next CreateContainer waits, once entered, until released.
class GatedAgents final : public AgentClient {
 public:
  absl::StatusOr<v1::AgentContainer> CreateContainer(
      const AgentEndpoint& to, const v1::AgentCreateContainerRequest& req) override {
    entered_.Notify();
    release_.WaitForNotification();
    return ok_.CreateContainer(to, req);
  }
  absl::Status DestroyContainer(const AgentEndpoint& to, const std::string& id) override {
    return ok_.DestroyContainer(to, id);
  }
  absl::Status SetPinBudgets(const AgentEndpoint& to, const v1::SetPinBudgetsRequest& r) override {
    return ok_.SetPinBudgets(to, r);
  }
  absl::Status SetWindows(const AgentEndpoint& to, const v1::SetWindowsRequest& r) override {
    return ok_.SetWindows(to, r);
  }

  absl::Notification entered_, release_;

 private:
  OkAgents ok_;
};

std::vector<v1::Device> Devices(int n) {
  std::vector<v1::Device> out(n);
  for (int i = 0; i < n; ++i) {
    out[i].set_address("0000:00:0" + std::to_string(i) + ".0");
    out[i].set_iommu_group(i);
    out[i].set_vendor_id(0x1234);
    out[i].set_device_id(0x11e8);
    out[i].set_assignable(true);
  }
  return out;
}

absl::Status DeleteNode(Broker* broker, const std::string& node) {
  v1::DeleteNodeRequest req;
  req.set_node(node);
  req.set_force(true);  // The nodes are live; only what they hold should refuse.
  v1::DeleteNodeResponse out;
  return broker->DeleteNode(req, &out, kOperator);
}

TEST(BrokerNodeDeleteTest, ACreateInFlightHoldsBackItsNodeOnly) {
  FakeStore store;
  GatedAgents agents;
  BrokerOptions o;
  o.node_timeout_ms = 60000;
  absl::StatusOr<std::unique_ptr<Broker>> made = Broker::Create(&store, &agents, o);
  ASSERT_OK(made);
  Broker* broker = made->get();
  ASSERT_OK(RegisterReadyNode(broker, "host-a", Devices(2)));
  ASSERT_OK(RegisterReadyNode(broker, "host-b", Devices(2)));
  v1::CreateTenantRequest tenant;
  tenant.set_tenant_id("acme");
  tenant.mutable_quota()->set_pinned_bytes(1ULL << 30);
  v1::Tenant t;
  ASSERT_OK(broker->CreateTenant(tenant, &t, kOperator));

  v1::CreateContainerRequest create;
  create.set_tenant_id("acme");
  create.set_node("host-a");
  create.add_devices("0000:00:00.0");
  create.set_pin_budget_bytes(4096);
  v1::Container created;
  absl::Status create_status;
  std::thread creator(
      [&] { create_status = broker->CreateContainer(create, &created, kOperator); });
  agents.entered_.WaitForNotification();

  absl::Status refused = DeleteNode(broker, "host-a");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("creates in flight"));
  EXPECT_OK(DeleteNode(broker, "host-b"));

  agents.release_.Notify();
  creator.join();
  ASSERT_OK(create_status);
  // Now a container holds the device: still refused, for that reason.
  refused = DeleteNode(broker, "host-a");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("still has 1 container"));
}

}  // namespace
}  // namespace iommu
