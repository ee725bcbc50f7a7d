// VfioType1Backend and IommufdBackend against FakeKernelOps and a fake sysfs
// tree: the exact ioctl sequences, error propagation, and that every fd
// opened is closed on every path. Also SimBackend::DeviceFds.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "agent/fake_kernel_ops.h"
#include "agent/iommufd_backend.h"
#include "agent/kernel_uapi.h"
#include "agent/log.h"
#include "agent/real_backend_util.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "agent/sysfs_devices.h"
#include "agent/sysfs_tree_for_test.h"
#include "agent/vfio_type1_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kA[] = "0000:00:04.0";
constexpr char kB0[] = "0000:00:06.0";
constexpr char kB1[] = "0000:00:06.1";

class RealBackendTest : public ::testing::Test {
 protected:
  RealBackendTest()
      : tree_(::testing::UnitTest::GetInstance()->current_test_info()->name()) {
    SetMinLogLevel(LogLevel::kError);
    tree_.AddDevice(kA, "1af4:1041", 5, "vfio-pci");
    tree_.AddDevice(kB0, "8086:10d3", 7, "vfio-pci");
    tree_.AddDevice(kB1, "8086:10d3", 7, "vfio-pci");
    tree_.AddCdev(kA, "vfio0");
    tree_.AddCdev(kB0, "vfio1");
    tree_.AddCdev(kB1, "vfio2");
    ops_.AddGroup(5, {kA});
    ops_.AddGroup(7, {kB0, kB1});
    ops_.AddCdev("/dev/vfio/devices/vfio0", kA);
    ops_.AddCdev("/dev/vfio/devices/vfio1", kB0);
    ops_.AddCdev("/dev/vfio/devices/vfio2", kB1);
    absl::StatusOr<DeviceFilter> filter = ParseDeviceFilter("1af4:1041,8086:10d3");
    EXPECT_OK(filter);
    SysfsOptions options;
    options.root = tree_.root();
    sysfs_ = std::make_unique<SysfsDevices>(*filter, options);
  }

  void ExpectNothingOpen() {
    EXPECT_THAT(ops_.open_fds(), IsEmpty());
    EXPECT_EQ(ops_.bad_closes(), 0);
  }

  SysfsTreeForTest tree_;
  FakeKernelOps ops_;
  std::unique_ptr<SysfsDevices> sysfs_;
};

// ---- vfio-type1 --------------------------------------------------------------

class Type1Test : public RealBackendTest {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<VfioType1Backend>> b =
        VfioType1Backend::Create(&ops_, sysfs_.get());
    ASSERT_OK(b);
    backend_ = *std::move(b);
    ops_.ClearLog();
  }
  std::unique_ptr<VfioType1Backend> backend_;
};

TEST_F(RealBackendTest, Type1CreateChecksApiVersionAndExtension) {
  ASSERT_OK(VfioType1Backend::Create(&ops_, sysfs_.get()));
  EXPECT_THAT(ops_.log(), ElementsAre("open /dev/vfio/vfio -> fd100",
                                      "ioctl fd100 VFIO_GET_API_VERSION",
                                      "ioctl fd100 VFIO_CHECK_EXTENSION", "close fd100"));
  ops_.set_api_version(1);
  EXPECT_THAT(VfioType1Backend::Create(&ops_, sysfs_.get()),
              StatusIs(absl::StatusCode::kFailedPrecondition, "kernel reports 1"));
  ops_.set_api_version(0);
  ops_.set_type1v2_supported(false);
  EXPECT_THAT(VfioType1Backend::Create(&ops_, sysfs_.get()),
              StatusIs(absl::StatusCode::kFailedPrecondition, "VFIO_TYPE1v2_IOMMU"));
  ops_.set_has_container(false);
  EXPECT_THAT(VfioType1Backend::Create(&ops_, sysfs_.get()),
              StatusIs(absl::StatusCode::kNotFound, "open /dev/vfio/vfio"));
  ExpectNothingOpen();
}

TEST_F(Type1Test, CreateIssuesTheIoctlsInOrderAndReadsGeometry) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kB0, kB1, kA});
  ASSERT_OK(h);
  EXPECT_THAT(ops_.log(),
              ElementsAre("open /dev/vfio/vfio -> fd101", "open /dev/vfio/5 -> fd102",
                          "ioctl fd102 VFIO_GROUP_GET_STATUS",
                          "ioctl fd102 VFIO_GROUP_SET_CONTAINER",
                          "open /dev/vfio/7 -> fd103", "ioctl fd103 VFIO_GROUP_GET_STATUS",
                          "ioctl fd103 VFIO_GROUP_SET_CONTAINER", "ioctl fd101 VFIO_SET_IOMMU",
                          "ioctl fd101 VFIO_IOMMU_GET_INFO",
                          "ioctl fd103 VFIO_GROUP_GET_DEVICE_FD",
                          "ioctl fd103 VFIO_GROUP_GET_DEVICE_FD",
                          "ioctl fd102 VFIO_GROUP_GET_DEVICE_FD"));
  absl::StatusOr<Geometry> g = backend_->GetGeometry(*h);
  ASSERT_OK(g);
  EXPECT_EQ(g->page_size_bitmap, 0x40201000u);
  EXPECT_EQ(g->max_mappings, 65535u);
  ASSERT_EQ(g->usable.size(), 2u);
  EXPECT_EQ(g->usable[0].last, 0xfedfffffu);
  EXPECT_EQ(g->usable[1].start, 0xfef00000u);
}

