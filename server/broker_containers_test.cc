// Containers and their windows from create to delete and across a restart,
// the two-step delete, and the launcher grants that name a container's windows.
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/grant_token.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/broker_test_fixture.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;

TEST_F(BrokerTest, ScenarioFromTenantToDelete) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state(), v1::CONTAINER_STATE_READY);
  EXPECT_THAT(c->devices(), ElementsAre("0000:00:04.0"));
  EXPECT_EQ(c->geometry().usable_ranges_size(), 2);

  v1::ListDevicesRequest ldr;
  ldr.set_node("n1");
  v1::ListDevicesResponse devices;
  ASSERT_TRUE(broker_->ListDevices(ldr, &devices).ok());
  EXPECT_EQ(devices.devices(0).container_id(), c->id());
  EXPECT_EQ(devices.devices(1).container_id(), "");

  auto w1 = Allocate(c->id(), 0x200000, 0x200000);
  ASSERT_TRUE(w1.ok()) << w1.status();
  EXPECT_EQ(w1->base() % 0x200000, 0u);
  auto w2 = Allocate(c->id(), 0x1000);
  ASSERT_TRUE(w2.ok());
  EXPECT_TRUE(w2->base() + w2->size() <= w1->base() || w1->base() + w1->size() <= w2->base());

  v1::GetUsageRequest ur;
  ur.set_tenant_id("acme");
  v1::GetUsageResponse usage;
  ASSERT_TRUE(broker_->GetUsage(ur, &usage).ok());
  ASSERT_EQ(usage.tenants_size(), 1);
  EXPECT_EQ(usage.tenants(0).window_bytes(), 0x201000u);
  EXPECT_EQ(usage.tenants(0).containers(), 1u);
  ASSERT_EQ(usage.nodes_size(), 1);
  EXPECT_EQ(usage.nodes(0).node(), "n1");

  // The agent was told both windows (after the replies: pushes are queued).
  broker_->WaitForPushes();
  EXPECT_EQ(agents_.windows(c->id()).windows_size(), 2);

  v1::ReleaseWindowRequest rr;
  rr.set_window_id(w1->id());
  v1::ReleaseWindowResponse rresp;
  ASSERT_TRUE(broker_->ReleaseWindow(rr, &rresp).ok());
  // And that one is gone, so it can revoke what it held.
  broker_->WaitForPushes();
  ASSERT_EQ(agents_.windows(c->id()).windows_size(), 1);
  EXPECT_EQ(agents_.windows(c->id()).windows(0).start(), w2->base());

  v1::DeleteContainerRequest dr;
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  EXPECT_TRUE(agents_.held("n1:1").empty());
  v1::ListWindowsResponse lw;
  ASSERT_TRUE(broker_->ListWindows({}, &lw).ok());
  EXPECT_EQ(lw.windows_size(), 0);  // w2 went with its container.

  v1::DeleteTenantRequest dt;
  dt.set_tenant_id("acme");
  v1::DeleteTenantResponse dtr;
  EXPECT_TRUE(broker_->DeleteTenant(dt, &dtr).ok());
}

TEST_F(BrokerTest, StateSurvivesRestartIncludingAllocatorOccupancy) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  auto w = Allocate(c->id(), 0x10000, 0, true, 0x100000);
  ASSERT_TRUE(w.ok());
  v1::CordonNodeRequest cr;
  cr.set_node("n1");
  v1::Node n;
  ASSERT_TRUE(broker_->CordonNode(cr, &n).ok());
  Restart();
  v1::GetContainerRequest gc;
  gc.set_container_id(c->id());
  v1::Container got;
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.window_count(), 1u);
  // Until the agent registers again the node is unavailable.
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  EXPECT_THAT(Allocate(c->id(), 0x1000, 0, true, 0x100000).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, "overlaps window"));
  v1::GetNodeRequest gn;
  gn.set_node("n1");
  ASSERT_TRUE(broker_->GetNode(gn, &n).ok());
  EXPECT_TRUE(n.cordoned());
  v1::ListDevicesRequest ld;
  ld.set_node("n1");
  v1::ListDevicesResponse devs;
  ASSERT_TRUE(broker_->ListDevices(ld, &devs).ok());
  EXPECT_EQ(devs.devices(0).container_id(), c->id());
}

