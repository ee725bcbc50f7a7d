// Nodes through the broker: nothing is placed before a node has reconciled,
// placement and the index it reads, liveness and re-registration, drain, and
// the budgets and windows each heartbeat answer carries.
#include <map>
#include <set>
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
using ::testing::HasSubstr;

// Between Register and Reconciled the agent is cleaning up to match the
// store: nothing is placed on the node, so a new container cannot be caught
// by that clean-up.
TEST_F(BrokerTest, NothingIsPlacedOnANodeUntilItHasReconciled) {
  CreateTenant("acme");
  v1::RegisterRequest req;
  req.set_node("n1");
  req.set_agent_address("n1:1");
  req.set_backend("sim");
  req.set_simulated(true);
  *req.add_devices() = Dev("0000:00:04.0", 5);
  v1::RegisterResponse reg;
  EXPECT_TRUE(broker_->Register(req, &reg).ok());
  v1::GetNodeRequest gn;
  gn.set_node("n1");
  v1::Node node;
  ASSERT_TRUE(broker_->GetNode(gn, &node).ok());
  EXPECT_EQ(node.state(), v1::NODE_STATE_RECONCILING);
  EXPECT_THAT(Create("acme", "n1", {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kUnavailable, "is reconciling"));
  v1::CreateContainerRequest placed;
  placed.set_tenant_id("acme");
  v1::Container c;
  EXPECT_THAT(broker_->CreateContainer(placed, &c),
              StatusIs(absl::StatusCode::kResourceExhausted, ""));

  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  v1::ReconciledResponse rr;
  ASSERT_TRUE(broker_->Reconciled(rec, &rr).ok());
  ASSERT_TRUE(broker_->GetNode(gn, &node).ok());
  EXPECT_EQ(node.state(), v1::NODE_STATE_READY);
  EXPECT_TRUE(Create("acme", "n1", {"0000:00:04.0"}).ok());
}

// A node's free device count: its assignable devices no container holds.
// Another node's holder of the same address does not count.
TEST_F(BrokerTest, ANodesFreeDeviceCountIsItsAssignableDevicesNoContainerHolds) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6),
                      Dev("0000:00:06.0", 7, 0x1234, 0x11e8, /*assignable=*/false)});
  RegisterNode("n2", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_OK(c);
  auto free_counts = [&] {
    v1::ListNodesResponse nodes;
    EXPECT_OK(broker_->ListNodes({}, &nodes));
    std::vector<std::string> out;
    for (const v1::Node& n : nodes.nodes()) {
      out.push_back(absl::StrCat(n.name(), " ", n.free_device_count(), "/", n.device_count()));
    }
    return out;
  };
  EXPECT_THAT(free_counts(), ElementsAre("n1 1/3", "n2 2/2"));
  v1::DeleteContainerRequest del;
  del.set_container_id(c->id());
  v1::DeleteContainerResponse gone;
  ASSERT_OK(broker_->DeleteContainer(del, &gone));
  EXPECT_THAT(free_counts(), ElementsAre("n1 2/3", "n2 2/2"));
}

TEST_F(BrokerTest, PlacementPicksNodeWithMostFreeMatchingDevicesAndSkipsUnfit) {
  RegisterNode("a", {Dev("0000:00:04.0", 1)});
  RegisterNode("b", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2), Dev("0000:00:06.0", 3)});
  RegisterNode("c", {Dev("0000:00:04.0", 1, 0x8086, 0x10)});
  CreateTenant("acme");
  auto c1 = Place("acme", 0x1234, 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(c1->node(), "b");
  auto c2 = Place("acme", 0x8086, 1);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->node(), "c");
  // b has 2 free, a has 1; cordon b: the next goes to a.
  v1::CordonNodeRequest cr;
  cr.set_node("b");
  v1::Node n;
  ASSERT_TRUE(broker_->CordonNode(cr, &n).ok());
  auto c3 = Place("acme", 0x1234, 1);
  ASSERT_TRUE(c3.ok());
  EXPECT_EQ(c3->node(), "a");
  // a is full now and b is cordoned.
  EXPECT_THAT(Place("acme", 0x1234, 1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "no ready, uncordoned node"));
}

