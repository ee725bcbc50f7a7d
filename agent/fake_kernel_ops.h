// FakeKernelOps: a testonly in-memory model of the VFIO container/group,
// VFIO device cdev and iommufd UAPI, behind KernelOps, with failure switches.
// It answers the ioctls of agent/kernel_uapi.h the way Linux 6.12 does for
// the paths the backends use (argument structs read and written through the
// caller's pointers), records every call in a log of readable lines, and
// tracks every fd it hands out so tests can assert that nothing leaked.
//
// Log lines: "open /dev/vfio/vfio -> fd100", "ioctl fd101 VFIO_GROUP_GET_STATUS",
// "close fd100", and failures as "... -> EPERM".
//
// Fds: Open and fd-creating ioctls hand out fake numbers from 100 up (never
// real fds). DupCloexec hands out a real memfd, because its caller owns the
// result as a UniqueFd and closes it with ::close; the fake remembers it (by
// fd number and inode) as another fd of the same open file, so the dup
// answers ioctls and keeps the object alive after the fake fd is closed, as
// a dup does in the kernel. That is what lets a test persist a container's
// fds, close the first backend, and adopt them in a second one. The object
// is released (the last-close effects run) once its fake fd is closed and
// no dup is open any more. Any other real fd (a pipe, a plain memfd) answers
// every ioctl with ENOTTY, as the kernel does, and Close closes it.
//
// Thread-safe.
#ifndef AGENT_FAKE_KERNEL_OPS_H_
#define AGENT_FAKE_KERNEL_OPS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "agent/backend.h"
#include "agent/ioctl_names.h"  // IoctlName, used with the fake's log.
#include "agent/kernel_ops.h"

namespace iommu {
namespace agent {

// Builds a VFIO_IOMMU_GET_INFO capability chain as the kernel lays it out
// after the 24-byte header: an unknown capability first when `unknown_cap`
// (id 2, migration, 32 bytes), then DMA_AVAIL, then IOVA_RANGE. `next`
// offsets are absolute from the start of the info struct; 0 ends.
std::vector<uint8_t> BuildType1Caps(const std::vector<IovaRange>& ranges,
                                    uint32_t dma_avail, bool unknown_cap);

class FakeKernelOps final : public KernelOps {
 public:
  FakeKernelOps();
  FakeKernelOps(const FakeKernelOps&) = delete;
  FakeKernelOps& operator=(const FakeKernelOps&) = delete;
  ~FakeKernelOps() override;

  // ---- Configuration ----
  // /dev/vfio/<group> exists, holding `devices`; `viable` false makes
  // GET_STATUS report it not viable (a member bound to a host driver).
  void AddGroup(uint32_t group, std::vector<std::string> devices,
                bool viable = true);
  // A VFIO device cdev at `path` for `address`.
  void AddCdev(const std::string& path, const std::string& address);
  // Whether /dev/vfio/vfio and /dev/iommu exist (default: both).
  void set_has_container(bool v);
  void set_has_iommufd(bool v);
  void set_api_version(int v);
  void set_type1v2_supported(bool v);
  // What type1 GET_INFO reports: page sizes and the chain bytes that follow
  // the header (default: BuildType1Caps(x86 ranges, 65535, true)).
  void set_type1_info(uint64_t pgsizes, std::vector<uint8_t> caps);
  // What IOMMU_IOAS_IOVA_RANGES reports for every IOAS.
  void set_ioas_ranges(std::vector<IovaRange> ranges, uint64_t alignment);

  // ---- Failure switches (one-shot) ----
  // The next ioctl with `request` fails with `err`, changing nothing.
  void set_next_error(unsigned long request, int err);
  // The next `count` ioctls with `request` fail with EINTR first.
  void set_eintr(unsigned long request, int count);
  // The next open of `path` fails with `err`.
  void set_next_open_error(const std::string& path, int err);

