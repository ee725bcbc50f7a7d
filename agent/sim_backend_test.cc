#include "agent/sim_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Code = absl::StatusCode;

constexpr uint64_t kVaddr = 0x7f0000000000;

// Groups: 5 = {04.0}, 6 = {05.0, 05.1}, 7 = {06.0, 06.1!host}.
constexpr char kDevices[] =
    "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,"
    "0000:00:05.1=1234:11e9@6,0000:00:06.0=8086:10d3@7,"
    "0000:00:06.1=8086:10d3@7!e1000e";

std::unique_ptr<SimBackend> MakeBackend(uint32_t max_mappings = 65535) {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
  EXPECT_OK(specs);
  Geometry g = DefaultX86Geometry();
  g.max_mappings = max_mappings;
  absl::StatusOr<std::unique_ptr<SimBackend>> backend =
      SimBackend::Create(*std::move(specs), g);
  EXPECT_OK(backend);
  return *std::move(backend);
}

class SimBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = MakeBackend();
    absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({"0000:00:04.0"});
    ASSERT_OK(h);
    handle_ = *h;
  }

  std::vector<uint64_t> MappedIovas() {
    absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(handle_);
    EXPECT_OK(m);
    std::vector<uint64_t> out;
    for (const BackendMapping& mapping : *m) out.push_back(mapping.iova);
    return out;
  }

  std::unique_ptr<SimBackend> backend_;
  ContainerHandle handle_ = 0;
};

// ---------------------------------------------------------------- specs

TEST(ParseSimDevicesTest, ParsesFlagForm) {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs =
      ParseSimDevices("0000:00:04.0=1234:11e8@5, 0000:00:07.0=8086:10D3@7!host");
  ASSERT_OK(specs);
  ASSERT_THAT(*specs, SizeIs(2));
  EXPECT_EQ((*specs)[0].address, "0000:00:04.0");
  EXPECT_EQ((*specs)[0].vendor_id, 0x1234u);
  EXPECT_EQ((*specs)[0].device_id, 0x11e8u);
  EXPECT_EQ((*specs)[0].iommu_group, 5u);
  EXPECT_EQ((*specs)[0].host_driver, "");
  EXPECT_EQ((*specs)[1].device_id, 0x10d3u);
  EXPECT_EQ((*specs)[1].host_driver, "host");
}

TEST(ParseSimDevicesTest, EmptyFlagMeansNoDevices) {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices("");
  ASSERT_OK(specs);
  EXPECT_THAT(*specs, IsEmpty());
}

TEST(ParseSimDevicesTest, RejectsMalformedSpecsNamingTheRule) {
  EXPECT_THAT(ParseSimDevices("0000:00:04.0"), StatusIs(Code::kInvalidArgument, "missing '='"));
  EXPECT_THAT(ParseSimDevices("0000:00:4.0=1234:11e8@5"),
              StatusIs(Code::kInvalidArgument, "must be a PCI address"));
  EXPECT_THAT(ParseSimDevices("0000:00:04.0=1234:11e8"),
              StatusIs(Code::kInvalidArgument, "missing '@GROUP'"));
  EXPECT_THAT(ParseSimDevices("0000:00:04.0=12345:11e8@5"),
              StatusIs(Code::kInvalidArgument, "two hex ids"));
  EXPECT_THAT(ParseSimDevices("0000:00:04.0=zz:11e8@5"),
              StatusIs(Code::kInvalidArgument, "two hex ids"));
  EXPECT_THAT(ParseSimDevices("0000:00:04.0=1234:11e8@x"),
              StatusIs(Code::kInvalidArgument, "GROUP must be a decimal number"));
  EXPECT_THAT(ParseSimDevices("0000:00:04.0=1234:11e8@5!"),
              StatusIs(Code::kInvalidArgument, "host driver's name"));
  EXPECT_THAT(ParseSimDevices("0000:00:04.0=1234:11e8@5,"),
              StatusIs(Code::kInvalidArgument, "missing '='"));
}

