#include "agent/sysfs_devices.h"

#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "agent/sysfs_tree_for_test.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class SysfsDevicesTest : public ::testing::Test {
 protected:
  SysfsDevicesTest() : tree_(::testing::UnitTest::GetInstance()->current_test_info()->name()) {
    tree_.AddDevice("0000:00:04.0", "1af4:1041", 5, "vfio-pci");
    tree_.AddDevice("0000:00:06.0", "8086:10d3", 7, "vfio-pci");
    tree_.AddDevice("0000:00:06.1", "8086:10d3", 7, "e1000e");
    tree_.AddDevice("0000:00:1f.0", "8086:2918", 9, "lpc_ich");  // Never allowlisted.
    tree_.AddCdev("0000:00:04.0", "vfio3");
  }

  std::unique_ptr<SysfsDevices> Make(const std::string& flag, bool managed) {
    absl::StatusOr<DeviceFilter> filter = ParseDeviceFilter(flag);
    EXPECT_OK(filter);
    SysfsOptions options;
    options.root = tree_.root();
    options.managed = managed;
    options.on_write = [this](const std::string& p, const std::string& d) { tree_.OnWrite(p, d); };
    return std::make_unique<SysfsDevices>(*filter, options);
  }

  SysfsTreeForTest tree_;
};

TEST(DeviceFilterTest, ParsesAddressesAndIds) {
  absl::StatusOr<DeviceFilter> f = ParseDeviceFilter("0000:00:04.0, 8086:10d3,1af4:*");
  ASSERT_OK(f);
  EXPECT_TRUE(f->Matches("0000:00:04.0", 0, 0));
  EXPECT_TRUE(f->Matches("0000:00:09.0", 0x8086, 0x10d3));
  EXPECT_TRUE(f->Matches("0000:00:09.0", 0x1af4, 0x1234));
  EXPECT_FALSE(f->Matches("0000:00:09.0", 0x8086, 0x10d4));
  absl::StatusOr<DeviceFilter> empty = ParseDeviceFilter("");
  ASSERT_OK(empty);
  EXPECT_FALSE(empty->Matches("0000:00:04.0", 0x1af4, 0x1041));
}

TEST(DeviceFilterTest, RejectsMalformedEntries) {
  EXPECT_THAT(ParseDeviceFilter("0000:00:04"),
              StatusIs(absl::StatusCode::kInvalidArgument, "devices: entry \"0000:00:04\""));
  EXPECT_THAT(ParseDeviceFilter("zzzz:1041"),
              StatusIs(absl::StatusCode::kInvalidArgument, "bad VENDOR id"));
  EXPECT_THAT(ParseDeviceFilter("0000:00:04.9"),
              StatusIs(absl::StatusCode::kInvalidArgument, "0000:00:04.9"));
}

TEST_F(SysfsDevicesTest, GroupWithMemberOnHostDriverIsUnassignable) {
  absl::StatusOr<std::vector<BackendDevice>> devices =
      Make("0000:00:04.0,8086:10d3", false)->Scan();
  ASSERT_OK(devices);
  ASSERT_EQ(devices->size(), 3u);  // 00:1f.0 is not on the allowlist.
  const BackendDevice& a = (*devices)[0];
  EXPECT_EQ(a.address, "0000:00:04.0");
  EXPECT_EQ(a.vendor_id, 0x1af4u);
  EXPECT_EQ(a.device_id, 0x1041u);
  EXPECT_EQ(a.iommu_group, 5u);
  EXPECT_EQ(a.driver, "vfio-pci");
  EXPECT_TRUE(a.assignable) << a.unassignable_reason;
  const BackendDevice& b = (*devices)[1];
  EXPECT_FALSE(b.assignable);
  EXPECT_EQ(b.unassignable_reason,
            "IOMMU group 7 member 0000:00:06.1 is bound to driver e1000e, not vfio-pci");
  const BackendDevice& c = (*devices)[2];
  EXPECT_FALSE(c.assignable);
  EXPECT_EQ(c.unassignable_reason, "bound to driver e1000e, not vfio-pci");
}

