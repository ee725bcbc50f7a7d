// Move-only RAII owners of the kernel objects behind the real backends, one
// type per kind of object, with one method per ioctl:
//   ContainerFd  /dev/vfio/vfio        (VFIO type1 container)
//   GroupFd      /dev/vfio/N           (VFIO group)
//   IommufdFd    /dev/iommu            (iommufd context)
//   DeviceFd     a VFIO device: from VFIO_GROUP_GET_DEVICE_FD, or the cdev
//                /dev/vfio/devices/vfioX
// Every fd is opened O_CLOEXEC through a KernelOps (agent/kernel_ops.h) and
// closed through it by the owner's destructor, so tests with FakeKernelOps
// can prove that every error path closes what it opened. An ioctl that
// creates an fd returns a new owner.
//
// Errors: each method retries EINTR and returns ErrnoStatus(errno, context)
// (common/errno_status.h), the context naming the ioctl, the object and the
// arguments, e.g.
//   "VFIO_IOMMU_MAP_DMA container=fd7 iova=0x100000 size=0x2000
//    vaddr=0x7f0000000000: EINVAL (Invalid argument)".
// Nothing here holds a lock: an owner is used by one thread at a time, or
// concurrently for ioctls the kernel serialises itself (MAP/UNMAP).
//
// Lifetimes: the KernelOps passed in must outlive every owner made from it.
// Argument structs live on the caller's stack (or in a std::vector owned by
// the call) for the whole synchronous ioctl; no pointer is kept by the
// kernel after the ioctl returns.
#ifndef AGENT_KERNEL_FDS_H_
#define AGENT_KERNEL_FDS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "agent/backend.h"
#include "agent/kernel_ops.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