TEST_F(Type1Test, RefusesPartialGroupUnknownAndHeldDevices) {
  EXPECT_THAT(backend_->CreateContainer({kB0}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "group 7 also holds 0000:00:06.1; assign the whole group"));
  EXPECT_THAT(backend_->CreateContainer({"0000:00:09.0"}),
              StatusIs(absl::StatusCode::kNotFound, "no device 0000:00:09.0"));
  ASSERT_OK(backend_->CreateContainer({kA}));
  EXPECT_THAT(backend_->CreateContainer({kA}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "held by container 1"));
}

TEST_F(Type1Test, NotViableGroupIsBusy) {
  ops_.AddGroup(5, {kA}, /*viable=*/false);
  EXPECT_THAT(backend_->CreateContainer({kA}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "VFIO_GROUP_GET_STATUS group=5: not viable"));
  ExpectNothingOpen();
}

class Type1FailureTest : public Type1Test,
                         public ::testing::WithParamInterface<unsigned long> {};

TEST_P(Type1FailureTest, EveryStepsErrorNamesTheIoctlAndClosesEverything) {
  ops_.set_next_error(GetParam(), EPERM);
  EXPECT_THAT(backend_->CreateContainer({kA, kB0, kB1}),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       absl::StrCat(IoctlName(GetParam()))));
  ExpectNothingOpen();
  // Nothing is held: the same devices can be used right away.
  EXPECT_OK(backend_->CreateContainer({kA, kB0, kB1}));
}

INSTANTIATE_TEST_SUITE_P(Steps, Type1FailureTest,
                         ::testing::Values(uapi::kVfioGroupGetStatus,
                                           uapi::kVfioGroupSetContainer,
                                           uapi::kVfioSetIommu, uapi::kVfioIommuGetInfo,
                                           uapi::kVfioGroupGetDeviceFd));

TEST_F(Type1Test, OpenFailureOfSecondGroupClosesTheFirst) {
  ops_.set_next_open_error("/dev/vfio/7", EBUSY);
  EXPECT_THAT(backend_->CreateContainer({kA, kB0, kB1}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "open /dev/vfio/7: EBUSY"));
  ExpectNothingOpen();
}

TEST_F(Type1Test, MapUnmapAndListMappings) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kA});
  ASSERT_OK(h);
  ASSERT_OK(backend_->Map(*h, 0x100000, 0x7f0000000000, 0x2000, true, true));
  ASSERT_OK(backend_->Map(*h, 0x200000, 0x7f0000100000, 0x1000, true, false));
  EXPECT_THAT(backend_->Map(*h, 0x101000, 0x7f0000200000, 0x1000, true, false),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       "VFIO_IOMMU_MAP_DMA container=fd101 iova=0x101000 size=0x1000"));
  absl::StatusOr<std::vector<BackendMapping>> ms = backend_->ListMappings(*h);
  ASSERT_OK(ms);
  ASSERT_EQ(ms->size(), 2u);
  EXPECT_EQ((*ms)[1].vaddr, 0x7f0000100000u);
  EXPECT_FALSE((*ms)[1].writable);
  EXPECT_THAT(backend_->Unmap(*h, 0x100000, 0x1000),
              StatusIs(absl::StatusCode::kInvalidArgument, "VFIO_IOMMU_UNMAP_DMA"));
  EXPECT_THAT(backend_->Unmap(*h, 0x300000, 0x1000),
              StatusIs(absl::StatusCode::kNotFound, "nothing mapped"));
  absl::StatusOr<uint64_t> bytes = backend_->Unmap(*h, 0, 0x1000000);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, 0x3000u);
  ms = backend_->ListMappings(*h);
  ASSERT_OK(ms);
  EXPECT_TRUE(ms->empty());
}

TEST_F(Type1Test, DestroyUnmapsAllThenClosesDevicesGroupsContainer) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kA});
  ASSERT_OK(h);
  ASSERT_OK(backend_->Map(*h, 0x100000, 0x7f0000000000, 0x2000, true, true));
  ops_.ClearLog();
  ASSERT_OK(backend_->DestroyContainer(*h));
  EXPECT_THAT(ops_.log(), ElementsAre("ioctl fd101 VFIO_IOMMU_UNMAP_DMA", "close fd103",
                                      "ioctl fd102 VFIO_GROUP_UNSET_CONTAINER",
                                      "close fd102", "close fd101"));
  ExpectNothingOpen();
  EXPECT_THAT(backend_->Map(*h, 0x100000, 0x7f0000000000, 0x1000, true, true),
              StatusIs(absl::StatusCode::kNotFound, "no container with handle 1"));
  EXPECT_OK(backend_->CreateContainer({kA}));  // Released.
}