TEST(ParseSimConfigTest, SkipsCommentsAndBlankLines) {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimConfig(
      "# lab box\n\n0000:00:04.0=1234:11e8@5  # nic\n  0000:00:05.0=1234:11e8@6\n");
  ASSERT_OK(specs);
  EXPECT_THAT(*specs, ElementsAre(Field(&SimDeviceSpec::address, "0000:00:04.0"),
                                  Field(&SimDeviceSpec::address, "0000:00:05.0")));
}

TEST(ParseSimConfigTest, ErrorNamesTheLine) {
  EXPECT_THAT(ParseSimConfig("# ok\n0000:00:04.0=1234:11e8@5\nbogus\n"),
              StatusIs(Code::kInvalidArgument, "line 3: sim device \"bogus\""));
}

TEST(ReadSimConfigFileTest, ReadsFileAndReportsMissingOne) {
  const std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/sim.conf");
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("0000:00:04.0=1234:11e8@5\n", f);
  fclose(f);
  absl::StatusOr<std::vector<SimDeviceSpec>> specs = ReadSimConfigFile(path);
  ASSERT_OK(specs);
  EXPECT_THAT(*specs, SizeIs(1));

  EXPECT_THAT(ReadSimConfigFile(path + ".absent"),
              StatusIs(Code::kNotFound, "open sim config"));
}

TEST(SimBackendCreateTest, RejectsDuplicateAddresses) {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs =
      ParseSimDevices("0000:00:04.0=1234:11e8@5,0000:00:04.0=1234:11e8@6");
  ASSERT_OK(specs);
  EXPECT_THAT(SimBackend::Create(*specs),
              StatusIs(Code::kInvalidArgument, "0000:00:04.0 listed twice"));
}

TEST(SimBackendCreateTest, RejectsOverlappingUsableRanges) {
  Geometry g = DefaultX86Geometry();
  g.usable = {{0, 0x1fff}, {0x1000, 0x2fff}};
  EXPECT_THAT(SimBackend::Create({}, g),
              StatusIs(Code::kInvalidArgument, "not sorted after and disjoint"));
}

// ---------------------------------------------------------------- devices

TEST_F(SimBackendTest, ListsDevicesSortedWithDriver) {
  absl::StatusOr<std::vector<BackendDevice>> devices = backend_->ListDevices();
  ASSERT_OK(devices);
  ASSERT_THAT(*devices, SizeIs(5));
  EXPECT_EQ((*devices)[0].address, "0000:00:04.0");
  EXPECT_EQ((*devices)[0].driver, "vfio-pci");
  EXPECT_TRUE((*devices)[0].assignable);
  EXPECT_EQ((*devices)[0].unassignable_reason, "");
  EXPECT_EQ((*devices)[2].vendor_id, 0x1234u);
  EXPECT_EQ((*devices)[2].device_id, 0x11e9u);
  EXPECT_EQ((*devices)[2].iommu_group, 6u);
}

TEST_F(SimBackendTest, HostDriverMakesWholeGroupUnassignable) {
  absl::StatusOr<std::vector<BackendDevice>> devices = backend_->ListDevices();
  ASSERT_OK(devices);
  const BackendDevice& sibling = (*devices)[3];  // 0000:00:06.0
  const BackendDevice& bound = (*devices)[4];    // 0000:00:06.1
  EXPECT_FALSE(sibling.assignable);
  EXPECT_EQ(sibling.unassignable_reason,
            "IOMMU group 7 member 0000:00:06.1 is bound to host driver e1000e, "
            "not vfio-pci");
  EXPECT_FALSE(bound.assignable);
  EXPECT_EQ(bound.driver, "e1000e");
  EXPECT_EQ(bound.unassignable_reason, "bound to host driver e1000e, not vfio-pci");
}

// ---------------------------------------------------------------- containers

TEST_F(SimBackendTest, CreateRefusesEmptyList) {
  EXPECT_THAT(backend_->CreateContainer({}),
              StatusIs(Code::kInvalidArgument,
                       "sim CREATE_CONTAINER devices=[]: EINVAL (no devices)"));
}

