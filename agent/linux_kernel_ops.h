// LinuxKernelOps: KernelOps over the real syscalls. Stateless and
// thread-safe; one process-wide instance is enough (Get()), but the backends
// take a KernelOps* in their constructors so tests pass a fake instead.
#ifndef AGENT_LINUX_KERNEL_OPS_H_
#define AGENT_LINUX_KERNEL_OPS_H_

#include <string>

#include "agent/kernel_ops.h"

namespace iommu {
namespace agent {

class LinuxKernelOps final : public KernelOps {
 public:
  LinuxKernelOps() = default;
  LinuxKernelOps(const LinuxKernelOps&) = delete;
  LinuxKernelOps& operator=(const LinuxKernelOps&) = delete;

  // A process-lifetime instance (never destroyed).
  static LinuxKernelOps* Get();

  SysResult Open(const std::string& path, int flags) override;
  SysResult Ioctl(int fd, unsigned long request, unsigned long arg) override;
  void Close(int fd) override;
  SysResult DupCloexec(int fd) override;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_LINUX_KERNEL_OPS_H_