TEST_F(Type1Test, DeviceFdsAreDupsOfTheDeviceFdsOnly) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kB0, kB1});
  ASSERT_OK(h);
  ops_.ClearLog();
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> fds = backend_->DeviceFds(*h);
  ASSERT_OK(fds);
  ASSERT_EQ(fds->size(), 2u);
  EXPECT_EQ((*fds)[0].first, kB0);
  EXPECT_EQ((*fds)[1].first, kB1);
  EXPECT_GE(fcntl((*fds)[0].second.get(), F_GETFD), 0);
  // fd101 container, fd102 group, fd103/fd104 devices.
  EXPECT_THAT(ops_.log(), ElementsAre("dup fd103", "dup fd104"));
  EXPECT_THAT(backend_->DeviceFds(99), StatusIs(absl::StatusCode::kNotFound, "handle 99"));
}

// ---- iommufd -------------------------------------------------------------------

class IommufdTest : public RealBackendTest {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<IommufdBackend>> b =
        IommufdBackend::Create(&ops_, sysfs_.get(), 4096);
    ASSERT_OK(b);
    backend_ = *std::move(b);
    ops_.ClearLog();
  }
  std::unique_ptr<IommufdBackend> backend_;
};

TEST_F(IommufdTest, CreateIssuesTheIoctlsInOrderAndReadsGeometry) {
  ops_.set_ioas_ranges({{0, 0xfedfffff}, {0xfef00000, 0xfffffffffff}}, 1);
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kA});
  ASSERT_OK(h);
  EXPECT_THAT(ops_.log(),
              ElementsAre("open /dev/iommu -> fd101", "ioctl fd101 IOMMU_IOAS_ALLOC",
                          "open /dev/vfio/devices/vfio0 -> fd102",
                          "ioctl fd102 VFIO_DEVICE_BIND_IOMMUFD",
                          "ioctl fd102 VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                          "ioctl fd101 IOMMU_IOAS_IOVA_RANGES -> EMSGSIZE",
                          "ioctl fd101 IOMMU_IOAS_IOVA_RANGES"));
  absl::StatusOr<Geometry> g = backend_->GetGeometry(*h);
  ASSERT_OK(g);
  EXPECT_EQ(g->page_size_bitmap, 4096u);
  EXPECT_EQ(g->max_mappings, 0u);
  ASSERT_EQ(g->usable.size(), 2u);
  EXPECT_EQ(g->usable[1].last, 0xfffffffffffu);
  EXPECT_EQ(ops_.attached_devices(), 1);
}

TEST_F(IommufdTest, EachContainerGetsItsOwnIommufdContext) {
  ASSERT_OK(backend_->CreateContainer({kA}));
  ASSERT_OK(backend_->CreateContainer({kB0, kB1}));
  int iommufds = 0;
  for (const std::string& line : ops_.log()) iommufds += line.rfind("open /dev/iommu", 0) == 0;
  EXPECT_EQ(iommufds, 2);
}

class IommufdFailureTest : public IommufdTest,
                           public ::testing::WithParamInterface<unsigned long> {};

TEST_P(IommufdFailureTest, EveryStepsErrorNamesTheIoctlAndClosesEverything) {
  ops_.set_next_error(GetParam(), ENODEV);
  EXPECT_THAT(backend_->CreateContainer({kB0, kB1}),
              StatusIs(absl::StatusCode::kNotFound, IoctlName(GetParam())));
  ExpectNothingOpen();
  EXPECT_EQ(ops_.attached_devices(), 0);
  EXPECT_OK(backend_->CreateContainer({kB0, kB1}));
}

INSTANTIATE_TEST_SUITE_P(Steps, IommufdFailureTest,
                         ::testing::Values(uapi::kIommuIoasAlloc, uapi::kVfioDeviceBindIommufd,
                                           uapi::kVfioDeviceAttachIommufdPt,
                                           uapi::kIommuIoasIovaRanges));

TEST_F(IommufdTest, MissingCdevIsNotFound) {
  tree_.AddDevice("0000:00:07.0", "1af4:1041", 8, "vfio-pci");
  EXPECT_THAT(backend_->CreateContainer({"0000:00:07.0"}),
              StatusIs(absl::StatusCode::kNotFound, "has no VFIO device cdev"));
  ExpectNothingOpen();
}

