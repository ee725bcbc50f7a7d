#include "common/errno_status.h"

#include <cerrno>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using Code = absl::StatusCode;

TEST(ErrnoStatusTest, MapsErrnoToDocumentedCodes) {
  EXPECT_EQ(ErrnoCode(EINVAL), Code::kInvalidArgument);
  EXPECT_EQ(ErrnoCode(EEXIST), Code::kAlreadyExists);
  EXPECT_EQ(ErrnoCode(ENOSPC), Code::kResourceExhausted);
  EXPECT_EQ(ErrnoCode(EBUSY), Code::kFailedPrecondition);
  EXPECT_EQ(ErrnoCode(ENODEV), Code::kNotFound);
  EXPECT_EQ(ErrnoCode(ENOENT), Code::kNotFound);
  EXPECT_EQ(ErrnoCode(EPERM), Code::kPermissionDenied);
  EXPECT_EQ(ErrnoCode(ENOMEM), Code::kResourceExhausted);
  EXPECT_EQ(ErrnoCode(EIO), Code::kInternal);
  EXPECT_EQ(ErrnoCode(EFAULT), Code::kInternal);
}

TEST(ErrnoStatusTest, MessageNamesContextErrnoAndDetail) {
  EXPECT_THAT(ErrnoStatus(EEXIST, "VFIO_IOMMU_MAP_DMA container=7 iova=0x1000",
                          "overlaps mapping 0x1000-0x1fff"),
              StatusIs(Code::kAlreadyExists,
                       "VFIO_IOMMU_MAP_DMA container=7 iova=0x1000: EEXIST "
                       "(overlaps mapping 0x1000-0x1fff)"));
}

TEST(ErrnoStatusTest, WithoutDetailUsesStrerrorText) {
  EXPECT_THAT(ErrnoStatus(ENOENT, "open /dev/iommu"),
              StatusIs(Code::kNotFound, "open /dev/iommu: ENOENT (No such file or directory)"));
}

TEST(ErrnoStatusTest, ErrnoZeroIsABugNotSuccess) {
  EXPECT_THAT(ErrnoStatus(0, "IOMMU_IOAS_MAP"), StatusIs(Code::kInternal, "errno 0"));
}

TEST(ErrnoStatusTest, UnknownErrnoHasNumericName) {
  EXPECT_EQ(ErrnoName(99999), "errno 99999");
}

}  // namespace
}  // namespace iommu
