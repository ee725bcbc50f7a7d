#include "agent/kernel_fds.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "agent/kernel_uapi.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

// The kernel never needs a GET_INFO buffer anywhere near this; a larger
// argsz request means a bug (ours or the kernel's), not a bigger buffer.
constexpr size_t kMaxInfoBytes = 1 << 20;
constexpr int kMaxSizeRetries = 4;

SysResult RetryIoctl(KernelOps* ops, int fd, unsigned long request,
                     unsigned long arg) {
  SysResult r;
  do {
    r = ops->Ioctl(fd, request, arg);
  } while (!r.ok() && r.err == EINTR);
  return r;
}

template <typename T>
unsigned long Ptr(T* p) {
  return reinterpret_cast<unsigned long>(p);
}

absl::Status OpenError(const SysResult& r, const std::string& path) {
  return ErrnoStatus(r.err, absl::StrCat("open ", path));
}

absl::StatusOr<int> OpenRetry(KernelOps* ops, const std::string& path) {
  SysResult r;
  do {
    r = ops->Open(path, O_RDWR);
  } while (!r.ok() && r.err == EINTR);
  if (!r.ok()) return OpenError(r, path);
  return static_cast<int>(r.value);
}

std::string Fd(absl::string_view kind, int fd) {
  return absl::StrCat(kind, "=fd", fd);
}

absl::Status ChainError(size_t offset, absl::string_view what, size_t need,
                        size_t have) {
  return absl::InternalError(absl::StrCat(
      "VFIO_IOMMU_GET_INFO: capability chain malformed at offset ", offset,
      ": ", what, " needs ", need, " bytes, the buffer has ", have));
}

}  // namespace

absl::StatusOr<UniqueFd> KernelFd::Dup(absl::string_view what) const {
  const SysResult r = ops_->DupCloexec(fd_);
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("F_DUPFD_CLOEXEC ", what, "=fd", fd_));
  }
  return UniqueFd(static_cast<int>(r.value));
}

absl::StatusOr<Type1Info> ParseType1Info(absl::Span<const uint8_t> buf) {
  uapi::vfio_iommu_type1_info info;
  if (buf.size() < sizeof(info)) {
    return ChainError(0, "struct vfio_iommu_type1_info", sizeof(info), buf.size());
  }
  std::memcpy(&info, buf.data(), sizeof(info));
  Type1Info out;
  out.flags = info.flags;
  out.iova_pgsizes = info.iova_pgsizes;
  if ((info.flags & uapi::kVfioIommuInfoCaps) == 0 || info.cap_offset == 0) {
    return out;
  }
  // Offsets only ever move forward (the kernel lays the chain out in order),
  // which also bounds the walk: a loop is an error, not a hang.
  size_t offset = info.cap_offset;
  size_t min_next = sizeof(info);
  while (offset != 0) {
    if (offset < min_next) {
      return absl::InternalError(absl::StrCat(
          "VFIO_IOMMU_GET_INFO: capability chain malformed: offset ", offset,
          " does not move past ", min_next));
    }
    uapi::vfio_info_cap_header header;
    if (offset > buf.size() || buf.size() - offset < sizeof(header)) {
      return ChainError(offset, "a capability header", sizeof(header),
                        buf.size() - std::min(offset, buf.size()));
    }
    std::memcpy(&header, buf.data() + offset, sizeof(header));
    const size_t left = buf.size() - offset;
    switch (header.id) {
      case uapi::kVfioIommuType1InfoCapIovaRange: {
        uapi::vfio_iommu_type1_info_cap_iova_range cap;
        if (left < sizeof(cap)) {
          return ChainError(offset, "CAP_IOVA_RANGE", sizeof(cap), left);
        }
        std::memcpy(&cap, buf.data() + offset, sizeof(cap));
        // 64-bit arithmetic: nr_iovas is a u32, so this cannot overflow.
        const uint64_t need = sizeof(cap) + uint64_t{cap.nr_iovas} *
                                                sizeof(uapi::vfio_iova_range);
        if (left < need) {
          return ChainError(offset,
                            absl::StrCat("CAP_IOVA_RANGE with ", cap.nr_iovas,
                                         " ranges"),
                            need, left);
        }
        out.has_iova_ranges = true;
        out.iova_ranges.clear();
        for (uint32_t i = 0; i < cap.nr_iovas; ++i) {
          uapi::vfio_iova_range r;
          std::memcpy(&r, buf.data() + offset + sizeof(cap) + i * sizeof(r),
                      sizeof(r));
          out.iova_ranges.push_back(IovaRange{r.start, r.end});
        }
        break;
      }
      case uapi::kVfioIommuType1InfoDmaAvail: {
        uapi::vfio_iommu_type1_info_dma_avail cap;
        if (left < sizeof(cap)) {
          return ChainError(offset, "INFO_DMA_AVAIL", sizeof(cap), left);
        }
        std::memcpy(&cap, buf.data() + offset, sizeof(cap));
        out.has_dma_avail = true;
        out.dma_avail = cap.avail;
        break;
      }
      default:
        out.skipped_caps.push_back(header.id);
        break;
    }
    min_next = offset + sizeof(header);
    offset = header.next;
  }
  return out;
}