TEST_F(IommufdTest, MapUnmapUseFixedIovaAndReportBytes) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kA});
  ASSERT_OK(h);
  ASSERT_OK(backend_->Map(*h, 0x100000, 0x7f0000000000, 0x2000, true, false));
  EXPECT_EQ(ops_.ioas_mappings(1).size(), 1u);
  EXPECT_THAT(backend_->Map(*h, 0x100000, 0x7f0000000000, 0x1000, false, false),
              StatusIs(absl::StatusCode::kInvalidArgument, "IOMMU_IOAS_MAP iommufd=fd101 ioas=1"));
  ops_.ClearLog();
  EXPECT_THAT(backend_->Unmap(*h, 0x101000, 0x1000),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "cuts mapping 0x100000-0x101fff; unmap whole mappings"));
  EXPECT_THAT(ops_.log(), IsEmpty());  // Refused before the kernel.
  absl::StatusOr<uint64_t> bytes = backend_->Unmap(*h, 0x100000, 0x2000);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, 0x2000u);
  EXPECT_THAT(backend_->Unmap(*h, 0x100000, 0x2000),
              StatusIs(absl::StatusCode::kNotFound, "IOMMU_IOAS_UNMAP"));
  EXPECT_THAT(backend_->Unmap(*h, 0x100000, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, "size is 0"));
}

// Regression (backend conformance suite, 6.12 VM): IOMMU_IOAS_UNMAP accepted
// iova=0x101800 size=0x1800 and unmapped the page at 0x102000.
TEST_F(IommufdTest, RefusesMisalignedUnmapBeforeTheKernel) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kA});
  ASSERT_OK(h);
  ASSERT_OK(backend_->Map(*h, 0x102000, 0x7f0000000000, 0x1000, true, true));
  ops_.ClearLog();
  EXPECT_THAT(backend_->Unmap(*h, 0x101800, 0x1800),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "EINVAL (iova and size must be multiples of the page size 0x1000)"));
  EXPECT_THAT(backend_->Unmap(*h, 0x102000, 0x1800),
              StatusIs(absl::StatusCode::kInvalidArgument, "EINVAL"));
  EXPECT_THAT(ops_.log(), IsEmpty());  // Refused before the kernel.
  EXPECT_EQ(ops_.ioas_mappings(1).size(), 1u);
  absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(*h);
  ASSERT_OK(m);
  EXPECT_EQ(m->size(), 1u);
}

TEST_F(IommufdTest, DestroyDetachesThenDestroysTheIoasThenCloses) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kB0, kB1});
  ASSERT_OK(h);
  ASSERT_OK(backend_->Map(*h, 0x100000, 0x7f0000000000, 0x2000, true, true));
  ops_.ClearLog();
  ASSERT_OK(backend_->DestroyContainer(*h));
  EXPECT_THAT(ops_.log(), ElementsAre("ioctl fd102 VFIO_DEVICE_DETACH_IOMMUFD_PT",
                                      "ioctl fd103 VFIO_DEVICE_DETACH_IOMMUFD_PT",
                                      "ioctl fd101 IOMMU_DESTROY", "close fd102", "close fd103",
                                      "close fd101"));
  ExpectNothingOpen();
}

TEST_F(IommufdTest, FailedDestroyReattachesAndLeavesTheContainer) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kB0, kB1});
  ASSERT_OK(h);
  ASSERT_OK(backend_->Map(*h, 0x100000, 0x7f0000000000, 0x2000, true, true));
  ops_.set_next_error(uapi::kIommuDestroy, EBUSY);
  EXPECT_THAT(backend_->DestroyContainer(*h),
              StatusIs(absl::StatusCode::kFailedPrecondition, "IOMMU_DESTROY iommufd=fd101 id=1"));
  EXPECT_EQ(ops_.attached_devices(), 2);
  absl::StatusOr<std::vector<BackendMapping>> ms = backend_->ListMappings(*h);
  ASSERT_OK(ms);
  EXPECT_EQ(ms->size(), 1u);
  ASSERT_OK(backend_->DestroyContainer(*h));
  ExpectNothingOpen();
}

TEST_F(IommufdTest, DeviceFdsAreDupsOfTheCdevs) {
  absl::StatusOr<ContainerHandle> h = backend_->CreateContainer({kA});
  ASSERT_OK(h);
  ops_.ClearLog();
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> fds = backend_->DeviceFds(*h);
  ASSERT_OK(fds);
  ASSERT_EQ(fds->size(), 1u);
  EXPECT_EQ((*fds)[0].first, kA);
  EXPECT_THAT(ops_.log(), ElementsAre("dup fd102"));  // Never fd101, the iommufd.
}

// ---- persist / adopt (a restarted agent) -----------------------------------------

std::map<std::string, UniqueFd> ToMap(PersistedContainer p) {
  std::map<std::string, UniqueFd> out;
  for (auto& [name, fd] : p.fds) out[name] = std::move(fd);
  return out;
}

std::vector<std::string> Names(const PersistedContainer& p) {
  std::vector<std::string> out;
  for (const auto& [name, fd] : p.fds) out.push_back(name);
  return out;
}

// A real fd of the wrong kind: the read end of a pipe.
UniqueFd Pipe() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return UniqueFd();
  ::close(p[1]);
  return UniqueFd(p[0]);
}