TEST_F(SimBackendTest, CreateRefusesUnknownDevice) {
  EXPECT_THAT(backend_->CreateContainer({"0000:00:09.0"}),
              StatusIs(Code::kNotFound, "ENODEV (no device 0000:00:09.0)"));
}

TEST_F(SimBackendTest, CreateRefusesDeviceHeldByAnotherContainer) {
  EXPECT_THAT(backend_->CreateContainer({"0000:00:04.0"}),
              StatusIs(Code::kFailedPrecondition,
                       absl::StrCat("EBUSY (0000:00:04.0 is held by container ",
                                    handle_, ")")));
}

TEST_F(SimBackendTest, CreateRefusesUnassignableDevice) {
  EXPECT_THAT(backend_->CreateContainer({"0000:00:06.0", "0000:00:06.1"}),
              StatusIs(Code::kFailedPrecondition,
                       "EBUSY (0000:00:06.0 is not assignable: IOMMU group 7 "
                       "member 0000:00:06.1 is bound to host driver e1000e"));
}

TEST_F(SimBackendTest, CreateRefusesPartialGroup) {
  EXPECT_THAT(backend_->CreateContainer({"0000:00:05.0"}),
              StatusIs(Code::kInvalidArgument,
                       "EINVAL (group 6 also holds 0000:00:05.1; assign the "
                       "whole group)"));
}

TEST_F(SimBackendTest, CreateRefusesDuplicateDevice) {
  EXPECT_THAT(backend_->CreateContainer({"0000:00:05.0", "0000:00:05.0"}),
              StatusIs(Code::kInvalidArgument, "0000:00:05.0 listed twice"));
}

TEST_F(SimBackendTest, CreateTakesWholeGroup) {
  absl::StatusOr<ContainerHandle> h =
      backend_->CreateContainer({"0000:00:05.1", "0000:00:05.0"});
  ASSERT_OK(h);
  EXPECT_NE(*h, handle_);
}

TEST_F(SimBackendTest, ReportsDefaultX86Geometry) {
  absl::StatusOr<Geometry> g = backend_->GetGeometry(handle_);
  ASSERT_OK(g);
  ASSERT_THAT(g->usable, SizeIs(2));
  EXPECT_EQ(g->usable[0].start, 0u);
  EXPECT_EQ(g->usable[0].last, 0xfedfffffu);
  EXPECT_EQ(g->usable[1].start, 0xfef00000u);
  EXPECT_EQ(g->usable[1].last, 0x7fffffffffu);
  EXPECT_EQ(g->page_size_bitmap, 0x40201000u);
  EXPECT_EQ(g->max_mappings, 65535u);
}

TEST_F(SimBackendTest, DestroyFreesDevicesAndMappings) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  ASSERT_OK(backend_->DestroyContainer(handle_));
  EXPECT_THAT(backend_->ListMappings(handle_),
              StatusIs(Code::kNotFound, "no container with handle"));
  EXPECT_THAT(backend_->GetGeometry(handle_), StatusIs(Code::kNotFound, "ENOENT"));
  EXPECT_THAT(backend_->DestroyContainer(handle_),
              StatusIs(Code::kNotFound, absl::StrCat("sim DESTROY container=", handle_)));
  // The device is free again.
  EXPECT_OK(backend_->CreateContainer({"0000:00:04.0"}));
}

// ---------------------------------------------------------------- map

TEST_F(SimBackendTest, MapsAndListsMappings) {
  ASSERT_OK(backend_->Map(handle_, 0x200000, kVaddr, 0x200000, true, false));
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(handle_);
  ASSERT_OK(m);
  ASSERT_THAT(*m, SizeIs(2));
  EXPECT_EQ((*m)[0].iova, 0x1000u);
  EXPECT_EQ((*m)[1].iova, 0x200000u);
  EXPECT_EQ((*m)[1].size, 0x200000u);
  EXPECT_EQ((*m)[1].vaddr, kVaddr);
  EXPECT_TRUE((*m)[1].readable);
  EXPECT_FALSE((*m)[1].writable);
}