// ---- ContainerFd -----------------------------------------------------------

absl::StatusOr<ContainerFd> ContainerFd::Open(KernelOps* ops) {
  absl::StatusOr<int> fd = OpenRetry(ops, "/dev/vfio/vfio");
  if (!fd.ok()) return fd.status();
  return ContainerFd(ops, *fd);
}

absl::StatusOr<ContainerFd> ContainerFd::Adopt(KernelOps* ops, UniqueFd fd) {
  ContainerFd owner(ops, fd.release());
  absl::StatusOr<int> version = owner.GetApiVersion();
  if (!version.ok()) return version.status();  // `owner` closes the fd.
  return owner;
}

absl::StatusOr<int> ContainerFd::GetApiVersion() const {
  const SysResult r = RetryIoctl(ops(), get(), uapi::kVfioGetApiVersion, 0);
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_GET_API_VERSION ", Fd("container", get())));
  }
  return static_cast<int>(r.value);
}

absl::StatusOr<bool> ContainerFd::CheckExtension(uint32_t extension) const {
  const SysResult r =
      RetryIoctl(ops(), get(), uapi::kVfioCheckExtension, extension);
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_CHECK_EXTENSION ",
                                           Fd("container", get()),
                                           " extension=", extension));
  }
  return r.value > 0;
}

absl::Status ContainerFd::SetIommu(uint32_t type) const {
  const SysResult r = RetryIoctl(ops(), get(), uapi::kVfioSetIommu, type);
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_SET_IOMMU ", Fd("container", get()),
                                           " type=", type));
  }
  return absl::OkStatus();
}

absl::StatusOr<Type1Info> ContainerFd::GetIommuInfo() const {
  // Room for the header and a typical chain (migration, DMA avail, a few
  // IOVA ranges) in one call; the kernel asks for more via argsz if needed.
  std::vector<uint8_t> buf(256);
  for (int attempt = 0; attempt < kMaxSizeRetries; ++attempt) {
    std::fill(buf.begin(), buf.end(), 0);
    uapi::vfio_iommu_type1_info info{};
    info.argsz = static_cast<uint32_t>(buf.size());
    std::memcpy(buf.data(), &info, sizeof(info));
    // `buf` outlives the synchronous ioctl; the kernel writes at most argsz
    // bytes into it (header up to min(argsz, 24), caps only when they fit).
    const SysResult r =
        RetryIoctl(ops(), get(), uapi::kVfioIommuGetInfo, Ptr(buf.data()));
    if (!r.ok()) {
      return ErrnoStatus(r.err, absl::StrCat("VFIO_IOMMU_GET_INFO ",
                                             Fd("container", get()),
                                             " argsz=", buf.size()));
    }
    std::memcpy(&info, buf.data(), sizeof(info));
    if (info.argsz <= buf.size()) return ParseType1Info(buf);
    if (info.argsz > kMaxInfoBytes) {
      return absl::InternalError(absl::StrCat(
          "VFIO_IOMMU_GET_INFO ", Fd("container", get()), ": kernel asks for argsz=",
          info.argsz, ", above the ", kMaxInfoBytes, "-byte limit"));
    }
    buf.resize(info.argsz);
  }
  return absl::InternalError(absl::StrCat(
      "VFIO_IOMMU_GET_INFO ", Fd("container", get()),
      ": the capability chain kept growing over ", kMaxSizeRetries, " calls"));
}