TEST_F(SysfsDevicesTest, GroupMemberOffTheAllowlistMakesGroupUnassignable) {
  absl::StatusOr<std::vector<BackendDevice>> devices = Make("0000:00:06.0", true)->Scan();
  ASSERT_OK(devices);
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_FALSE((*devices)[0].assignable);
  EXPECT_THAT((*devices)[0].unassignable_reason,
              HasSubstr("member 0000:00:06.1 (driver e1000e) is not on the --devices allowlist"));
}

TEST_F(SysfsDevicesTest, ManagedModeCountsHostBoundGroupsAsAssignable) {
  absl::StatusOr<std::vector<BackendDevice>> devices = Make("8086:10d3", true)->Scan();
  ASSERT_OK(devices);
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_TRUE((*devices)[0].assignable) << (*devices)[0].unassignable_reason;
  EXPECT_TRUE((*devices)[1].assignable);
}

TEST_F(SysfsDevicesTest, FindsVfioCdev) {
  auto sysfs = Make("1af4:*", false);
  absl::StatusOr<std::string> path = sysfs->VfioCdevPath("0000:00:04.0");
  ASSERT_OK(path);
  EXPECT_EQ(*path, "/dev/vfio/devices/vfio3");
  EXPECT_THAT(sysfs->VfioCdevPath("0000:00:06.0"),
              StatusIs(absl::StatusCode::kNotFound, "CONFIG_VFIO_DEVICE_CDEV"));
}

TEST_F(SysfsDevicesTest, ManagedClaimWritesInOrderAndReleaseRestores) {
  auto sysfs = Make("8086:10d3", true);
  absl::StatusOr<GroupClaim> claim = sysfs->ClaimGroup(7);
  ASSERT_OK(claim);
  EXPECT_EQ(tree_.DriverOf("0000:00:06.1"), "vfio-pci");
  EXPECT_THAT(claim->moved, ElementsAre(std::make_pair(std::string("0000:00:06.1"),
                                                       std::string("e1000e"))));
  EXPECT_THAT(tree_.writes(),
              ElementsAre("/bus/pci/devices/0000:00:06.1/driver_override <- vfio-pci",
                          "/bus/pci/devices/0000:00:06.1/driver/unbind <- 0000:00:06.1",
                          "/bus/pci/drivers_probe <- 0000:00:06.1"));
  ASSERT_OK(sysfs->ReleaseGroup(*claim));
  EXPECT_EQ(tree_.DriverOf("0000:00:06.1"), "e1000e");
  EXPECT_EQ(tree_.DriverOf("0000:00:06.0"), "vfio-pci");  // Never moved.
  EXPECT_THAT(std::vector<std::string>(tree_.writes().begin() + 3, tree_.writes().end()),
              ElementsAre("/bus/pci/devices/0000:00:06.1/driver_override <- ",
                          "/bus/pci/devices/0000:00:06.1/driver/unbind <- 0000:00:06.1",
                          "/bus/pci/drivers_probe <- 0000:00:06.1"));
}

TEST_F(SysfsDevicesTest, FailedClaimGivesBackTheMembersAlreadyMoved) {
  tree_.AddDevice("0000:00:08.0", "8086:10d3", 11, "e1000e");
  tree_.AddDevice("0000:00:08.1", "8086:10d3", 11, "igb");
  tree_.FailVfioProbe("0000:00:08.1");
  auto sysfs = Make("8086:10d3", true);
  EXPECT_THAT(sysfs->ClaimGroup(11),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "0000:00:08.1: drivers_probe left it on no driver, not vfio-pci"));
  EXPECT_EQ(tree_.DriverOf("0000:00:08.0"), "e1000e");
  EXPECT_EQ(tree_.DriverOf("0000:00:08.1"), "igb");
}

TEST_F(SysfsDevicesTest, ClaimRefusesMembersOffTheAllowlist) {
  auto sysfs = Make("0000:00:06.0", true);
  EXPECT_THAT(sysfs->ClaimGroup(7), StatusIs(absl::StatusCode::kFailedPrecondition,
                                             "0000:00:06.1 (driver e1000e) is not on the"));
  EXPECT_TRUE(tree_.writes().empty());
  auto strict = Make("8086:10d3", false);
  EXPECT_THAT(strict->ClaimGroup(7),
              StatusIs(absl::StatusCode::kFailedPrecondition, "not in managed mode"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
