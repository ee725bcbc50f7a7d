// The slice of the Linux 6.12 VFIO and iommufd UAPI that the agent's real
// backends use: ioctl numbers, flags and argument structs, copied from
// include/uapi/linux/vfio.h and include/uapi/linux/iommufd.h of Linux 6.12.
//
// Why our own copy: Debian 12's installed <linux/vfio.h> is 6.1 (no VFIO
// device cdev ioctls) and it has no <linux/iommufd.h> at all. Everything lives
// in namespace iommu::agent::uapi with kConstant names, so this header never
// collides with the system headers' macros; kernel_uapi_test.cc checks every
// value and layout that the installed 6.1 header also has against it.
//
// Layouts: every struct below is static_assert-ed on sizeof and offsetof
// against the kernel's definitions (the kernel uses __aligned_u64 for the
// iommufd u64 fields, so every u64 sits at an 8-byte offset on every ABI).
//
// Extensible structs: both APIs pass the caller's struct size (argsz / size)
// first; the kernel reads only the fields it knows up to that size and
// rejects non-zero bytes beyond what it understands. We always send exactly
// the 6.12 sizes below, which later kernels accept unchanged (e.g. 6.13 grew
// vfio_device_attach_iommufd_pt by a pasid field that is read only when
// VFIO_DEVICE_ATTACH_PASID is set).
//
// Thread-safe: constants and plain structs only.
#ifndef AGENT_KERNEL_UAPI_H_
#define AGENT_KERNEL_UAPI_H_

