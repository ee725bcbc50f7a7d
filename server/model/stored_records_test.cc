#include "server/model/stored_records.h"

#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/fleet_state.h"
#include "server/model/test_records.h"

namespace iommu {
namespace model {
namespace {

// A valid state: tenant t, node n1 with two devices, container c1 holding
// the first, with one window.
std::vector<StoreRecord> Valid() {
  v1::Container c = Container("c1", "t", "n1", {Dev(0)});
  c.set_name("vm");
  return {TenantRec("t"), NodeRec("n1"), DevicesRec("n1", 2), Rec(c),
          WindowRec("w1", "c1", "t", 0, 0x10000)};
}

std::vector<StoreRecord> With(std::vector<StoreRecord> records,
                              const std::vector<StoreRecord>& more) {
  records.insert(records.end(), more.begin(), more.end());
  return records;
}

TEST(StoredRecordsTest, AValidStateAndANodesLeftoversPass) {
  EXPECT_OK(CheckStoredRecords(Valid()));
  EXPECT_OK(CheckStoredRecords({}));
  EXPECT_OK(
      CheckStoredRecords(With(Valid(), {DevicesRec("gone", 1), {kNodeKeyKind, "gone", "k"}})));
}

TEST(StoredRecordsTest, EachBrokenRuleIsDataLossNamingTheRecords) {
  v1::Container named = Container("c2", "t", "n1", {Dev(1)});
  named.set_name("vm");
  v1::Tenant misfiled;
  misfiled.set_id("other");
  const struct {
    std::vector<StoreRecord> records;
    std::string says;
  } cases[] = {
      {With(Valid(), {Rec(Container("c2", "t", "n1", {Dev(0)}))}),
       "containers c1 and c2 both hold device n1/0000:00:00.0"},
      {With(Valid(), {Rec(Container("c2", "t", "n1", {Dev(1), Dev(1)}))}),
       "container c2 lists device n1/0000:00:01.0 twice"},
      {With(Valid(), {Rec(Container("c2", "nobody", "n1", {Dev(1)}))}),
       "container c2 belongs to tenant nobody, which does not exist"},
      {With(Valid(), {Rec(Container("c2", "t", "ghost", {Dev(1)}))}),
       "container c2 is on node ghost, which does not exist"},
      {With(Valid(), {Rec(named)}), "containers c1 and c2 of tenant t are both named \"vm\""},
      {With(Valid(), {WindowRec("w2", "c1", "t", 0x8000, 0x10000)}), "window/w2: does not fit"},
      {With(Valid(), {WindowRec("w2", "c1", "t", 0x100000000, 0x1000)}), "window/w2: does not fit"},
      {With(Valid(), {WindowRec("w2", "c9", "t", 0x100000, 0x1000)}),
       "window/w2: names missing container c9"},
      {With(Valid(), {TenantRec("t2"), WindowRec("w2", "c1", "t2", 0x100000, 0x1000)}),
       "window/w2: of tenant t2 is in container c1 of tenant t"},
      {With(Valid(), {{kTenantKind, "t2", misfiled.SerializeAsString()}}),
       "tenant/t2: holds tenant \"other\", not its own"},
      {With(Valid(), {{kContainerKind, "c2", "\xff\xff"}}), "container/c2: does not parse"},
      {With(Valid(), {{"gadget", "g", ""}}), "gadget/g: unknown kind"},
  };
  for (const auto& c : cases) {
    EXPECT_THAT(CheckStoredRecords(c.records), StatusIs(absl::StatusCode::kDataLoss, c.says));
  }
}

// The records of every state the model accepts pass the check: the two
// agree on what a valid state is, so a broker never refuses to load what it
// committed.
TEST(StoredRecordsTest, EveryStateTheModelAcceptsPasses) {
  std::mt19937 rng(7);
  FleetState state;
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    if (!state.Apply(RandomChange(&rng, /*one_write_per_key=*/true)).ok()) continue;
    ++accepted;
    std::vector<StoreRecord> records;
    for (const auto& [id, t] : state.tenants()) records.push_back(TenantRec(id));
    for (const auto& [name, n] : state.nodes()) {
      if (n.node.has_value()) records.push_back({kNodeKind, name, n.node->SerializeAsString()});
    }
    for (const auto& [id, c] : state.containers()) records.push_back(Rec(c.container));
    for (const auto& [id, w] : state.windows()) {
      records.push_back({kWindowKind, id, w.SerializeAsString()});
    }
    ASSERT_OK(CheckStoredRecords(records)) << "after " << accepted << " accepted changes";
  }
  EXPECT_GT(accepted, 100);
}

}  // namespace
}  // namespace model
}  // namespace iommu
