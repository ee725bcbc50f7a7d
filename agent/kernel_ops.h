// KernelOps: the syscall surface of the agent's real IOMMU backends (open,
// ioctl, close, dup), behind an interface so that the fd owners in
// agent/kernel_fds.h and both real backends are unit-tested against
// FakeKernelOps (agent/fake_kernel_ops.h) and run against LinuxKernelOps
// (agent/linux_kernel_ops.h). Nothing here retries or formats errors: that is
// done once, in kernel_fds.cc, at the call site of each ioctl.
//
// Implementations must be thread-safe.
#ifndef AGENT_KERNEL_OPS_H_
#define AGENT_KERNEL_OPS_H_

#include <string>

namespace iommu {
namespace agent {

// The outcome of one syscall: `value` as the syscall returned it (>= 0 on
// success), and on failure (value < 0) the errno in `err`.
struct SysResult {
  long value = 0;
  int err = 0;
  bool ok() const { return value >= 0; }
};

class KernelOps {
 public:
  virtual ~KernelOps() = default;

  // open(2) with `flags | O_CLOEXEC`. On success the caller owns the fd and
  // must give it back with Close().
  virtual SysResult Open(const std::string& path, int flags) = 0;

  // ioctl(2) with an integer-or-pointer argument. One attempt: EINTR is
  // returned to the caller, who retries.
  virtual SysResult Ioctl(int fd, unsigned long request, unsigned long arg) = 0;

  // close(2). Errors are not reported: Linux releases the fd even when close
  // fails, and retrying could close an fd another thread just opened.
  virtual void Close(int fd) = 0;

  // fcntl(fd, F_DUPFD_CLOEXEC, 0): a new, real fd for the same open file,
  // which the caller owns and closes with ::close (it is handed to
  // UniqueFd and may leave the process over SCM_RIGHTS).
  virtual SysResult DupCloexec(int fd) = 0;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_KERNEL_OPS_H_
