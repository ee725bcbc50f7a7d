#include "agent/kernel_fds.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/fake_kernel_ops.h"
#include "agent/kernel_uapi.h"
#include "agent/linux_kernel_ops.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

template <typename T>
void Put(std::vector<uint8_t>* buf, size_t offset, const T& v) {
  if (buf->size() < offset + sizeof(T)) buf->resize(offset + sizeof(T));
  std::memcpy(buf->data() + offset, &v, sizeof(T));
}

std::vector<uint8_t> InfoBuffer(const std::vector<uint8_t>& caps) {
  std::vector<uint8_t> buf;
  uapi::vfio_iommu_type1_info info{};
  info.argsz = static_cast<uint32_t>(24 + caps.size());
  info.flags = uapi::kVfioIommuInfoPgsizes | uapi::kVfioIommuInfoCaps;
  info.iova_pgsizes = 0x40201000;
  info.cap_offset = caps.empty() ? 0 : 24;
  Put(&buf, 0, info);
  buf.insert(buf.end(), caps.begin(), caps.end());
  return buf;
}

TEST(ParseType1InfoTest, ReadsRangesAndDmaAvailSkippingUnknownCaps) {
  const std::vector<uint8_t> buf = InfoBuffer(
      BuildType1Caps({{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}}, 1234, true));
  absl::StatusOr<Type1Info> info = ParseType1Info(buf);
  ASSERT_OK(info);
  EXPECT_EQ(info->iova_pgsizes, 0x40201000u);
  ASSERT_TRUE(info->has_iova_ranges);
  ASSERT_EQ(info->iova_ranges.size(), 2u);
  EXPECT_EQ(info->iova_ranges[0].last, 0xfedfffffu);
  EXPECT_EQ(info->iova_ranges[1].start, 0xfef00000u);
  EXPECT_EQ(info->iova_ranges[1].last, 0x7fffffffffu);
  ASSERT_TRUE(info->has_dma_avail);
  EXPECT_EQ(info->dma_avail, 1234u);
  EXPECT_THAT(info->skipped_caps, ElementsAre(uapi::kVfioIommuType1InfoCapMigration));
}

TEST(ParseType1InfoTest, UnknownCapIdIsSkipped) {
  std::vector<uint8_t> caps;
  Put(&caps, 0, uapi::vfio_info_cap_header{77, 1, 24 + 16});
  Put(&caps, 8, uint64_t{0xdeadbeef});
  uapi::vfio_iommu_type1_info_dma_avail avail{};
  avail.header = {uapi::kVfioIommuType1InfoDmaAvail, 1, 0};
  avail.avail = 9;
  Put(&caps, 16, avail);
  absl::StatusOr<Type1Info> info = ParseType1Info(InfoBuffer(caps));
  ASSERT_OK(info);
  EXPECT_THAT(info->skipped_caps, ElementsAre(77));
  EXPECT_EQ(info->dma_avail, 9u);
  EXPECT_FALSE(info->has_iova_ranges);
}

TEST(ParseType1InfoTest, NoCapsFlagMeansNoChain) {
  std::vector<uint8_t> buf = InfoBuffer({});
  absl::StatusOr<Type1Info> info = ParseType1Info(buf);
  ASSERT_OK(info);
  EXPECT_FALSE(info->has_iova_ranges);
  EXPECT_FALSE(info->has_dma_avail);
}

TEST(ParseType1InfoTest, RefusesTruncatedRangeArray) {
  std::vector<uint8_t> buf =
      InfoBuffer(BuildType1Caps({{0x0, 0xfff}, {0x2000, 0x2fff}}, 5, false));
  buf.resize(buf.size() - 8);  // Cut the last range in half.
  EXPECT_THAT(ParseType1Info(buf),
              StatusIs(absl::StatusCode::kInternal, "CAP_IOVA_RANGE with 2 ranges"));
}

TEST(ParseType1InfoTest, RefusesHeaderPastTheBuffer) {
  std::vector<uint8_t> buf = InfoBuffer(BuildType1Caps({{0, 0xfff}}, 5, false));
  uapi::vfio_iommu_type1_info info;
  std::memcpy(&info, buf.data(), sizeof(info));
  info.cap_offset = static_cast<uint32_t>(buf.size() - 4);
  Put(&buf, 0, info);
  EXPECT_THAT(ParseType1Info(buf),
              StatusIs(absl::StatusCode::kInternal, "a capability header needs 8 bytes"));
}

