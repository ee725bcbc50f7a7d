#include "agent/fake_kernel_ops.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/errno_status.h"
#include "agent/kernel_uapi.h"

namespace iommu {
namespace agent {
namespace {

template <typename T>
T* ArgPtr(unsigned long arg) {
  return reinterpret_cast<T*>(arg);
}

template <typename T>
void AppendBytes(std::vector<uint8_t>* out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out->insert(out->end(), p, p + sizeof(T));
}

// Both kernel APIs: a new mapping may not overlap an existing one.
bool Overlaps(const std::map<uint64_t, uint64_t>& m, uint64_t iova,
              uint64_t size) {
  const uint64_t last = iova + size - 1;
  auto next = m.lower_bound(iova);
  if (next != m.end() && next->first <= last) return true;
  if (next != m.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second - 1 >= iova) return true;
  }
  return false;
}

// Both kernel APIs: unmap whole mappings inside [iova, iova + size); cutting
// one is EINVAL. Returns bytes unmapped, or -errno.
int64_t UnmapRange(std::map<uint64_t, uint64_t>* m, uint64_t iova,
                   uint64_t size) {
  if (size == 0) return -EINVAL;
  const uint64_t last = iova + size - 1;
  auto first = m->lower_bound(iova);
  if (first != m->begin()) {
    auto prev = std::prev(first);
    if (prev->first + prev->second - 1 >= iova) return -EINVAL;
  }
  auto end = first;
  int64_t bytes = 0;
  for (; end != m->end() && end->first <= last; ++end) {
    if (end->first + end->second - 1 > last) return -EINVAL;
    bytes += static_cast<int64_t>(end->second);
  }
  m->erase(first, end);
  return bytes;
}

}  // namespace

std::vector<uint8_t> BuildType1Caps(const std::vector<IovaRange>& ranges,
                                    uint32_t dma_avail, bool unknown_cap) {
  constexpr uint32_t kHeader = sizeof(uapi::vfio_iommu_type1_info);
  std::vector<uint8_t> out;
  uint32_t offset = kHeader;
  if (unknown_cap) {
    // Shaped like vfio_iommu_type1_info_cap_migration (32 bytes).
    uapi::vfio_info_cap_header h{uapi::kVfioIommuType1InfoCapMigration, 1,
                                 offset + 32};
    AppendBytes(&out, h);
    out.resize(out.size() + 24, 0xab);
    offset += 32;
  }
  uapi::vfio_iommu_type1_info_dma_avail avail{};
  avail.header = {uapi::kVfioIommuType1InfoDmaAvail, 1,
                  offset + static_cast<uint32_t>(sizeof(avail)) + 4};
  avail.avail = dma_avail;
  AppendBytes(&out, avail);
  out.resize(out.size() + 4, 0);  // The kernel keeps caps 8-byte aligned.
  offset += sizeof(avail) + 4;
  uapi::vfio_iommu_type1_info_cap_iova_range cap{};
  cap.header = {uapi::kVfioIommuType1InfoCapIovaRange, 1, 0};
  cap.nr_iovas = static_cast<uint32_t>(ranges.size());
  AppendBytes(&out, cap);
  for (const IovaRange& r : ranges) {
    AppendBytes(&out, uapi::vfio_iova_range{r.start, r.last});
  }
  return out;
}

FakeKernelOps::FakeKernelOps()
    : type1_pgsizes_(0x40201000),
      type1_caps_(BuildType1Caps({{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}},
                                 65535, true)),
      ioas_ranges_({{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}}) {}

FakeKernelOps::~FakeKernelOps() = default;

void FakeKernelOps::AddGroup(uint32_t group, std::vector<std::string> devices,
                             bool viable) {
  absl::MutexLock lock(&mu_);
  groups_[group] = Group{std::move(devices), viable};
}

void FakeKernelOps::AddCdev(const std::string& path, const std::string& address) {
  absl::MutexLock lock(&mu_);
  cdevs_[path] = address;
}

void FakeKernelOps::set_has_container(bool v) {
  absl::MutexLock lock(&mu_);
  has_container_ = v;
}
void FakeKernelOps::set_has_iommufd(bool v) {
  absl::MutexLock lock(&mu_);
  has_iommufd_ = v;
}
void FakeKernelOps::set_api_version(int v) {
  absl::MutexLock lock(&mu_);
  api_version_ = v;
}
void FakeKernelOps::set_type1v2_supported(bool v) {
  absl::MutexLock lock(&mu_);
  type1v2_ = v;
}
void FakeKernelOps::set_type1_info(uint64_t pgsizes, std::vector<uint8_t> caps) {
  absl::MutexLock lock(&mu_);
  type1_pgsizes_ = pgsizes;
  type1_caps_ = std::move(caps);
}
void FakeKernelOps::set_ioas_ranges(std::vector<IovaRange> ranges,
                                    uint64_t alignment) {
  absl::MutexLock lock(&mu_);
  ioas_ranges_ = std::move(ranges);
  ioas_alignment_ = alignment;
}
void FakeKernelOps::set_next_error(unsigned long request, int err) {
  absl::MutexLock lock(&mu_);
  next_error_[request] = err;
}
void FakeKernelOps::set_eintr(unsigned long request, int count) {
  absl::MutexLock lock(&mu_);
  eintr_[request] = count;
}
void FakeKernelOps::set_next_open_error(const std::string& path, int err) {
  absl::MutexLock lock(&mu_);
  open_error_[path] = err;
}

std::vector<std::string> FakeKernelOps::log() const {
  absl::MutexLock lock(&mu_);
  return log_;
}
void FakeKernelOps::ClearLog() {
  absl::MutexLock lock(&mu_);
  log_.clear();
}
std::vector<std::string> FakeKernelOps::ioctl_names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const std::string& line : log_) {
    if (line.rfind("ioctl ", 0) != 0) continue;
    // "ioctl fdN NAME[ -> ERR]"
    const size_t a = line.find(' ', 6);
    const size_t b = line.find(' ', a + 1);
    out.push_back(line.substr(a + 1, b == std::string::npos ? b : b - a - 1));
  }
  return out;
}
std::set<int> FakeKernelOps::open_fds() const {
  absl::MutexLock lock(&mu_);
  std::set<int> out;
  for (const auto& [fd, st] : fds_) {
    if (!st.number_closed) out.insert(fd);
  }
  for (const auto& [real, dup] : dups_) {
    if (DupAlive(real, dup)) out.insert(real);
  }
  return out;
}

