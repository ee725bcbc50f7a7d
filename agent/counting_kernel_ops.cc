#include "agent/counting_kernel_ops.h"

#include <utility>

#include "common/errno_status.h"
#include "agent/ioctl_names.h"

namespace iommu {
namespace agent {

CountingKernelOps::CountingKernelOps(KernelOps* inner, ErrorCallback on_error)
    : inner_(inner), on_error_(std::move(on_error)) {}

SysResult CountingKernelOps::Report(absl::string_view call, SysResult r) {
  if (!r.ok() && on_error_) on_error_(call, ErrnoName(r.err));
  return r;
}

SysResult CountingKernelOps::Open(const std::string& path, int flags) {
  return Report("open", inner_->Open(path, flags));
}

SysResult CountingKernelOps::Ioctl(int fd, unsigned long request, unsigned long arg) {
  SysResult r = inner_->Ioctl(fd, request, arg);
  if (r.ok()) return r;
  return Report(IoctlName(request), r);
}

void CountingKernelOps::Close(int fd) { inner_->Close(fd); }

SysResult CountingKernelOps::DupCloexec(int fd) {
  return Report("F_DUPFD_CLOEXEC", inner_->DupCloexec(fd));
}

}  // namespace agent
}  // namespace iommu