TEST(ParseType1InfoTest, RefusesShortBufferAndLoops) {
  EXPECT_THAT(ParseType1Info(std::vector<uint8_t>(10)),
              StatusIs(absl::StatusCode::kInternal, "struct vfio_iommu_type1_info"));
  std::vector<uint8_t> caps;
  Put(&caps, 0, uapi::vfio_info_cap_header{77, 1, 24});  // Points at itself.
  Put(&caps, 8, uint64_t{0});
  EXPECT_THAT(ParseType1Info(InfoBuffer(caps)),
              StatusIs(absl::StatusCode::kInternal, "does not move past"));
}

class KernelFdsTest : public ::testing::Test {
 protected:
  void SetUp() override { ops_.AddGroup(5, {"0000:00:04.0"}); }
  void TearDown() override {
    EXPECT_THAT(ops_.open_fds(), IsEmpty());
    EXPECT_EQ(ops_.bad_closes(), 0);
  }
  FakeKernelOps ops_;
};

TEST_F(KernelFdsTest, OwnersCloseOnDestructionAndMove) {
  {
    absl::StatusOr<ContainerFd> c = ContainerFd::Open(&ops_);
    ASSERT_OK(c);
    ContainerFd moved = *std::move(c);
    EXPECT_EQ(ops_.open_fds().size(), 1u);
    ContainerFd again;
    again = std::move(moved);
    EXPECT_FALSE(moved.valid());
    EXPECT_TRUE(again.valid());
  }
  EXPECT_THAT(ops_.log(), ElementsAre("open /dev/vfio/vfio -> fd100", "close fd100"));
}

TEST_F(KernelFdsTest, ErrorNamesIoctlFdArgumentsAndErrno) {
  absl::StatusOr<ContainerFd> c = ContainerFd::Open(&ops_);
  ASSERT_OK(c);
  absl::StatusOr<GroupFd> g = GroupFd::Open(&ops_, 5);
  ASSERT_OK(g);
  ASSERT_OK(g->SetContainer(*c));
  ASSERT_OK(c->SetIommu(uapi::kVfioType1v2Iommu));
  ops_.set_next_error(uapi::kVfioIommuMapDma, EPERM);
  EXPECT_THAT(c->MapDma(0x100000, 0x7f0000000000, 0x2000, uapi::kVfioDmaMapFlagRead),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       "VFIO_IOMMU_MAP_DMA container=fd100 iova=0x100000 size=0x2000 "
                       "vaddr=0x7f0000000000 flags=0x1: EPERM"));
  EXPECT_THAT(c->MapDma(0x100000, 0x7f0000000000, 0x2001, uapi::kVfioDmaMapFlagRead),
              StatusIs(absl::StatusCode::kInvalidArgument, "size=0x2001 "));
  EXPECT_THAT(g->GetDeviceFd("0000:00:09.0"),
              StatusIs(absl::StatusCode::kNotFound,
                       "VFIO_GROUP_GET_DEVICE_FD group=5 fd=101 device=0000:00:09.0: ENODEV"));
}

TEST_F(KernelFdsTest, RetriesEintr) {
  absl::StatusOr<ContainerFd> c = ContainerFd::Open(&ops_);
  ASSERT_OK(c);
  ops_.set_eintr(uapi::kVfioGetApiVersion, 3);
  EXPECT_THAT(c->GetApiVersion(), IsOk());
  EXPECT_THAT(ops_.ioctl_names(),
              ElementsAre("VFIO_GET_API_VERSION", "VFIO_GET_API_VERSION",
                          "VFIO_GET_API_VERSION", "VFIO_GET_API_VERSION"));
}

TEST_F(KernelFdsTest, GetIommuInfoGrowsArgszUntilTheChainFits) {
  std::vector<IovaRange> many;
  for (uint64_t i = 0; i < 40; ++i) many.push_back({i << 20, (i << 20) + 0xfffff});
  ops_.set_type1_info(0x1000, BuildType1Caps(many, 7, true));
  absl::StatusOr<ContainerFd> c = ContainerFd::Open(&ops_);
  ASSERT_OK(c);
  absl::StatusOr<GroupFd> g = GroupFd::Open(&ops_, 5);
  ASSERT_OK(g);
  ASSERT_OK(g->SetContainer(*c));
  ASSERT_OK(c->SetIommu(uapi::kVfioType1v2Iommu));
  ops_.ClearLog();
  absl::StatusOr<Type1Info> info = c->GetIommuInfo();
  ASSERT_OK(info);
  EXPECT_EQ(info->iova_ranges.size(), 40u);
  EXPECT_EQ(info->dma_avail, 7u);
  // 256 bytes is too small for 40 ranges: one call to learn the size, one to read.
  EXPECT_THAT(ops_.ioctl_names(), ElementsAre("VFIO_IOMMU_GET_INFO", "VFIO_IOMMU_GET_INFO"));
}