void ExpectSameGeometry(const Geometry& a, const Geometry& b) {
  EXPECT_EQ(a.page_size_bitmap, b.page_size_bitmap);
  EXPECT_EQ(a.max_mappings, b.max_mappings);
  ASSERT_EQ(a.usable.size(), b.usable.size());
  for (size_t i = 0; i < a.usable.size(); ++i) {
    EXPECT_EQ(a.usable[i].start, b.usable[i].start);
    EXPECT_EQ(a.usable[i].last, b.usable[i].last);
  }
}

// The first process: creates {kB0, kB1, kA}, maps twice, persists (twice,
// for the held-device test), records the journal, and dies (its backend is
// destroyed, closing its own fds; the persisted dups keep the objects).
template <typename B>
class AdoptTest : public RealBackendTest {
 protected:
  void Start(std::unique_ptr<B> first, std::function<std::unique_ptr<B>()> make_second) {
    ContainerHandle h = 0;
    {
      absl::StatusOr<ContainerHandle> created = first->CreateContainer({kB0, kB1, kA});
      ASSERT_OK(created);
      h = *created;
    }
    ASSERT_OK(first->Map(h, 0x100000, 0x7f0000000000, 0x2000, true, false));
    ASSERT_OK(first->Map(h, 0x200000, 0x7f0000002000, 0x1000, true, true));
    absl::StatusOr<Geometry> g = first->GetGeometry(h);
    ASSERT_OK(g);
    geometry_ = *g;
    absl::StatusOr<std::vector<BackendMapping>> m = first->ListMappings(h);
    ASSERT_OK(m);
    journal_ = *m;
    absl::StatusOr<PersistedContainer> p = first->PersistContainer(h);
    ASSERT_OK(p);
    names_ = Names(*p);
    state_ = p->state;
    fds_ = ToMap(*std::move(p));
    absl::StatusOr<PersistedContainer> p2 = first->PersistContainer(h);
    ASSERT_OK(p2);
    second_fds_ = ToMap(*std::move(p2));
    first.reset();  // The agent dies.
    backend_ = make_second();  // The restarted agent.
    ASSERT_NE(backend_, nullptr);
    ops_.ClearLog();
  }

  absl::StatusOr<ContainerHandle> Adopt() {
    return backend_->AdoptContainer({kB0, kB1, kA}, std::move(fds_), state_, journal_);
  }

  // Only the checking ioctls of backend.h were issued: nothing that maps,
  // unmaps, attaches or detaches.
  void ExpectOnlyChecks(const std::vector<std::string>& allowed) {
    for (const std::string& name : ops_.ioctl_names()) {
      EXPECT_THAT(allowed, ::testing::Contains(name)) << "adoption issued " << name;
    }
  }

  // After a failed adopt: nothing held, every fd given closed.
  void ExpectNothingAdopted() {
    second_fds_.clear();  // The other persisted set, not given to Adopt.
    ExpectNothingOpen();
  }

  std::unique_ptr<B> backend_;
  Geometry geometry_;
  std::vector<BackendMapping> journal_;
  std::vector<std::string> names_;
  std::string state_;
  std::map<std::string, UniqueFd> fds_;
  std::map<std::string, UniqueFd> second_fds_;
};

class Type1AdoptTest : public AdoptTest<VfioType1Backend> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<VfioType1Backend>> a =
        VfioType1Backend::Create(&ops_, sysfs_.get());
    ASSERT_OK(a);
    Start(*std::move(a), [this]() -> std::unique_ptr<VfioType1Backend> {
      absl::StatusOr<std::unique_ptr<VfioType1Backend>> b =
          VfioType1Backend::Create(&ops_, sysfs_.get());
      EXPECT_OK(b);
      return b.ok() ? *std::move(b) : nullptr;
    });
  }
};

