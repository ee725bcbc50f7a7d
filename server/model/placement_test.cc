#include "server/model/placement.h"

#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/model/test_records.h"

namespace iommu {
namespace model {
namespace {

v1::DeviceSelector Selector(uint32_t vendor, uint32_t device, uint32_t count) {
  v1::DeviceSelector s;
  s.set_vendor_id(vendor);
  s.set_device_id(device);
  s.set_count(count);
  return s;
}

const BusyFn kNoneBusy = [](const std::string&, const std::string&) { return false; };

// Devices in groups of `group_size`, all of one vendor.
StoreRecord GroupedDevices(const std::string& node, int count, int group_size, uint32_t vendor) {
  v1::ListDevicesResponse r;
  for (int i = 0; i < count; ++i) {
    v1::Device* d = r.add_devices();
    d->set_address(Dev(i));
    d->set_iommu_group(i / group_size);
    d->set_vendor_id(vendor);
    d->set_device_id(0x1);
    d->set_assignable(true);
  }
  return {kDevicesKind, node, r.SerializeAsString()};
}

TEST(PlaceBySelectorTest, MostFreeEligibleNodeThatCanSupplyWholeGroups) {
  FleetState s;
  ASSERT_TRUE(s.Apply(Puts({NodeRec("big"), GroupedDevices("big", 6, 2, 0x10de), NodeRec("small"),
                            GroupedDevices("small", 2, 1, 0x10de), NodeRec("off"),
                            GroupedDevices("off", 8, 1, 0x10de)}))
                  .ok());
  s.SetPlacementEligible("big", true);
  s.SetPlacementEligible("small", true);
  absl::StatusOr<Placement> p = PlaceBySelector(s, Selector(0x10de, 0, 2), kNoneBusy);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->node, "big");
  EXPECT_EQ(p->devices, (std::vector<std::string>{Dev(0), Dev(1)}));
  // One device: big's groups are pairs, so small supplies it.
  p = PlaceBySelector(s, Selector(0, 0, 1), kNoneBusy);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->node, "small");
  // Promised devices are skipped: big's first pair is taken by a change in flight.
  p = PlaceBySelector(s, Selector(0, 0, 2), [](const std::string& n, const std::string& a) {
    return n == "big" && a == Dev(1);
  });
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->node, "big");
  EXPECT_EQ(p->devices, (std::vector<std::string>{Dev(2), Dev(3)}));
}

TEST(PlaceBySelectorTest, RefusalsNameTheFieldAndTheRule) {
  FleetState s;
  ASSERT_TRUE(s.Apply(Puts({NodeRec("n"), GroupedDevices("n", 2, 1, 0x10de)})).ok());
  absl::StatusOr<Placement> p = PlaceBySelector(s, Selector(0, 0, 65), kNoneBusy);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p.status().message(), "selector.count: at most 64 devices per container, got 65");
  p = PlaceBySelector(s, Selector(0, 0, 1), kNoneBusy);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted) << "nothing eligible";
  s.SetPlacementEligible("n", true);
  p = PlaceBySelector(s, Selector(0x8086, 0x1, 1), kNoneBusy);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(p.status().message(),
            "selector: no ready, uncordoned node has 1 free assignable device(s) matching "
            "vendor_id=0x8086 device_id=0x0001");
  p = PlaceBySelector(s, Selector(0x10de, 0, 3), kNoneBusy);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(PlaceBySelector(s, Selector(0x10de, 0, 0), kNoneBusy).ok()) << "count 0 means 1";
}

// The broker's linear scan, kept as the reference: every eligible node, the
// one with the most free matching devices in whole qualifying groups that
// can supply exactly `count`, ties to the first by name.
std::optional<Placement> Reference(const FleetState& s, const std::set<std::string>& eligible,
                                   SelectorKey key, uint32_t count) {
  std::optional<Placement> best;
  size_t best_free = 0;
  for (const auto& [name, n] : s.nodes()) {
    if (!eligible.count(name)) continue;
    std::map<uint32_t, std::vector<const v1::Device*>> groups;
    for (const v1::Device& d : n.devices) groups[d.iommu_group()].push_back(&d);
    std::vector<std::string> picked;
    size_t free = 0;
    for (const auto& [g, members] : groups) {
      bool ok = true;
      for (const v1::Device* d : members) {
        ok = ok && Matches(key, *d) && d->assignable() && s.DeviceHolder(name, d->address()) == nullptr;
      }
      if (!ok) continue;
      free += members.size();
      if (picked.size() + members.size() <= count) {
        for (const v1::Device* d : members) picked.push_back(d->address());
      }
    }
    if (picked.size() == count && free > best_free) {
      best_free = free;
      std::sort(picked.begin(), picked.end());
      best = Placement{name, picked};
    }
  }
  return best;
}

TEST(PlaceBySelectorTest, AgreesWithTheLinearScanOnRandomFleets) {
  std::mt19937 rng(7);
  for (int round = 0; round < 40; ++round) {
    FleetState s;
    WriteBatch b;
    b.puts.push_back(TenantRec("t"));
    std::set<std::string> eligible;
    for (int i = 0; i < 12; ++i) {
      const std::string node = absl::StrCat("n", i);
      b.puts.push_back(NodeRec(node));
      b.puts.push_back(GroupedDevices(node, 1 + int(rng() % 8), 1 + int(rng() % 2),
                                      rng() % 2 ? 0x10de : 0x8086));
      if (rng() % 4) eligible.insert(node);
    }
    ASSERT_TRUE(s.Apply(b).ok());
    for (const std::string& n : eligible) s.SetPlacementEligible(n, true);
    for (int c = 0; c < 30; ++c) {
      const uint32_t vendor = std::vector<uint32_t>{0, 0x10de, 0x8086}[rng() % 3];
      const uint32_t count = 1 + rng() % 3;
      std::optional<Placement> want = Reference(s, eligible, {vendor, 0}, count);
      absl::StatusOr<Placement> got = PlaceBySelector(s, Selector(vendor, 0, count), kNoneBusy);
      ASSERT_EQ(got.ok(), want.has_value()) << "round " << round << " container " << c;
      if (!got.ok()) continue;
      ASSERT_EQ(got->node, want->node) << "round " << round << " container " << c;
      ASSERT_EQ(got->devices, want->devices);
      // Take it, so later placements see the holders.
      ASSERT_TRUE(s.Apply(Puts({Rec(Container(absl::StrCat("c", c), "t", got->node, got->devices))}))
                      .ok());
    }
  }
}

}  // namespace
}  // namespace model
}  // namespace iommu