// Common part of the owners: the fd and the KernelOps that closes it.
// Subclassed only by the owner types below.
class KernelFd {
 public:
  KernelFd(const KernelFd&) = delete;
  KernelFd& operator=(const KernelFd&) = delete;
  KernelFd(KernelFd&& other) noexcept
      : ops_(other.ops_), fd_(std::exchange(other.fd_, -1)) {}
  KernelFd& operator=(KernelFd&& other) noexcept {
    if (this != &other) {
      Reset();
      ops_ = other.ops_;
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~KernelFd() { Reset(); }

  // The fd, still owned; -1 when empty (moved from or Reset).
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Closes the fd now (idempotent).
  void Reset() {
    if (fd_ >= 0) ops_->Close(std::exchange(fd_, -1));
  }

  // A new real fd for the same open file (F_DUPFD_CLOEXEC), owned by the
  // caller. Errors: the fcntl errno naming `what`.
  absl::StatusOr<UniqueFd> Dup(absl::string_view what) const;

 protected:
  KernelFd() = default;
  KernelFd(KernelOps* ops, int fd) : ops_(ops), fd_(fd) {}
  KernelOps* ops() const { return ops_; }

 private:
  KernelOps* ops_ = nullptr;
  int fd_ = -1;
};

// VFIO_IOMMU_GET_INFO, parsed.
struct Type1Info {
  uint32_t flags = 0;
  uint64_t iova_pgsizes = 0;   // Valid when flags has VFIO_IOMMU_INFO_PGSIZES.
  bool has_iova_ranges = false;
  std::vector<IovaRange> iova_ranges;  // From CAP_IOVA_RANGE; ends inclusive.
  bool has_dma_avail = false;
  uint32_t dma_avail = 0;              // From INFO_DMA_AVAIL.
  std::vector<uint16_t> skipped_caps;  // Ids of capabilities not used here.
};

// Parses a VFIO_IOMMU_GET_INFO buffer: the vfio_iommu_type1_info header and,
// when VFIO_IOMMU_INFO_CAPS is set and cap_offset != 0, the capability chain
// it points to (offsets from the start of `buf`, 0 ends the chain). Unknown
// capabilities are skipped. Errors (INTERNAL, naming the offset and the
// sizes): a buffer shorter than the header, a capability or its payload
// running past the buffer, or a chain that does not move forward (a loop).
absl::StatusOr<Type1Info> ParseType1Info(absl::Span<const uint8_t> buf);

// What IOMMU_IOAS_IOVA_RANGES returns.
struct IoasRanges {
  std::vector<IovaRange> ranges;  // Inclusive, as the kernel reports them.
  uint64_t iova_alignment = 0;    // out_iova_alignment.
};

// VFIO_DEVICE_GET_INFO, the header only.
struct DeviceInfo {
  uint32_t flags = 0;
  uint32_t num_regions = 0;
  uint32_t num_irqs = 0;
};

class DeviceFd;

class ContainerFd final : public KernelFd {
 public:
  ContainerFd() = default;
  // open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC).
  static absl::StatusOr<ContainerFd> Open(KernelOps* ops);
  // Takes ownership of `fd` (a dup an earlier process persisted) and checks
  // it is a VFIO container: VFIO_GET_API_VERSION answers. On error `fd` is
  // closed (through `ops`) and the ioctl's status returned (ENOTTY for a
  // pipe, a memfd or another kind of VFIO fd).
  static absl::StatusOr<ContainerFd> Adopt(KernelOps* ops, UniqueFd fd);

  // VFIO_GET_API_VERSION: the API version (VFIO_API_VERSION is 0).
  absl::StatusOr<int> GetApiVersion() const;
  // VFIO_CHECK_EXTENSION(extension): true when the kernel returns > 0.
  absl::StatusOr<bool> CheckExtension(uint32_t extension) const;
  // VFIO_SET_IOMMU(type). Needs at least one group set on the container.
  absl::Status SetIommu(uint32_t type) const;
  // VFIO_IOMMU_GET_INFO, growing argsz until the capability chain fits (the
  // kernel reports the size it needs in argsz), then ParseType1Info.
  absl::StatusOr<Type1Info> GetIommuInfo() const;
  // VFIO_IOMMU_MAP_DMA of [vaddr, vaddr + size) at iova. `flags` is
  // VFIO_DMA_MAP_FLAG_READ / _WRITE.
  absl::Status MapDma(uint64_t iova, uint64_t vaddr, uint64_t size,
                      uint32_t flags) const;
  // VFIO_IOMMU_UNMAP_DMA: returns the bytes unmapped (the struct's size
  // field on return; 0 when nothing was mapped there).
  absl::StatusOr<uint64_t> UnmapDma(uint64_t iova, uint64_t size,
                                    uint32_t flags) const;

 private:
  using KernelFd::KernelFd;
};

class GroupFd final : public KernelFd {
 public:
  GroupFd() = default;
  // open("/dev/vfio/<group>", O_RDWR | O_CLOEXEC).
  static absl::StatusOr<GroupFd> Open(KernelOps* ops, uint32_t group);
  // Takes ownership of `fd` as group `group` and checks it is a VFIO group
  // set on a container: VFIO_GROUP_GET_STATUS answers with
  // VFIO_GROUP_FLAGS_CONTAINER_SET (else FAILED_PRECONDITION naming the
  // flags). On error `fd` is closed and the ioctl's status returned.
  static absl::StatusOr<GroupFd> Adopt(KernelOps* ops, UniqueFd fd, uint32_t group);

  uint32_t group() const { return group_; }

  // VFIO_GROUP_GET_STATUS: the flags (VFIO_GROUP_FLAGS_*).
  absl::StatusOr<uint32_t> GetStatus() const;
  // VFIO_GROUP_SET_CONTAINER(container). The kernel takes its own reference
  // on the container; `container` may be closed after UnsetContainer.
  absl::Status SetContainer(const ContainerFd& container) const;
  // VFIO_GROUP_UNSET_CONTAINER. EBUSY while device fds of the group are open.
  absl::Status UnsetContainer() const;
  // VFIO_GROUP_GET_DEVICE_FD(address): a new DeviceFd.
  absl::StatusOr<DeviceFd> GetDeviceFd(const std::string& address) const;

 private:
  GroupFd(KernelOps* ops, int fd, uint32_t group)
      : KernelFd(ops, fd), group_(group) {}
  uint32_t group_ = 0;
};

class IommufdFd final : public KernelFd {
 public:
  IommufdFd() = default;
  // open("/dev/iommu", O_RDWR | O_CLOEXEC).
  static absl::StatusOr<IommufdFd> Open(KernelOps* ops);
  // Takes ownership of `fd` and checks it is an iommufd context holding IOAS
  // `ioas_id`: IOMMU_IOAS_IOVA_RANGES(ioas_id) answers (ENOTTY: not an
  // iommufd; ENOENT: no such IOAS in it). On error `fd` is closed and the
  // ioctl's status returned.
  static absl::StatusOr<IommufdFd> Adopt(KernelOps* ops, UniqueFd fd, uint32_t ioas_id);

  // IOMMU_IOAS_ALLOC: the new IOAS id.
  absl::StatusOr<uint32_t> IoasAlloc() const;
  // IOMMU_IOAS_IOVA_RANGES, two-call pattern: asks for the count, then
  // fetches; repeats (a few times) if the count grew in between (EMSGSIZE).
  absl::StatusOr<IoasRanges> IoasIovaRanges(uint32_t ioas_id) const;
  // IOMMU_IOAS_MAP of [user_va, user_va + length) at iova; `flags` is
  // IOMMU_IOAS_MAP_* (the backend always passes FIXED_IOVA).
  absl::Status IoasMap(uint32_t ioas_id, uint64_t iova, uint64_t user_va,
                       uint64_t length, uint32_t flags) const;
  // IOMMU_IOAS_UNMAP: returns the bytes unmapped (the length field on return).
  absl::StatusOr<uint64_t> IoasUnmap(uint32_t ioas_id, uint64_t iova,
                                     uint64_t length) const;
  // IOMMU_DESTROY(id). EBUSY while devices are attached to the IOAS.
  absl::Status Destroy(uint32_t id) const;

 private:
  using KernelFd::KernelFd;
};

class DeviceFd final : public KernelFd {
 public:
  DeviceFd() = default;
  // open(<cdev path>, O_RDWR | O_CLOEXEC), e.g. "/dev/vfio/devices/vfio0".
  static absl::StatusOr<DeviceFd> OpenCdev(KernelOps* ops,
                                           const std::string& path,
                                           const std::string& address);

  // Takes ownership of `fd` as the device `address` and checks it is a VFIO
  // device usable as is: VFIO_DEVICE_GET_INFO answers (ENOTTY: not a VFIO
  // device; EINVAL: a cdev not bound to an iommufd). On error `fd` is closed
  // and the ioctl's status returned.
  static absl::StatusOr<DeviceFd> Adopt(KernelOps* ops, UniqueFd fd,
                                        const std::string& address);

  const std::string& address() const { return address_; }

  // VFIO_DEVICE_GET_INFO: flags, regions and irqs (argsz = the 24-byte
  // header; capabilities are not fetched).
  absl::StatusOr<DeviceInfo> GetInfo() const;

  // VFIO_DEVICE_BIND_IOMMUFD(iommufd): the device id in that context. The
  // binding lasts until the last fd of this open file is closed.
  absl::StatusOr<uint32_t> BindIommufd(const IommufdFd& iommufd) const;
  // VFIO_DEVICE_ATTACH_IOMMUFD_PT(pt_id): the attached HWPT id.
  absl::StatusOr<uint32_t> AttachIommufdPt(uint32_t pt_id) const;
  // VFIO_DEVICE_DETACH_IOMMUFD_PT: DMA blocked until attached again.
  absl::Status DetachIommufdPt() const;

 private:
  friend class GroupFd;
  DeviceFd(KernelOps* ops, int fd, std::string address)
      : KernelFd(ops, fd), address_(std::move(address)) {}
  std::string address_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_KERNEL_FDS_H_