TEST_F(SimBackendTest, MapRefusesZeroSize) {
  EXPECT_THAT(backend_->Map(handle_, 0x1000, kVaddr, 0, true, true),
              StatusIs(Code::kInvalidArgument, "EINVAL (size is 0)"));
}

TEST_F(SimBackendTest, MapRefusesMisalignedIovaSizeOrVaddr) {
  const std::string rule = "must be multiples of the page size 0x1000";
  EXPECT_THAT(backend_->Map(handle_, 0x1800, kVaddr, 0x1000, true, true),
              StatusIs(Code::kInvalidArgument, rule));
  EXPECT_THAT(backend_->Map(handle_, 0x1000, kVaddr, 0x1800, true, true),
              StatusIs(Code::kInvalidArgument, rule));
  EXPECT_THAT(backend_->Map(handle_, 0x1000, kVaddr + 8, 0x1000, true, true),
              StatusIs(Code::kInvalidArgument, rule));
}

TEST_F(SimBackendTest, MapRefusesNoAccess) {
  EXPECT_THAT(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, false, false),
              StatusIs(Code::kInvalidArgument, "neither readable nor writable"));
}

TEST_F(SimBackendTest, MapRefusesMsiWindow) {
  EXPECT_THAT(backend_->Map(handle_, 0xfee00000, kVaddr, 0x1000, true, true),
              StatusIs(Code::kInvalidArgument,
                       "EINVAL (0xfee00000-0xfee00fff is not inside one usable range)"));
}

TEST_F(SimBackendTest, MapRefusesRangeSpanningReservedGap) {
  EXPECT_THAT(backend_->Map(handle_, 0xfed00000, kVaddr, 0x300000, true, true),
              StatusIs(Code::kInvalidArgument, "not inside one usable range"));
}

TEST_F(SimBackendTest, MapRefusesBeyondAddressWidth) {
  EXPECT_THAT(backend_->Map(handle_, 0x8000000000, kVaddr, 0x1000, true, true),
              StatusIs(Code::kInvalidArgument, "not inside one usable range"));
}

TEST_F(SimBackendTest, MapRefusesWrappingRange) {
  EXPECT_THAT(backend_->Map(handle_, 0xfffffffffffff000, kVaddr, 0x2000, true, true),
              StatusIs(Code::kInvalidArgument, "wraps past 2^64"));
}

TEST_F(SimBackendTest, MapRefusesOverlapWithExactMessage) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  EXPECT_THAT(backend_->Map(handle_, 0x1000, kVaddr, 0x2000, true, true),
              StatusIs(Code::kAlreadyExists,
                       absl::StrCat("sim MAP_DMA container=", handle_,
                                    " iova=0x1000 size=0x2000 vaddr=0x7f0000000000: "
                                    "EEXIST (overlaps mapping 0x1000-0x1fff)")));
}

TEST_F(SimBackendTest, MapRefusesOverlapWithMappingBefore) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x3000, true, true));
  EXPECT_THAT(backend_->Map(handle_, 0x3000, kVaddr, 0x1000, true, true),
              StatusIs(Code::kAlreadyExists, "overlaps mapping 0x1000-0x3fff"));
}

TEST_F(SimBackendTest, MapRefusesRangeCoveringMappingInside) {
  ASSERT_OK(backend_->Map(handle_, 0x3000, kVaddr, 0x1000, true, true));
  EXPECT_THAT(backend_->Map(handle_, 0x1000, kVaddr, 0x10000, true, true),
              StatusIs(Code::kAlreadyExists, "overlaps mapping 0x3000-0x3fff"));
}

TEST_F(SimBackendTest, MapAcceptsAdjacentMappings) {
  ASSERT_OK(backend_->Map(handle_, 0x2000, kVaddr, 0x1000, true, true));
  EXPECT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  EXPECT_OK(backend_->Map(handle_, 0x3000, kVaddr, 0x1000, true, true));
}