TEST_F(Type1AdoptTest, PersistNamesContainerGroupsAndDevicesWithEmptyState) {
  EXPECT_THAT(names_, ElementsAre("container", "group.5", "group.7", "device.0000_00_06.0",
                                  "device.0000_00_06.1", "device.0000_00_04.0"));
  EXPECT_EQ(state_, "");
  for (const auto& [name, fd] : fds_) {
    EXPECT_EQ(fcntl(fd.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC) << name;
  }
  EXPECT_THAT(backend_->PersistContainer(42),
              StatusIs(absl::StatusCode::kNotFound, "no container with handle 42"));
}

TEST_F(Type1AdoptTest, AdoptRoundTripWithoutTouchingTheMappings) {
  absl::StatusOr<ContainerHandle> h = Adopt();
  ASSERT_OK(h);
  ExpectOnlyChecks({"VFIO_GET_API_VERSION", "VFIO_GROUP_GET_STATUS", "VFIO_DEVICE_GET_INFO",
                    "VFIO_IOMMU_GET_INFO"});
  // fd101 is the first process's container: the kernel still maps both.
  EXPECT_EQ(ops_.container_mappings(101).size(), 2u);
  absl::StatusOr<Geometry> g = backend_->GetGeometry(*h);
  ASSERT_OK(g);
  ExpectSameGeometry(*g, geometry_);
  absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(*h);
  ASSERT_OK(m);
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0].iova, 0x100000u);
  EXPECT_FALSE((*m)[0].writable);
  EXPECT_EQ((*m)[1].vaddr, 0x7f0000002000u);
  EXPECT_THAT(backend_->CreateContainer({kA}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is held by container"));
  // Map, Unmap, DeviceFds work on the adopted handle, through the kernel.
  ASSERT_OK(backend_->Map(*h, 0x300000, 0x7f0000003000, 0x1000, true, true));
  EXPECT_EQ(ops_.container_mappings(101).size(), 3u);
  absl::StatusOr<uint64_t> bytes = backend_->Unmap(*h, 0x100000, 0x2000);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, 0x2000u);
  {
    absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> dev = backend_->DeviceFds(*h);
    ASSERT_OK(dev);
    ASSERT_EQ(dev->size(), 3u);
    EXPECT_EQ((*dev)[2].first, kA);
    // A second restart persists the adopted container the same way.
    absl::StatusOr<PersistedContainer> again = backend_->PersistContainer(*h);
    ASSERT_OK(again);
    EXPECT_EQ(Names(*again), names_);
    EXPECT_EQ(again->state, state_);
  }
  // Destroy: unmap all, then unset each group, as for a created container.
  ops_.ClearLog();
  second_fds_.clear();
  ASSERT_OK(backend_->DestroyContainer(*h));
  EXPECT_THAT(ops_.ioctl_names(),
              ElementsAre("VFIO_IOMMU_UNMAP_DMA", "VFIO_GROUP_UNSET_CONTAINER",
                          "VFIO_GROUP_UNSET_CONTAINER"));
  ExpectNothingOpen();
  absl::StatusOr<ContainerHandle> again = backend_->CreateContainer({kA});
  ASSERT_OK(again);
  ASSERT_OK(backend_->DestroyContainer(*again));
  ExpectNothingOpen();
}

TEST_F(Type1AdoptTest, MissingGroupFdIsFailedPreconditionAndClosesTheRest) {
  fds_.erase("group.7");
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "fd group.7: missing (the fd store lost it)"));
  EXPECT_THAT(ops_.ioctl_names(), IsEmpty());
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, UnknownExtraFdIsInvalidArgumentNamingIt) {
  fds_["group.9"] = Pipe();
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kInvalidArgument, "unknown fds [group.9]"));
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, PipeInPlaceOfGroupFdIsNotAGroup) {
  fds_["group.7"] = Pipe();
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "fd group.7: not a VFIO group set on a container "
                                "(VFIO_GROUP_GET_STATUS group=7"));
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, DeviceFdInPlaceOfContainerAnswersEnotty) {
  fds_["container"] = std::move(fds_["device.0000_00_04.0"]);
  fds_["device.0000_00_04.0"] = UniqueFd(memfd_create("not-a-device", MFD_CLOEXEC));
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "fd container: not a VFIO container (VFIO_GET_API_VERSION"));
  EXPECT_THAT(ops_.log(), ::testing::Contains(::testing::HasSubstr(
                              "VFIO_GET_API_VERSION -> ENOTTY")));
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, MemfdInPlaceOfDeviceFdIsNotADevice) {
  fds_["device.0000_00_04.0"] = UniqueFd(memfd_create("not-a-device", MFD_CLOEXEC));
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "fd device.0000_00_04.0: not a VFIO device "
                                "(VFIO_DEVICE_GET_INFO device=0000:00:04.0"));
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, FailingDeviceGetInfoClosesEverything) {
  ops_.set_next_error(uapi::kVfioDeviceGetInfo, EIO);
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition, "EIO"));
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, BadStateIsInvalidArgument) {
  state_ = "ioas=3";
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kInvalidArgument,
                                "state: vfio-type1 persists no state"));
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, OverlappingJournalIsInvalidArgument) {
  journal_.push_back(BackendMapping{0x101000, 0x1000, 0x7f0000000000, true, true});
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kInvalidArgument,
                                "mappings: iova=0x101000 size=0x1000 overlaps"));
  ExpectNothingAdopted();
}

TEST_F(Type1AdoptTest, DeviceHeldByAnotherContainerIsFailedPrecondition) {
  ASSERT_OK(Adopt());
  const std::set<int> before = ops_.open_fds();
  std::map<std::string, UniqueFd> second = std::move(second_fds_);
  std::set<int> given;
  for (const auto& [name, fd] : second) given.insert(fd.get());
  EXPECT_THAT(backend_->AdoptContainer({kB0, kB1, kA}, std::move(second), state_, journal_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is held by container 1"));
  std::set<int> after = ops_.open_fds();
  for (int fd : given) EXPECT_EQ(after.count(fd), 0u) << "fd " << fd << " left open";
  EXPECT_EQ(after.size(), before.size() - given.size());
}

TEST_F(Type1AdoptTest, NeverAbortsOnGarbageNames) {
  fds_[std::string("\0:\xff", 3)] = Pipe();
  fds_[std::string(300, 'x')] = UniqueFd();
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kInvalidArgument, "unknown fds"));
  EXPECT_THAT(backend_->AdoptContainer({}, {}, "", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "no devices"));
  ExpectNothingAdopted();
}