#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace iommu {
namespace agent {
namespace uapi {

// ---- include/uapi/linux/vfio.h -------------------------------------------

inline constexpr int kVfioApiVersion = 0;          // VFIO_API_VERSION
inline constexpr uint32_t kVfioType1v2Iommu = 3;   // VFIO_TYPE1v2_IOMMU

inline constexpr unsigned kVfioType = ';';  // VFIO_TYPE
inline constexpr unsigned kVfioBase = 100;  // VFIO_BASE

// Container (/dev/vfio/vfio).
// VFIO_GET_API_VERSION: no argument; returns VFIO_API_VERSION.
inline constexpr unsigned long kVfioGetApiVersion = _IO(kVfioType, kVfioBase + 0);
// VFIO_CHECK_EXTENSION: argument is the extension id by value; returns > 0
// when supported.
inline constexpr unsigned long kVfioCheckExtension = _IO(kVfioType, kVfioBase + 1);
// VFIO_SET_IOMMU: argument is the IOMMU type by value.
inline constexpr unsigned long kVfioSetIommu = _IO(kVfioType, kVfioBase + 2);

// Group (/dev/vfio/N).
// VFIO_GROUP_GET_STATUS: struct vfio_group_status *.
inline constexpr unsigned long kVfioGroupGetStatus = _IO(kVfioType, kVfioBase + 3);
inline constexpr uint32_t kVfioGroupFlagsViable = 1u << 0;        // VFIO_GROUP_FLAGS_VIABLE
inline constexpr uint32_t kVfioGroupFlagsContainerSet = 1u << 1;  // VFIO_GROUP_FLAGS_CONTAINER_SET
// VFIO_GROUP_SET_CONTAINER: int32_t * pointing at the container fd.
inline constexpr unsigned long kVfioGroupSetContainer = _IO(kVfioType, kVfioBase + 4);
// VFIO_GROUP_UNSET_CONTAINER: no argument.
inline constexpr unsigned long kVfioGroupUnsetContainer = _IO(kVfioType, kVfioBase + 5);
// VFIO_GROUP_GET_DEVICE_FD: const char * (NUL-terminated device name);
// returns a new device fd (the kernel opens it O_CLOEXEC).
inline constexpr unsigned long kVfioGroupGetDeviceFd = _IO(kVfioType, kVfioBase + 6);

// Any VFIO device fd (from the group or a bound cdev).
// VFIO_DEVICE_GET_INFO: struct vfio_device_info *. A cdev not yet bound to
// an iommufd answers EINVAL; a non-VFIO fd ENOTTY.
inline constexpr unsigned long kVfioDeviceGetInfo = _IO(kVfioType, kVfioBase + 7);

// Device cdev (/dev/vfio/devices/vfioX), since 6.6.
// VFIO_DEVICE_BIND_IOMMUFD: struct vfio_device_bind_iommufd *.
inline constexpr unsigned long kVfioDeviceBindIommufd = _IO(kVfioType, kVfioBase + 18);
// VFIO_DEVICE_ATTACH_IOMMUFD_PT: struct vfio_device_attach_iommufd_pt *.
inline constexpr unsigned long kVfioDeviceAttachIommufdPt = _IO(kVfioType, kVfioBase + 19);
// VFIO_DEVICE_DETACH_IOMMUFD_PT: struct vfio_device_detach_iommufd_pt *.
inline constexpr unsigned long kVfioDeviceDetachIommufdPt = _IO(kVfioType, kVfioBase + 20);

// Type1 IOMMU, on the container.
// VFIO_IOMMU_GET_INFO: struct vfio_iommu_type1_info * followed by argsz - 24
// bytes for the capability chain.
inline constexpr unsigned long kVfioIommuGetInfo = _IO(kVfioType, kVfioBase + 12);
inline constexpr uint32_t kVfioIommuInfoPgsizes = 1u << 0;  // VFIO_IOMMU_INFO_PGSIZES
inline constexpr uint32_t kVfioIommuInfoCaps = 1u << 1;     // VFIO_IOMMU_INFO_CAPS
inline constexpr uint16_t kVfioIommuType1InfoCapIovaRange = 1;  // ..._CAP_IOVA_RANGE
inline constexpr uint16_t kVfioIommuType1InfoCapMigration = 2;  // ..._CAP_MIGRATION
inline constexpr uint16_t kVfioIommuType1InfoDmaAvail = 3;      // ..._INFO_DMA_AVAIL
// VFIO_IOMMU_MAP_DMA: struct vfio_iommu_type1_dma_map *.
inline constexpr unsigned long kVfioIommuMapDma = _IO(kVfioType, kVfioBase + 13);
inline constexpr uint32_t kVfioDmaMapFlagRead = 1u << 0;   // VFIO_DMA_MAP_FLAG_READ
inline constexpr uint32_t kVfioDmaMapFlagWrite = 1u << 1;  // VFIO_DMA_MAP_FLAG_WRITE
// VFIO_IOMMU_UNMAP_DMA: struct vfio_iommu_type1_dma_unmap *; the kernel
// writes the bytes unmapped back into `size`.
inline constexpr unsigned long kVfioIommuUnmapDma = _IO(kVfioType, kVfioBase + 14);
inline constexpr uint32_t kVfioDmaUnmapFlagAll = 1u << 1;  // VFIO_DMA_UNMAP_FLAG_ALL (5.13+)

struct vfio_info_cap_header {
  uint16_t id;       // Identifies capability.
  uint16_t version;  // Version specific to the capability ID.
  uint32_t next;     // Offset of next capability (from the start of the info struct); 0 ends.
};

struct vfio_device_info {
  uint32_t argsz;
  uint32_t flags;  // VFIO_DEVICE_FLAGS_*.
  uint32_t num_regions;
  uint32_t num_irqs;
  uint32_t cap_offset;
  uint32_t pad;
};

struct vfio_group_status {
  uint32_t argsz;
  uint32_t flags;
};

struct vfio_iommu_type1_info {
  uint32_t argsz;
  uint32_t flags;
  uint64_t iova_pgsizes;  // Bitmap of supported page sizes.
  uint32_t cap_offset;    // Offset within info struct of first cap.
  // 4 bytes of tail padding: sizeof == 24, and the kernel places the first
  // capability at sizeof(struct vfio_iommu_type1_info).
};

struct vfio_iova_range {
  uint64_t start;
  uint64_t end;  // Inclusive.
};

struct vfio_iommu_type1_info_cap_iova_range {
  vfio_info_cap_header header;
  uint32_t nr_iovas;
  uint32_t reserved;
  // struct vfio_iova_range iova_ranges[] follows (flexible array member).
};

struct vfio_iommu_type1_info_dma_avail {
  vfio_info_cap_header header;
  uint32_t avail;
};

struct vfio_iommu_type1_dma_map {
  uint32_t argsz;
  uint32_t flags;
  uint64_t vaddr;  // Process virtual address.
  uint64_t iova;   // IO virtual address.
  uint64_t size;   // Size of mapping (bytes).
};

struct vfio_iommu_type1_dma_unmap {
  uint32_t argsz;
  uint32_t flags;
  uint64_t iova;  // IO virtual address.
  uint64_t size;  // Size of mapping (bytes); out: bytes unmapped.
  // uint8_t data[] follows (dirty bitmap; unused here).
};

struct vfio_device_bind_iommufd {
  uint32_t argsz;
  uint32_t flags;     // Must be 0.
  int32_t iommufd;
  uint32_t out_devid;
};

struct vfio_device_attach_iommufd_pt {
  uint32_t argsz;
  uint32_t flags;  // Must be 0.
  uint32_t pt_id;  // In: IOAS or HWPT id; out: the attached HWPT id.
};

struct vfio_device_detach_iommufd_pt {
  uint32_t argsz;
  uint32_t flags;  // Must be 0.
};

// ---- include/uapi/linux/iommufd.h ----------------------------------------

inline constexpr unsigned kIommufdType = ';';  // IOMMUFD_TYPE
inline constexpr unsigned kIommufdCmdBase = 0x80;  // IOMMUFD_CMD_BASE
inline constexpr unsigned kIommufdCmdDestroy = kIommufdCmdBase + 0;
inline constexpr unsigned kIommufdCmdIoasAlloc = kIommufdCmdBase + 1;
inline constexpr unsigned kIommufdCmdIoasAllowIovas = kIommufdCmdBase + 2;
inline constexpr unsigned kIommufdCmdIoasCopy = kIommufdCmdBase + 3;
inline constexpr unsigned kIommufdCmdIoasIovaRanges = kIommufdCmdBase + 4;
inline constexpr unsigned kIommufdCmdIoasMap = kIommufdCmdBase + 5;
inline constexpr unsigned kIommufdCmdIoasUnmap = kIommufdCmdBase + 6;

inline constexpr unsigned long kIommuDestroy = _IO(kIommufdType, kIommufdCmdDestroy);
inline constexpr unsigned long kIommuIoasAlloc = _IO(kIommufdType, kIommufdCmdIoasAlloc);
inline constexpr unsigned long kIommuIoasIovaRanges =
    _IO(kIommufdType, kIommufdCmdIoasIovaRanges);
inline constexpr unsigned long kIommuIoasMap = _IO(kIommufdType, kIommufdCmdIoasMap);
inline constexpr unsigned long kIommuIoasUnmap = _IO(kIommufdType, kIommufdCmdIoasUnmap);

// enum iommufd_ioas_map_flags
inline constexpr uint32_t kIommuIoasMapFixedIova = 1u << 0;  // IOMMU_IOAS_MAP_FIXED_IOVA
inline constexpr uint32_t kIommuIoasMapWriteable = 1u << 1;  // IOMMU_IOAS_MAP_WRITEABLE
inline constexpr uint32_t kIommuIoasMapReadable = 1u << 2;   // IOMMU_IOAS_MAP_READABLE

struct iommu_destroy {
  uint32_t size;
  uint32_t id;
};

struct iommu_ioas_alloc {
  uint32_t size;
  uint32_t flags;  // Must be 0.
  uint32_t out_ioas_id;
};

struct iommu_iova_range {
  alignas(8) uint64_t start;
  alignas(8) uint64_t last;  // Inclusive.
};

struct iommu_ioas_iova_ranges {
  uint32_t size;
  uint32_t ioas_id;
  uint32_t num_iovas;  // In: capacity of allowed_iovas; out: total ranges.
  uint32_t reserved;   // __reserved: must be 0.
  alignas(8) uint64_t allowed_iovas;  // User pointer to struct iommu_iova_range[].
  alignas(8) uint64_t out_iova_alignment;
};

struct iommu_ioas_map {
  uint32_t size;
  uint32_t flags;
  uint32_t ioas_id;
  uint32_t reserved;  // __reserved: must be 0.
  alignas(8) uint64_t user_va;
  alignas(8) uint64_t length;
  alignas(8) uint64_t iova;
};

struct iommu_ioas_unmap {
  uint32_t size;
  uint32_t ioas_id;
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;  // In: bytes to unmap; out: bytes unmapped.
};

// ---- Layouts (the kernel's, on every Linux ABI: explicit u64 alignment for
// iommufd, natural layout for VFIO on the 64-bit hosts this agent supports).
static_assert(sizeof(void*) == 8, "the agent passes user pointers as u64; 64-bit hosts only");
static_assert(sizeof(vfio_info_cap_header) == 8, "");
static_assert(offsetof(vfio_info_cap_header, next) == 4, "");
static_assert(sizeof(vfio_group_status) == 8, "");
static_assert(sizeof(vfio_iommu_type1_info) == 24, "");
static_assert(offsetof(vfio_iommu_type1_info, iova_pgsizes) == 8, "");
static_assert(offsetof(vfio_iommu_type1_info, cap_offset) == 16, "");
static_assert(sizeof(vfio_iova_range) == 16, "");
static_assert(sizeof(vfio_iommu_type1_info_cap_iova_range) == 16, "");
static_assert(offsetof(vfio_iommu_type1_info_cap_iova_range, nr_iovas) == 8, "");
static_assert(sizeof(vfio_iommu_type1_info_dma_avail) == 12, "");
static_assert(offsetof(vfio_iommu_type1_info_dma_avail, avail) == 8, "");
static_assert(sizeof(vfio_iommu_type1_dma_map) == 32, "");
static_assert(offsetof(vfio_iommu_type1_dma_map, vaddr) == 8, "");
static_assert(offsetof(vfio_iommu_type1_dma_map, iova) == 16, "");
static_assert(offsetof(vfio_iommu_type1_dma_map, size) == 24, "");
static_assert(sizeof(vfio_iommu_type1_dma_unmap) == 24, "");
static_assert(offsetof(vfio_iommu_type1_dma_unmap, iova) == 8, "");
static_assert(offsetof(vfio_iommu_type1_dma_unmap, size) == 16, "");
static_assert(sizeof(vfio_device_bind_iommufd) == 16, "");
static_assert(offsetof(vfio_device_bind_iommufd, iommufd) == 8, "");
static_assert(offsetof(vfio_device_bind_iommufd, out_devid) == 12, "");
static_assert(sizeof(vfio_device_attach_iommufd_pt) == 12, "");
static_assert(offsetof(vfio_device_attach_iommufd_pt, pt_id) == 8, "");
static_assert(sizeof(vfio_device_detach_iommufd_pt) == 8, "");
static_assert(sizeof(iommu_destroy) == 8, "");
static_assert(sizeof(iommu_ioas_alloc) == 12, "");
static_assert(offsetof(iommu_ioas_alloc, out_ioas_id) == 8, "");
static_assert(sizeof(iommu_iova_range) == 16, "");
static_assert(sizeof(iommu_ioas_iova_ranges) == 32, "");
static_assert(offsetof(iommu_ioas_iova_ranges, num_iovas) == 8, "");
static_assert(offsetof(iommu_ioas_iova_ranges, allowed_iovas) == 16, "");
static_assert(offsetof(iommu_ioas_iova_ranges, out_iova_alignment) == 24, "");
static_assert(sizeof(iommu_ioas_map) == 40, "");
static_assert(offsetof(iommu_ioas_map, ioas_id) == 8, "");
static_assert(offsetof(iommu_ioas_map, user_va) == 16, "");
static_assert(offsetof(iommu_ioas_map, length) == 24, "");
static_assert(offsetof(iommu_ioas_map, iova) == 32, "");
static_assert(sizeof(iommu_ioas_unmap) == 24, "");
static_assert(offsetof(iommu_ioas_unmap, iova) == 8, "");
static_assert(offsetof(iommu_ioas_unmap, length) == 16, "");

// The numbers themselves, spelled out once (x86-64/arm64 _IO encoding), so a
// typo in a base offset above cannot go unnoticed.
static_assert(kVfioGetApiVersion == 0x3b64, "");
static_assert(kVfioGroupGetDeviceFd == 0x3b6a, "");
static_assert(kVfioIommuMapDma == 0x3b71, "");
static_assert(kVfioDeviceGetInfo == 0x3b6b, "");
static_assert(sizeof(vfio_device_info) == 24, "");
static_assert(kVfioDeviceBindIommufd == 0x3b76, "");
static_assert(kVfioDeviceAttachIommufdPt == 0x3b77, "");
static_assert(kVfioDeviceDetachIommufdPt == 0x3b78, "");
static_assert(kIommuDestroy == 0x3b80, "");
static_assert(kIommuIoasMap == 0x3b85, "");
static_assert(kIommuIoasUnmap == 0x3b86, "");

}  // namespace uapi
}  // namespace agent
}  // namespace iommu

#endif  // AGENT_KERNEL_UAPI_H_