TEST(SimBackendLimitTest, MapRefusesBeyondMappingLimit) {
  std::unique_ptr<SimBackend> backend = MakeBackend(/*max_mappings=*/2);
  absl::StatusOr<ContainerHandle> h = backend->CreateContainer({"0000:00:04.0"});
  ASSERT_OK(h);
  ASSERT_OK(backend->Map(*h, 0x1000, kVaddr, 0x1000, true, true));
  ASSERT_OK(backend->Map(*h, 0x2000, kVaddr, 0x1000, true, true));
  EXPECT_THAT(backend->Map(*h, 0x3000, kVaddr, 0x1000, true, true),
              StatusIs(Code::kResourceExhausted,
                       "ENOSPC (container holds the maximum of 2 mappings)"));
  // Unmapping makes room again.
  ASSERT_OK(backend->Unmap(*h, 0x1000, 0x1000));
  EXPECT_OK(backend->Map(*h, 0x3000, kVaddr, 0x1000, true, true));
}

TEST_F(SimBackendTest, MapRefusesUnknownHandle) {
  EXPECT_THAT(backend_->Map(999, 0x1000, kVaddr, 0x1000, true, true),
              StatusIs(Code::kNotFound, "no container with handle 999"));
}

// ---------------------------------------------------------------- unmap

TEST_F(SimBackendTest, UnmapRemovesExactMapping) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x2000, true, true));
  absl::StatusOr<uint64_t> unmapped = backend_->Unmap(handle_, 0x1000, 0x2000);
  ASSERT_OK(unmapped);
  EXPECT_EQ(*unmapped, 0x2000u);
  EXPECT_THAT(MappedIovas(), IsEmpty());
}

TEST_F(SimBackendTest, UnmapRemovesSeveralWholeMappings) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  ASSERT_OK(backend_->Map(handle_, 0x3000, kVaddr, 0x2000, true, true));
  ASSERT_OK(backend_->Map(handle_, 0x10000, kVaddr, 0x1000, true, true));
  absl::StatusOr<uint64_t> unmapped = backend_->Unmap(handle_, 0x0, 0x8000);
  ASSERT_OK(unmapped);
  EXPECT_EQ(*unmapped, 0x3000u);
  EXPECT_THAT(MappedIovas(), ElementsAre(0x10000u));
}

TEST_F(SimBackendTest, UnmapRefusesCuttingMappingStart) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x3000, true, true));
  EXPECT_THAT(backend_->Unmap(handle_, 0x0, 0x2000),
              StatusIs(Code::kInvalidArgument,
                       absl::StrCat("sim UNMAP_DMA container=", handle_,
                                    " iova=0x0 size=0x2000: EINVAL (cuts mapping "
                                    "0x1000-0x3fff; unmap whole mappings)")));
  EXPECT_THAT(MappedIovas(), ElementsAre(0x1000u));
}

TEST_F(SimBackendTest, UnmapRefusesCuttingMappingEndAndChangesNothing) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  ASSERT_OK(backend_->Map(handle_, 0x2000, kVaddr, 0x3000, true, true));
  // Covers the first mapping wholly but cuts the second: nothing is unmapped.
  EXPECT_THAT(backend_->Unmap(handle_, 0x1000, 0x2000),
              StatusIs(Code::kInvalidArgument, "cuts mapping 0x2000-0x4fff"));
  EXPECT_THAT(MappedIovas(), ElementsAre(0x1000u, 0x2000u));
}

TEST_F(SimBackendTest, UnmapRefusesMiddleOfMapping) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x3000, true, true));
  EXPECT_THAT(backend_->Unmap(handle_, 0x2000, 0x1000),
              StatusIs(Code::kInvalidArgument, "cuts mapping 0x1000-0x3fff"));
}

TEST_F(SimBackendTest, UnmapOfNothingIsNotFound) {
  ASSERT_OK(backend_->Map(handle_, 0x10000, kVaddr, 0x1000, true, true));
  EXPECT_THAT(backend_->Unmap(handle_, 0x1000, 0x2000),
              StatusIs(Code::kNotFound, "ENOENT (nothing mapped in 0x1000-0x2fff)"));
}