bool FakeKernelOps::DupAlive(int real, const Dup& dup) {
  struct stat st;
  return fstat(real, &st) == 0 && static_cast<uint64_t>(st.st_dev) == dup.dev &&
         static_cast<uint64_t>(st.st_ino) == dup.ino;
}

int FakeKernelOps::ResolveLocked(int fd) const {
  if (auto it = fds_.find(fd); it != fds_.end() && !it->second.number_closed) return fd;
  if (auto d = dups_.find(fd); d != dups_.end() && DupAlive(fd, d->second)) {
    return d->second.target;
  }
  return -1;
}

void FakeKernelOps::CollectLocked() {
  std::set<int> referenced;
  for (auto d = dups_.begin(); d != dups_.end();) {
    if (DupAlive(d->first, d->second)) {
      referenced.insert(d->second.target);
      ++d;
    } else {
      d = dups_.erase(d);
    }
  }
  for (auto it = fds_.begin(); it != fds_.end();) {
    if (!it->second.number_closed || referenced.count(it->first)) {
      ++it;
      continue;
    }
    const int fd = it->first;
    const Kind kind = it->second.kind;
    it = fds_.erase(it);
    // What the kernel does on the last close of each kind.
    if (kind == Kind::kIommufd) {
      for (auto i = ioases_.begin(); i != ioases_.end();) {
        i = i->second.iommufd == fd ? ioases_.erase(i) : std::next(i);
      }
    }
    // A closed container stays attached to its groups in the kernel (they
    // hold a reference); the fake keeps the group's container fd number.
  }
}
int FakeKernelOps::bad_closes() const {
  absl::MutexLock lock(&mu_);
  return bad_closes_;
}
std::map<uint64_t, uint64_t> FakeKernelOps::container_mappings(int fd) const {
  absl::MutexLock lock(&mu_);
  auto it = fds_.find(fd);
  return it == fds_.end() ? std::map<uint64_t, uint64_t>{} : it->second.mappings;
}
std::map<uint64_t, uint64_t> FakeKernelOps::ioas_mappings(uint32_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = ioases_.find(id);
  return it == ioases_.end() ? std::map<uint64_t, uint64_t>{} : it->second.mappings;
}
int FakeKernelOps::attached_devices() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [fd, st] : fds_) n += st.attached_ioas != 0 ? 1 : 0;
  return n;
}

