// What a request may leave behind: retries answer once (and each caller's
// remembered answers are bounded), refused requests change nothing, and failed
// agent calls and store commits are rolled back.
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/broker_test_fixture.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;

TEST_F(BrokerTest, RetriedCreateTenantReturnsFirstAnswerAndCommitsOnce) {
  v1::CreateTenantRequest req;
  req.set_request_id("req-1");
  req.set_tenant_id("acme");
  req.mutable_quota()->set_pinned_bytes(4096);
  v1::Tenant first, second;
  ASSERT_TRUE(broker_->CreateTenant(req, &first).ok());
  const int commits = store_.commits();
  now_ms_ += 1000;
  ASSERT_TRUE(broker_->CreateTenant(req, &second).ok());
  EXPECT_EQ(store_.commits(), commits);
  EXPECT_EQ(first.SerializeAsString(), second.SerializeAsString());
  // Survives a restart too.
  Restart();
  v1::Tenant third;
  ASSERT_TRUE(broker_->CreateTenant(req, &third).ok());
  EXPECT_EQ(first.SerializeAsString(), third.SerializeAsString());
}

TEST_F(BrokerTest, RequestIdReusedForDifferentRequestIsRefused) {
  v1::CreateTenantRequest req;
  req.set_request_id("req-1");
  req.set_tenant_id("acme");
  req.mutable_quota()->set_pinned_bytes(4096);
  v1::Tenant t;
  ASSERT_TRUE(broker_->CreateTenant(req, &t).ok());
  req.set_tenant_id("other");
  EXPECT_THAT(broker_->CreateTenant(req, &t),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "request_id: \"req-1\" was already used for a different request"));
}

TEST_F(BrokerTest, RetriedCreateContainerCallsAgentOnce) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto a = Create("acme", "n1", {"0000:00:04.0"}, "create-1");
  ASSERT_TRUE(a.ok());
  auto b = Create("acme", "n1", {"0000:00:04.0"}, "create-1");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->id(), b->id());
  EXPECT_EQ(agents_.creates(), 1);
  v1::ListContainersResponse l;
  ASSERT_TRUE(broker_->ListContainers({}, &l).ok());
  EXPECT_EQ(l.containers_size(), 1);
}

TEST_F(BrokerTest, RetriedDeleteAndReleaseSucceedWithoutChangingAnything) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  auto w = Allocate(c->id(), 0x1000);
  ASSERT_TRUE(w.ok());
  v1::ReleaseWindowRequest rr;
  rr.set_request_id("rel-1");
  rr.set_window_id(w->id());
  v1::ReleaseWindowResponse rresp;
  ASSERT_TRUE(broker_->ReleaseWindow(rr, &rresp).ok());
  ASSERT_TRUE(broker_->ReleaseWindow(rr, &rresp).ok());
  rr.set_request_id("rel-2");
  EXPECT_THAT(broker_->ReleaseWindow(rr, &rresp),
              StatusIs(absl::StatusCode::kNotFound, "window_id: no window"));

  v1::DeleteContainerRequest dr;
  dr.set_request_id("del-1");
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  const int destroys = agents_.destroys();
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  EXPECT_EQ(agents_.destroys(), destroys);
}