class IommufdAdoptTest : public AdoptTest<IommufdBackend> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<IommufdBackend>> a =
        IommufdBackend::Create(&ops_, sysfs_.get(), 4096);
    ASSERT_OK(a);
    Start(*std::move(a), [this]() -> std::unique_ptr<IommufdBackend> {
      absl::StatusOr<std::unique_ptr<IommufdBackend>> b =
          IommufdBackend::Create(&ops_, sysfs_.get(), 4096);
      EXPECT_OK(b);
      return b.ok() ? *std::move(b) : nullptr;
    });
  }
};

TEST_F(IommufdAdoptTest, PersistNamesIommufdAndDevicesWithTheIoasInState) {
  EXPECT_THAT(names_, ElementsAre("iommufd", "device.0000_00_06.0", "device.0000_00_06.1",
                                  "device.0000_00_04.0"));
  EXPECT_EQ(state_, "ioas=1");
}

TEST_F(IommufdAdoptTest, AdoptRoundTripWithoutTouchingTheMappings) {
  absl::StatusOr<ContainerHandle> h = Adopt();
  ASSERT_OK(h);
  ExpectOnlyChecks({"IOMMU_IOAS_IOVA_RANGES", "VFIO_DEVICE_GET_INFO"});
  EXPECT_EQ(ops_.ioas_mappings(1).size(), 2u);
  EXPECT_EQ(ops_.attached_devices(), 3);
  absl::StatusOr<Geometry> g = backend_->GetGeometry(*h);
  ASSERT_OK(g);
  ExpectSameGeometry(*g, geometry_);
  absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(*h);
  ASSERT_OK(m);
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[1].iova, 0x200000u);
  EXPECT_THAT(backend_->CreateContainer({kA}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is held by container"));
  ASSERT_OK(backend_->Map(*h, 0x300000, 0x7f0000003000, 0x1000, true, true));
  EXPECT_EQ(ops_.ioas_mappings(1).size(), 3u);
  // The adopted table knows the journal's mappings: a cut is refused.
  EXPECT_THAT(backend_->Unmap(*h, 0x100000, 0x1000),
              StatusIs(absl::StatusCode::kInvalidArgument, "cuts mapping"));
  absl::StatusOr<uint64_t> bytes = backend_->Unmap(*h, 0x100000, 0x2000);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, 0x2000u);
  {
    absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> dev = backend_->DeviceFds(*h);
    ASSERT_OK(dev);
    EXPECT_EQ(dev->size(), 3u);
    absl::StatusOr<PersistedContainer> again = backend_->PersistContainer(*h);
    ASSERT_OK(again);
    EXPECT_EQ(Names(*again), names_);
    EXPECT_EQ(again->state, "ioas=1");
  }
  ops_.ClearLog();
  second_fds_.clear();
  ASSERT_OK(backend_->DestroyContainer(*h));
  EXPECT_THAT(ops_.ioctl_names(),
              ElementsAre("VFIO_DEVICE_DETACH_IOMMUFD_PT", "VFIO_DEVICE_DETACH_IOMMUFD_PT",
                          "VFIO_DEVICE_DETACH_IOMMUFD_PT", "IOMMU_DESTROY"));
  EXPECT_EQ(ops_.attached_devices(), 0);
  EXPECT_TRUE(ops_.ioas_mappings(1).empty());
  ExpectNothingOpen();
}

TEST_F(IommufdAdoptTest, MissingIommufdIsFailedPrecondition) {
  fds_.erase("iommufd");
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "fd iommufd: missing (the fd store lost it)"));
  ExpectNothingAdopted();
}

TEST_F(IommufdAdoptTest, ExtraFdIsInvalidArgument) {
  fds_["container"] = Pipe();
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kInvalidArgument, "unknown fds [container]"));
  ExpectNothingAdopted();
}

TEST_F(IommufdAdoptTest, PipeInPlaceOfIommufdIsNotAnIommufd) {
  fds_["iommufd"] = Pipe();
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "fd iommufd: not a /dev/iommu context holding IOAS 1 "
                                "(IOMMU_IOAS_IOVA_RANGES"));
  ExpectNothingAdopted();
}

TEST_F(IommufdAdoptTest, UnknownIoasIsNotThatContext) {
  state_ = "ioas=77";
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "holding IOAS 77 (IOMMU_IOAS_IOVA_RANGES"));
  ExpectNothingAdopted();
}

TEST_F(IommufdAdoptTest, UnboundCdevIsNotABoundDevice) {
  const SysResult opened = ops_.Open("/dev/vfio/devices/vfio0", O_RDWR);
  ASSERT_TRUE(opened.ok());
  const SysResult dup = ops_.DupCloexec(static_cast<int>(opened.value));
  ASSERT_TRUE(dup.ok());
  ops_.Close(static_cast<int>(opened.value));
  fds_["device.0000_00_04.0"] = UniqueFd(static_cast<int>(dup.value));
  EXPECT_THAT(Adopt(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                "fd device.0000_00_04.0: not a bound VFIO device "
                                "(VFIO_DEVICE_GET_INFO device=0000:00:04.0"));
  ExpectNothingAdopted();
}