TEST_F(KernelFdsTest, IoasIovaRangesUsesTwoCalls) {
  ops_.set_ioas_ranges({{0, 0xfedfffff}, {0xfef00000, 0xffffffffff}, {1ull << 48, (1ull << 49) - 1}},
                       4096);
  absl::StatusOr<IommufdFd> fd = IommufdFd::Open(&ops_);
  ASSERT_OK(fd);
  absl::StatusOr<uint32_t> ioas = fd->IoasAlloc();
  ASSERT_OK(ioas);
  ops_.ClearLog();
  absl::StatusOr<IoasRanges> ranges = fd->IoasIovaRanges(*ioas);
  ASSERT_OK(ranges);
  ASSERT_EQ(ranges->ranges.size(), 3u);
  EXPECT_EQ(ranges->ranges[2].start, 1ull << 48);
  EXPECT_EQ(ranges->iova_alignment, 4096u);
  EXPECT_THAT(ops_.log(), ElementsAre("ioctl fd100 IOMMU_IOAS_IOVA_RANGES -> EMSGSIZE",
                                      "ioctl fd100 IOMMU_IOAS_IOVA_RANGES"));
}

TEST_F(KernelFdsTest, UnmapReturnsBytesFromTheStruct) {
  absl::StatusOr<IommufdFd> fd = IommufdFd::Open(&ops_);
  ASSERT_OK(fd);
  absl::StatusOr<uint32_t> ioas = fd->IoasAlloc();
  ASSERT_OK(ioas);
  const uint32_t rw = uapi::kIommuIoasMapFixedIova | uapi::kIommuIoasMapReadable;
  ASSERT_OK(fd->IoasMap(*ioas, 0x1000, 0x7f0000000000, 0x2000, rw));
  ASSERT_OK(fd->IoasMap(*ioas, 0x4000, 0x7f0000010000, 0x1000, rw));
  EXPECT_THAT(fd->IoasUnmap(*ioas, 0x2000, 0x1000),
              StatusIs(absl::StatusCode::kInvalidArgument, "IOMMU_IOAS_UNMAP iommufd=fd100"));
  absl::StatusOr<uint64_t> bytes = fd->IoasUnmap(*ioas, 0, 0x10000);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, 0x3000u);
  EXPECT_THAT(fd->IoasUnmap(*ioas, 0, 0x10000), StatusIs(absl::StatusCode::kNotFound, "ENOENT"));
}

TEST_F(KernelFdsTest, OpenErrorNamesThePath) {
  ops_.set_next_open_error("/dev/iommu", EACCES);
  EXPECT_THAT(IommufdFd::Open(&ops_),
              StatusIs(absl::StatusCode::kPermissionDenied, "open /dev/iommu: EACCES"));
  EXPECT_THAT(GroupFd::Open(&ops_, 9), StatusIs(absl::StatusCode::kNotFound, "open /dev/vfio/9"));
}

// ---- Adoption: a dup from an earlier process, checked by one ioctl ----

UniqueFd ReadEndOfPipe() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return UniqueFd();
  ::close(p[1]);
  return UniqueFd(p[0]);
}

TEST_F(KernelFdsTest, AdoptedDupKeepsTheObjectAfterTheOriginalCloses) {
  absl::StatusOr<ContainerFd> c = ContainerFd::Open(&ops_);
  ASSERT_OK(c);
  absl::StatusOr<UniqueFd> dup = c->Dup("container");
  ASSERT_OK(dup);
  const int real = dup->get();
  c->Reset();  // The first process dies.
  absl::StatusOr<ContainerFd> adopted = ContainerFd::Adopt(&ops_, *std::move(dup));
  ASSERT_OK(adopted);
  EXPECT_EQ(adopted->get(), real);
  absl::StatusOr<bool> v2 = adopted->CheckExtension(uapi::kVfioType1v2Iommu);
  ASSERT_OK(v2);
  EXPECT_TRUE(*v2);
  adopted->Reset();
  EXPECT_EQ(fcntl(real, F_GETFD), -1);  // Closed through the KernelOps.
}