TEST_F(BrokerTest, PlacementNeverPutsTwoContainersOnOneDevice) {
  RegisterNode("n1", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2), Dev("0000:00:06.0", 3)});
  CreateTenant("acme");
  std::set<std::string> used;
  for (int i = 0; i < 3; ++i) {
    auto c = Place("acme", 0, 1);
    ASSERT_TRUE(c.ok());
    for (const auto& d : c->devices()) EXPECT_TRUE(used.insert(d).second) << d;
  }
  EXPECT_THAT(Place("acme", 0, 1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "selector"));
}

// Placement reads an index kept up to date by every change to a node (its
// devices, their holders, cordon, liveness, registration and reconcile): it
// must answer as a walk over every node would, and match a rebuild.
TEST_F(BrokerTest, PlacementFollowsEveryChangeToANode) {
  RegisterNode("a", {Dev("0000:00:04.0", 1)});
  RegisterNode("b", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2)});
  CreateTenant("acme");
  auto on_b = Place("acme", 0, 1);
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_EQ(on_b->node(), "b");  // 2 free against a's 1.
  EXPECT_OK(broker_->CheckIndexes());

  // Both have 1 free now: ties go to the first by name, a.
  auto on_a = Place("acme", 0, 1);
  ASSERT_TRUE(on_a.ok());
  EXPECT_EQ(on_a->node(), "a");
  EXPECT_OK(broker_->CheckIndexes());

  // A delete frees a's device again; a cordon takes b out.
  v1::DeleteContainerRequest dr;
  dr.set_container_id(on_a->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_OK(broker_->DeleteContainer(dr, &dresp));
  v1::CordonNodeRequest cr;
  cr.set_node("a");
  v1::Node n;
  ASSERT_OK(broker_->CordonNode(cr, &n));
  EXPECT_OK(broker_->CheckIndexes());
  auto second_b = Place("acme", 0, 1);
  ASSERT_TRUE(second_b.ok());
  EXPECT_EQ(second_b->node(), "b");
  EXPECT_THAT(Place("acme", 0, 1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "no ready, uncordoned node"));
  v1::UncordonNodeRequest ur;
  ur.set_node("a");
  ASSERT_OK(broker_->UncordonNode(ur, &n));
  EXPECT_OK(broker_->CheckIndexes());

  // a falls silent: nothing goes there; it registers with a new device and
  // is still skipped until it has reconciled.
  now_ms_ += 10000;
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("a", "b"));
  EXPECT_OK(broker_->CheckIndexes());
  EXPECT_THAT(Place("acme", 0, 1).status(), StatusIs(absl::StatusCode::kResourceExhausted, ""));
  v1::RegisterRequest req;
  req.set_node("a");
  req.set_agent_address("a:1");
  req.set_backend("sim");
  req.set_simulated(true);
  *req.add_devices() = Dev("0000:00:04.0", 1);
  *req.add_devices() = Dev("0000:00:07.0", 7);
  v1::RegisterResponse reg;
  ASSERT_OK(broker_->Register(req, &reg));
  EXPECT_OK(broker_->CheckIndexes());
  EXPECT_THAT(Place("acme", 0, 1).status(), StatusIs(absl::StatusCode::kResourceExhausted, ""));
  v1::ReconciledRequest rec;
  rec.set_node("a");
  rec.set_session_id(reg.session_id());
  v1::ReconciledResponse rr;
  ASSERT_OK(broker_->Reconciled(rec, &rr));
  EXPECT_OK(broker_->CheckIndexes());
  auto two = Place("acme", 0, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->node(), "a");
  EXPECT_THAT(two->devices(), ElementsAre("0000:00:04.0", "0000:00:07.0"));
  EXPECT_OK(broker_->CheckIndexes());
}