TEST_F(IommufdAdoptTest, BadStatesAreInvalidArgument) {
  for (const char* bad : {"", "ioas=", "ioas=0", "ioas=x1", "ioas=4294967296", "ioas=1 ",
                          "IOAS=1", "ioas=99999999999999999999"}) {
    std::map<std::string, UniqueFd> none;
    EXPECT_THAT(backend_->AdoptContainer({kB0, kB1, kA}, std::move(none), bad, journal_),
                StatusIs(absl::StatusCode::kInvalidArgument, "state: expected \"ioas=<id>\""))
        << bad;
  }
  EXPECT_OK(Adopt());  // The fds were not consumed by the refusals.
}

TEST_F(IommufdAdoptTest, DeviceHeldByAnotherContainerIsFailedPrecondition) {
  ASSERT_OK(Adopt());
  std::map<std::string, UniqueFd> second = std::move(second_fds_);
  std::set<int> given;
  for (const auto& [name, fd] : second) given.insert(fd.get());
  EXPECT_THAT(backend_->AdoptContainer({kB0, kB1, kA}, std::move(second), state_, journal_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is held by container 1"));
  const std::set<int> after = ops_.open_fds();
  for (int fd : given) EXPECT_EQ(after.count(fd), 0u) << "fd " << fd << " left open";
}

TEST(AdoptNamesTest, DeviceFdNamesHaveNoColon) {
  EXPECT_EQ(DeviceFdName("0000:00:01.0"), "device.0000_00_01.0");
  EXPECT_EQ(GroupFdName(12), "group.12");
  EXPECT_TRUE(IsValidPersistedFdName(DeviceFdName("0000:00:01.0")));
  EXPECT_TRUE(IsValidPersistedFdName("sim-container"));
  EXPECT_FALSE(IsValidPersistedFdName("device.0000:00:01.0"));
  EXPECT_FALSE(IsValidPersistedFdName(""));
  EXPECT_FALSE(IsValidPersistedFdName(std::string(65, 'a')));
  EXPECT_TRUE(IsValidPersistedState("ioas=3"));
  EXPECT_FALSE(IsValidPersistedState("ioas=3\n"));
  EXPECT_FALSE(IsValidPersistedState(std::string(257, 'a')));
}

// ---- Shared helpers and the sim ------------------------------------------------

TEST(TrimRangesTest, CutsToWholePagesAndDropsSlivers) {
  std::vector<IovaRange> r = TrimRanges(
      {{0x1800, 0x4fff}, {0x0, 0x7ff}, {0xfffffffffffff000, UINT64_MAX}, {0x10000, 0x10800}},
      0x1000);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].start, 0x2000u);
  EXPECT_EQ(r[0].last, 0x4fffu);
  EXPECT_EQ(r[1].start, 0xfffffffffffff000u);
  EXPECT_EQ(r[1].last, UINT64_MAX);
}

TEST(Type1GeometryTest, RefusesKernelsWithoutIovaRangeCap) {
  Type1Info info;
  info.flags = uapi::kVfioIommuInfoPgsizes;
  info.iova_pgsizes = 0x1000;
  EXPECT_THAT(Type1Geometry(info),
              StatusIs(absl::StatusCode::kFailedPrecondition, "no CAP_IOVA_RANGE"));
}

TEST(SimDeviceFdsTest, HandsOutReadOnlyNamedMemfds) {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs =
      ParseSimDevices("0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@5");
  ASSERT_OK(specs);
  absl::StatusOr<std::unique_ptr<SimBackend>> sim = SimBackend::Create(*specs);
  ASSERT_OK(sim);
  absl::StatusOr<ContainerHandle> h = (*sim)->CreateContainer({"0000:00:05.0", "0000:00:04.0"});
  ASSERT_OK(h);
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> fds = (*sim)->DeviceFds(*h);
  ASSERT_OK(fds);
  ASSERT_EQ(fds->size(), 2u);
  EXPECT_EQ((*fds)[0].first, "0000:00:05.0");
  const int fd = (*fds)[0].second.get();
  EXPECT_EQ(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  char target[256] = {};
  ASSERT_GT(readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), target, sizeof(target) - 1), 0);
  EXPECT_THAT(std::string(target), ::testing::HasSubstr("memfd:sim-device-0000:00:05.0"));
  EXPECT_THAT((*sim)->DeviceFds(42), StatusIs(absl::StatusCode::kNotFound, "handle 42"));
  (*sim)->set_next_error(SimOp::kDeviceFds, EIO);
  EXPECT_THAT((*sim)->DeviceFds(*h), StatusIs(absl::StatusCode::kInternal, "sim DEVICE_FDS"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