absl::Status ContainerFd::MapDma(uint64_t iova, uint64_t vaddr, uint64_t size,
                                 uint32_t flags) const {
  uapi::vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof(map);
  map.flags = flags;
  map.vaddr = vaddr;
  map.iova = iova;
  map.size = size;
  const SysResult r = RetryIoctl(ops(), get(), uapi::kVfioIommuMapDma, Ptr(&map));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_IOMMU_MAP_DMA ", Fd("container", get()),
                                           " iova=", Hex(iova), " size=", Hex(size),
                                           " vaddr=", Hex(vaddr), " flags=", Hex(flags)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ContainerFd::UnmapDma(uint64_t iova, uint64_t size,
                                               uint32_t flags) const {
  uapi::vfio_iommu_type1_dma_unmap unmap{};
  unmap.argsz = sizeof(unmap);
  unmap.flags = flags;
  unmap.iova = iova;
  unmap.size = size;
  const SysResult r =
      RetryIoctl(ops(), get(), uapi::kVfioIommuUnmapDma, Ptr(&unmap));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_IOMMU_UNMAP_DMA ",
                                           Fd("container", get()), " iova=", Hex(iova),
                                           " size=", Hex(size), " flags=", Hex(flags)));
  }
  return unmap.size;
}

// ---- GroupFd ---------------------------------------------------------------

absl::StatusOr<GroupFd> GroupFd::Open(KernelOps* ops, uint32_t group) {
  absl::StatusOr<int> fd = OpenRetry(ops, absl::StrCat("/dev/vfio/", group));
  if (!fd.ok()) return fd.status();
  return GroupFd(ops, *fd, group);
}

absl::StatusOr<GroupFd> GroupFd::Adopt(KernelOps* ops, UniqueFd fd, uint32_t group) {
  GroupFd owner(ops, fd.release(), group);
  absl::StatusOr<uint32_t> flags = owner.GetStatus();
  if (!flags.ok()) return flags.status();
  if ((*flags & uapi::kVfioGroupFlagsContainerSet) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VFIO_GROUP_GET_STATUS group=", group, " fd=", owner.get(), ": flags=",
        Hex(*flags), " without CONTAINER_SET (the group is on no container)"));
  }
  return owner;
}

absl::StatusOr<uint32_t> GroupFd::GetStatus() const {
  uapi::vfio_group_status status{};
  status.argsz = sizeof(status);
  const SysResult r =
      RetryIoctl(ops(), get(), uapi::kVfioGroupGetStatus, Ptr(&status));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_GROUP_GET_STATUS group=", group_,
                                           " fd=", get()));
  }
  return status.flags;
}

absl::Status GroupFd::SetContainer(const ContainerFd& container) const {
  int32_t container_fd = container.get();
  const SysResult r =
      RetryIoctl(ops(), get(), uapi::kVfioGroupSetContainer, Ptr(&container_fd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_GROUP_SET_CONTAINER group=", group_,
                                           " fd=", get(), " ",
                                           Fd("container", container.get())));
  }
  return absl::OkStatus();
}

absl::Status GroupFd::UnsetContainer() const {
  const SysResult r = RetryIoctl(ops(), get(), uapi::kVfioGroupUnsetContainer, 0);
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_GROUP_UNSET_CONTAINER group=",
                                           group_, " fd=", get()));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceFd> GroupFd::GetDeviceFd(const std::string& address) const {
  // `address` is NUL-terminated by std::string and outlives the ioctl.
  const SysResult r = RetryIoctl(ops(), get(), uapi::kVfioGroupGetDeviceFd,
                                 Ptr(address.c_str()));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_GROUP_GET_DEVICE_FD group=",
                                           group_, " fd=", get(), " device=", address));
  }
  return DeviceFd(ops(), static_cast<int>(r.value), address);
}

