#include "agent/container_table.h"

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "agent/sysfs_devices.h"
#include "agent/sysfs_tree_for_test.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

struct TestContainer : ContainerBase {
  int payload = 0;
};

BackendDevice Device(const std::string& address, uint32_t group) {
  BackendDevice d;
  d.address = address;
  d.iommu_group = group;
  d.driver = "vfio-pci";
  d.assignable = true;
  return d;
}

std::shared_ptr<TestContainer> NewContainer(std::vector<std::string> addresses,
                                            int payload = 0) {
  auto c = std::make_shared<TestContainer>();
  c->addresses = std::move(addresses);
  c->payload = payload;
  return c;
}

const std::vector<BackendDevice> kScanned = {Device("0000:00:04.0", 4),
                                             Device("0000:00:05.0", 5)};

TEST(ContainerTableTest, HandsOutIncreasingHandlesAndFindsEach) {
  ContainerTable<TestContainer> table;
  const ContainerHandle a = table.Add(NewContainer({"0000:00:04.0"}, 1));
  const ContainerHandle b = table.Add(NewContainer({"0000:00:05.0"}, 2));
  EXPECT_EQ(a, 1u);
  EXPECT_EQ(b, 2u);
  ASSERT_OK_AND_ASSIGN(found, table.Find(b, "ctx"));
  EXPECT_EQ(found->payload, 2);
}

TEST(ContainerTableTest, UnknownHandleIsEnoentNamingContextAndHandle) {
  ContainerTable<TestContainer> table;
  EXPECT_THAT(table.Find(7, "iommufd IOAS_MAP container=7").status(),
              StatusIs(absl::StatusCode::kNotFound,
                       "iommufd IOAS_MAP container=7: ENOENT (no container with handle 7)"));
}

TEST(ContainerTableTest, RefusesDeviceHeldByAnotherContainer) {
  ContainerTable<TestContainer> table;
  const ContainerHandle a = table.Add(NewContainer({"0000:00:04.0"}));
  EXPECT_THAT(table.ResolveGroups("create", kScanned, {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat("0000:00:04.0 is held by container ", a)));
  ASSERT_OK_AND_ASSIGN(groups, table.ResolveGroups("create", kScanned, {"0000:00:05.0"}));
  EXPECT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups.count(5), 1u);
}

TEST(ContainerTableTest, ScanAndResolveGroupsTheScannedDevices) {
  SysfsTreeForTest tree("ScanAndResolve");
  tree.AddDevice("0000:00:04.0", "1af4:1041", 5, "vfio-pci");
  tree.AddDevice("0000:00:06.0", "8086:10d3", 7, "vfio-pci");
  tree.AddDevice("0000:00:06.1", "8086:10d3", 7, "vfio-pci");
  ASSERT_OK_AND_ASSIGN(filter, ParseDeviceFilter("1af4:1041,8086:10d3"));
  SysfsOptions options;
  options.root = tree.root();
  SysfsDevices sysfs(filter, options);
  ContainerTable<TestContainer> table;

  ASSERT_OK_AND_ASSIGN(resolved, table.ScanAndResolve(&sysfs, "create",
                                                      {"0000:00:06.1", "0000:00:06.0"}));
  EXPECT_EQ(resolved.scanned.size(), 3u);
  ASSERT_EQ(resolved.groups.size(), 1u);
  EXPECT_EQ(resolved.groups.at(7),
            (std::vector<std::string>{"0000:00:06.1", "0000:00:06.0"}));

  table.Add(NewContainer({"0000:00:04.0"}));
  EXPECT_THAT(table.ScanAndResolve(&sysfs, "create", {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "create: EBUSY (0000:00:04.0 is held by container 1)"));
  EXPECT_THAT(table.ScanAndResolve(&sysfs, "create", {"0000:00:06.0"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "assign the whole group"));
}

TEST(ContainerTableTest, EraseFreesTheDevicesAndNeverReusesTheHandle) {
  ContainerTable<TestContainer> table;
  const ContainerHandle a = table.Add(NewContainer({"0000:00:04.0"}));
  table.Erase(a);
  EXPECT_THAT(table.Find(a, "ctx").status(), StatusIs(absl::StatusCode::kNotFound, "ENOENT"));
  EXPECT_OK(table.ResolveGroups("create", kScanned, {"0000:00:04.0"}).status());
  EXPECT_EQ(table.Add(NewContainer({"0000:00:04.0"})), a + 1);
  table.Erase(a);  // Unknown by now: nothing happens.
  EXPECT_THAT(table.ResolveGroups("create", kScanned, {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is held by container 2"));
}

TEST(ContainerTableTest, FoundContainerOutlivesErase) {
  ContainerTable<TestContainer> table;
  const ContainerHandle a = table.Add(NewContainer({"0000:00:04.0"}, 9));
  ASSERT_OK_AND_ASSIGN(found, table.Find(a, "ctx"));
  table.Erase(a);
  EXPECT_EQ(found->payload, 9);
}

TEST(ContainerTableTest, ListsMappingsByIova) {
  ContainerTable<TestContainer> table;
  auto c = NewContainer({"0000:00:04.0"});
  {
    absl::MutexLock lock(&c->mu);
    c->mappings.Add(BackendMapping{0x200000, 0x1000, 0x7f0000, true, true});
    c->mappings.Add(BackendMapping{0x100000, 0x2000, 0x7e0000, true, false});
  }
  const ContainerHandle a = table.Add(c);
  ASSERT_OK_AND_ASSIGN(listed, table.ListMappings(a, "ctx"));
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].iova, 0x100000u);
  EXPECT_EQ(listed[1].iova, 0x200000u);
  EXPECT_THAT(table.ListMappings(a + 1, "list").status(),
              StatusIs(absl::StatusCode::kNotFound, "list: ENOENT"));
}

TEST(ContainerTableTest, DestroyedContainerIsEnoent) {
  TestContainer c;
  absl::MutexLock lock(&c.mu);
  EXPECT_OK(CheckNotDestroyed(c, "ctx", 3));
  c.destroyed = true;
  EXPECT_THAT(CheckNotDestroyed(c, "vfio-type1 MAP_DMA container=3", 3),
              StatusIs(absl::StatusCode::kNotFound,
                       "vfio-type1 MAP_DMA container=3: ENOENT (no container with handle 3)"));
}

TEST(ContainerTableTest, ConcurrentAddsGetDistinctHandles) {
  ContainerTable<TestContainer> table;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100;
  std::vector<std::thread> threads;
  std::vector<std::vector<ContainerHandle>> got(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        got[t].push_back(table.Add(NewContainer({absl::StrCat("dev", t, ".", i)})));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::set<ContainerHandle> all;
  for (const auto& v : got) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), size_t{kThreads * kPerThread});
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), ContainerHandle{kThreads * kPerThread});
}

}  // namespace
}  // namespace agent
}  // namespace iommu
