// Records that break an invariant of the broker's state (a device held by
// two containers, an owner that does not exist, overlapping windows, a name
// taken twice): a store holding them is refused at load with DATA_LOSS
// naming the records, and the broker does not start on it (serving it could
// hand a device out twice or reach an owner that is not there); a change
// that would make them is refused whole with INTERNAL and changes nothing.
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker_test_fixture.h"
#include "server/model/fleet_state.h"
#include "server/model/test_records.h"

namespace iommu {
namespace {

class BrokerInvariantsTest : public BrokerTest {
 protected:
  // A tenant "t", node "n1" with two devices, container "a" holding the
  // first device, with one window; returns container a.
  v1::Container Populate() {
    CreateTenant("t");
    RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
    absl::StatusOr<v1::Container> a = Create("t", "n1", {"0000:00:04.0"});
    EXPECT_OK(a);
    if (!a.ok()) return {};
    EXPECT_OK(Allocate(a->id(), 1 << 20));
    absl::StatusOr<std::vector<StoreRecord>> records = store_.LoadAll();
    EXPECT_OK(records);
    for (const StoreRecord& r : *records) {
      if (r.kind == "container") stored_container_.ParseFromString(r.value);
      if (r.kind == "window") stored_window_.ParseFromString(r.value);
    }
    return *a;
  }

  // Adds `puts` to the store behind the broker's back, then opens a new
  // broker on it.
  absl::Status LoadWith(const std::vector<StoreRecord>& puts) {
    broker_.reset();
    WriteBatch b;
    b.puts = puts;
    EXPECT_OK(store_.Commit(b));
    BrokerOptions o;
    o.now_ms = [this] { return now_ms_; };
    return Broker::Create(&store_, &agents_, o).status();
  }