// ---- IommufdFd -------------------------------------------------------------

absl::StatusOr<IommufdFd> IommufdFd::Open(KernelOps* ops) {
  absl::StatusOr<int> fd = OpenRetry(ops, "/dev/iommu");
  if (!fd.ok()) return fd.status();
  return IommufdFd(ops, *fd);
}

absl::StatusOr<IommufdFd> IommufdFd::Adopt(KernelOps* ops, UniqueFd fd,
                                           uint32_t ioas_id) {
  IommufdFd owner(ops, fd.release());
  absl::StatusOr<IoasRanges> ranges = owner.IoasIovaRanges(ioas_id);
  if (!ranges.ok()) return ranges.status();
  return owner;
}

absl::StatusOr<uint32_t> IommufdFd::IoasAlloc() const {
  uapi::iommu_ioas_alloc cmd{};
  cmd.size = sizeof(cmd);
  const SysResult r = RetryIoctl(ops(), get(), uapi::kIommuIoasAlloc, Ptr(&cmd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("IOMMU_IOAS_ALLOC ", Fd("iommufd", get())));
  }
  return cmd.out_ioas_id;
}

absl::StatusOr<IoasRanges> IommufdFd::IoasIovaRanges(uint32_t ioas_id) const {
  std::vector<uapi::iommu_iova_range> ranges;
  for (int attempt = 0; attempt < kMaxSizeRetries; ++attempt) {
    uapi::iommu_ioas_iova_ranges cmd{};
    cmd.size = sizeof(cmd);
    cmd.ioas_id = ioas_id;
    cmd.num_iovas = static_cast<uint32_t>(ranges.size());
    // `ranges` outlives the ioctl; the kernel writes at most num_iovas
    // entries into it.
    cmd.allowed_iovas = ranges.empty() ? 0 : Ptr(ranges.data());
    const SysResult r =
        RetryIoctl(ops(), get(), uapi::kIommuIoasIovaRanges, Ptr(&cmd));
    if (!r.ok() && r.err == EMSGSIZE && cmd.num_iovas > ranges.size()) {
      // The kernel wrote the total back before failing: make room and ask
      // again.
      ranges.resize(cmd.num_iovas);
      continue;
    }
    if (!r.ok()) {
      return ErrnoStatus(r.err, absl::StrCat("IOMMU_IOAS_IOVA_RANGES ",
                                             Fd("iommufd", get()), " ioas=", ioas_id,
                                             " num_iovas=", ranges.size()));
    }
    IoasRanges out;
    out.iova_alignment = cmd.out_iova_alignment;
    for (uint32_t i = 0; i < cmd.num_iovas && i < ranges.size(); ++i) {
      out.ranges.push_back(IovaRange{ranges[i].start, ranges[i].last});
    }
    return out;
  }
  return absl::InternalError(absl::StrCat(
      "IOMMU_IOAS_IOVA_RANGES ", Fd("iommufd", get()), " ioas=", ioas_id,
      ": the range count kept growing over ", kMaxSizeRetries, " calls"));
}