  // ---- Observation ----
  std::vector<std::string> log() const;
  void ClearLog();
  // The ioctl names called so far, in order (the log without opens/closes).
  std::vector<std::string> ioctl_names() const;
  // The fake fds not yet closed and the dups (real fds) still open.
  std::set<int> open_fds() const;
  int bad_closes() const;  // Closes of fds not open (double close).
  // Mappings of a type1 container fd / an IOAS, iova -> size.
  std::map<uint64_t, uint64_t> container_mappings(int container_fd) const;
  std::map<uint64_t, uint64_t> ioas_mappings(uint32_t ioas_id) const;
  // Whether the cdev at `path`'s open device is attached to an IOAS.
  int attached_devices() const;

  // ---- KernelOps ----
  SysResult Open(const std::string& path, int flags) override;
  SysResult Ioctl(int fd, unsigned long request, unsigned long arg) override;
  void Close(int fd) override;
  SysResult DupCloexec(int fd) override;

 private:
  enum class Kind { kContainer, kGroup, kDevice, kIommufd };
  struct FdState {
    Kind kind;
    std::string path;
    uint32_t group = 0;         // kGroup, and kDevice from a group.
    std::string address;        // kDevice.
    int container = -1;         // kGroup: the container fd it is set on.
    bool iommu_set = false;     // kContainer.
    int bound_iommufd = -1;     // kDevice (cdev).
    uint32_t attached_ioas = 0; // kDevice (cdev); 0: none.
    std::map<uint64_t, uint64_t> mappings;  // kContainer.
    // The fake fd was closed; the object lives on while a dup is open.
    bool number_closed = false;
  };
  // A dup: a real memfd standing for another fd of the open file `target`.
  struct Dup {
    int target = -1;
    uint64_t dev = 0;
    uint64_t ino = 0;
  };
  struct Group {
    std::vector<std::string> devices;
    bool viable = true;
  };

  SysResult Fail(int err, const std::string& line)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int NewFdLocked(FdState st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SysResult IoctlLocked(int fd, FdState& st, unsigned long request,
                        unsigned long arg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int DevicesOpenInGroupLocked(uint32_t group) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the real fd `real` is still the memfd recorded in `dup`.
  static bool DupAlive(int real, const Dup& dup);
  // The fake fd whose open file `fd` refers to (itself, or a dup's target),
  // or -1.
  int ResolveLocked(int fd) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets dups closed behind the fake's back (by UniqueFd) and releases
  // the objects no fd refers to any more.
  void CollectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  int next_fd_ ABSL_GUARDED_BY(mu_) = 100;
  std::map<int, FdState> fds_ ABSL_GUARDED_BY(mu_);
  std::map<int, Dup> dups_ ABSL_GUARDED_BY(mu_);  // Real fd -> its open file.
  std::map<uint32_t, Group> groups_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> cdevs_ ABSL_GUARDED_BY(mu_);  // path -> address
  bool has_container_ ABSL_GUARDED_BY(mu_) = true;
  bool has_iommufd_ ABSL_GUARDED_BY(mu_) = true;
  int api_version_ ABSL_GUARDED_BY(mu_) = 0;
  bool type1v2_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t type1_pgsizes_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> type1_caps_ ABSL_GUARDED_BY(mu_);
  std::vector<IovaRange> ioas_ranges_ ABSL_GUARDED_BY(mu_);
  uint64_t ioas_alignment_ ABSL_GUARDED_BY(mu_) = 4096;
  uint32_t next_object_id_ ABSL_GUARDED_BY(mu_) = 1;
  // IOAS id -> iommufd fd and mappings.
  struct Ioas {
    int iommufd = -1;
    std::map<uint64_t, uint64_t> mappings;
  };
  std::map<uint32_t, Ioas> ioases_ ABSL_GUARDED_BY(mu_);
  std::map<unsigned long, int> next_error_ ABSL_GUARDED_BY(mu_);
  std::map<unsigned long, int> eintr_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> open_error_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  int bad_closes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_FAKE_KERNEL_OPS_H_