TEST_F(BrokerTest, GrantLauncherSignsWithTheNodeKeyAndListsTheWindows) {
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  ASSERT_GE(reg.grant_key().size(), 16u);
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  auto w = Allocate(c->id(), 0x200000);
  ASSERT_TRUE(w.ok());
  v1::GrantLauncherRequest gr;
  gr.set_container_id(c->id());
  gr.set_ttl_seconds(30);
  v1::GrantLauncherResponse grant;
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  EXPECT_EQ(grant.node(), "n1");
  EXPECT_EQ(grant.expires_ms(), now_ms_ + 30000);
  ASSERT_EQ(grant.windows_size(), 1);
  auto verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->container_id(), c->id());
  EXPECT_EQ(verified->tenant_id(), "acme");
  ASSERT_EQ(verified->windows_size(), 1);
  EXPECT_EQ(verified->windows(0).base(), w->base());
  EXPECT_EQ(VerifyGrant(grant.token(), "another key that is long enough", now_ms_).status().code(),
            absl::StatusCode::kUnauthenticated);
  // The key survives a broker restart, so tokens handed out stay valid.
  Restart();
  v1::RegisterResponse again;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &again);
  EXPECT_EQ(again.grant_key(), reg.grant_key());
  gr.set_ttl_seconds(3601);
  EXPECT_THAT(broker_->GrantLauncher(gr, &grant),
              StatusIs(absl::StatusCode::kInvalidArgument, "ttl_seconds: at most 3600"));
  gr.set_ttl_seconds(0);
  now_ms_ += 10000;
  broker_->CheckLiveness();
  EXPECT_THAT(broker_->GrantLauncher(gr, &grant),
              StatusIs(absl::StatusCode::kUnavailable, "is not heartbeating"));
}

TEST_F(BrokerTest, WindowsPerContainerAreBoundedAndEveryGrantFitsAToken) {
  // The longest names the validation rules allow.
  const std::string node(63, 'n');
  const std::string tenant = "t" + std::string(62, 'x');
  v1::RegisterResponse reg;
  RegisterNode(node, {Dev("0000:00:04.0", 5)}, &reg);
  CreateTenant(tenant);
  auto c = Create(tenant, node, {"0000:00:04.0"});
  ASSERT_TRUE(c.ok()) << c.status();
  // High, widely spaced windows (GrantSizeTest checks the widest fields).
  for (size_t i = 0; i < kMaxWindowsPerContainer; ++i) {
    auto w = Allocate(c->id(), 0x1000, 0, /*fixed=*/true, 0x7f00000000ULL + i * 0x2000000ULL);
    ASSERT_TRUE(w.ok()) << i << ": " << w.status();
  }
  EXPECT_THAT(Allocate(c->id(), 0x1000).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "already holds 48 windows, the most a container may hold (48)"));
  v1::GrantLauncherRequest gr;
  gr.set_container_id(c->id());
  v1::GrantLauncherResponse grant;
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  EXPECT_EQ(grant.windows_size(), static_cast<int>(kMaxWindowsPerContainer));
  EXPECT_LE(grant.token().size(), kMaxGrantTokenBytes);
  auto verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->windows_size(), static_cast<int>(kMaxWindowsPerContainer));
}

// Grants are bound to the agent run that registered, so its restart (a new
// incarnation) voids tokens used before it.
TEST_F(BrokerTest, GrantsCarryTheRegisteredAgentIncarnation) {
  v1::RegisterRequest req;
  req.set_node("n1");
  req.set_agent_address("n1:1");
  *req.add_devices() = Dev("0000:00:04.0", 5);
  req.set_agent_incarnation("not hex");
  v1::RegisterResponse reg;
  EXPECT_THAT(
      broker_->Register(req, &reg),
      StatusIs(absl::StatusCode::kInvalidArgument, "agent_incarnation: 32 lower-case hex digits"));
  req.set_agent_incarnation(std::string(32, 'a'));
  ASSERT_TRUE(broker_->Register(req, &reg).ok());
  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  v1::ReconciledResponse unused;
  ASSERT_TRUE(broker_->Reconciled(rec, &unused).ok());
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  v1::GrantLauncherRequest gr;
  gr.set_container_id(c->id());
  v1::GrantLauncherResponse grant;
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  auto verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->agent_incarnation(), std::string(32, 'a'));
  // The agent restarts: new incarnation, and it reconciles again.
  req.set_agent_incarnation(std::string(32, 'b'));
  ASSERT_TRUE(broker_->Register(req, &reg).ok());
  EXPECT_THAT(broker_->GrantLauncher(gr, &grant),
              StatusIs(absl::StatusCode::kUnavailable, "is reconciling after registering; retry"));
  rec.set_session_id(reg.session_id());
  *rec.add_containers() = reg.desired_containers(0);
  ASSERT_TRUE(broker_->Reconciled(rec, &unused).ok());
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->agent_incarnation(), std::string(32, 'b'));
}

// The two-step delete: a node, a tenant and one container, and the calls
// the delete tests make.
class DeleteTest : public BrokerTest {
 protected:
  void SetUp() override {
    BrokerTest::SetUp();
    RegisterNode("n1", {Dev("0000:00:04.0", 5)});
    CreateTenant("acme");
    auto c = Create("acme", "n1", {"0000:00:04.0"});
    ASSERT_TRUE(c.ok());
    id_ = c->id();
  }
  absl::Status Delete() {
    v1::DeleteContainerRequest req;
    req.set_container_id(id_);
    v1::DeleteContainerResponse out;
    return broker_->DeleteContainer(req, &out);
  }
  absl::StatusOr<v1::Container> Get() {
    v1::GetContainerRequest req;
    req.set_container_id(id_);
    v1::Container out;
    absl::Status s = broker_->GetContainer(req, &out);
    if (!s.ok()) return s;
    return out;
  }
  std::string id_;
};

