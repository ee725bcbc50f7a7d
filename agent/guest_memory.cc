#include "agent/guest_memory.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

absl::Status Refuse(absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat("fd: ", rule));
}

const char* KindOf(mode_t mode) {
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISFIFO(mode)) return "a pipe";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode)) return "a directory";
  return "not a regular file";
}

}  // namespace

absl::StatusOr<GuestMemoryRegion> MapGuestMemory(UniqueFd fd) {
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return Refuse(absl::StrCat("fstat failed: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Refuse(absl::StrCat("must be shareable memory (a memfd or a file on tmpfs/hugetlbfs), "
                               "got ", KindOf(st.st_mode)));
  }
  struct statfs fs;
  if (fstatfs(fd.get(), &fs) != 0) {
    return Refuse(absl::StrCat("fstatfs failed: ", std::strerror(errno)));
  }
  // Pinning pages of a disk-backed file for DMA would hold its page cache
  // hostage; guest memory lives in shmem (memfd, tmpfs) or hugetlbfs.
  if (fs.f_type != TMPFS_MAGIC && fs.f_type != HUGETLBFS_MAGIC) {
    return Refuse(absl::StrCat("must be a memfd or a file on tmpfs/hugetlbfs, got a file on "
                               "filesystem type ", Hex(static_cast<uint64_t>(fs.f_type))));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0 || size % 4096 != 0) {
    return Refuse(absl::StrCat("memory size must be a non-zero multiple of 4096, got ", size));
  }
  if (size > kMaxGuestMemoryBytes) {
    return Refuse(absl::StrCat("memory size ", Hex(size), " is above the limit ",
                               Hex(kMaxGuestMemoryBytes)));
  }
  const int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || (flags & O_ACCMODE) != O_RDWR) {
    return Refuse("must be open read-write (devices write to guest memory)");
  }
  // Best effort: memfds made without MFD_ALLOW_SEALING answer EPERM.
  fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK);
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (addr == MAP_FAILED) {
    return Refuse(absl::StrCat("mmap of ", Hex(size), " bytes failed: ", std::strerror(errno)));
  }
  // Owns the mapping and the fd; built in place so exactly one destructor
  // unmaps.
  struct Owner {
    Owner(UniqueFd f, void* a, uint64_t s) : fd(std::move(f)), addr(a), size(s) {}
    Owner(const Owner&) = delete;
    Owner& operator=(const Owner&) = delete;
    ~Owner() { munmap(addr, size); }
    UniqueFd fd;
    void* addr;
    uint64_t size;
  };
  auto owner = std::make_shared<Owner>(std::move(fd), addr, size);
  GuestMemoryRegion region;
  region.key = ObjectKey{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
  region.size = size;
  region.vaddr = reinterpret_cast<uint64_t>(addr);
  region.fd = owner->fd.get();
  region.keepalive = std::move(owner);
  return region;
}

}  // namespace agent
}  // namespace iommu
