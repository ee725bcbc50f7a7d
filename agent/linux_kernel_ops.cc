#include "agent/linux_kernel_ops.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

namespace iommu {
namespace agent {
namespace {

SysResult FromRet(long ret) {
  SysResult r;
  r.value = ret;
  if (ret < 0) r.err = errno;
  return r;
}

}  // namespace

LinuxKernelOps* LinuxKernelOps::Get() {
  static LinuxKernelOps* const ops = new LinuxKernelOps();
  return ops;
}

SysResult LinuxKernelOps::Open(const std::string& path, int flags) {
  return FromRet(::open(path.c_str(), flags | O_CLOEXEC));
}

SysResult LinuxKernelOps::Ioctl(int fd, unsigned long request,
                                unsigned long arg) {
  return FromRet(::ioctl(fd, request, arg));
}

void LinuxKernelOps::Close(int fd) { ::close(fd); }

SysResult LinuxKernelOps::DupCloexec(int fd) {
  return FromRet(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

}  // namespace agent
}  // namespace iommu
