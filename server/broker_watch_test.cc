// The broker's change feed for Watch: what a list+watch client sees. Changes
// appear once durable and in order, a failed commit shows nothing, node
// liveness reaches nodes and their containers, deletes carry the last state,
// filters narrow by kind, tenant and labels, and a list's resource_version
// continues exactly where the list was taken.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"
#include "server/test_nodes.h"
#include "server/watch_stream.h"

namespace iommu {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

// "PUT container c-..." lines, for readable expectations.
std::string Describe(const v1::WatchEvent& e) {
  std::string type = v1::WatchEvent::Type_Name(e.type());
  switch (e.object_case()) {
    case v1::WatchEvent::kTenant: return type + " tenant " + e.tenant().id();
    case v1::WatchEvent::kNode:
      return type + " node " + e.node().name() + " " + v1::NodeState_Name(e.node().state());
    case v1::WatchEvent::kContainer:
      return type + " container " + e.container().name() + " " +
             v1::ContainerState_Name(e.container().state()) + (e.left_selection() ? " (left)" : "");
    case v1::WatchEvent::kWindow: return type + " window of " + e.window().container_id();
    default: return type;
  }
}

class BrokerWatchTest : public ::testing::Test {
 protected:
  // Ends every test with the broker's state checked whole (CheckIndexes:
  // indexes, and memory against the store).
  void TearDown() override {
    if (broker_ == nullptr || !broker_->Unrecoverable().ok()) return;
    absl::Status s = broker_->CheckIndexes();
    EXPECT_TRUE(s.ok()) << "at the end of the test: " << s;
  }
  void SetUp() override {
    BrokerOptions o;
    o.node_timeout_ms = 5000;
    o.now_ms = [this] { return now_ms_; };
    auto b = Broker::Create(&store_, &agents_, o);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }

  void Tenant(const std::string& id) {
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(1 << 30);
    v1::Tenant t;
    ASSERT_TRUE(broker_->CreateTenant(req, &t).ok());
  }

  void Node(const std::string& name) {
    std::vector<v1::Device> devices(4);
    for (int i = 0; i < 4; ++i) {
      devices[i].set_address("0000:00:0" + std::to_string(i) + ".0");
      devices[i].set_iommu_group(i);
      devices[i].set_assignable(true);
    }
    ASSERT_OK(RegisterReadyNode(broker_.get(), name, devices));
  }

  std::string Container(const std::string& tenant, const std::string& name,
                        std::map<std::string, std::string> labels = {}) {
    v1::CreateContainerRequest req;
    req.set_tenant_id(tenant);
    req.set_name(name);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    req.mutable_selector()->set_count(1);
    req.set_pin_budget_bytes(4096);
    v1::Container c;
    absl::Status s = broker_->CreateContainer(req, &c);
    EXPECT_TRUE(s.ok()) << s;
    return c.id();
  }

  void Relabel(const std::string& container, std::map<std::string, std::string> labels) {
    v1::SetContainerLabelsRequest req;
    req.set_container_id(container);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    v1::Container c;
    ASSERT_OK(broker_->SetContainerLabels(req, &c));
  }

  void Delete(const std::string& container) {
    v1::DeleteContainerRequest req;
    req.set_container_id(container);
    v1::DeleteContainerResponse gone;
    ASSERT_OK(broker_->DeleteContainer(req, &gone));
  }

  // What a watcher of `req` sees from its version until now.
  std::vector<std::string> Seen(v1::WatchRequest req, std::string* next = nullptr) {
    absl::StatusOr<Broker::WatchPlan> plan = broker_->PrepareWatch(req);
    EXPECT_TRUE(plan.ok()) << plan.status();
    if (!plan.ok()) return {};
    absl::StatusOr<WatchLog::Batch> batch =
        broker_->watch_log().Since(plan->version, plan->scope, plan->filter, 1000);
    EXPECT_TRUE(batch.ok()) << batch.status();
    if (next != nullptr) *next = batch->resource_version;
    std::vector<std::string> out;
    for (const v1::WatchEvent& e : batch->events) out.push_back(Describe(e));
    return out;
  }

  v1::WatchRequest From(const std::string& version) {
    v1::WatchRequest req;
    req.set_resource_version(version);
    return req;
  }