  v1::Container stored_container_;
  v1::Window stored_window_;
};

TEST_F(BrokerInvariantsTest, ADeviceHeldByTwoContainersIsRefused) {
  Populate();
  v1::Container b = stored_container_;
  b.set_id("ctr-b");
  b.clear_name();
  EXPECT_THAT(LoadWith({{"container", b.id(), b.SerializeAsString()}}),
              StatusIs(absl::StatusCode::kDataLoss, "0000:00:04.0"));
}

TEST_F(BrokerInvariantsTest, AContainerOnAMissingNodeIsRefused) {
  Populate();
  v1::Container b = stored_container_;
  b.set_id("ctr-b");
  b.set_node("ghost");
  EXPECT_THAT(LoadWith({{"container", b.id(), b.SerializeAsString()}}),
              StatusIs(absl::StatusCode::kDataLoss, "ghost"));
}

TEST_F(BrokerInvariantsTest, AContainerOfAMissingTenantIsRefused) {
  Populate();
  v1::Container b = stored_container_;
  b.set_id("ctr-b");
  b.set_tenant_id("nobody");
  b.clear_devices();
  b.add_devices("0000:00:05.0");
  EXPECT_THAT(LoadWith({{"container", b.id(), b.SerializeAsString()}}),
              StatusIs(absl::StatusCode::kDataLoss, "nobody"));
}

TEST_F(BrokerInvariantsTest, OverlappingWindowsAreRefused) {
  Populate();
  v1::Window w = stored_window_;
  w.set_id("win-b");
  EXPECT_THAT(LoadWith({{"window", w.id(), w.SerializeAsString()}}),
              StatusIs(absl::StatusCode::kDataLoss, "win-b"));
}

TEST_F(BrokerInvariantsTest, ANameTakenTwiceInATenantIsRefused) {
  Populate();
  v1::Container b = stored_container_;
  b.set_id("ctr-b");
  b.set_name("same");
  b.clear_devices();
  b.add_devices("0000:00:05.0");
  v1::Container a = stored_container_;
  a.set_name("same");
  EXPECT_THAT(LoadWith({{"container", a.id(), a.SerializeAsString()},
                        {"container", b.id(), b.SerializeAsString()}}),
              StatusIs(absl::StatusCode::kDataLoss, "same"));
}

TEST_F(BrokerInvariantsTest, ARecordWhoseObjectNamesAnotherIdIsRefused) {
  Populate();
  v1::Tenant t;
  t.set_id("other");
  EXPECT_THAT(LoadWith({{"tenant", "t2", t.SerializeAsString()}}),
              StatusIs(absl::StatusCode::kDataLoss, "tenant/t2: holds tenant \"other\""));
}

TEST_F(BrokerInvariantsTest, AWindowOfAnotherTenantThanItsContainerIsRefused) {
  Populate();
  v1::Tenant t;
  t.set_id("t2");
  v1::Window w = stored_window_;
  w.set_tenant_id("t2");
  EXPECT_THAT(LoadWith({{"tenant", "t2", t.SerializeAsString()},
                        {"window", w.id(), w.SerializeAsString()}}),
              StatusIs(absl::StatusCode::kDataLoss, "of tenant t2"));
}

// The check passes on what the broker itself wrote.
TEST_F(BrokerInvariantsTest, WhatTheBrokerWroteLoads) {
  Populate();
  EXPECT_OK(LoadWith({}));
}

// A change that would break the same invariants is refused whole, whatever
// planner made it, and neither memory nor the store changes.
TEST_F(BrokerInvariantsTest, AChangeThatBreaksAnInvariantIsRefusedAndChangesNothing) {
  Populate();
  // A change putting container `id` (without devices when `device` is
  // empty), as a planner would.
  auto create = [this](const std::string& id, const std::string& tenant, const std::string& node,
                       const std::string& device, const std::string& name) {
    v1::Container c = stored_container_;
    c.set_id(id);
    c.set_tenant_id(tenant);
    c.set_node(node);
    c.clear_devices();
    if (!device.empty()) c.add_devices(device);
    c.set_name(name);
    c.set_pin_budget_bytes(0);
    WriteBatch b;
    b.puts.push_back({"container", id, c.SerializeAsString()});
    return b;
  };
  // One that fits is applied and committed.
  ASSERT_OK(
      broker_->ApplyAndCommitForTesting(create("c-named", "t", "n1", "0000:00:05.0", "taken")));
  const std::string before = Snapshot();
  EXPECT_THAT(broker_->ApplyAndCommitForTesting(create("c-x", "t", "n1", "0000:00:04.0", "")),
              StatusIs(absl::StatusCode::kInternal, "is held by container"));
  EXPECT_THAT(broker_->ApplyAndCommitForTesting(create("c-x", "nobody", "n1", "", "")),
              StatusIs(absl::StatusCode::kInternal, "tenant nobody does not exist"));
  EXPECT_THAT(broker_->ApplyAndCommitForTesting(create("c-x", "t", "ghost", "", "")),
              StatusIs(absl::StatusCode::kInternal, "node ghost does not exist"));
  EXPECT_THAT(
      broker_->ApplyAndCommitForTesting(create("c-x", "t", "n1", "", "taken")),
      StatusIs(absl::StatusCode::kInternal, "the name taken is taken by container c-named"));
  v1::Window foreign = stored_window_;
  foreign.set_id("w-foreign");
  foreign.set_base(0x10000000);
  foreign.set_tenant_id("t2");
  EXPECT_THAT(broker_->ApplyAndCommitForTesting(
                  {{{"window", foreign.id(), foreign.SerializeAsString()}}, {}}),
              StatusIs(absl::StatusCode::kInternal, "of tenant t2, not its container's"));
  WriteBatch both = create("c-x", "t", "n1", "0000:00:09.0", "");
  both.puts.push_back(create("c-y", "t", "n1", "0000:00:09.0", "").puts[0]);
  EXPECT_THAT(broker_->ApplyAndCommitForTesting(both),
              StatusIs(absl::StatusCode::kInternal, "is listed twice in the change"));
  WriteBatch twice = create("c-x", "t", "n1", "", "");
  twice.puts.push_back(twice.puts[0]);
  EXPECT_THAT(broker_->ApplyAndCommitForTesting(twice),
              StatusIs(absl::StatusCode::kInternal, "put twice"));
  EXPECT_EQ(Snapshot(), before);
}

// Whatever a store holds, a broker either refuses to load it (DATA_LOSS) or
// loads a state that matches the store and serves it without failing:
// stores filled with random changes, in half of the runs some written
// blindly (most of those break a rule), then a load, reads, a registration
// and a heartbeat.
TEST(BrokerRandomStoreTest, AnyStoreIsRefusedWithDataLossOrServedConsistently) {
  std::mt19937 rng(2026);
  int loaded = 0, refused = 0;
  for (int run = 0; run < 300; ++run) {
    // Mostly changes the model accepts (valid states), some written blindly.
    FakeStore store;
    model::FleetState filter;
    const bool blind_run = run % 2 == 0;
    for (int i = 0, n = 1 + static_cast<int>(rng() % 40); i < n; ++i) {
      WriteBatch change = model::RandomChange(&rng, /*one_write_per_key=*/true);
      const bool blind = blind_run && rng() % 8 == 0;
      if (filter.Apply(change).ok() || blind) ASSERT_OK(store.Commit(change));
    }
    FakeAgents agents;
    BrokerOptions o;
    o.now_ms = [] { return int64_t{1'000'000}; };
    absl::StatusOr<std::unique_ptr<Broker>> b = Broker::Create(&store, &agents, o);
    if (!b.ok()) {
      ++refused;
      EXPECT_EQ(b.status().code(), absl::StatusCode::kDataLoss) << b.status();
      continue;
    }
    ++loaded;
    Broker& broker = **b;
    ASSERT_OK(broker.CheckIndexes()) << "run " << run;
    v1::ListNodesResponse nodes;
    EXPECT_OK(broker.ListNodes({}, &nodes));
    v1::ListContainersResponse containers;
    EXPECT_OK(broker.ListContainers({}, &containers));
    v1::GetUsageResponse usage;
    EXPECT_OK(broker.GetUsage({}, &usage));
    // The node the random stores use most, registering with other devices
    // than the store says it had, then reporting.
    absl::StatusOr<v1::RegisterResponse> r =
        RegisterReadyNode(&broker, "n0", {Dev(model::Dev(1), 1), Dev(model::Dev(7), 7)});
    if (r.ok()) {
      v1::HeartbeatRequest hb;
      hb.set_node("n0");
      hb.set_session_id(r->session_id());
      v1::HeartbeatResponse out;
      EXPECT_OK(broker.Heartbeat(hb, &out));
    }
    ASSERT_OK(broker.CheckIndexes()) << "run " << run;
  }
  EXPECT_GT(loaded, 30);
  EXPECT_GT(refused, 30);
}

}  // namespace
}  // namespace iommu
