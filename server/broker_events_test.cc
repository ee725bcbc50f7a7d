// The broker's events (ListEvents): what it records at each change, which
// objects they are filed under, refusals worth telling people about, the
// tenant filter, paging and validation. Against a FakeStore and fake agents.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

v1::ObjectRef Ref(v1::ObjectKind kind, const std::string& id) {
  v1::ObjectRef r;
  r.set_kind(kind);
  r.set_id(id);
  return r;
}

class BrokerEventsTest : public ::testing::Test {
 protected:
  // Ends every test with the broker's state checked whole (CheckIndexes:
  // indexes, and memory against the store).
  void TearDown() override {
    if (broker_ == nullptr || !broker_->Unrecoverable().ok()) return;
    absl::Status s = broker_->CheckIndexes();
    EXPECT_TRUE(s.ok()) << "at the end of the test: " << s;
  }
  void SetUp() override { Restart(); }

  void Restart() {
    broker_.reset();
    BrokerOptions o;
    o.node_timeout_ms = 5000;
    o.now_ms = [this] { return now_ms_; };
    auto b = Broker::Create(&store_, &agents_, o);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }

  // Registers `name` with two single-device groups and reconciles it,
  // reporting `failed` as containers the agent could not re-create.
  v1::RegisterResponse RegisterNode(const std::string& name,
                                    const std::vector<std::string>& failed = {}) {
    v1::RegisterRequest req;
    req.set_node(name);
    req.set_agent_address(name + ":1");
    req.set_backend("sim");
    req.set_simulated(true);
    for (int i = 0; i < 2; ++i) {
      v1::Device* d = req.add_devices();
      d->set_address(absl::StrCat("0000:00:0", 4 + i, ".0"));
      d->set_iommu_group(4 + i);
      d->set_vendor_id(0x1234);
      d->set_device_id(0x11e8);
      d->set_assignable(true);
    }
    v1::RegisterResponse resp;
    EXPECT_TRUE(broker_->Register(req, &resp).ok());
    v1::ReconciledRequest rec;
    rec.set_node(name);
    rec.set_session_id(resp.session_id());
    for (const std::string& id : failed) {
      rec.add_failed_container_ids(id);
      rec.add_failure_reasons("device busy");
    }
    v1::ReconciledResponse unused;
    EXPECT_TRUE(broker_->Reconciled(rec, &unused).ok());
    return resp;
  }

  void CreateTenant(const std::string& id, uint32_t max_containers = 0) {
    v1::CreateTenantRequest req;
    req.set_request_id(absl::StrCat("create-", id));
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(1ULL << 30);
    req.mutable_quota()->set_max_containers(max_containers);
    v1::Tenant t;
    ASSERT_TRUE(broker_->CreateTenant(req, &t).ok());
  }

  absl::StatusOr<v1::Container> Create(const std::string& tenant, const std::string& device) {
    v1::CreateContainerRequest req;
    req.set_request_id(absl::StrCat("cc-", device));
    req.set_tenant_id(tenant);
    req.set_node("n1");
    req.add_devices(device);
    req.set_pin_budget_bytes(1 << 20);
    v1::Container c;
    absl::Status s = broker_->CreateContainer(req, &c);
    if (!s.ok()) return s;
    return c;
  }

  absl::StatusOr<v1::ListEventsResponse> Events(v1::ObjectKind kind, const std::string& id,
                                                const std::string& tenant = "") {
    v1::ListEventsRequest req;
    *req.mutable_object() = Ref(kind, id);
    req.set_tenant_id(tenant);
    v1::ListEventsResponse out;
    absl::Status s = broker_->ListEvents(req, &out);
    if (!s.ok()) return s;
    return out;
  }

  std::vector<std::string> Reasons(v1::ObjectKind kind, const std::string& id,
                                   const std::string& tenant = "") {
    std::vector<std::string> out;
    auto events = Events(kind, id, tenant);
    EXPECT_TRUE(events.ok()) << events.status();
    if (!events.ok()) return out;
    for (const auto& e : events->events()) out.push_back(e.reason());
    return out;
  }