  int64_t now_ms_ = 1000000;
  FakeStore store_;
  OkAgents agents_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(BrokerWatchTest, AListsVersionContinuesWithTheChangesAfterIt) {
  Tenant("acme");
  Node("n1");
  v1::ListContainersResponse list;
  ASSERT_TRUE(broker_->ListContainers({}, &list).ok());
  ASSERT_FALSE(list.resource_version().empty());
  const std::string id = Container("acme", "vm-1");
  v1::AllocateWindowRequest alloc;
  alloc.set_container_id(id);
  alloc.set_size(1 << 21);
  v1::Window w;
  ASSERT_TRUE(broker_->AllocateWindow(alloc, &w).ok());
  v1::WatchRequest containers = From(list.resource_version());
  containers.add_kinds(v1::OBJECT_KIND_CONTAINER);
  containers.add_kinds(v1::OBJECT_KIND_WINDOW);
  EXPECT_THAT(Seen(containers), ElementsAre("PUT container vm-1 CONTAINER_STATE_READY",
                                            "PUT container vm-1 CONTAINER_STATE_READY",
                                            "PUT window of " + id));
  // The node's free device count changed too.
  v1::WatchRequest nodes = From(list.resource_version());
  nodes.add_kinds(v1::OBJECT_KIND_NODE);
  EXPECT_THAT(Seen(nodes), ElementsAre("PUT node n1 NODE_STATE_READY"));
}

TEST_F(BrokerWatchTest, AFailedCommitShowsNothing) {
  const std::string from = broker_->watch_log().CurrentVersion();
  store_.set_next_commit_error(absl::UnavailableError("disk gone"));
  v1::CreateTenantRequest req;
  req.set_tenant_id("ghost");
  req.mutable_quota()->set_pinned_bytes(4096);
  v1::Tenant t;
  EXPECT_FALSE(broker_->CreateTenant(req, &t).ok());
  EXPECT_TRUE(Seen(From(from)).empty());
  Tenant("acme");
  EXPECT_THAT(Seen(From(from)), ElementsAre("PUT tenant acme"));
}

TEST_F(BrokerWatchTest, ANodeGoingSilentReachesItsContainers) {
  Tenant("acme");
  Node("n1");
  Container("acme", "vm-1");
  const std::string from = broker_->watch_log().CurrentVersion();
  now_ms_ += 6000;
  broker_->CheckLiveness();
  EXPECT_THAT(Seen(From(from)),
              ElementsAre("PUT node n1 NODE_STATE_UNAVAILABLE",
                          "PUT container vm-1 CONTAINER_STATE_NODE_UNAVAILABLE"));
}

// A node coming back shows each of its containers live once, at its
// registration; its reconcile adds only the containers whose failure
// changed, not another event for every container that stayed as it was.
TEST_F(BrokerWatchTest, AReturningNodeShowsItsContainersOnceAndAReconcileOnlyItsFailures) {
  Tenant("acme");
  Node("n1");
  Container("acme", "vm-1");
  const std::string vm2 = Container("acme", "vm-2");
  now_ms_ += 6000;
  broker_->CheckLiveness();

  std::string from = broker_->watch_log().CurrentVersion();
  v1::RegisterRequest reg;
  reg.set_node("n1");
  reg.set_agent_address("n1:1");
  reg.set_backend("sim");
  reg.set_simulated(true);
  for (int i = 0; i < 4; ++i) {
    v1::Device* d = reg.add_devices();
    d->set_address("0000:00:0" + std::to_string(i) + ".0");
    d->set_iommu_group(i);
    d->set_assignable(true);
  }
  v1::RegisterResponse session;
  ASSERT_OK(broker_->Register(reg, &session));
  EXPECT_THAT(Seen(From(from), &from),
              UnorderedElementsAre("PUT node n1 NODE_STATE_RECONCILING",
                                   "PUT container vm-1 CONTAINER_STATE_READY",
                                   "PUT container vm-2 CONTAINER_STATE_READY"));

  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(session.session_id());
  rec.add_failed_container_ids(vm2);
  rec.add_failure_reasons("no memory");
  v1::ReconciledResponse unused;
  ASSERT_OK(broker_->Reconciled(rec, &unused));
  EXPECT_THAT(Seen(From(from), &from),
              UnorderedElementsAre("PUT node n1 NODE_STATE_READY",
                                   "PUT container vm-2 CONTAINER_STATE_FAILED"));

  // The agent's retry re-created it: only vm-2 changes again.
  rec.clear_failed_container_ids();
  rec.clear_failure_reasons();
  ASSERT_OK(broker_->Reconciled(rec, &unused));
  EXPECT_THAT(Seen(From(from)), UnorderedElementsAre("PUT node n1 NODE_STATE_READY",
                                                     "PUT container vm-2 CONTAINER_STATE_READY"));
}

TEST_F(BrokerWatchTest, DeletesCarryTheLastStateOfTheContainerAndItsWindows) {
  Tenant("acme");
  Node("n1");
  const std::string id = Container("acme", "vm-1");
  v1::AllocateWindowRequest alloc;
  alloc.set_container_id(id);
  alloc.set_size(1 << 21);
  v1::Window w;
  ASSERT_TRUE(broker_->AllocateWindow(alloc, &w).ok());
  const std::string from = broker_->watch_log().CurrentVersion();
  v1::DeleteContainerRequest del;
  del.set_container_id("vm-1");
  v1::DeleteContainerResponse gone;
  ASSERT_TRUE(broker_->DeleteContainer(del, &gone).ok());
  v1::WatchRequest req = From(from);
  req.add_kinds(v1::OBJECT_KIND_CONTAINER);
  req.add_kinds(v1::OBJECT_KIND_WINDOW);
  std::vector<std::string> seen = Seen(req);
  EXPECT_THAT(seen, ::testing::Contains(::testing::StartsWith("DELETE container vm-1 ")));
  EXPECT_THAT(seen, ::testing::Contains("DELETE window of " + id));
}

TEST_F(BrokerWatchTest, FiltersByTenantAndLabelsAndRefusesBadRequests) {
  Tenant("acme");
  Tenant("beta");
  Node("n1");
  const std::string from = broker_->watch_log().CurrentVersion();
  Container("acme", "ml-1", {{"team", "ml"}});
  Container("acme", "web-1", {{"team", "web"}});
  Container("beta", "ml-2", {{"team", "ml"}});
  v1::WatchRequest acme_ml = From(from);
  acme_ml.set_tenant_id("acme");
  acme_ml.set_label_selector("team=ml");
  acme_ml.add_kinds(v1::OBJECT_KIND_CONTAINER);
  EXPECT_THAT(Seen(acme_ml), ElementsAre("PUT container ml-1 CONTAINER_STATE_READY"));

  v1::WatchRequest bad;
  bad.add_kinds(static_cast<v1::ObjectKind>(9));
  EXPECT_EQ(broker_->PrepareWatch(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = From("not-a-version");
  EXPECT_EQ(broker_->PrepareWatch(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = From("0123456789abcdef.1");  // Another run's.
  EXPECT_EQ(broker_->PrepareWatch(bad).status().code(), absl::StatusCode::kOutOfRange);
  bad = v1::WatchRequest();
  bad.set_label_selector("team in ml");
  EXPECT_EQ(broker_->PrepareWatch(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// Kubernetes' rule: by the labels before and after each change, a container
// entering the selection is a PUT, leaving it a DELETE (left_selection), and
// one outside both before and after is not sent, even when deleted.
TEST_F(BrokerWatchTest, ALabelSelectorWatchSeesContainersEnterAndLeave) {
  Tenant("acme");
  Node("n1");
  const std::string from = broker_->watch_log().CurrentVersion();
  Container("acme", "ml-1", {{"team", "ml"}});
  Container("acme", "web-1", {{"team", "web"}});
  v1::WatchRequest ml = From(from);
  ml.add_kinds(v1::OBJECT_KIND_CONTAINER);
  ml.set_label_selector("team=ml");
  std::string after_creates;
  EXPECT_THAT(Seen(ml, &after_creates), ElementsAre("PUT container ml-1 CONTAINER_STATE_READY"));

  Relabel("ml-1", {{"team", "web"}});   // Leaves.
  Relabel("web-1", {{"team", "ml"}});   // Enters.
  Relabel("web-1", {{"env", "prod"}});  // Changes within.
  Relabel("ml-1", {{"env", "prod"}});   // Outside before and after.
  std::string after_relabels;
  // A watcher resuming where it stopped, as after a reconnect.
  ml.set_resource_version(after_creates);
  EXPECT_THAT(Seen(ml, &after_relabels),
              ElementsAre("DELETE container ml-1 CONTAINER_STATE_READY (left)",
                          "PUT container web-1 CONTAINER_STATE_READY",
                          "PUT container web-1 CONTAINER_STATE_READY"));
  // A watcher without a selector sees the same changes as PUTs.
  v1::WatchRequest all = From(after_creates);
  all.add_kinds(v1::OBJECT_KIND_CONTAINER);
  EXPECT_THAT(Seen(all), ElementsAre("PUT container ml-1 CONTAINER_STATE_READY",
                                     "PUT container web-1 CONTAINER_STATE_READY",
                                     "PUT container web-1 CONTAINER_STATE_READY",
                                     "PUT container ml-1 CONTAINER_STATE_READY"));

  // The delete of a container outside the selection is not sent; of one
  // inside it, it is, as a real delete.
  Delete("ml-1");
  Delete("web-1");
  ml.set_resource_version(after_relabels);
  std::vector<std::string> seen = Seen(ml);
  EXPECT_THAT(seen, Not(Contains(HasSubstr("ml-1"))));
  ASSERT_FALSE(seen.empty());
  EXPECT_THAT(seen.back(), StartsWith("DELETE container web-1 "));
  EXPECT_THAT(seen.back(), Not(HasSubstr("(left)")));
}

TEST_F(BrokerWatchTest, TheStreamSendsABookmarkFirstThenChangesUntilDone) {
  Tenant("acme");
  absl::StatusOr<Broker::WatchPlan> plan = broker_->PrepareWatch({});
  ASSERT_TRUE(plan.ok());
  std::vector<v1::WatchResponse> sent;
  int polls = 0;
  WatchStreamOptions o;
  o.poll = absl::Milliseconds(1);
  absl::Status s = StreamWatch(
      broker_->watch_log(), *plan,
      [&](const v1::WatchResponse& r) {
        sent.push_back(r);
        return true;
      },
      [&] {
        if (++polls == 2) Tenant("beta");
        return polls > 3;
      },
      o);
  EXPECT_TRUE(s.ok()) << s;
  ASSERT_GE(sent.size(), 2u);
  EXPECT_EQ(sent[0].events(0).type(), v1::WatchEvent::BOOKMARK);
  EXPECT_EQ(Describe(sent[1].events(0)), "PUT tenant beta");
}

}  // namespace
}  // namespace iommu