SysResult FakeKernelOps::Fail(int err, const std::string& line) {
  log_.push_back(absl::StrCat(line, " -> ", ErrnoName(err)));
  return SysResult{-1, err};
}

int FakeKernelOps::NewFdLocked(FdState st) {
  const int fd = next_fd_++;
  fds_.emplace(fd, std::move(st));
  return fd;
}

int FakeKernelOps::DevicesOpenInGroupLocked(uint32_t group) const {
  int n = 0;
  for (const auto& [fd, st] : fds_) {
    // Devices from VFIO_GROUP_GET_DEVICE_FD have no path (cdevs do).
    if (st.kind == Kind::kDevice && st.path.empty() && st.group == group) {
      ++n;
    }
  }
  return n;
}

SysResult FakeKernelOps::Open(const std::string& path, int flags) {
  absl::MutexLock lock(&mu_);
  CollectLocked();
  const std::string line = absl::StrCat("open ", path);
  if (auto it = open_error_.find(path); it != open_error_.end()) {
    const int err = it->second;
    open_error_.erase(it);
    return Fail(err, line);
  }
  FdState st;
  st.path = path;
  if (path == "/dev/vfio/vfio") {
    if (!has_container_) return Fail(ENOENT, line);
    st.kind = Kind::kContainer;
  } else if (path == "/dev/iommu") {
    if (!has_iommufd_) return Fail(ENOENT, line);
    st.kind = Kind::kIommufd;
  } else if (auto c = cdevs_.find(path); c != cdevs_.end()) {
    st.kind = Kind::kDevice;
    st.address = c->second;
  } else if (path.rfind("/dev/vfio/", 0) == 0) {
    const std::string n = path.substr(10);
    uint32_t group = 0;
    bool found = false;
    for (const auto& [g, unused] : groups_) {
      if (absl::StrCat(g) == n) {
        group = g;
        found = true;
      }
    }
    if (!found) return Fail(ENOENT, line);
    // The kernel allows one open file per group.
    for (const auto& [fd, other] : fds_) {
      if (other.kind == Kind::kGroup && other.group == group) {
        return Fail(EBUSY, line);
      }
    }
    st.kind = Kind::kGroup;
    st.group = group;
  } else {
    return Fail(ENOENT, line);
  }
  const int fd = NewFdLocked(std::move(st));
  log_.push_back(absl::StrCat(line, " -> fd", fd));
  return SysResult{fd, 0};
}

SysResult FakeKernelOps::Ioctl(int fd, unsigned long request, unsigned long arg) {
  absl::MutexLock lock(&mu_);
  const std::string line = absl::StrCat("ioctl fd", fd, " ", IoctlName(request));
  if (auto it = eintr_.find(request); it != eintr_.end() && it->second > 0) {
    --it->second;
    return Fail(EINTR, line);
  }
  if (auto it = next_error_.find(request); it != next_error_.end()) {
    const int err = it->second;
    next_error_.erase(it);
    return Fail(err, line);
  }
  CollectLocked();
  const int target = ResolveLocked(fd);
  if (target < 0) {
    // A real fd that is not a VFIO/iommufd object (a pipe, a memfd): the
    // kernel's answer to a foreign ioctl.
    if (fds_.count(fd) == 0 && fcntl(fd, F_GETFD) >= 0) return Fail(ENOTTY, line);
    return Fail(EBADF, line);
  }
  const SysResult r = IoctlLocked(target, fds_[target], request, arg);
  if (!r.ok()) return Fail(r.err, line);
  log_.push_back(line);
  return r;
}

