#include "server/model/placement_index.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace iommu {
namespace model {
namespace {

v1::Device Dev(const std::string& address, uint32_t group, uint32_t vendor, uint32_t device,
               bool assignable = true) {
  v1::Device d;
  d.set_address(address);
  d.set_iommu_group(group);
  d.set_vendor_id(vendor);
  d.set_device_id(device);
  d.set_assignable(assignable);
  return d;
}

std::vector<std::pair<std::string, int64_t>> Best(const PlacementIndex& idx, SelectorKey key,
                                                   int64_t min_free = 1) {
  std::vector<std::pair<std::string, int64_t>> out;
  idx.VisitBest(key, min_free, [&](const std::string& n, int64_t f) {
    out.push_back({n, f});
    return true;
  });
  return out;
}

const auto kNoneHeld = [](const std::string&, const std::string&) { return false; };

TEST(GroupKeysTest, HomogeneousGroupsMatchEveryNarrowerSelector) {
  v1::Device a = Dev("a", 1, 0x10de, 0x2330), b = Dev("b", 1, 0x10de, 0x2330);
  std::vector<SelectorKey> keys = GroupKeys({&a, &b});
  std::set<std::pair<uint32_t, uint32_t>> got;
  for (const SelectorKey& k : keys) got.insert({k.vendor_id, k.device_id});
  EXPECT_EQ(got, (std::set<std::pair<uint32_t, uint32_t>>{
                     {0, 0}, {0x10de, 0}, {0, 0x2330}, {0x10de, 0x2330}}));
}

TEST(GroupKeysTest, MixedGroupsMatchOnlyWhatAllMembersShare) {
  v1::Device a = Dev("a", 1, 0x10de, 0x2330), b = Dev("b", 1, 0x10de, 0x1aef);
  std::set<std::pair<uint32_t, uint32_t>> got;
  for (const SelectorKey& k : GroupKeys({&a, &b})) got.insert({k.vendor_id, k.device_id});
  EXPECT_EQ(got, (std::set<std::pair<uint32_t, uint32_t>>{{0, 0}, {0x10de, 0}}));
  v1::Device c = Dev("c", 2, 0x8086, 0x2330);
  got.clear();
  for (const SelectorKey& k : GroupKeys({&a, &c})) got.insert({k.vendor_id, k.device_id});
  EXPECT_EQ(got, (std::set<std::pair<uint32_t, uint32_t>>{{0, 0}, {0, 0x2330}}));
}

TEST(PlacementIndexTest, RanksEligibleNodesByFreeMatchingDevicesThenName) {
  PlacementIndex idx;
  idx.UpdateNode("n1", {Dev("a", 1, 1, 1), Dev("b", 2, 1, 1)}, kNoneHeld);
  idx.UpdateNode("n2", {Dev("a", 1, 1, 1), Dev("b", 2, 1, 1), Dev("c", 3, 2, 2)}, kNoneHeld);
  idx.UpdateNode("n0", {Dev("a", 1, 1, 1), Dev("b", 2, 1, 1)}, kNoneHeld);
  EXPECT_TRUE(Best(idx, {0, 0}).empty()) << "nothing eligible yet";
  for (const char* n : {"n0", "n1", "n2"}) idx.SetEligible(n, true);
  EXPECT_EQ(Best(idx, {0, 0}),
            (std::vector<std::pair<std::string, int64_t>>{{"n2", 3}, {"n0", 2}, {"n1", 2}}));
  EXPECT_EQ(Best(idx, {1, 1}),
            (std::vector<std::pair<std::string, int64_t>>{{"n0", 2}, {"n1", 2}, {"n2", 2}}));
  EXPECT_EQ(Best(idx, {2, 0}), (std::vector<std::pair<std::string, int64_t>>{{"n2", 1}}));
  EXPECT_EQ(Best(idx, {1, 1}, 3), (std::vector<std::pair<std::string, int64_t>>{}));
  EXPECT_TRUE(Best(idx, {9, 9}).empty());

  idx.SetEligible("n2", false);
  EXPECT_EQ(Best(idx, {0, 0}).front().first, "n0");
  EXPECT_EQ(idx.FreeCount("n2", {0, 0}), 3) << "counts are kept for ineligible nodes";
  idx.RemoveNode("n0");
  EXPECT_EQ(Best(idx, {0, 0}), (std::vector<std::pair<std::string, int64_t>>{{"n1", 2}}));
  EXPECT_EQ(idx.FreeCount("n0", {0, 0}), 0);
}

TEST(PlacementIndexTest, HeldUnassignableAndPartlyHeldGroupsAreNotFree) {
  PlacementIndex idx;
  idx.SetEligible("n", true);
  std::set<std::string> held = {"b1"};
  auto is_held = [&](const std::string&, const std::string& a) { return held.count(a) > 0; };
  const std::vector<v1::Device> devices = {
      Dev("a", 1, 1, 1), Dev("b0", 2, 1, 1), Dev("b1", 2, 1, 1), Dev("c", 3, 1, 1, false)};
  idx.UpdateNode("n", devices, is_held);
  EXPECT_EQ(idx.FreeCount("n", {1, 1}), 1) << "group 2 is half held, group 3 unassignable";
  held.clear();
  idx.UpdateNode("n", devices, is_held);
  EXPECT_EQ(idx.FreeCount("n", {1, 1}), 3);
  EXPECT_EQ(Best(idx, {1, 1}), (std::vector<std::pair<std::string, int64_t>>{{"n", 3}}));
  held = {"a", "b0", "b1"};
  idx.UpdateNode("n", devices, is_held);
  EXPECT_TRUE(Best(idx, {0, 0}).empty());
}

TEST(PlacementIndexTest, VisitStopsWhenAskedTo) {
  PlacementIndex idx;
  for (int i = 0; i < 10; ++i) {
    const std::string n = "n" + std::to_string(i);
    idx.UpdateNode(n, {Dev("a", 1, 1, 1)}, kNoneHeld);
    idx.SetEligible(n, true);
  }
  int seen = 0;
  idx.VisitBest({0, 0}, 1, [&](const std::string&, int64_t) { return ++seen < 3; });
  EXPECT_EQ(seen, 3);
}

}  // namespace
}  // namespace model
}  // namespace iommu
