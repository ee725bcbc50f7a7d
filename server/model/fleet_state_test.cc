#include "server/model/fleet_state.h"

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/model/test_records.h"

namespace iommu {
namespace model {
namespace {

class FleetStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(s_.Apply(Puts({TenantRec("acme"), TenantRec("beta"), NodeRec("n1"),
                               DevicesRec("n1", 4), NodeRec("n2"), DevicesRec("n2", 2)}))
                    .ok());
  }
  void ExpectRefused(const WriteBatch& b, absl::StatusCode code, const std::string& words) {
    const std::string before = Dump(s_);
    const uint64_t version = s_.version();
    absl::Status st = s_.Apply(b);
    EXPECT_EQ(st.code(), code) << st;
    EXPECT_NE(std::string(st.message()).find(words), std::string::npos) << st;
    EXPECT_EQ(Dump(s_), before) << "a refused change changed the state";
    EXPECT_EQ(s_.version(), version);
  }
  FleetState s_;
};

TEST_F(FleetStateTest, ContainerAndWindowsInOneChangeAreIndexed) {
  ASSERT_TRUE(s_.Apply(Puts({WindowRec("w1", "c1", "acme", 0x100000, 0x100000),
                             Rec(Container("c1", "acme", "n1", {Dev(0)}, 4096)),
                             WindowRec("w2", "c1", "acme", 0x400000, 0x200000)}))
                  .ok());
  ASSERT_NE(s_.FindContainer("c1"), nullptr);
  EXPECT_EQ(s_.FindContainer("c1")->window_ids, (std::set<std::string>{"w1", "w2"}));
  EXPECT_EQ(s_.FindContainer("c1")->allocator.allocated_bytes(), 0x300000u);
  ASSERT_NE(s_.DeviceHolder("n1", Dev(0)), nullptr);
  EXPECT_EQ(*s_.DeviceHolder("n1", Dev(0)), "c1");
  EXPECT_EQ(s_.ContainersOfNode("n1", "", 0), std::vector<std::string>{"c1"});
  EXPECT_EQ(s_.ContainersOfTenant("acme", "", 0), std::vector<std::string>{"c1"});
  EXPECT_TRUE(s_.ContainersOfTenant("beta", "", 0).empty());
  EXPECT_EQ(s_.Totals("acme"), (TenantTotals{1, 2, 4096, 0x300000}));
  EXPECT_EQ(s_.counts().containers_by_state.at(v1::CONTAINER_STATE_READY), 1);
  EXPECT_EQ(s_.placement().FreeCount("n1", {0, 0}), 3);
  EXPECT_EQ(s_.version(), 2u);
}

TEST_F(FleetStateTest, DeletingAContainerWithItsWindowsFreesEverything) {
  ASSERT_TRUE(s_.Apply(Puts({Rec(Container("c1", "acme", "n1", {Dev(0), Dev(1)}, 10)),
                             WindowRec("w1", "c1", "acme", 0x100000, 0x1000)}))
                  .ok());
  ASSERT_TRUE(s_.Apply(Deletes({{kContainerKind, "c1"}, {kWindowKind, "w1"}})).ok());
  EXPECT_EQ(s_.FindContainer("c1"), nullptr);
  EXPECT_EQ(s_.FindWindow("w1"), nullptr);
  EXPECT_EQ(s_.DeviceHolder("n1", Dev(0)), nullptr);
  EXPECT_EQ(s_.Totals("acme"), TenantTotals());
  EXPECT_EQ(s_.placement().FreeCount("n1", {0, 0}), 4);
  EXPECT_TRUE(s_.counts().containers_by_state.empty());
}

TEST_F(FleetStateTest, RefusedChangesChangeNothing) {
  ASSERT_TRUE(s_.Apply(Puts({Rec(Container("c1", "acme", "n1", {Dev(0)})),
                             WindowRec("w1", "c1", "acme", 0x100000, 0x100000)}))
                  .ok());
  // Overlap with w1, even with a valid record before it in the same change.
  ExpectRefused(Puts({TenantRec("gamma"), WindowRec("w2", "c1", "acme", 0x180000, 0x1000)}),
                absl::StatusCode::kFailedPrecondition, "does not fit");
  // A device given twice.
  ExpectRefused(Puts({Rec(Container("c2", "beta", "n1", {Dev(1), Dev(0)}))}),
                absl::StatusCode::kFailedPrecondition, "is held by container c1");
  // Owners gone.
  ExpectRefused(Puts({Rec(Container("c3", "nobody", "n1", {Dev(2)}))}),
                absl::StatusCode::kFailedPrecondition, "tenant nobody does not exist");
  ExpectRefused(Puts({Rec(Container("c3", "acme", "n9", {Dev(2)}))}),
                absl::StatusCode::kFailedPrecondition, "node n9 does not exist");
  ExpectRefused(Puts({WindowRec("w3", "c9", "acme", 0, 0x1000)}),
                absl::StatusCode::kFailedPrecondition, "missing container c9");
  ExpectRefused(Deletes({{kTenantKind, "acme"}}), absl::StatusCode::kFailedPrecondition,
                "container c1 remains");
  ExpectRefused(Deletes({{kNodeKind, "n1"}, {kDevicesKind, "n1"}}),
                absl::StatusCode::kFailedPrecondition, "container c1 remains");
  ExpectRefused(Deletes({{kContainerKind, "c1"}}), absl::StatusCode::kFailedPrecondition,
                "still has window w1");
  // A geometry that no longer holds the window, and one the allocator refuses.
  ExpectRefused(Puts({Rec(Container("c1", "acme", "n1", {Dev(0)}, 0, 0xfffff))}),
                absl::StatusCode::kFailedPrecondition, "does not fit the new geometry");
  v1::Container bad = Container("c4", "acme", "n2", {Dev(0)});
  bad.mutable_geometry()->set_page_size_bitmap(0);
  ExpectRefused(Puts({Rec(bad)}), absl::StatusCode::kFailedPrecondition, "geometry");
  // Records that do not parse, or name another id, or an unknown kind.
  ExpectRefused(Puts({TenantRec("delta"), {kContainerKind, "c5", "\xff\xff garbage"}}),
                absl::StatusCode::kDataLoss, "container/c5 does not parse");
  ExpectRefused(Puts({{kTenantKind, "other", TenantRec("acme").value}}),
                absl::StatusCode::kDataLoss, "tenant/other");
  ExpectRefused(Puts({{"mystery", "x", ""}}), absl::StatusCode::kDataLoss, "unknown kind");
  ExpectRefused(Deletes({{"mystery", "x"}}), absl::StatusCode::kDataLoss, "unknown kind");
  // A window moved onto another's range, after a valid move in the same change.
  ASSERT_TRUE(s_.Apply(Puts({WindowRec("w2", "c1", "acme", 0x400000, 0x1000)})).ok());
  ExpectRefused(Puts({WindowRec("w2", "c1", "acme", 0x800000, 0x1000),
                      WindowRec("w1", "c1", "acme", 0x800000, 0x1000)}),
                absl::StatusCode::kFailedPrecondition, "w1: does not fit");
}

TEST_F(FleetStateTest, UpdatesKeepWindowsAndMoveTotals) {
  ASSERT_TRUE(s_.Apply(Puts({Rec(Container("c1", "acme", "n1", {Dev(0)}, 100)),
                             WindowRec("w1", "c1", "acme", 0x100000, 0x1000)}))
                  .ok());
  v1::Container c = Container("c1", "acme", "n1", {Dev(0)}, 300);
  c.set_state(v1::CONTAINER_STATE_FAILED);
  ASSERT_TRUE(s_.Apply(Puts({Rec(c), WindowRec("w1", "c1", "acme", 0x100000, 0x2000)})).ok());
  EXPECT_EQ(s_.Totals("acme"), (TenantTotals{1, 1, 300, 0x2000}));
  EXPECT_EQ(s_.FindContainer("c1")->window_ids, std::set<std::string>{"w1"});
  EXPECT_EQ(s_.counts().containers_by_state.count(v1::CONTAINER_STATE_READY), 0u);
  EXPECT_EQ(s_.counts().containers_by_state.at(v1::CONTAINER_STATE_FAILED), 1);
  // A wider geometry re-places the windows.
  ASSERT_TRUE(s_.Apply(Puts({Rec(Container("c1", "acme", "n1", {Dev(0)}, 300, 0xffffffffff))})).ok());
  EXPECT_EQ(s_.FindContainer("c1")->allocator.allocated_bytes(), 0x2000u);
}

TEST_F(FleetStateTest, NodePartsComeAndGoIndependently) {
  EXPECT_EQ(s_.counts().nodes, 2);
  ASSERT_TRUE(s_.Apply(Puts({{kNodeKeyKind, "n3", "secret"}})).ok());
  EXPECT_EQ(s_.counts().nodes, 2) << "a key alone is not a registered node";
  ASSERT_NE(s_.FindNode("n3"), nullptr);
  ASSERT_TRUE(s_.Apply(Puts({NodeRec("n3")})).ok());
  EXPECT_EQ(s_.counts().nodes, 3);
  ASSERT_TRUE(s_.Apply(Deletes({{kNodeKind, "n3"}, {kNodeKeyKind, "n3"}})).ok());
  EXPECT_EQ(s_.FindNode("n3"), nullptr);
  EXPECT_EQ(s_.counts().nodes, 2);
  // Deleting what is not there is fine, as in the store.
  ASSERT_TRUE(s_.Apply(Deletes({{kNodeKind, "n9"}, {kTenantKind, "zz"}, {kWindowKind, "w"}})).ok());
}

TEST_F(FleetStateTest, ListsPageInIdOrder) {
  std::vector<StoreRecord> puts;
  for (int i = 0; i < 4; ++i) {
    puts.push_back(Rec(Container(absl::StrCat("c", i), i % 2 ? "beta" : "acme", "n1", {Dev(i)})));
  }
  ASSERT_TRUE(s_.Apply(Puts(puts)).ok());
  EXPECT_EQ(s_.ContainersOfNode("n1", "", 3), (std::vector<std::string>{"c0", "c1", "c2"}));
  EXPECT_EQ(s_.ContainersOfNode("n1", "c2", 3), (std::vector<std::string>{"c3"}));
  EXPECT_EQ(s_.ContainersOfTenant("beta", "", 0), (std::vector<std::string>{"c1", "c3"}));
  EXPECT_EQ(s_.ContainersOfTenant("beta", "c1", 0), (std::vector<std::string>{"c3"}));
  EXPECT_TRUE(s_.ContainersOfNode("n2", "", 0).empty());
  EXPECT_EQ(s_.ContainerCountOfNode("n1"), 4);
}

TEST_F(FleetStateTest, PlacementFollowsHoldersAndPicksWholeGroups) {
  s_.SetPlacementEligible("n1", true);
  s_.SetPlacementEligible("n2", true);
  std::vector<std::string> order;
  s_.placement().VisitBest({0x10de, 0x2330}, 1, [&](const std::string& n, int64_t) {
    order.push_back(n);
    return true;
  });
  EXPECT_EQ(order, (std::vector<std::string>{"n1", "n2"}));
  ASSERT_TRUE(s_.Apply(Puts({Rec(Container("c1", "acme", "n1", {Dev(0), Dev(1), Dev(2)}))})).ok());
  order.clear();
  s_.placement().VisitBest({0, 0}, 1, [&](const std::string& n, int64_t) {
    order.push_back(n);
    return true;
  });
  EXPECT_EQ(order, (std::vector<std::string>{"n2", "n1"}));
  auto none_busy = [](const std::string&) { return false; };
  EXPECT_EQ(s_.PickDevices("n2", {0, 0}, 2, none_busy), (std::vector<std::string>{Dev(0), Dev(1)}));
  EXPECT_FALSE(s_.PickDevices("n1", {0, 0}, 2, none_busy).has_value());
  EXPECT_EQ(s_.PickDevices("n2", {0, 0}, 1, [](const std::string& a) { return a == Dev(0); }),
            (std::vector<std::string>{Dev(1)}));
  EXPECT_FALSE(s_.PickDevices("n2", {0x8086, 0}, 1, none_busy).has_value());
  EXPECT_FALSE(s_.PickDevices("n9", {0, 0}, 1, none_busy).has_value());
}

TEST(RecordKeyTest, RoundTripsAndRefusesOtherShapes) {
  EXPECT_EQ(RecordKey("container", "c-1"), "/container/c-1");
  auto p = ParseRecordKey("/container/c-1");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->first, "container");
  EXPECT_EQ(p->second, "c-1");
  for (const char* bad : {"", "/", "container/c", "//c", "/container/", "/container"}) {
    EXPECT_EQ(ParseRecordKey(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// Random changes, some invalid: every refused change leaves the state as it
// was, and the maintained indexes always equal a model rebuilt from scratch
// out of the same records.
TEST(FleetStateRandomTest, IndexesEqualARebuildAndRefusalsAreAtomic) {
  std::mt19937 rng(12345);
  FleetState s;
  std::map<std::pair<std::string, std::string>, StoreRecord> records;  // What was applied.
  int applied = 0, refused = 0;
  for (int step = 0; step < 3000; ++step) {
    const WriteBatch b = RandomChange(&rng, /*one_write_per_key=*/false);
    const std::string before = Dump(s);
    if (s.Apply(b).ok()) {
      ++applied;
      for (const StoreRecord& r : b.puts) records[{r.kind, r.id}] = r;
      for (const auto& d : b.deletes) records.erase(d);
    } else {
      ++refused;
      ASSERT_EQ(Dump(s), before) << "step " << step;
    }
    if (step % 100 == 0) {
      FleetState rebuilt;
      WriteBatch all;
      for (const auto& [key, r] : records) all.puts.push_back(r);
      ASSERT_TRUE(rebuilt.Apply(all).ok()) << "step " << step;
      ASSERT_EQ(Dump(s), Dump(rebuilt)) << "step " << step;
    }
  }
  EXPECT_GT(applied, 300);
  EXPECT_GT(refused, 300);
}

}  // namespace
}  // namespace model
}  // namespace iommu