TEST_F(BrokerTest, EveryRefusedRequestChangesNothing) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6), Dev("0000:00:06.0", 7),
                      Dev("0000:00:07.0", 7), Dev("0000:00:08.0", 8, 0x8086, 0x1, false)});
  RegisterNode("n2", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme", /*max_containers=*/2, /*window_bytes=*/0x400000);
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(Allocate(c->id(), 0x200000).ok());
  v1::CordonNodeRequest cordon;
  cordon.set_node("n2");
  v1::Node node;
  ASSERT_TRUE(broker_->CordonNode(cordon, &node).ok());

  const std::string before = Snapshot();
  const int agent_calls = agents_.creates();
  struct Case {
    std::string name;
    std::function<absl::Status()> call;
    absl::StatusCode code;
    std::string substr;
  };
  v1::Tenant t;
  v1::Container cont;
  v1::Window win;
  std::vector<Case> cases = {
      {"bad tenant id",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("Bad_Id");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "tenant_id: must start with a lowercase letter"},
      {"missing quota",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("x");
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "quota: required"},
      {"zero pinned quota",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("x");
         r.mutable_quota()->set_max_containers(1);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "quota.pinned_bytes: required"},
      {"duplicate tenant",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("acme");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kAlreadyExists, "tenant \"acme\" already exists"},
      {"bad request id",
       [&] {
         v1::CreateTenantRequest r;
         r.set_request_id("has space");
         r.set_tenant_id("x");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "request_id: only"},
      {"quota for unknown tenant",
       [&] {
         v1::SetTenantQuotaRequest r;
         r.set_tenant_id("nobody");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->SetTenantQuota(r, &t);
       },
       absl::StatusCode::kNotFound, "tenant_id: no tenant \"nobody\""},
      {"delete tenant with containers",
       [&] {
         v1::DeleteTenantRequest r;
         r.set_tenant_id("acme");
         v1::DeleteTenantResponse o;
         return broker_->DeleteTenant(r, &o);
       },
       absl::StatusCode::kFailedPrecondition, "still owns 1 container"},
      {"unknown node", [&] { return Create("acme", "n9", {"0000:00:05.0"}).status(); },
       absl::StatusCode::kNotFound, "node: no node \"n9\""},
      {"cordoned node", [&] { return Create("acme", "n2", {"0000:00:04.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "node: node \"n2\" is cordoned"},
      {"bad pci address", [&] { return Create("acme", "n1", {"00:05.0"}).status(); },
       absl::StatusCode::kInvalidArgument, "devices[0]: must be a PCI address"},
      {"unknown device", [&] { return Create("acme", "n1", {"0000:00:1f.0"}).status(); },
       absl::StatusCode::kNotFound, "devices[0]: node \"n1\" has no device 0000:00:1f.0"},
      {"device held", [&] { return Create("acme", "n1", {"0000:00:04.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "is held by container"},
      {"half a group", [&] { return Create("acme", "n1", {"0000:00:06.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "IOMMU group 7 also holds 0000:00:07.0"},
      {"unassignable", [&] { return Create("acme", "n1", {"0000:00:08.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "is not assignable"},
      {"device twice",
       [&] {
         return Create("acme", "n1", {"0000:00:05.0", "0000:00:05.0"}).status();
       },
       absl::StatusCode::kInvalidArgument, "devices[1]: 0000:00:05.0 is listed twice"},
      {"unknown tenant", [&] { return Create("nobody", "n1", {"0000:00:05.0"}).status(); },
       absl::StatusCode::kNotFound, "tenant_id: no tenant"},
      {"no placement", [&] { return Place("acme", 0xdead, 1).status(); },
       absl::StatusCode::kResourceExhausted, "selector: no ready, uncordoned node"},
      {"unknown container", [&] { return Allocate("c-0000000000000000", 0x1000).status(); },
       absl::StatusCode::kNotFound, "container_id: no container"},
      {"malformed container reference", [&] { return Allocate("C_1", 0x1000).status(); },
       absl::StatusCode::kInvalidArgument,
       "container_id: expects a container id (\"c-\" and 16 hex digits), a NAME or TENANT/NAME"},
      {"unknown container name", [&] { return Allocate("c-1", 0x1000).status(); },
       absl::StatusCode::kNotFound, "container_id: no container named \"c-1\""},
      {"zero size", [&] { return Allocate(c->id(), 0).status(); },
       absl::StatusCode::kInvalidArgument, "size: must be greater than 0"},
      {"unaligned size", [&] { return Allocate(c->id(), 0x1800).status(); },
       absl::StatusCode::kInvalidArgument, "size: must be a multiple of the IOMMU page size"},
      {"bad alignment", [&] { return Allocate(c->id(), 0x1000, 0x3000).status(); },
       absl::StatusCode::kInvalidArgument, "alignment: must be a power of two"},
      {"base without fixed", [&] { return Allocate(c->id(), 0x1000, 0, false, 0x1000).status(); },
       absl::StatusCode::kInvalidArgument, "base: only allowed with fixed_base"},
      {"fixed base in msi window",
       [&] { return Allocate(c->id(), 0x1000, 0, true, 0xfee00000).status(); },
       absl::StatusCode::kFailedPrecondition, "outside the container's usable IOVA ranges"},
      {"fixed base overlapping", [&] { return Allocate(c->id(), 0x1000, 0, true, 0).status(); },
       absl::StatusCode::kAlreadyExists, "overlaps window"},
      {"window quota", [&] { return Allocate(c->id(), 0x400000).status(); },
       absl::StatusCode::kResourceExhausted, "would pass quota.window_bytes"},
      {"too big for the space", [&] { return Allocate(c->id(), 1ULL << 62, 0, false, 0).status(); },
       absl::StatusCode::kResourceExhausted, "quota.window_bytes"},
      {"page size too big",
       [&] {
         v1::ListTenantsRequest r;
         r.set_page_size(5000);
         v1::ListTenantsResponse o;
         return broker_->ListTenants(r, &o);
       },
       absl::StatusCode::kInvalidArgument, "page_size: at most 1000"},
      {"unknown window",
       [&] {
         v1::ReleaseWindowRequest r;
         r.set_window_id("w-0000000000000000");
         v1::ReleaseWindowResponse o;
         return broker_->ReleaseWindow(r, &o);
       },
       absl::StatusCode::kNotFound, "window_id: no window"},
      {"bad state filter",
       [&] {
         v1::ListContainersRequest r;
         r.set_state(static_cast<v1::ContainerState>(42));
         v1::ListContainersResponse o;
         return broker_->ListContainers(r, &o);
       },
       absl::StatusCode::kInvalidArgument, "state: unknown state 42"},
  };
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.name);
    EXPECT_THAT(tc.call(), StatusIs(tc.code, tc.substr));
    EXPECT_EQ(Snapshot(), before);
  }
  EXPECT_EQ(agents_.creates(), agent_calls);
}

TEST_F(BrokerTest, AgentFailureOnCreateChangesNothing) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  const std::string before = Snapshot();
  agents_.set_next_error(absl::UnavailableError("connection refused"));
  EXPECT_THAT(
      Create("acme", "n1", {"0000:00:04.0"}).status(),
      StatusIs(absl::StatusCode::kUnavailable, "node: agent of node \"n1\" did not answer"));
  EXPECT_EQ(Snapshot(), before);
  // An agent stopping mid-call: retryable, not the caller's own CANCELLED.
  agents_.set_next_error(absl::CancelledError(""));
  EXPECT_THAT(
      Create("acme", "n1", {"0000:00:04.0"}).status(),
      StatusIs(absl::StatusCode::kUnavailable, "node: agent of node \"n1\" did not answer"));
  EXPECT_EQ(Snapshot(), before);
  agents_.set_next_error(absl::FailedPreconditionError("devices[0]: EBUSY"));
  EXPECT_THAT(Create("acme", "n1", {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "node \"n1\": devices[0]: EBUSY"));
  EXPECT_EQ(Snapshot(), before);
  // The device was not left reserved.
  EXPECT_TRUE(Create("acme", "n1", {"0000:00:04.0"}).ok());
}

TEST_F(BrokerTest, StoreFailureOnCreateUndoesAgentContainer) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  const std::string before = Snapshot();
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  EXPECT_THAT(Create("acme", "n1", {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  EXPECT_EQ(Snapshot(), before);
  EXPECT_TRUE(agents_.held("n1:1").empty());
  // The rollback reloaded the state: the device is offered again.
  EXPECT_OK(broker_->CheckIndexes());
  auto placed = Place("acme", 0, 1);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_THAT(placed->devices(), ElementsAre("0000:00:04.0"));
}

TEST_F(BrokerTest, StoreFailureOnWindowLeavesAllocatorUnchanged) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  EXPECT_THAT(Allocate(c->id(), 0x1000, 0, true, 0x1000).status(),
              StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  // The range is still free.
  EXPECT_TRUE(Allocate(c->id(), 0x1000, 0, true, 0x1000).ok());
}

// A failed commit whose rollback cannot reload the store leaves memory that
// matches nothing durable: the broker refuses every answer and commit from
// then on (the daemon then stops), instead of aborting.
TEST_F(BrokerTest, UnreloadableStoreAfterFailedCommitFailsClosedWithoutAborting) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  EXPECT_TRUE(broker_->Unrecoverable().ok());
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  store_.set_next_load_error(absl::DataLossError("page 7: checksum mismatch"));
  v1::CreateTenantRequest req;
  req.set_tenant_id("globex");
  req.mutable_quota()->set_pinned_bytes(1 << 20);
  v1::Tenant t;
  EXPECT_THAT(broker_->CreateTenant(req, &t),
              StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  EXPECT_THAT(broker_->Unrecoverable(),
              StatusIs(absl::StatusCode::kUnavailable,
                       "could not be reloaded from the store after a failed commit (page 7"));
  // Reads and further mutations are refused with the same reason.
  v1::GetTenantRequest get;
  get.set_tenant_id("acme");
  EXPECT_THAT(broker_->GetTenant(get, &t),
              StatusIs(absl::StatusCode::kUnavailable, "it is restarting"));
  req.set_tenant_id("initech");
  EXPECT_THAT(broker_->CreateTenant(req, &t),
              StatusIs(absl::StatusCode::kUnavailable, "it is restarting"));
}

// Each mutation with a request_id leaves an answer in the store for a day:
// one caller may have only so many, so no tenant grows the store for all.
TEST_F(BrokerTest, RememberedAnswersAreBoundedPerCaller) {
  Restart(/*liveness_check_interval_ms=*/0, /*max_remembered=*/3);
  const Identity hostile{Role::kTenant, "hostile"};
  const Identity acme{Role::kTenant, "acme"};
  auto create = [&](const Identity& caller, const std::string& id, const std::string& request) {
    v1::CreateTenantRequest req;
    req.set_request_id(request);
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(1 << 20);
    v1::Tenant t;
    return broker_->CreateTenant(req, &t, caller);
  };
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(create(hostile, absl::StrCat("h", i), absl::StrCat("r", i)).ok()) << i;
  }
  EXPECT_THAT(
      create(hostile, "h3", "r3"),
      StatusIs(
          absl::StatusCode::kResourceExhausted,
          "request_id: tenant/hostile has 3 answers remembered for retries (limit 3 per caller"));
  // Its retries still replay, mutations without an id still work, and
  // another caller is not affected.
  EXPECT_TRUE(create(hostile, "h0", "r0").ok());
  EXPECT_TRUE(create(hostile, "h4", "").ok());
  EXPECT_TRUE(create(acme, "a0", "r0").ok());
  // The count survives a restart, and expiry gives room again.
  Restart(/*liveness_check_interval_ms=*/0, /*max_remembered=*/3);
  EXPECT_THAT(create(hostile, "h3", "r3"),
              StatusIs(absl::StatusCode::kResourceExhausted, "limit 3"));
  now_ms_ += 25LL * 3600 * 1000;
  ASSERT_TRUE(broker_->ExpireRequests().ok());
  EXPECT_TRUE(create(hostile, "h3", "r3").ok());
}

}  // namespace
}  // namespace iommu