TEST_F(SimBackendTest, UnmapRefusesZeroOrMisalignedSize) {
  EXPECT_THAT(backend_->Unmap(handle_, 0x1000, 0),
              StatusIs(Code::kInvalidArgument, "EINVAL (size is 0)"));
  EXPECT_THAT(backend_->Unmap(handle_, 0x1000, 0x800),
              StatusIs(Code::kInvalidArgument, "multiples of the page size 0x1000"));
}

// ---------------------------------------------------------------- faults

TEST_F(SimBackendTest, InjectedMapErrorFailsOnceAndChangesNothing) {
  backend_->set_next_error(SimOp::kMap, ENOMEM);
  EXPECT_THAT(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true),
              StatusIs(Code::kResourceExhausted,
                       "iova=0x1000 size=0x1000 vaddr=0x7f0000000000: ENOMEM "
                       "(injected by set_next_error)"));
  EXPECT_THAT(MappedIovas(), IsEmpty());
  EXPECT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
}

TEST_F(SimBackendTest, InjectedUnmapErrorKeepsMappings) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  backend_->set_next_error(SimOp::kUnmap, EIO);
  EXPECT_THAT(backend_->Unmap(handle_, 0x1000, 0x1000),
              StatusIs(Code::kInternal, "EIO (injected by set_next_error)"));
  EXPECT_THAT(MappedIovas(), ElementsAre(0x1000u));
}

TEST_F(SimBackendTest, InjectedCreateErrorLeavesDevicesFree) {
  backend_->set_next_error(SimOp::kCreateContainer, EPERM);
  EXPECT_THAT(backend_->CreateContainer({"0000:00:05.0", "0000:00:05.1"}),
              StatusIs(Code::kPermissionDenied, "EPERM (injected"));
  EXPECT_OK(backend_->CreateContainer({"0000:00:05.0", "0000:00:05.1"}));
}

TEST_F(SimBackendTest, InjectedDestroyErrorKeepsContainer) {
  ASSERT_OK(backend_->Map(handle_, 0x1000, kVaddr, 0x1000, true, true));
  backend_->set_next_error(SimOp::kDestroyContainer, EBUSY);
  EXPECT_THAT(backend_->DestroyContainer(handle_),
              StatusIs(Code::kFailedPrecondition, "EBUSY (injected"));
  EXPECT_THAT(MappedIovas(), ElementsAre(0x1000u));
  EXPECT_THAT(backend_->CreateContainer({"0000:00:04.0"}),
              StatusIs(Code::kFailedPrecondition, "is held by container"));
}

TEST_F(SimBackendTest, InjectedErrorsReachEveryOperation) {
  backend_->set_next_error(SimOp::kListDevices, EIO);
  EXPECT_THAT(backend_->ListDevices(), StatusIs(Code::kInternal, "sim LIST_DEVICES: EIO"));
  backend_->set_next_error(SimOp::kGetGeometry, ENODEV);
  EXPECT_THAT(backend_->GetGeometry(handle_),
              StatusIs(Code::kNotFound, "sim GET_GEOMETRY container="));
  backend_->set_next_error(SimOp::kListMappings, EINVAL);
  EXPECT_THAT(backend_->ListMappings(handle_),
              StatusIs(Code::kInvalidArgument, "sim LIST_MAPPINGS container="));
  // Each was one-shot.
  EXPECT_OK(backend_->ListDevices());
  EXPECT_OK(backend_->GetGeometry(handle_));
  EXPECT_OK(backend_->ListMappings(handle_));
}

// ---------------------------------------------------------------- persist/adopt

// The number of fds this process has open (entries of /proc/self/fd, minus
// the one opendir holds).
int OpenFdCount() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n - 3;  // ".", ".." and the DIR's own fd.
}

std::map<std::string, UniqueFd> ToMap(PersistedContainer p) {
  std::map<std::string, UniqueFd> out;
  for (auto& [name, fd] : p.fds) out[name] = std::move(fd);
  return out;
}