TEST_F(BrokerTest, SilentNodeBecomesUnavailableAndReregistersWithItsContainers) {
  v1::RegisterResponse reg;
  const std::string session =
      RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)}, &reg);
  EXPECT_EQ(reg.desired_containers_size(), 0);
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());

  now_ms_ += 4000;
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  ASSERT_TRUE(Heartbeat("n1", session).ok());
  now_ms_ += 5001;
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("n1"));

  v1::GetNodeRequest gn;
  gn.set_node("n1");
  v1::Node node;
  ASSERT_TRUE(broker_->GetNode(gn, &node).ok());
  EXPECT_EQ(node.state(), v1::NODE_STATE_UNAVAILABLE);
  v1::GetContainerRequest gc;
  gc.set_container_id(c->id());
  v1::Container got;
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  EXPECT_THAT(Create("acme", "n1", {"0000:00:05.0"}).status(),
              StatusIs(absl::StatusCode::kUnavailable, "node: node \"n1\" is not heartbeating"));
  EXPECT_THAT(Heartbeat("n1", session).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "register again"));

  // The agent comes back: it is told which containers it must hold.
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)}, &reg);
  ASSERT_EQ(reg.desired_containers_size(), 1);
  EXPECT_EQ(reg.desired_containers(0).id(), c->id());
  EXPECT_THAT(reg.desired_containers(0).devices(), ElementsAre("0000:00:04.0"));
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_READY);
}

TEST_F(BrokerTest, ContainerTheAgentCouldNotRecreateShowsFailedUntilItDoes) {
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  rec.add_failed_container_ids(c->id());
  rec.add_failure_reasons("VFIO_DEVICE_BIND_IOMMUFD: device still bound");
  v1::ReconciledResponse rr;
  ASSERT_TRUE(broker_->Reconciled(rec, &rr).ok());
  v1::GetContainerRequest gc;
  gc.set_container_id(c->id());
  v1::Container got;
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_FAILED);
  EXPECT_THAT(got.status_message(), HasSubstr("could not re-create it: VFIO_DEVICE_BIND_IOMMUFD"));
  v1::ListContainersRequest lr;
  lr.set_state(v1::CONTAINER_STATE_FAILED);
  v1::ListContainersResponse listed;
  ASSERT_TRUE(broker_->ListContainers(lr, &listed).ok());
  EXPECT_EQ(listed.containers_size(), 1);
  // The agent's retry registers again and reconciles without failures.
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  rec.set_session_id(reg.session_id());
  rec.clear_failed_container_ids();
  rec.clear_failure_reasons();
  ASSERT_TRUE(broker_->Reconciled(rec, &rr).ok());
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_READY);
  EXPECT_EQ(got.status_message(), "");
}

TEST_F(BrokerTest, DeleteOnUnavailableNodeForgetsNowAndAgentDropsItLater) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  now_ms_ += 10000;
  broker_->CheckLiveness();
  v1::DeleteContainerRequest dr;
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  EXPECT_EQ(agents_.destroys(), 0);
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  EXPECT_EQ(reg.desired_containers_size(), 0);
}

TEST_F(BrokerTest, DrainCordonsAndDeletesContainers) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  CreateTenant("acme");
  ASSERT_TRUE(Create("acme", "n1", {"0000:00:04.0"}).ok());
  ASSERT_TRUE(Create("acme", "n1", {"0000:00:05.0"}).ok());
  v1::DrainNodeRequest dr;
  dr.set_node("n1");
  v1::DrainNodeResponse out;
  ASSERT_TRUE(broker_->DrainNode(dr, &out).ok());
  EXPECT_TRUE(out.node().cordoned());
  EXPECT_EQ(out.remaining_container_ids_size(), 2);
  dr.set_delete_containers(true);
  ASSERT_TRUE(broker_->DrainNode(dr, &out).ok());
  EXPECT_EQ(out.deleted_container_ids_size(), 2);
  EXPECT_EQ(out.remaining_container_ids_size(), 0);
  EXPECT_EQ(out.node().container_count(), 0u);
  EXPECT_TRUE(agents_.held("n1:1").empty());
}

