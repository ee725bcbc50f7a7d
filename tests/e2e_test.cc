// End-to-end tests of the control plane: the broker and simulated agents as
// real processes on loopback, driven over gRPC. Covers the README scenario,
// idempotent retries, the error codes of the API with no state changed by a
// refused request, and reconciliation after kill -9 of an agent or a broker
// restart (DESIGN.md invariant 6).
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"
#include "tests/health.grpc.pb.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using testing::Cluster;

constexpr char kTwoEdus[] = "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6";

template <typename Req, typename Resp, typename Stub, typename Method>
grpc::Status Call(Stub* stub, Method method, const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return (stub->*method)(&ctx, req, resp);
}

class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    ASSERT_TRUE(cluster_.StartAgent("n1", kTwoEdus).ok()) << cluster_.agent("n1").Log();
    broker_ = cluster_.BrokerStub();
  }

  void CreateTenant(const std::string& id, uint32_t max_containers = 0) {
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(1ULL << 30);
    req.mutable_quota()->set_max_containers(max_containers);
    v1::Tenant t;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::CreateTenant, req, &t);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  grpc::Status CreateContainer(const std::string& tenant, const std::string& node,
                               const std::string& device, v1::Container* out,
                               const std::string& request_id = "") {
    v1::CreateContainerRequest req;
    req.set_request_id(request_id);
    req.set_tenant_id(tenant);
    req.set_node(node);
    if (!device.empty()) req.add_devices(device);
    return Call(broker_.get(), &v1::Broker::Stub::CreateContainer, req, out);
  }

  std::set<std::string> AgentContainers(const std::string& node) {
    auto agent = cluster_.AgentStub(node);
    v1::GetInventoryResponse inv;
    grpc::Status s = Call(agent.get(), &v1::Agent::Stub::GetInventory, v1::GetInventoryRequest(),
                          &inv);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::set<std::string> ids;
    for (const auto& c : inv.containers()) ids.insert(c.id());
    return ids;
  }

  std::string Snapshot() {
    v1::ListTenantsResponse t;
    v1::ListNodesResponse n;
    v1::ListContainersResponse c;
    v1::ListWindowsResponse w;
    EXPECT_TRUE(Call(broker_.get(), &v1::Broker::Stub::ListTenants, v1::ListTenantsRequest(), &t).ok());
    EXPECT_TRUE(Call(broker_.get(), &v1::Broker::Stub::ListNodes, v1::ListNodesRequest(), &n).ok());
    EXPECT_TRUE(
        Call(broker_.get(), &v1::Broker::Stub::ListContainers, v1::ListContainersRequest(), &c).ok());
    EXPECT_TRUE(Call(broker_.get(), &v1::Broker::Stub::ListWindows, v1::ListWindowsRequest(), &w).ok());
    // Heartbeat times move on their own; everything else must not.
    for (auto& node : *n.mutable_nodes()) node.clear_last_heartbeat_ms();
    return t.DebugString() + n.DebugString() + c.DebugString() + w.DebugString();
  }

  Cluster cluster_;
  std::unique_ptr<v1::Broker::Stub> broker_;
};