class SimAdoptTest : public SimBackendTest {
 protected:
  void SetUp() override {
    SimBackendTest::SetUp();
    ASSERT_OK(backend_->Map(handle_, 0x100000, kVaddr, 0x2000, true, false));
    ASSERT_OK(backend_->Map(handle_, 0x200000, kVaddr + 0x2000, 0x1000, true, true));
    absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(handle_);
    ASSERT_OK(m);
    journal_ = *m;
    absl::StatusOr<PersistedContainer> p = backend_->PersistContainer(handle_);
    ASSERT_OK(p);
    state_ = p->state;
    fds_ = ToMap(*std::move(p));
    // The restarted process: a new backend over the same devices.
    restarted_ = MakeBackend();
  }

  std::unique_ptr<SimBackend> restarted_;
  std::vector<BackendMapping> journal_;
  std::map<std::string, UniqueFd> fds_;
  std::string state_;
};

TEST_F(SimAdoptTest, PersistGivesOneSimContainerMemfdAndNoState) {
  ASSERT_EQ(fds_.size(), 1u);
  ASSERT_EQ(fds_.begin()->first, "sim-container");
  EXPECT_EQ(state_, "");
  char link[256] = {};
  const std::string proc = absl::StrCat("/proc/self/fd/", fds_.begin()->second.get());
  ASSERT_GT(readlink(proc.c_str(), link, sizeof(link) - 1), 0);
  EXPECT_THAT(std::string(link), ::testing::StartsWith("/memfd:sim-container-1"));
  EXPECT_EQ(fcntl(fds_.begin()->second.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_F(SimAdoptTest, PersistUnknownHandleIsNotFoundNamingIt) {
  EXPECT_THAT(backend_->PersistContainer(99),
              StatusIs(Code::kNotFound, "no container with handle 99"));
}

TEST_F(SimAdoptTest, AdoptRoundTripKeepsDevicesGeometryAndMappings) {
  absl::StatusOr<ContainerHandle> h =
      restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds_), state_, journal_);
  ASSERT_OK(h);
  EXPECT_THAT(restarted_->CreateContainer({"0000:00:04.0"}),
              StatusIs(Code::kFailedPrecondition, "is held by container"));
  absl::StatusOr<Geometry> g = restarted_->GetGeometry(*h);
  ASSERT_OK(g);
  EXPECT_EQ(g->page_size_bitmap, DefaultX86Geometry().page_size_bitmap);
  EXPECT_EQ(g->usable.size(), DefaultX86Geometry().usable.size());
  absl::StatusOr<std::vector<BackendMapping>> m = restarted_->ListMappings(*h);
  ASSERT_OK(m);
  EXPECT_THAT(*m, ElementsAre(Field(&BackendMapping::iova, 0x100000u),
                              Field(&BackendMapping::iova, 0x200000u)));
  EXPECT_TRUE((*m)[1].writable);
  EXPECT_FALSE((*m)[0].writable);
  // Map/Unmap/DeviceFds/Persist work on the adopted handle.
  EXPECT_OK(restarted_->Map(*h, 0x300000, kVaddr, 0x1000, true, true));
  EXPECT_THAT(restarted_->Map(*h, 0x100000, kVaddr, 0x1000, true, true),
              StatusIs(Code::kAlreadyExists, "overlaps mapping"));
  absl::StatusOr<uint64_t> unmapped = restarted_->Unmap(*h, 0x100000, 0x2000);
  ASSERT_OK(unmapped);
  EXPECT_EQ(*unmapped, 0x2000u);
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> dev =
      restarted_->DeviceFds(*h);
  ASSERT_OK(dev);
  EXPECT_THAT(*dev, SizeIs(1));
  absl::StatusOr<PersistedContainer> again = restarted_->PersistContainer(*h);
  ASSERT_OK(again);
  EXPECT_THAT(again->fds, SizeIs(1));
  // Destroy frees the devices.
  EXPECT_OK(restarted_->DestroyContainer(*h));
  EXPECT_OK(restarted_->CreateContainer({"0000:00:04.0"}));
}

TEST_F(SimAdoptTest, AdoptedContainerKeepsTheMarkerUntilDestroyed) {
  const int before = OpenFdCount();
  absl::StatusOr<ContainerHandle> h =
      restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds_), state_, journal_);
  ASSERT_OK(h);
  EXPECT_EQ(OpenFdCount(), before);  // The marker moved into the container.
  ASSERT_OK(restarted_->DestroyContainer(*h));
  EXPECT_EQ(OpenFdCount(), before - 1);
}