SysResult FakeKernelOps::IoctlLocked(int fd, FdState& st, unsigned long request,
                                     unsigned long arg) {
  const SysResult kOk{0, 0};
  auto err = [](int e) { return SysResult{-1, e}; };
  switch (st.kind) {
    case Kind::kContainer:
      switch (request) {
        case uapi::kVfioGetApiVersion:
          return SysResult{api_version_, 0};
        case uapi::kVfioCheckExtension:
          return SysResult{arg == uapi::kVfioType1v2Iommu && type1v2_ ? 1 : 0, 0};
        case uapi::kVfioSetIommu: {
          if (st.iommu_set) return err(EBUSY);
          if (arg != uapi::kVfioType1v2Iommu || !type1v2_) return err(EINVAL);
          bool has_group = false;
          for (const auto& [gfd, g] : fds_) has_group |= g.container == fd;
          if (!has_group) return err(EINVAL);
          st.iommu_set = true;
          return kOk;
        }
        case uapi::kVfioIommuGetInfo: {
          if (!st.iommu_set) return err(EINVAL);
          auto* info = ArgPtr<uapi::vfio_iommu_type1_info>(arg);
          if (info->argsz < 16) return err(EINVAL);
          const uint32_t argsz = info->argsz;
          uapi::vfio_iommu_type1_info out{};
          out.argsz = argsz;
          out.flags = uapi::kVfioIommuInfoPgsizes;
          out.iova_pgsizes = type1_pgsizes_;
          if (!type1_caps_.empty()) {
            out.flags |= uapi::kVfioIommuInfoCaps;
            const size_t need = sizeof(out) + type1_caps_.size();
            if (argsz < need) {
              out.argsz = static_cast<uint32_t>(need);
            } else {
              uint8_t* base = reinterpret_cast<uint8_t*>(arg);
              std::memcpy(base + sizeof(out), type1_caps_.data(), type1_caps_.size());
              out.cap_offset = sizeof(out);
              // As the kernel does, DMA_AVAIL counts down with each mapping
              // the container holds.
              size_t off = sizeof(out);
              for (int hops = 0; off != 0 && hops < 16 &&
                                 off + sizeof(uapi::vfio_iommu_type1_info_dma_avail) <= need;
                   ++hops) {
                uapi::vfio_iommu_type1_info_dma_avail cap;
                std::memcpy(&cap, base + off, sizeof(cap));
                if (cap.header.id == uapi::kVfioIommuType1InfoDmaAvail) {
                  cap.avail -= static_cast<uint32_t>(
                      std::min<size_t>(cap.avail, st.mappings.size()));
                  std::memcpy(base + off, &cap, sizeof(cap));
                }
                if (cap.header.next <= off) break;
                off = cap.header.next;
              }
            }
          }
          std::memcpy(info, &out, std::min<size_t>(argsz, sizeof(out)));
          return kOk;
        }
        case uapi::kVfioIommuMapDma: {
          if (!st.iommu_set) return err(EINVAL);
          auto* map = ArgPtr<uapi::vfio_iommu_type1_dma_map>(arg);
          const uint32_t prot = map->flags & (uapi::kVfioDmaMapFlagRead |
                                              uapi::kVfioDmaMapFlagWrite);
          if (prot == 0 || map->size == 0 ||
              ((map->iova | map->size | map->vaddr) & 0xfff) != 0) {
            return err(EINVAL);
          }
          if (Overlaps(st.mappings, map->iova, map->size)) return err(EEXIST);
          st.mappings[map->iova] = map->size;
          return kOk;
        }
        case uapi::kVfioIommuUnmapDma: {
          if (!st.iommu_set) return err(EINVAL);
          auto* unmap = ArgPtr<uapi::vfio_iommu_type1_dma_unmap>(arg);
          if (unmap->flags & uapi::kVfioDmaUnmapFlagAll) {
            if (unmap->iova != 0 || unmap->size != 0) return err(EINVAL);
            uint64_t bytes = 0;
            for (const auto& [iova, size] : st.mappings) bytes += size;
            st.mappings.clear();
            unmap->size = bytes;
            return kOk;
          }
          const int64_t bytes = UnmapRange(&st.mappings, unmap->iova, unmap->size);
          if (bytes < 0) return err(static_cast<int>(-bytes));
          unmap->size = static_cast<uint64_t>(bytes);  // 0 when nothing there.
          return kOk;
        }
      }
      return err(ENOTTY);
    case Kind::kGroup:
      switch (request) {
        case uapi::kVfioGroupGetStatus: {
          auto* status = ArgPtr<uapi::vfio_group_status>(arg);
          status->flags = (groups_[st.group].viable ? uapi::kVfioGroupFlagsViable : 0) |
                          (st.container >= 0 ? uapi::kVfioGroupFlagsContainerSet : 0);
          return kOk;
        }
        case uapi::kVfioGroupSetContainer: {
          if (st.container >= 0) return err(EINVAL);
          if (!groups_[st.group].viable) return err(EPERM);
          const int cfd = ResolveLocked(*ArgPtr<int32_t>(arg));
          auto c = fds_.find(cfd);
          if (c == fds_.end() || c->second.kind != Kind::kContainer) return err(EBADF);
          st.container = cfd;
          return kOk;
        }
        case uapi::kVfioGroupUnsetContainer:
          if (st.container < 0) return err(EINVAL);
          if (DevicesOpenInGroupLocked(st.group) > 0) return err(EBUSY);
          st.container = -1;
          return kOk;
        case uapi::kVfioGroupGetDeviceFd: {
          if (st.container < 0 || !fds_[st.container].iommu_set) return err(EINVAL);
          const std::string name = ArgPtr<const char>(arg);
          bool found = false;
          for (const std::string& d : groups_[st.group].devices) found |= d == name;
          if (!found) return err(ENODEV);
          FdState dev;
          dev.kind = Kind::kDevice;
          dev.group = st.group;
          dev.address = name;
          const int dfd = NewFdLocked(std::move(dev));
          return SysResult{dfd, 0};
        }
      }
      return err(ENOTTY);
    case Kind::kDevice:
      switch (request) {
        case uapi::kVfioDeviceGetInfo: {
          // A cdev answers only once bound (vfio_device_fops_unl_ioctl).
          if (!st.path.empty() && st.bound_iommufd < 0) return err(EINVAL);
          auto* info = ArgPtr<uapi::vfio_device_info>(arg);
          if (info->argsz < 16) return err(EINVAL);
          info->flags = 1u << 1;  // VFIO_DEVICE_FLAGS_PCI
          info->num_regions = 9;
          info->num_irqs = 5;
          return kOk;
        }
        case uapi::kVfioDeviceBindIommufd: {
          if (st.path.empty()) return err(EINVAL);  // Group-opened device.
          if (st.bound_iommufd >= 0) return err(EINVAL);
          auto* cmd = ArgPtr<uapi::vfio_device_bind_iommufd>(arg);
          const int ifd = ResolveLocked(cmd->iommufd);
          auto i = fds_.find(ifd);
          if (i == fds_.end() || i->second.kind != Kind::kIommufd) return err(EBADF);
          st.bound_iommufd = ifd;
          cmd->out_devid = next_object_id_++;
          return kOk;
        }
        case uapi::kVfioDeviceAttachIommufdPt: {
          if (st.bound_iommufd < 0) return err(EINVAL);
          auto* cmd = ArgPtr<uapi::vfio_device_attach_iommufd_pt>(arg);
          auto ioas = ioases_.find(cmd->pt_id);
          if (ioas == ioases_.end() || ioas->second.iommufd != st.bound_iommufd) {
            return err(ENOENT);
          }
          st.attached_ioas = cmd->pt_id;
          cmd->pt_id = next_object_id_++;  // The auto-allocated HWPT.
          return kOk;
        }
        case uapi::kVfioDeviceDetachIommufdPt:
          if (st.bound_iommufd < 0) return err(EINVAL);
          st.attached_ioas = 0;
          return kOk;
      }
      return err(ENOTTY);
    case Kind::kIommufd:
      switch (request) {
        case uapi::kIommuIoasAlloc: {
          auto* cmd = ArgPtr<uapi::iommu_ioas_alloc>(arg);
          cmd->out_ioas_id = next_object_id_++;
          ioases_[cmd->out_ioas_id].iommufd = fd;
          return kOk;
        }
        case uapi::kIommuIoasIovaRanges: {
          auto* cmd = ArgPtr<uapi::iommu_ioas_iova_ranges>(arg);
          auto ioas = ioases_.find(cmd->ioas_id);
          if (ioas == ioases_.end() || ioas->second.iommufd != fd) return err(ENOENT);
          const uint32_t max = cmd->num_iovas;
          auto* out = ArgPtr<uapi::iommu_iova_range>(cmd->allowed_iovas);
          for (uint32_t i = 0; i < ioas_ranges_.size() && i < max; ++i) {
            out[i].start = ioas_ranges_[i].start;
            out[i].last = ioas_ranges_[i].last;
          }
          cmd->num_iovas = static_cast<uint32_t>(ioas_ranges_.size());
          cmd->out_iova_alignment = ioas_alignment_;
          if (cmd->num_iovas > max) return err(EMSGSIZE);
          return kOk;
        }
        case uapi::kIommuIoasMap: {
          auto* cmd = ArgPtr<uapi::iommu_ioas_map>(arg);
          auto ioas = ioases_.find(cmd->ioas_id);
          if (ioas == ioases_.end() || ioas->second.iommufd != fd) return err(ENOENT);
          if ((cmd->flags & (uapi::kIommuIoasMapReadable | uapi::kIommuIoasMapWriteable)) == 0 ||
              (cmd->flags & uapi::kIommuIoasMapFixedIova) == 0 || cmd->length == 0 ||
              ((cmd->iova | cmd->length) & 0xfff) != 0) {
            return err(EINVAL);
          }
          if (Overlaps(ioas->second.mappings, cmd->iova, cmd->length)) return err(EEXIST);
          ioas->second.mappings[cmd->iova] = cmd->length;
          return kOk;
        }
        case uapi::kIommuIoasUnmap: {
          auto* cmd = ArgPtr<uapi::iommu_ioas_unmap>(arg);
          auto ioas = ioases_.find(cmd->ioas_id);
          if (ioas == ioases_.end() || ioas->second.iommufd != fd) return err(ENOENT);
          const int64_t bytes = UnmapRange(&ioas->second.mappings, cmd->iova, cmd->length);
          if (bytes < 0) return err(static_cast<int>(-bytes));
          if (bytes == 0) return err(ENOENT);
          cmd->length = static_cast<uint64_t>(bytes);
          return kOk;
        }
        case uapi::kIommuDestroy: {
          auto* cmd = ArgPtr<uapi::iommu_destroy>(arg);
          auto ioas = ioases_.find(cmd->id);
          if (ioas == ioases_.end() || ioas->second.iommufd != fd) return err(ENOENT);
          for (const auto& [dfd, d] : fds_) {
            if (d.attached_ioas == cmd->id) return err(EBUSY);
          }
          ioases_.erase(ioas);
          return kOk;
        }
      }
      return err(ENOTTY);
  }
  return err(ENOTTY);
}