TEST_F(E2eTest, ScenarioFromTenantToDeleteReachesTheAgent) {
  CreateTenant("acme");
  v1::ListNodesResponse nodes;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::ListNodes, v1::ListNodesRequest(), &nodes).ok());
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_EQ(nodes.nodes(0).name(), "n1");
  EXPECT_EQ(nodes.nodes(0).state(), v1::NODE_STATE_READY);
  EXPECT_TRUE(nodes.nodes(0).simulated());
  EXPECT_EQ(nodes.nodes(0).backend(), "sim");
  EXPECT_EQ(nodes.nodes(0).device_count(), 2u);

  v1::ListDevicesRequest ldr;
  ldr.set_node("n1");
  v1::ListDevicesResponse devices;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::ListDevices, ldr, &devices).ok());
  ASSERT_EQ(devices.devices_size(), 2);
  EXPECT_EQ(devices.devices(0).vendor_id(), 0x1234u);
  EXPECT_EQ(devices.devices(0).iommu_group(), 5u);

  v1::Container c;
  grpc::Status s = CreateContainer("acme", "n1", "0000:00:04.0", &c);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(AgentContainers("n1"), std::set<std::string>{c.id()});
  // The geometry is what the agent's backend reported: x86 with the MSI hole.
  ASSERT_EQ(c.geometry().usable_ranges_size(), 2);
  EXPECT_EQ(c.geometry().usable_ranges(0).last(), 0xfedfffffu);
  EXPECT_EQ(c.geometry().usable_ranges(1).start(), 0xfef00000u);
  EXPECT_EQ(c.geometry().page_size_bitmap(), 0x40201000u);
  EXPECT_EQ(c.geometry().max_mappings(), 65535u);

  // Placement by selector takes the other device.
  v1::CreateContainerRequest place;
  place.set_tenant_id("acme");
  place.mutable_selector()->set_vendor_id(0x1234);
  v1::Container placed;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::CreateContainer, place, &placed).ok());
  EXPECT_EQ(placed.node(), "n1");
  EXPECT_EQ(placed.devices(0), "0000:00:05.0");

  v1::AllocateWindowRequest ar;
  ar.set_container_id(c.id());
  ar.set_size(1ULL << 30);
  ar.set_alignment(1ULL << 30);
  v1::Window w1, w2;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::AllocateWindow, ar, &w1).ok());
  EXPECT_EQ(w1.base() % (1ULL << 30), 0u);
  ar.set_size(0x200000);
  ar.set_alignment(0);
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::AllocateWindow, ar, &w2).ok());
  // Neither touches the MSI window.
  for (const auto& w : {w1, w2}) {
    EXPECT_TRUE(w.base() + w.size() <= 0xfee00000ULL || w.base() > 0xfeefffffULL) << w.DebugString();
  }

  v1::GetUsageRequest ur;
  v1::GetUsageResponse usage;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::GetUsage, ur, &usage).ok());
  ASSERT_EQ(usage.tenants_size(), 1);
  EXPECT_EQ(usage.tenants(0).window_bytes(), (1ULL << 30) + 0x200000);
  EXPECT_EQ(usage.tenants(0).containers(), 2u);

  v1::ReleaseWindowRequest rr;
  rr.set_window_id(w1.id());
  v1::ReleaseWindowResponse rresp;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::ReleaseWindow, rr, &rresp).ok());
  for (const auto& id : {c.id(), placed.id()}) {
    v1::DeleteContainerRequest dr;
    dr.set_container_id(id);
    v1::DeleteContainerResponse dresp;
    ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::DeleteContainer, dr, &dresp).ok());
  }
  EXPECT_TRUE(AgentContainers("n1").empty());
  v1::DeleteTenantRequest dt;
  dt.set_tenant_id("acme");
  v1::DeleteTenantResponse dtr;
  EXPECT_TRUE(Call(broker_.get(), &v1::Broker::Stub::DeleteTenant, dt, &dtr).ok());
}

TEST_F(E2eTest, RetriedCreateReturnsFirstAnswerAndCreatesOnce) {
  CreateTenant("acme");
  v1::Container a, b;
  ASSERT_TRUE(CreateContainer("acme", "n1", "0000:00:04.0", &a, "retry-1").ok());
  grpc::Status s = CreateContainer("acme", "n1", "0000:00:04.0", &b, "retry-1");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(a.id(), b.id());
  EXPECT_EQ(AgentContainers("n1").size(), 1u);
  // The same id for another request is refused.
  s = CreateContainer("acme", "n1", "0000:00:05.0", &b, "retry-1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("already used for a different request"));
}

TEST_F(E2eTest, ErrorCodesReachTheCallerAndChangeNothing) {
  CreateTenant("acme", /*max_containers=*/1);
  CreateTenant("beta");
  v1::Container c;
  ASSERT_TRUE(CreateContainer("acme", "n1", "0000:00:04.0", &c).ok());
  const std::string before = Snapshot();
  struct Case {
    grpc::StatusCode code;
    std::string substr;
    grpc::Status status;
  };
  v1::Tenant t;
  v1::Container out;
  v1::Window w;
  v1::CreateTenantRequest bad_tenant;
  bad_tenant.set_tenant_id("UPPER");
  bad_tenant.mutable_quota()->set_pinned_bytes(4096);
  v1::CreateTenantRequest dup_tenant;
  dup_tenant.set_tenant_id("acme");
  dup_tenant.mutable_quota()->set_pinned_bytes(4096);
  v1::AllocateWindowRequest unaligned;
  unaligned.set_container_id(c.id());
  unaligned.set_size(0x1234);
  v1::AllocateWindowRequest huge;
  huge.set_container_id(c.id());
  huge.set_size(1ULL << 40);  // More than the 39-bit usable space.
  v1::GetContainerRequest missing;
  missing.set_container_id("c-00000000000000ff");
  v1::DeleteTenantRequest busy;
  busy.set_tenant_id("acme");
  v1::DeleteTenantResponse dtr;
  std::vector<Case> cases = {
      {grpc::StatusCode::INVALID_ARGUMENT, "tenant_id: must start with a lowercase letter",
       Call(broker_.get(), &v1::Broker::Stub::CreateTenant, bad_tenant, &t)},
      {grpc::StatusCode::ALREADY_EXISTS, "tenant \"acme\" already exists",
       Call(broker_.get(), &v1::Broker::Stub::CreateTenant, dup_tenant, &t)},
      {grpc::StatusCode::INVALID_ARGUMENT, "size: must be a multiple of the IOMMU page size 0x1000",
       Call(broker_.get(), &v1::Broker::Stub::AllocateWindow, unaligned, &w)},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, "size: no free IOVA range",
       Call(broker_.get(), &v1::Broker::Stub::AllocateWindow, huge, &w)},
      {grpc::StatusCode::NOT_FOUND, "container_id: no container",
       Call(broker_.get(), &v1::Broker::Stub::GetContainer, missing, &out)},
      {grpc::StatusCode::FAILED_PRECONDITION, "still owns 1 container",
       Call(broker_.get(), &v1::Broker::Stub::DeleteTenant, busy, &dtr)},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, "quota.max_containers",
       CreateContainer("acme", "n1", "0000:00:05.0", &out)},
      {grpc::StatusCode::FAILED_PRECONDITION, "is held by container",
       CreateContainer("beta", "n1", "0000:00:04.0", &out)},
      {grpc::StatusCode::NOT_FOUND, "no device 0000:00:1f.0",
       CreateContainer("beta", "n1", "0000:00:1f.0", &out)},
      {grpc::StatusCode::NOT_FOUND, "node: no node \"n7\"",
       CreateContainer("beta", "n7", "0000:00:05.0", &out)},
  };
  for (const Case& tc : cases) {
    EXPECT_EQ(tc.status.error_code(), tc.code) << tc.substr << ": " << tc.status.error_message();
    EXPECT_THAT(tc.status.error_message(), HasSubstr(tc.substr));
  }
  EXPECT_EQ(Snapshot(), before);
  EXPECT_EQ(AgentContainers("n1"), std::set<std::string>{c.id()});
}

