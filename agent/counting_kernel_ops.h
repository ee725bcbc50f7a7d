// CountingKernelOps: a KernelOps decorator that reports every failed syscall
// (by call name and errno name) to a callback, then passes the result on
// unchanged. Sits at the kernel seam so that every error the real backends
// meet is counted once, whichever backend or fd owner made the call
// (iommu_agent_kernel_errors_total{call, errno}). Call names are the ioctl's
// symbolic name ("IOMMU_IOAS_MAP", agent/ioctl_names.h), "open" or
// "F_DUPFD_CLOEXEC"; errno names come from ErrnoName ("EEXIST").
//
// Thread-safe if the wrapped KernelOps and the callback are.
#ifndef AGENT_COUNTING_KERNEL_OPS_H_
#define AGENT_COUNTING_KERNEL_OPS_H_

#include <functional>
#include <string>

#include "absl/strings/string_view.h"
#include "agent/kernel_ops.h"

namespace iommu {
namespace agent {

class CountingKernelOps final : public KernelOps {
 public:
  using ErrorCallback = std::function<void(absl::string_view call, absl::string_view errno_name)>;

  // `inner` is not owned and must outlive this object.
  CountingKernelOps(KernelOps* inner, ErrorCallback on_error);

  CountingKernelOps(const CountingKernelOps&) = delete;
  CountingKernelOps& operator=(const CountingKernelOps&) = delete;

  SysResult Open(const std::string& path, int flags) override;
  SysResult Ioctl(int fd, unsigned long request, unsigned long arg) override;
  void Close(int fd) override;  // close(2) reports nothing (kernel_ops.h).
  SysResult DupCloexec(int fd) override;

 private:
  SysResult Report(absl::string_view call, SysResult r);

  KernelOps* const inner_;
  const ErrorCallback on_error_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_COUNTING_KERNEL_OPS_H_