absl::Status IommufdFd::IoasMap(uint32_t ioas_id, uint64_t iova,
                                uint64_t user_va, uint64_t length,
                                uint32_t flags) const {
  uapi::iommu_ioas_map cmd{};
  cmd.size = sizeof(cmd);
  cmd.flags = flags;
  cmd.ioas_id = ioas_id;
  cmd.user_va = user_va;
  cmd.length = length;
  cmd.iova = iova;
  const SysResult r = RetryIoctl(ops(), get(), uapi::kIommuIoasMap, Ptr(&cmd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("IOMMU_IOAS_MAP ", Fd("iommufd", get()),
                                           " ioas=", ioas_id, " iova=", Hex(iova),
                                           " length=", Hex(length), " user_va=",
                                           Hex(user_va), " flags=", Hex(flags)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> IommufdFd::IoasUnmap(uint32_t ioas_id, uint64_t iova,
                                              uint64_t length) const {
  uapi::iommu_ioas_unmap cmd{};
  cmd.size = sizeof(cmd);
  cmd.ioas_id = ioas_id;
  cmd.iova = iova;
  cmd.length = length;
  const SysResult r = RetryIoctl(ops(), get(), uapi::kIommuIoasUnmap, Ptr(&cmd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("IOMMU_IOAS_UNMAP ", Fd("iommufd", get()),
                                           " ioas=", ioas_id, " iova=", Hex(iova),
                                           " length=", Hex(length)));
  }
  return cmd.length;
}

absl::Status IommufdFd::Destroy(uint32_t id) const {
  uapi::iommu_destroy cmd{};
  cmd.size = sizeof(cmd);
  cmd.id = id;
  const SysResult r = RetryIoctl(ops(), get(), uapi::kIommuDestroy, Ptr(&cmd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("IOMMU_DESTROY ", Fd("iommufd", get()),
                                           " id=", id));
  }
  return absl::OkStatus();
}

// ---- DeviceFd --------------------------------------------------------------

absl::StatusOr<DeviceFd> DeviceFd::OpenCdev(KernelOps* ops,
                                            const std::string& path,
                                            const std::string& address) {
  absl::StatusOr<int> fd = OpenRetry(ops, path);
  if (!fd.ok()) return fd.status();
  return DeviceFd(ops, *fd, address);
}

absl::StatusOr<DeviceFd> DeviceFd::Adopt(KernelOps* ops, UniqueFd fd,
                                         const std::string& address) {
  DeviceFd owner(ops, fd.release(), address);
  absl::StatusOr<DeviceInfo> info = owner.GetInfo();
  if (!info.ok()) return info.status();
  return owner;
}

absl::StatusOr<DeviceInfo> DeviceFd::GetInfo() const {
  uapi::vfio_device_info info{};
  info.argsz = sizeof(info);
  // `info` outlives the synchronous ioctl; the kernel writes at most argsz
  // bytes (no capability chain fits in the header-sized buffer).
  const SysResult r = RetryIoctl(ops(), get(), uapi::kVfioDeviceGetInfo, Ptr(&info));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_DEVICE_GET_INFO device=", address_,
                                           " fd=", get()));
  }
  return DeviceInfo{info.flags, info.num_regions, info.num_irqs};
}

absl::StatusOr<uint32_t> DeviceFd::BindIommufd(const IommufdFd& iommufd) const {
  uapi::vfio_device_bind_iommufd cmd{};
  cmd.argsz = sizeof(cmd);
  cmd.iommufd = iommufd.get();
  const SysResult r =
      RetryIoctl(ops(), get(), uapi::kVfioDeviceBindIommufd, Ptr(&cmd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_DEVICE_BIND_IOMMUFD device=",
                                           address_, " fd=", get(), " ",
                                           Fd("iommufd", iommufd.get())));
  }
  return cmd.out_devid;
}

absl::StatusOr<uint32_t> DeviceFd::AttachIommufdPt(uint32_t pt_id) const {
  uapi::vfio_device_attach_iommufd_pt cmd{};
  cmd.argsz = sizeof(cmd);
  cmd.pt_id = pt_id;
  const SysResult r =
      RetryIoctl(ops(), get(), uapi::kVfioDeviceAttachIommufdPt, Ptr(&cmd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_DEVICE_ATTACH_IOMMUFD_PT device=",
                                           address_, " fd=", get(), " pt_id=", pt_id));
  }
  return cmd.pt_id;
}

absl::Status DeviceFd::DetachIommufdPt() const {
  uapi::vfio_device_detach_iommufd_pt cmd{};
  cmd.argsz = sizeof(cmd);
  const SysResult r =
      RetryIoctl(ops(), get(), uapi::kVfioDeviceDetachIommufdPt, Ptr(&cmd));
  if (!r.ok()) {
    return ErrnoStatus(r.err, absl::StrCat("VFIO_DEVICE_DETACH_IOMMUFD_PT device=",
                                           address_, " fd=", get()));
  }
  return absl::OkStatus();
}

}  // namespace agent
}  // namespace iommu