  int64_t now_ms_ = 1'000'000;
  FakeStore store_;
  OkAgents agents_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(BrokerEventsTest, AContainersEventsTellItsCreationAndItsWindows) {
  RegisterNode("n1");
  CreateTenant("acme");
  auto c = Create("acme", "0000:00:04.0");
  ASSERT_TRUE(c.ok()) << c.status();
  now_ms_ += 1000;
  v1::AllocateWindowRequest alloc;
  alloc.set_request_id("alloc-1");
  alloc.set_container_id(c->id());
  alloc.set_size(2 << 20);
  v1::Window w;
  ASSERT_TRUE(broker_->AllocateWindow(alloc, &w).ok());
  v1::ReleaseWindowRequest release;
  release.set_window_id(w.id());
  v1::ReleaseWindowResponse released;
  ASSERT_TRUE(broker_->ReleaseWindow(release, &released).ok());

  auto events = Events(v1::OBJECT_KIND_CONTAINER, c->id());
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->events_size(), 3);
  const v1::Event& created = events->events(0);
  EXPECT_EQ(created.reason(), "ContainerCreated");
  EXPECT_EQ(created.type(), v1::EVENT_TYPE_NORMAL);
  EXPECT_EQ(created.tenant_id(), "acme");
  EXPECT_EQ(created.request_id(), "cc-0000:00:04.0");
  EXPECT_EQ(created.last_time_ms(), 1'000'000);
  EXPECT_EQ(created.count(), 1u);
  EXPECT_THAT(created.message(), HasSubstr("on node n1 with devices 0000:00:04.0"));
  EXPECT_THAT(created.message(), HasSubstr("pin budget 1MiB"));
  EXPECT_EQ(events->events(1).reason(), "WindowAllocated");
  EXPECT_THAT(events->events(1).message(), HasSubstr(w.id()));
  EXPECT_THAT(events->events(1).message(), HasSubstr("(2MiB)"));
  EXPECT_EQ(events->events(1).object().kind(), v1::OBJECT_KIND_WINDOW);
  EXPECT_EQ(events->events(2).reason(), "WindowReleased");
  EXPECT_LT(events->events(0).sequence(), events->events(1).sequence());

  // The window has its own; the tenant and the node see the creation.
  EXPECT_THAT(Reasons(v1::OBJECT_KIND_WINDOW, w.id()),
              ElementsAre("WindowAllocated", "WindowReleased"));
  EXPECT_THAT(Reasons(v1::OBJECT_KIND_TENANT, "acme"),
              ElementsAre("TenantCreated", "ContainerCreated"));
  EXPECT_THAT(Reasons(v1::OBJECT_KIND_NODE, "n1"),
              ElementsAre("NodeRegistered", "NodeReconciled", "ContainerCreated"));
}

TEST_F(BrokerEventsTest, QuotaRefusalsAreWarningsOnTheTenant) {
  RegisterNode("n1");
  CreateTenant("acme", /*max_containers=*/1);
  ASSERT_TRUE(Create("acme", "0000:00:04.0").ok());
  auto refused = Create("acme", "0000:00:05.0");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  auto events = Events(v1::OBJECT_KIND_TENANT, "acme");
  ASSERT_TRUE(events.ok());
  const v1::Event& last = events->events(events->events_size() - 1);
  EXPECT_EQ(last.reason(), "QuotaExceeded");
  EXPECT_EQ(last.type(), v1::EVENT_TYPE_WARNING);
  EXPECT_EQ(last.message(), refused.status().message());
  EXPECT_EQ(last.request_id(), "cc-0000:00:05.0");
}

TEST_F(BrokerEventsTest, QuotaAndBudgetChangesSayWhatTheyWere) {
  RegisterNode("n1");
  CreateTenant("acme");
  auto c = Create("acme", "0000:00:04.0");
  ASSERT_TRUE(c.ok());
  v1::SetContainerBudgetRequest budget;
  budget.set_container_id(c->id());
  budget.set_pin_budget_bytes(4 << 20);
  v1::Container changed;
  ASSERT_TRUE(broker_->SetContainerBudget(budget, &changed).ok());
  v1::SetTenantQuotaRequest quota;
  quota.set_tenant_id("acme");
  quota.mutable_quota()->set_pinned_bytes(2 << 20);
  v1::Tenant t;
  ASSERT_TRUE(broker_->SetTenantQuota(quota, &t).ok());

  auto events = Events(v1::OBJECT_KIND_CONTAINER, c->id());
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->events_size(), 2);
  EXPECT_EQ(events->events(1).reason(), "BudgetChanged");
  EXPECT_EQ(events->events(1).message(), "pin budget 4MiB (was 1MiB)");
  auto tenant = Events(v1::OBJECT_KIND_TENANT, "acme");
  ASSERT_TRUE(tenant.ok());
  const v1::Event& q = tenant->events(tenant->events_size() - 1);
  EXPECT_EQ(q.reason(), "QuotaChanged");
  EXPECT_THAT(q.message(), HasSubstr("quota: pinned 2MiB, max containers no limit, window bytes "
                                     "no limit (was: pinned 1GiB, max containers no limit,"));
  EXPECT_THAT(q.message(), HasSubstr(absl::StrCat("budgets shrunk to fit, newest first: ", c->id(),
                                                  " to 2MiB")));
}