TEST_F(KernelFdsTest, AdoptingAPipeAnswersEnottyAndClosesIt) {
  UniqueFd pipe = ReadEndOfPipe();
  const int real = pipe.get();
  EXPECT_THAT(ContainerFd::Adopt(&ops_, std::move(pipe)),
              StatusIs(absl::StatusCode::kInvalidArgument, "VFIO_GET_API_VERSION container=fd"));
  EXPECT_EQ(fcntl(real, F_GETFD), -1);
  EXPECT_THAT(ops_.log(), ElementsAre(::testing::HasSubstr("VFIO_GET_API_VERSION -> ENOTTY"),
                                      ::testing::HasSubstr("(not a fake object)")));
}

TEST_F(KernelFdsTest, AdoptedGroupMustBeSetOnAContainer) {
  absl::StatusOr<GroupFd> g = GroupFd::Open(&ops_, 5);
  ASSERT_OK(g);
  absl::StatusOr<UniqueFd> dup = g->Dup("group.5");
  ASSERT_OK(dup);
  EXPECT_THAT(GroupFd::Adopt(&ops_, *std::move(dup), 5),
              StatusIs(absl::StatusCode::kFailedPrecondition, "without CONTAINER_SET"));
}

TEST_F(KernelFdsTest, AdoptedDeviceAnswersGetInfoAndAGroupDoesNot) {
  absl::StatusOr<ContainerFd> c = ContainerFd::Open(&ops_);
  ASSERT_OK(c);
  absl::StatusOr<GroupFd> g = GroupFd::Open(&ops_, 5);
  ASSERT_OK(g);
  ASSERT_OK(g->SetContainer(*c));
  ASSERT_OK(c->SetIommu(uapi::kVfioType1v2Iommu));
  absl::StatusOr<DeviceFd> d = g->GetDeviceFd("0000:00:04.0");
  ASSERT_OK(d);
  absl::StatusOr<DeviceInfo> info = d->GetInfo();
  ASSERT_OK(info);
  EXPECT_EQ(info->num_regions, 9u);
  absl::StatusOr<UniqueFd> group_dup = g->Dup("group.5");
  ASSERT_OK(group_dup);
  EXPECT_THAT(DeviceFd::Adopt(&ops_, *std::move(group_dup), "0000:00:04.0"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "VFIO_DEVICE_GET_INFO device=0000:00:04.0 fd="));
  EXPECT_THAT(ops_.log(), ::testing::Contains(::testing::HasSubstr(
                              "VFIO_DEVICE_GET_INFO -> ENOTTY")));
  ops_.set_next_error(uapi::kVfioDeviceGetInfo, EIO);
  absl::StatusOr<UniqueFd> device_dup = d->Dup("device");
  ASSERT_OK(device_dup);
  EXPECT_THAT(DeviceFd::Adopt(&ops_, *std::move(device_dup), "0000:00:04.0"),
              StatusIs(absl::StatusCode::kInternal, "VFIO_DEVICE_GET_INFO"));
  d->Reset();
  ASSERT_OK(g->UnsetContainer());
}

TEST_F(KernelFdsTest, AdoptedIommufdMustHoldTheIoas) {
  absl::StatusOr<IommufdFd> i = IommufdFd::Open(&ops_);
  ASSERT_OK(i);
  absl::StatusOr<uint32_t> ioas = i->IoasAlloc();
  ASSERT_OK(ioas);
  absl::StatusOr<UniqueFd> dup = i->Dup("iommufd");
  ASSERT_OK(dup);
  EXPECT_THAT(IommufdFd::Adopt(&ops_, *std::move(dup), *ioas + 1),
              StatusIs(absl::StatusCode::kNotFound, "IOMMU_IOAS_IOVA_RANGES"));
  dup = i->Dup("iommufd");
  ASSERT_OK(dup);
  EXPECT_OK(IommufdFd::Adopt(&ops_, *std::move(dup), *ioas));
}

TEST(LinuxKernelOpsTest, OpensCloexecAndReportsErrno) {
  LinuxKernelOps* ops = LinuxKernelOps::Get();
  SysResult r = ops->Open("/dev/null", O_RDWR);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(fcntl(static_cast<int>(r.value), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  SysResult bad = ops->Ioctl(static_cast<int>(r.value), uapi::kVfioGetApiVersion, 0);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.err, ENOTTY);
  ops->Close(static_cast<int>(r.value));
  EXPECT_EQ(ops->Open("/nonexistent/x", O_RDWR).err, ENOENT);
}

}  // namespace
}  // namespace agent
}  // namespace iommu