// A delete commits its intent before the agent destroys anything: a delete
// the store refuses leaves the container on its agent, and one interrupted
// after the destroy is finished when the agent registers without it.
TEST_F(DeleteTest, CommitsItsIntentBeforeTheAgentDestroys) {
  store_.set_next_commit_error(absl::ResourceExhaustedError("disk full"));
  EXPECT_THAT(Delete(), StatusIs(absl::StatusCode::kResourceExhausted, "disk full"));
  EXPECT_EQ(agents_.destroys(), 0);
  EXPECT_EQ(agents_.held("n1:1").count(id_), 1u);
  ASSERT_TRUE(Get().ok());
  EXPECT_EQ(Get()->state(), v1::CONTAINER_STATE_READY);

  // The intent commits, the destroy happens, the removal is refused: the
  // container shows DELETING and takes no new windows.
  store_.set_commit_error_after(1, absl::ResourceExhaustedError("disk full"));
  EXPECT_THAT(Delete(),
              StatusIs(absl::StatusCode::kResourceExhausted, "stays DELETING: repeat the delete"));
  EXPECT_EQ(agents_.held("n1:1").count(id_), 0u);
  ASSERT_TRUE(Get().ok());
  EXPECT_EQ(Get()->state(), v1::CONTAINER_STATE_DELETING);
  EXPECT_THAT(Allocate(id_, 0x1000).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is being deleted"));
  // The scrape counts it as its view shows it, from the maintained indexes.
  EXPECT_EQ(broker_->Stats().containers_deleting, 1);
  EXPECT_EQ(broker_->Stats().containers_ready, 0);
  EXPECT_TRUE(broker_->CheckIndexes().ok()) << broker_->CheckIndexes();

  // After a restart the agent registers without it: the delete is finished,
  // and the agent is not asked to re-create it.
  Restart();
  EXPECT_EQ(broker_->Stats().containers_deleting, 1);  // Persisted.
  EXPECT_EQ(broker_->Stats().containers_node_unavailable, 0);
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  EXPECT_EQ(reg.desired_containers_size(), 0);
  EXPECT_THAT(Get().status(), StatusIs(absl::StatusCode::kNotFound, "no container"));
}

// An agent that still holds a DELETING container keeps it (its guest's DMA
// is cut only by a delete request's own destroy); repeating the delete
// finishes it.
TEST_F(DeleteTest, ContainerTheAgentStillHoldsIsKeptUntilTheDeleteIsRepeated) {
  agents_.set_next_error(absl::UnavailableError("agent stalled"));
  EXPECT_FALSE(Delete().ok());
  ASSERT_TRUE(Get().ok());
  EXPECT_EQ(Get()->state(), v1::CONTAINER_STATE_DELETING);
  EXPECT_EQ(broker_->Stats().containers_deleting, 1);
  EXPECT_TRUE(broker_->CheckIndexes().ok()) << broker_->CheckIndexes();
  // The agent re-registers still holding it: it stays desired.
  v1::RegisterRequest req;
  req.set_node("n1");
  req.set_agent_address("n1:1");
  *req.add_devices() = Dev("0000:00:04.0", 5);
  req.add_containers()->set_id(id_);
  v1::RegisterResponse reg;
  ASSERT_TRUE(broker_->Register(req, &reg).ok());
  ASSERT_EQ(reg.desired_containers_size(), 1);
  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  *rec.mutable_containers() = reg.desired_containers();
  v1::ReconciledResponse unused;
  ASSERT_TRUE(broker_->Reconciled(rec, &unused).ok());
  ASSERT_TRUE(Delete().ok());
  EXPECT_EQ(agents_.held("n1:1").count(id_), 0u);
  EXPECT_THAT(Get().status(), StatusIs(absl::StatusCode::kNotFound, "no container"));
  EXPECT_EQ(broker_->Stats().containers_deleting, 0);
  EXPECT_TRUE(broker_->CheckIndexes().ok()) << broker_->CheckIndexes();
}

// The bound the window limit rests on, with every field at its widest: the
// longest ids and names validation allows and 64-bit bases and sizes.
TEST(GrantSizeTest, AGrantNamingTheMostWindowsFitsATokenAtItsWidest) {
  v1::LauncherGrant grant;
  grant.set_token_id(std::string(32, 'f'));
  grant.set_node(std::string(63, 'n'));
  grant.set_container_id("c-" + std::string(16, 'f'));
  grant.set_tenant_id("t" + std::string(62, 'x'));
  grant.set_expires_ms(INT64_MAX);
  grant.set_issued_ms(INT64_MAX);
  grant.set_launcher_uid(UINT32_MAX);
  grant.set_agent_incarnation(std::string(32, 'f'));
  for (size_t i = 0; i < kMaxWindowsPerContainer; ++i) {
    v1::GrantWindow* w = grant.add_windows();
    w->set_window_id("w-" + std::string(16, 'f'));
    w->set_base(UINT64_MAX - 0xfff);
    w->set_size(UINT64_MAX - 0xfff);
  }
  absl::StatusOr<std::string> token = SignGrant(grant, std::string(32, 'k'));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_LE(token->size(), kMaxGrantTokenBytes);
}

}  // namespace
}  // namespace iommu