void FakeKernelOps::Close(int fd) {
  absl::MutexLock lock(&mu_);
  CollectLocked();
  if (auto it = fds_.find(fd); it != fds_.end() && !it->second.number_closed) {
    it->second.number_closed = true;
    log_.push_back(absl::StrCat("close fd", fd));
    CollectLocked();  // Releases the object unless a dup is open.
    return;
  }
  if (auto d = dups_.find(fd); d != dups_.end()) {
    // An adopted dup: a real fd the caller gave us to own.
    dups_.erase(d);
    ::close(fd);
    log_.push_back(absl::StrCat("close fd", fd));
    CollectLocked();
    return;
  }
  if (fds_.count(fd) == 0 && fcntl(fd, F_GETFD) >= 0) {
    // A real fd that is no fake object (an adopted pipe or memfd).
    ::close(fd);
    log_.push_back(absl::StrCat("close fd", fd, " (not a fake object)"));
    return;
  }
  ++bad_closes_;
  log_.push_back(absl::StrCat("close fd", fd, " -> EBADF"));
}

SysResult FakeKernelOps::DupCloexec(int fd) {
  absl::MutexLock lock(&mu_);
  const std::string line = absl::StrCat("dup fd", fd);
  CollectLocked();
  const int target = ResolveLocked(fd);
  if (target < 0) return Fail(EBADF, line);
  const int real =
      memfd_create(absl::StrCat("fake-dup-of-fd", target).c_str(), MFD_CLOEXEC);
  if (real < 0) return Fail(errno, line);
  struct stat st;
  if (fstat(real, &st) != 0) {
    const int err = errno;
    ::close(real);
    return Fail(err, line);
  }
  dups_[real] = Dup{target, static_cast<uint64_t>(st.st_dev),
                    static_cast<uint64_t>(st.st_ino)};
  log_.push_back(line);
  return SysResult{real, 0};
}

}  // namespace agent
}  // namespace iommu