// A heartbeat's answer is cached per node: every change to the node's
// containers (create, budget, windows, delete, a rolled-back commit) must
// show in the next one, and nothing else's.
TEST_F(BrokerTest, HeartbeatAnswersFollowEveryChangeToTheNodesContainers) {
  const std::string s1 = RegisterNode("n1", {Dev("0000:00:04.0", 1)});
  const std::string s2 = RegisterNode("n2", {Dev("0000:00:04.0", 1)});
  CreateTenant("acme");
  // container id -> "budget:window,window" as the node's heartbeat says.
  auto beat = [&](const std::string& node, const std::string& session) {
    absl::StatusOr<v1::HeartbeatResponse> answer = Heartbeat(node, session);
    EXPECT_OK(answer);
    const v1::HeartbeatResponse r = answer.ok() ? *answer : v1::HeartbeatResponse();
    std::map<std::string, std::string> out;
    for (const auto& b : r.budgets())
      out[b.container_id()] = absl::StrCat(b.pin_budget_bytes(), ":");
    for (const auto& cw : r.windows()) {
      for (const auto& w : cw.windows()) absl::StrAppend(&out[cw.container_id()], w.start(), ",");
    }
    return out;
  };
  using Beat = std::map<std::string, std::string>;
  EXPECT_EQ(beat("n1", s1), Beat{});
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  const std::string budget = absl::StrCat(c->pin_budget_bytes());
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), budget + ":"}}));
  EXPECT_EQ(beat("n2", s2), Beat{});

  auto w = Allocate(c->id(), 1 << 20, 0, true, 0x100000);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), budget + ":1048576,"}}));

  v1::SetContainerBudgetRequest sb;
  sb.set_container_id(c->id());
  sb.set_pin_budget_bytes(64 << 20);
  v1::Container changed;
  ASSERT_OK(broker_->SetContainerBudget(sb, &changed));
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), "67108864:1048576,"}}));

  // A window whose commit fails is rolled back, and so is the answer.
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  EXPECT_FALSE(Allocate(c->id(), 1 << 20, 0, true, 0x200000).ok());
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), "67108864:1048576,"}}));

  v1::ReleaseWindowRequest rw;
  rw.set_window_id(w->id());
  v1::ReleaseWindowResponse rwr;
  ASSERT_OK(broker_->ReleaseWindow(rw, &rwr));
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), "67108864:"}}));

  v1::DeleteContainerRequest dr;
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_OK(broker_->DeleteContainer(dr, &dresp));
  EXPECT_EQ(beat("n1", s1), Beat{});
}

// A broker that could not run (SIGSTOP, starvation) could not take
// heartbeats either: that time is not the nodes' silence.
TEST_F(BrokerTest, BrokerPauseDoesNotCountAsNodeSilence) {
  Restart(/*liveness_check_interval_ms=*/250);
  v1::RegisterResponse reg;
  const std::string session = RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  now_ms_ += 8000;  // Stopped for 8 s, longer than node_timeout_ms.
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  // Running again: the node has the full timeout to be heard from.
  for (int i = 0; i < 19; ++i) {
    now_ms_ += 250;
    EXPECT_TRUE(broker_->CheckLiveness().empty()) << i;
  }
  ASSERT_TRUE(Heartbeat("n1", session).ok());
  // Silence while the broker runs still counts.
  for (int i = 0; i < 20; ++i) {
    now_ms_ += 250;
    EXPECT_TRUE(broker_->CheckLiveness().empty()) << i;
  }
  now_ms_ += 250;
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("n1"));
}