TEST_F(SimAdoptTest, MissingFdIsFailedPreconditionAndAdoptsNothing) {
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:04.0"}, {}, state_, journal_),
              StatusIs(Code::kFailedPrecondition,
                       "fd sim-container: missing (the fd store lost it)"));
  EXPECT_OK(restarted_->CreateContainer({"0000:00:04.0"}));
}

TEST_F(SimAdoptTest, ExtraFdIsInvalidArgumentNamingItAndClosesAll) {
  fds_["group.12"] = UniqueFd(memfd_create("extra", MFD_CLOEXEC));
  const int before = OpenFdCount();
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds_), state_,
                                         journal_),
              StatusIs(Code::kInvalidArgument, "unknown fds [group.12]"));
  EXPECT_EQ(OpenFdCount(), before - 2);
}

TEST_F(SimAdoptTest, WrongKindOfFdIsFailedPreconditionAndClosesIt) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ::close(p[1]);
  std::map<std::string, UniqueFd> fds;
  fds["sim-container"] = UniqueFd(p[0]);
  const int before = OpenFdCount();
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds), state_, journal_),
              StatusIs(Code::kFailedPrecondition,
                       "fd sim-container: not a sim container memfd (it is \"pipe:"));
  EXPECT_EQ(OpenFdCount(), before - 1);

  fds["sim-container"] = UniqueFd(memfd_create("sim-device-0000:00:04.0", MFD_CLOEXEC));
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds), state_, journal_),
              StatusIs(Code::kFailedPrecondition, "not a sim container memfd"));
  EXPECT_EQ(OpenFdCount(), before - 1);
}

TEST_F(SimAdoptTest, BadStateIsInvalidArgumentAndClosesTheFd) {
  const int before = OpenFdCount();
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds_), "ioas=3",
                                         journal_),
              StatusIs(Code::kInvalidArgument, "state: the sim persists no state"));
  EXPECT_EQ(OpenFdCount(), before - 1);
}

TEST_F(SimAdoptTest, OverlappingJournalMappingsAreInvalidArgument) {
  journal_.push_back(BackendMapping{0x101000, 0x1000, kVaddr, true, true});
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds_), state_,
                                         journal_),
              StatusIs(Code::kInvalidArgument, "mappings: iova=0x101000"));
}

TEST_F(SimAdoptTest, DeviceHeldByAnotherContainerIsFailedPreconditionAndClosesTheFd) {
  ASSERT_OK(restarted_->CreateContainer({"0000:00:04.0"}));
  const int before = OpenFdCount();
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:04.0"}, std::move(fds_), state_,
                                         journal_),
              StatusIs(Code::kFailedPrecondition, "0000:00:04.0 is held by container 1"));
  EXPECT_EQ(OpenFdCount(), before - 1);
}

TEST_F(SimAdoptTest, UnknownDeviceIsNotFound) {
  EXPECT_THAT(restarted_->AdoptContainer({"0000:00:09.0"}, std::move(fds_), state_,
                                         journal_),
              StatusIs(Code::kNotFound, "no device 0000:00:09.0"));
}

// ---------------------------------------------------------------- threads

TEST_F(SimBackendTest, ConcurrentDisjointMapsAllSucceed) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const uint64_t iova = (static_cast<uint64_t>(t) * kPerThread + i + 1) * 0x1000;
        EXPECT_OK(backend_->Map(handle_, iova, kVaddr, 0x1000, true, true));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_THAT(MappedIovas(), SizeIs(kThreads * kPerThread));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