TEST_F(BrokerEventsTest, NodeTroubleIsWarningsAndRepeatsAreCounted) {
  RegisterNode("n1");
  CreateTenant("acme");
  auto c = Create("acme", "0000:00:04.0");
  ASSERT_TRUE(c.ok());
  now_ms_ += 6000;
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("n1"));
  EXPECT_EQ(broker_->Stats().containers_node_unavailable, 1);
  // The agent comes back but cannot re-create the container, three times.
  for (int i = 0; i < 3; ++i) {
    now_ms_ += 1000;
    RegisterNode("n1", {c->id()});
  }
  // The metrics count it as its view shows it.
  EXPECT_EQ(broker_->Stats().containers_failed, 1);
  EXPECT_EQ(broker_->Stats().containers_ready, 0);
  auto events = Events(v1::OBJECT_KIND_CONTAINER, c->id());
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->events_size(), 2);
  const v1::Event& failed = events->events(1);
  EXPECT_EQ(failed.reason(), "ContainerFailed");
  EXPECT_EQ(failed.type(), v1::EVENT_TYPE_WARNING);
  EXPECT_EQ(failed.tenant_id(), "acme");
  EXPECT_THAT(failed.message(), HasSubstr("could not re-create it (it retries): device busy"));
  EXPECT_EQ(failed.count(), 3u);
  EXPECT_EQ(failed.first_time_ms(), 1'000'000 + 7000);
  EXPECT_EQ(failed.last_time_ms(), 1'000'000 + 9000);

  auto node = Events(v1::OBJECT_KIND_NODE, "n1");
  ASSERT_TRUE(node.ok());
  std::vector<std::string> reasons;
  for (const auto& e : node->events()) reasons.push_back(e.reason());
  // The first registration (nothing to re-create) differs from the three
  // retries, which are one event each with a count.
  EXPECT_THAT(reasons,
              ElementsAre("NodeRegistered", "NodeReconciled", "ContainerCreated", "NodeUnavailable",
                          "NodeRegistered", "ContainerFailed", "NodeReconciled"));
  EXPECT_EQ(node->events(3).type(), v1::EVENT_TYPE_WARNING);
  EXPECT_EQ(node->events(0).count(), 1u);
  EXPECT_EQ(node->events(4).count(), 3u);
  EXPECT_THAT(node->events(4).message(), HasSubstr("1 to re-create"));
  EXPECT_EQ(node->events(6).count(), 3u);
}