// A late check while heartbeats got through (only the checking thread was
// starved) is no pause: a node silent all that time is still noticed.
TEST_F(BrokerTest, LateLivenessCheckWhileHeartbeatsFlowedIsNoPause) {
  Restart(/*liveness_check_interval_ms=*/250);
  const std::string a = RegisterNode("a", {Dev("0000:00:04.0", 5)});
  RegisterNode("b", {Dev("0000:00:05.0", 6)});
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  for (int i = 0; i < 8; ++i) {  // a keeps heartbeating, b has gone quiet.
    now_ms_ += 1000;
    ASSERT_TRUE(Heartbeat("a", a).ok());
  }
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("b"));
}

// A deleted node is gone for good: nothing of it (its devices, its grant
// key) outlives it in the store, so a restart does not bring it back, and
// the agent registering it again starts afresh.
TEST_F(BrokerTest, ADeletedNodeStaysDeletedAcrossARestart) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  v1::RegisterResponse first;
  RegisterNode("n2", {Dev("0000:00:04.0", 5)}, &first);
  v1::DeleteNodeRequest del;
  del.set_node("n1");
  del.set_force(true);
  v1::DeleteNodeResponse deleted;
  ASSERT_OK(broker_->DeleteNode(del, &deleted));
  absl::StatusOr<std::vector<StoreRecord>> records = store_.LoadAll();
  ASSERT_OK(records);
  for (const StoreRecord& r : *records) EXPECT_NE(r.id, "n1") << r.kind << "/" << r.id;

  Restart();
  v1::ListNodesResponse nodes;
  ASSERT_OK(broker_->ListNodes({}, &nodes));
  ASSERT_EQ(nodes.nodes_size(), 1) << nodes.ShortDebugString();
  EXPECT_EQ(nodes.nodes(0).name(), "n2");
  v1::GetNodeRequest get;
  get.set_node("n1");
  v1::Node n;
  EXPECT_EQ(broker_->GetNode(get, &n).code(), absl::StatusCode::kNotFound);
  v1::ListDevicesRequest devices;
  devices.set_node("n1");
  v1::ListDevicesResponse listed;
  EXPECT_EQ(broker_->ListDevices(devices, &listed).code(), absl::StatusCode::kNotFound);

  RegisterNode("n1", {Dev("0000:00:06.0", 7)});
  ASSERT_OK(broker_->GetNode(get, &n));
  ASSERT_OK(broker_->ListDevices(devices, &listed));
  ASSERT_EQ(listed.devices_size(), 1);
  EXPECT_EQ(listed.devices(0).address(), "0000:00:06.0");
}

// What a DeleteNode of an earlier version left in the store (the node's
// devices and key, without its record) does not make a node at load, and
// the load deletes it.
TEST_F(BrokerTest, ADeletedNodesLeftoverRecordsAreIgnoredAndRemovedAtLoad) {
  RegisterNode("n2", {Dev("0000:00:04.0", 5)});
  v1::ListDevicesResponse devices;
  devices.add_devices()->CopyFrom(Dev("0000:00:04.0", 5));
  WriteBatch leftovers;
  leftovers.puts.push_back({"devices", "gone", devices.SerializeAsString()});
  leftovers.puts.push_back({"nodekey", "gone", std::string(32, 'k')});
  ASSERT_OK(store_.Commit(leftovers));

  Restart();
  v1::ListNodesResponse nodes;
  ASSERT_OK(broker_->ListNodes({}, &nodes));
  ASSERT_EQ(nodes.nodes_size(), 1) << nodes.ShortDebugString();
  EXPECT_EQ(nodes.nodes(0).name(), "n2");
  EXPECT_EQ(broker_->Stats().nodes_unavailable, 1);
  absl::StatusOr<std::vector<StoreRecord>> records = store_.LoadAll();
  ASSERT_OK(records);
  for (const StoreRecord& r : *records) EXPECT_NE(r.id, "gone") << r.kind << "/" << r.id;
}

}  // namespace
}  // namespace iommu
