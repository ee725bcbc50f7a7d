// Cross-checks agent/kernel_uapi.h against the installed <linux/vfio.h>
// (Debian 12: Linux 6.1) for everything that header also defines. The cdev
// and iommufd parts it lacks are pinned by the static_asserts in
// kernel_uapi.h, taken from the 6.12 UAPI text.
#include "agent/kernel_uapi.h"

#include <linux/vfio.h>

#include <cstddef>

#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

namespace u = uapi;

static_assert(u::kVfioApiVersion == VFIO_API_VERSION, "");
static_assert(u::kVfioType1v2Iommu == VFIO_TYPE1v2_IOMMU, "");
static_assert(u::kVfioGetApiVersion == VFIO_GET_API_VERSION, "");
static_assert(u::kVfioCheckExtension == VFIO_CHECK_EXTENSION, "");
static_assert(u::kVfioSetIommu == VFIO_SET_IOMMU, "");
static_assert(u::kVfioGroupGetStatus == VFIO_GROUP_GET_STATUS, "");
static_assert(u::kVfioGroupFlagsViable == VFIO_GROUP_FLAGS_VIABLE, "");
static_assert(u::kVfioGroupFlagsContainerSet == VFIO_GROUP_FLAGS_CONTAINER_SET, "");
static_assert(u::kVfioGroupSetContainer == VFIO_GROUP_SET_CONTAINER, "");
static_assert(u::kVfioGroupUnsetContainer == VFIO_GROUP_UNSET_CONTAINER, "");
static_assert(u::kVfioGroupGetDeviceFd == VFIO_GROUP_GET_DEVICE_FD, "");
static_assert(u::kVfioIommuGetInfo == VFIO_IOMMU_GET_INFO, "");
static_assert(u::kVfioIommuInfoPgsizes == VFIO_IOMMU_INFO_PGSIZES, "");
static_assert(u::kVfioIommuInfoCaps == VFIO_IOMMU_INFO_CAPS, "");
static_assert(u::kVfioIommuType1InfoCapIovaRange == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, "");
static_assert(u::kVfioIommuType1InfoCapMigration == VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, "");
static_assert(u::kVfioIommuType1InfoDmaAvail == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, "");
static_assert(u::kVfioIommuMapDma == VFIO_IOMMU_MAP_DMA, "");
static_assert(u::kVfioDmaMapFlagRead == VFIO_DMA_MAP_FLAG_READ, "");
static_assert(u::kVfioDmaMapFlagWrite == VFIO_DMA_MAP_FLAG_WRITE, "");
static_assert(u::kVfioIommuUnmapDma == VFIO_IOMMU_UNMAP_DMA, "");
static_assert(u::kVfioDmaUnmapFlagAll == VFIO_DMA_UNMAP_FLAG_ALL, "");

static_assert(sizeof(u::vfio_info_cap_header) == sizeof(::vfio_info_cap_header), "");
static_assert(sizeof(u::vfio_group_status) == sizeof(::vfio_group_status), "");
static_assert(sizeof(u::vfio_iommu_type1_info) == sizeof(::vfio_iommu_type1_info), "");
static_assert(offsetof(u::vfio_iommu_type1_info, cap_offset) ==
                  offsetof(::vfio_iommu_type1_info, cap_offset), "");
static_assert(sizeof(u::vfio_iova_range) == sizeof(::vfio_iova_range), "");
static_assert(sizeof(u::vfio_iommu_type1_info_cap_iova_range) ==
                  sizeof(::vfio_iommu_type1_info_cap_iova_range), "");
static_assert(sizeof(u::vfio_iommu_type1_info_dma_avail) ==
                  sizeof(::vfio_iommu_type1_info_dma_avail), "");
static_assert(sizeof(u::vfio_iommu_type1_dma_map) == sizeof(::vfio_iommu_type1_dma_map), "");
static_assert(offsetof(u::vfio_iommu_type1_dma_map, size) ==
                  offsetof(::vfio_iommu_type1_dma_map, size), "");
static_assert(sizeof(u::vfio_iommu_type1_dma_unmap) == sizeof(::vfio_iommu_type1_dma_unmap), "");
static_assert(offsetof(u::vfio_iommu_type1_dma_unmap, size) ==
                  offsetof(::vfio_iommu_type1_dma_unmap, size), "");

TEST(KernelUapiTest, IommufdAndCdevNumbersFollowTheirBases) {
  // The device cdev ioctls continue VFIO_BASE after VFIO_DEVICE_FEATURE (+17).
  EXPECT_EQ(u::kVfioDeviceBindIommufd, VFIO_DEVICE_FEATURE + 1);
  EXPECT_EQ(u::kVfioDeviceAttachIommufdPt, VFIO_DEVICE_FEATURE + 2);
  EXPECT_EQ(u::kVfioDeviceDetachIommufdPt, VFIO_DEVICE_FEATURE + 3);
  // iommufd shares the ';' type with VFIO but starts at 0x80, clear of it.
  EXPECT_EQ(u::kIommuIoasAlloc, _IO(';', 0x81));
  EXPECT_EQ(u::kIommuIoasIovaRanges, _IO(';', 0x84));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