TEST_F(BrokerEventsTest, ADeletedObjectsEventsStayUntilTheyAgeOut) {
  RegisterNode("n1");
  CreateTenant("acme");
  auto c = Create("acme", "0000:00:04.0");
  ASSERT_TRUE(c.ok());
  v1::DeleteContainerRequest del;
  del.set_request_id("del-1");
  del.set_container_id(c->id());
  v1::DeleteContainerResponse deleted;
  ASSERT_TRUE(broker_->DeleteContainer(del, &deleted).ok());
  EXPECT_THAT(Reasons(v1::OBJECT_KIND_CONTAINER, c->id()),
              ElementsAre("ContainerCreated", "ContainerDeleted"));
  // An id that never existed, and a deleted one seen with another tenant's
  // filter, are both NOT_FOUND in the same words.
  auto none = Events(v1::OBJECT_KIND_CONTAINER, "c-00000000000000ff");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(none.status().message(), "object.id: no container \"c-00000000000000ff\"");
  auto theirs = Events(v1::OBJECT_KIND_CONTAINER, c->id(), "other");
  EXPECT_EQ(theirs.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(theirs.status().message(), absl::StrCat("object.id: no container \"", c->id(), "\""));
}

TEST_F(BrokerEventsTest, TheTenantFilterLeavesOutOtherTenantsAndTheFleet) {
  RegisterNode("n1");
  CreateTenant("acme");
  CreateTenant("other");
  ASSERT_TRUE(Create("acme", "0000:00:04.0").ok());
  ASSERT_TRUE(Create("other", "0000:00:05.0").ok());
  auto mine = Events(v1::OBJECT_KIND_UNSPECIFIED, "", "acme");
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ(mine->events_size(), 2);
  for (const auto& e : mine->events()) EXPECT_EQ(e.tenant_id(), "acme");
  // A live object of another tenant is NOT_FOUND under the filter; an
  // existing own object with no events is an empty list.
  EXPECT_EQ(Events(v1::OBJECT_KIND_TENANT, "other", "acme").status().code(),
            absl::StatusCode::kNotFound);
  auto all = Events(v1::OBJECT_KIND_UNSPECIFIED, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->events_size(), 6);  // Two tenants, two containers, the node's two.
}

TEST_F(BrokerEventsTest, PagesFollowTheSequence) {
  RegisterNode("n1");
  CreateTenant("acme");
  CreateTenant("other");
  v1::ListEventsRequest req;
  req.set_page_size(2);
  std::vector<std::string> reasons;
  for (int pages = 0; pages < 10; ++pages) {
    v1::ListEventsResponse out;
    ASSERT_TRUE(broker_->ListEvents(req, &out).ok());
    for (const auto& e : out.events()) reasons.push_back(e.reason());
    if (out.next_page_token().empty()) break;
    req.set_page_token(out.next_page_token());
  }
  EXPECT_THAT(reasons,
              ElementsAre("NodeRegistered", "NodeReconciled", "TenantCreated", "TenantCreated"));
}

TEST_F(BrokerEventsTest, BadRequestsNameTheField) {
  v1::ListEventsRequest req;
  v1::ListEventsResponse out;
  req.set_page_token("seven");
  absl::Status s = broker_->ListEvents(req, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("page_token: not a page token of ListEvents"));
  req.clear_page_token();
  req.mutable_object()->set_id("c-0000000000000001");
  s = broker_->ListEvents(req, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "object.kind: required with object.id");
  *req.mutable_object() = Ref(v1::OBJECT_KIND_WINDOW, "c-0000000000000001");
  s = broker_->ListEvents(req, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("object.id:"));
  req.mutable_object()->set_kind(static_cast<v1::ObjectKind>(42));
  s = broker_->ListEvents(req, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("object.kind: unknown kind 42"));
  req.clear_object();
  req.set_page_size(5000);
  EXPECT_EQ(broker_->ListEvents(req, &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.events(), IsEmpty());
}

TEST_F(BrokerEventsTest, EventsDoNotSurviveARestart) {
  CreateTenant("acme");
  ASSERT_THAT(Reasons(v1::OBJECT_KIND_TENANT, "acme"), ElementsAre("TenantCreated"));
  Restart();
  // The tenant is durable; its events were in memory only.
  auto events = Events(v1::OBJECT_KIND_TENANT, "acme");
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_THAT(events->events(), IsEmpty());
}

// A change the store refused did not happen: it leaves no event and no log
// line saying it did, only the failed commit's own line.
TEST_F(BrokerEventsTest, AChangeTheStoreRefusedLeavesNoEventOrLogLine) {
  RegisterNode("n1");
  CreateTenant("acme");
  auto c = Create("acme", "0000:00:04.0");
  ASSERT_TRUE(c.ok());
  auto all_reasons = [&] {
    std::vector<std::string> out;
    v1::ListEventsResponse events;
    EXPECT_TRUE(broker_->ListEvents({}, &events).ok());
    for (const auto& e : events.events()) out.push_back(e.reason());
    return out;
  };
  const std::vector<std::string> before = all_reasons();
  const absl::Status disk_full = absl::UnavailableError("disk full");

  ::testing::internal::CaptureStderr();
  store_.set_next_commit_error(disk_full);
  v1::AllocateWindowRequest alloc;
  alloc.set_container_id(c->id());
  alloc.set_size(1 << 20);
  v1::Window w;
  EXPECT_EQ(broker_->AllocateWindow(alloc, &w).code(), absl::StatusCode::kUnavailable);
  store_.set_next_commit_error(disk_full);
  v1::SetContainerBudgetRequest budget;
  budget.set_container_id(c->id());
  budget.set_pin_budget_bytes(4 << 20);
  v1::Container changed;
  EXPECT_EQ(broker_->SetContainerBudget(budget, &changed).code(), absl::StatusCode::kUnavailable);
  store_.set_next_commit_error(disk_full);
  v1::SetTenantQuotaRequest quota;
  quota.set_tenant_id("acme");
  quota.mutable_quota()->set_pinned_bytes(2 << 20);
  v1::Tenant t;
  EXPECT_EQ(broker_->SetTenantQuota(quota, &t).code(), absl::StatusCode::kUnavailable);
  store_.set_next_commit_error(disk_full);
  v1::CordonNodeRequest cordon;
  cordon.set_node("n1");
  v1::Node n;
  EXPECT_EQ(broker_->CordonNode(cordon, &n).code(), absl::StatusCode::kUnavailable);
  const std::string log = ::testing::internal::GetCapturedStderr();

  EXPECT_EQ(all_reasons(), before);
  for (const char* line : {"event=window_allocated", "event=container_budget_set",
                           "event=tenant_quota_set", "event=node_cordoned"}) {
    EXPECT_THAT(log, Not(HasSubstr(line))) << log;
  }
  EXPECT_THAT(log, HasSubstr("event=commit_failed"));

  // The same changes, committed, are told.
  ASSERT_TRUE(broker_->AllocateWindow(alloc, &w).ok());
  ASSERT_TRUE(broker_->CordonNode(cordon, &n).ok());
  EXPECT_THAT(Reasons(v1::OBJECT_KIND_NODE, "n1"), ::testing::Contains("NodeCordoned"));
  EXPECT_THAT(Reasons(v1::OBJECT_KIND_CONTAINER, c->id()), ::testing::Contains("WindowAllocated"));
}

}  // namespace
}  // namespace iommu
