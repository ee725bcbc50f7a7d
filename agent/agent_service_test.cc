#include "agent/agent_service.h"

#include <memory>
#include <string>
#include <vector>

#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::HasSubstr;

constexpr char kC1[] = "c-0000000000000001";

// Exercises the wire mapping over an in-process channel; the logic itself is
// covered by agent_core_test.
class AgentServiceTest : public ::testing::Test {
 protected:
  AgentServiceTest() {
    absl::StatusOr<std::vector<SimDeviceSpec>> specs =
        ParseSimDevices("0000:00:04.0=1234:11e8@5");
    EXPECT_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> backend =
        SimBackend::Create(*std::move(specs));
    EXPECT_OK(backend);
    backend_ = *std::move(backend);
    core_ = std::make_unique<AgentCore>("n1", backend_.get());
    TransportConfig insecure;
    insecure.insecure = true;
    service_ = std::make_unique<AgentService>(core_.get(), insecure);
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = v1::Agent::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  ~AgentServiceTest() override { server_->Shutdown(); }

  grpc::Status Create(const std::string& id, const std::string& tenant,
                      v1::AgentContainer* out) {
    grpc::ClientContext ctx;
    v1::AgentCreateContainerRequest req;
    req.set_container_id(id);
    req.set_tenant_id(tenant);
    req.add_devices("0000:00:04.0");
    return stub_->CreateContainer(&ctx, req, out);
  }

  std::unique_ptr<SimBackend> backend_;
  std::unique_ptr<AgentCore> core_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Agent::Stub> stub_;
};

TEST_F(AgentServiceTest, CreateGetInventoryDestroyRoundTrip) {
  v1::AgentContainer created;
  ASSERT_TRUE(Create(kC1, "acme", &created).ok());
  EXPECT_EQ(created.id(), kC1);
  EXPECT_EQ(created.geometry().max_mappings(), 65535u);

  {
    grpc::ClientContext ctx;
    v1::AgentGetContainerRequest req;
    req.set_container_id(kC1);
    v1::AgentGetContainerResponse resp;
    ASSERT_TRUE(stub_->GetContainer(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.container().tenant_id(), "acme");
  }
  {
    grpc::ClientContext ctx;
    v1::GetInventoryResponse resp;
    ASSERT_TRUE(stub_->GetInventory(&ctx, v1::GetInventoryRequest(), &resp).ok());
    EXPECT_EQ(resp.node(), "n1");
    EXPECT_EQ(resp.backend(), "sim");
    EXPECT_TRUE(resp.simulated());
    ASSERT_EQ(resp.devices_size(), 1);
    EXPECT_EQ(resp.devices(0).container_id(), kC1);
  }
  {
    grpc::ClientContext ctx;
    v1::AgentDestroyContainerRequest req;
    req.set_container_id(kC1);
    v1::AgentDestroyContainerResponse resp;
    ASSERT_TRUE(stub_->DestroyContainer(&ctx, req, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    v1::AgentDestroyContainerRequest req;
    req.set_container_id(kC1);
    v1::AgentDestroyContainerResponse resp;
    grpc::Status s = stub_->DestroyContainer(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), HasSubstr("container_id: c-0000000000000001"));
  }
}

TEST_F(AgentServiceTest, ErrorsKeepCodeAndMessage) {
  v1::AgentContainer created;
  grpc::Status s = Create("c-1", "acme", &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("container_id:"));

  ASSERT_TRUE(Create(kC1, "acme", &created).ok());
  s = Create(kC1, "globex", &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(AgentServiceTest, UnmapOfNothingIsNotFoundAndBudgetsApply) {
  v1::AgentContainer created;
  ASSERT_TRUE(Create(kC1, "acme", &created).ok());
  grpc::ClientContext ctx;
  v1::AgentUnmapRequest req;
  req.set_container_id(kC1);
  req.set_iova(0);
  req.set_size(0x1000);
  v1::AgentUnmapResponse resp;
  grpc::Status s = stub_->Unmap(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("iova: no mapping inside"));

  grpc::ClientContext ctx2;
  v1::SetPinBudgetsRequest budgets;
  auto* b = budgets.add_budgets();
  b->set_container_id(kC1);
  b->set_pin_budget_bytes(1 << 20);
  v1::SetPinBudgetsResponse bresp;
  ASSERT_TRUE(stub_->SetPinBudgets(&ctx2, budgets, &bresp).ok());
  grpc::ClientContext ctx3;
  v1::GetInventoryResponse inv;
  ASSERT_TRUE(stub_->GetInventory(&ctx3, v1::GetInventoryRequest(), &inv).ok());
  ASSERT_EQ(inv.containers_size(), 1);
  EXPECT_EQ(inv.containers(0).pin_budget_bytes(), 1u << 20);
}

}  // namespace
}  // namespace agent
}  // namespace iommu