TEST_F(E2eTest, SilentNodeIsUnavailableAndAgentRestartRecreatesItsContainers) {
  CreateTenant("acme");
  v1::Container c;
  ASSERT_TRUE(CreateContainer("acme", "n1", "0000:00:04.0", &c).ok());
  cluster_.agent("n1").Kill();  // kill -9: the sim backend loses everything.
  ASSERT_TRUE(cluster_.WaitForNodeState("n1", v1::NODE_STATE_UNAVAILABLE).ok());
  v1::GetContainerRequest gc;
  gc.set_container_id(c.id());
  v1::Container got;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::GetContainer, gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  v1::Container refused;
  grpc::Status s = CreateContainer("acme", "n1", "0000:00:05.0", &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("node: node \"n1\" is not heartbeating"));

  // The agent comes back empty; the broker hands it its desired containers.
  ASSERT_TRUE(cluster_.StartAgent("n1", kTwoEdus).ok());
  for (int i = 0; i < 200 && AgentContainers("n1").empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(AgentContainers("n1"), std::set<std::string>{c.id()});
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::GetContainer, gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_READY);
}

TEST_F(E2eTest, BrokerRestartMakesAgentDropWhatTheStoreDoesNotList) {
  CreateTenant("acme");
  v1::Container c;
  ASSERT_TRUE(CreateContainer("acme", "n1", "0000:00:04.0", &c).ok());
  // A container the broker never acknowledged (as if it crashed between the
  // agent's create and its own commit).
  auto agent = cluster_.AgentStub("n1");
  v1::AgentCreateContainerRequest orphan;
  orphan.set_container_id("c-0123456789abcdef");
  orphan.set_tenant_id("acme");
  orphan.add_devices("0000:00:05.0");
  v1::AgentContainer made;
  ASSERT_TRUE(Call(agent.get(), &v1::Agent::Stub::CreateContainer, orphan, &made).ok());
  EXPECT_EQ(AgentContainers("n1").size(), 2u);

  broker_.reset();
  ASSERT_TRUE(cluster_.StartBroker().ok());
  broker_ = cluster_.BrokerStub();
  for (int i = 0; i < 200 && AgentContainers("n1").size() != 1; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(AgentContainers("n1"), std::set<std::string>{c.id()});
  ASSERT_TRUE(cluster_.WaitForNodeState("n1", v1::NODE_STATE_READY).ok());
  // The freed device can be used again.
  v1::Container again;
  grpc::Status s = CreateContainer("acme", "n1", "0000:00:05.0", &again);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(E2eTest, BothDaemonsServeHealthChecks) {
  for (const std::string& address : {cluster_.broker_address(), cluster_.agent("n1").address()}) {
    auto health = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = Call(health.get(), &grpc::health::v1::Health::Stub::Check,
                          grpc::health::v1::HealthCheckRequest(), &resp);
    ASSERT_TRUE(s.ok()) << address << ": " << s.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
}

}  // namespace
}  // namespace iommu
