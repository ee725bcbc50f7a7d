#include "agent/ioctl_names.h"

#include "absl/strings/str_format.h"
#include "agent/kernel_uapi.h"

namespace iommu {
namespace agent {

std::string IoctlName(unsigned long request) {
  switch (request) {
    case uapi::kVfioGetApiVersion: return "VFIO_GET_API_VERSION";
    case uapi::kVfioCheckExtension: return "VFIO_CHECK_EXTENSION";
    case uapi::kVfioSetIommu: return "VFIO_SET_IOMMU";
    case uapi::kVfioGroupGetStatus: return "VFIO_GROUP_GET_STATUS";
    case uapi::kVfioGroupSetContainer: return "VFIO_GROUP_SET_CONTAINER";
    case uapi::kVfioGroupUnsetContainer: return "VFIO_GROUP_UNSET_CONTAINER";
    case uapi::kVfioGroupGetDeviceFd: return "VFIO_GROUP_GET_DEVICE_FD";
    case uapi::kVfioIommuGetInfo: return "VFIO_IOMMU_GET_INFO";
    case uapi::kVfioIommuMapDma: return "VFIO_IOMMU_MAP_DMA";
    case uapi::kVfioIommuUnmapDma: return "VFIO_IOMMU_UNMAP_DMA";
    case uapi::kVfioDeviceGetInfo: return "VFIO_DEVICE_GET_INFO";
    case uapi::kVfioDeviceBindIommufd: return "VFIO_DEVICE_BIND_IOMMUFD";
    case uapi::kVfioDeviceAttachIommufdPt: return "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
    case uapi::kVfioDeviceDetachIommufdPt: return "VFIO_DEVICE_DETACH_IOMMUFD_PT";
    case uapi::kIommuDestroy: return "IOMMU_DESTROY";
    case uapi::kIommuIoasAlloc: return "IOMMU_IOAS_ALLOC";
    case uapi::kIommuIoasIovaRanges: return "IOMMU_IOAS_IOVA_RANGES";
    case uapi::kIommuIoasMap: return "IOMMU_IOAS_MAP";
    case uapi::kIommuIoasUnmap: return "IOMMU_IOAS_UNMAP";
  }
  return absl::StrFormat("ioctl 0x%x", request);
}

}  // namespace agent
}  // namespace iommu
