// The agent's memlock policy at start, as a pure function of what the
// process may do: whether the kernel will enforce RLIMIT_MEMLOCK on the
// agent's DMA pins, and if so how the agent shares that limit between
// tenants so one tenant's pins cannot exhaust it for the others.
//
// The kernel charges pins per MAPPING (VFIO type1: vfio_lock_acct raises
// mm->locked_vm by every page of every VFIO_IOMMU_MAP_DMA; iommufd: each
// IOMMU_IOAS_MAP raises mm->pinned_vm and, without CAP_IPC_LOCK, the uid's
// locked_vm), never per distinct page as the agent's ledger bills: 65,535
// mappings of one 4 KiB page count 256 MiB. With CAP_IPC_LOCK or an
// unlimited RLIMIT_MEMLOCK the kernel still counts, it only does not refuse.
//
// The node bound is RLIMIT_MEMLOCK minus the agent's VmLck at start. iommufd
// without CAP_IPC_LOCK checks the limit against the uid's locked_vm, which
// other processes of the agent's uid (io_uring, RDMA) share and VmLck does not
// show: run the agent under its own uid when relying on this bound.
//
// Thread-safe (pure).
#ifndef AGENT_MEMLOCK_POLICY_H_
#define AGENT_MEMLOCK_POLICY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace iommu {
namespace agent {

// "No bound": RLIM_INFINITY, or a limit the agent does not enforce.
inline constexpr uint64_t kUnlimitedBytes = UINT64_MAX;

// What the process may do, as probed at start (startup.h ProbeMemlock).
struct MemlockFacts {
  bool cap_ipc_lock = false;      // CAP_IPC_LOCK in the effective set.
  bool raised = false;            // RLIMIT_MEMLOCK was just raised to unlimited.
  uint64_t limit_bytes = kUnlimitedBytes;       // Soft RLIMIT_MEMLOCK.
  uint64_t hard_limit_bytes = kUnlimitedBytes;  // Hard RLIMIT_MEMLOCK.
  uint64_t locked_at_start_bytes = 0;           // VmLck before any DMA map.
};

// What the agent enforces on kernel-counted bytes (the sum of its mappings'
// sizes; AgentCore::SetKernelPinLimits) and the start-up line to log.
struct MemlockDecision {
  uint64_t per_tenant_bytes = kUnlimitedBytes;
  uint64_t node_bytes = kUnlimitedBytes;
  std::string description;
};

// The flag that lets an agent with a finite, enforced RLIMIT_MEMLOCK start.
inline constexpr char kKernelPinShareFlag[] = "kernel-pin-bytes-per-tenant";

// Decides, for `facts` and --kernel-pin-bytes-per-tenant `share` (nullopt
// when not given):
//   * the kernel does not enforce (CAP_IPC_LOCK or an unlimited limit): the
//     agent starts; no node bound; each tenant bounded to `share` if given;
//   * the kernel enforces a finite limit and `share` is given: each tenant
//     bounded to `share`, the node to the limit minus VmLck at start;
//   * the kernel enforces and `share` is not given: refused.
// Errors, in the order checked: INVALID_ARGUMENT "kernel-pin-bytes-per-tenant:
// must be greater than 0"; INVALID_ARGUMENT "...: must be at most
// RLIMIT_MEMLOCK" (enforced limit only); FAILED_PRECONDITION "memlock: ..."
// when refused for want of the flag (the message says the limit, why, and
// the fixes) or when VmLck at start already fills the limit.
absl::StatusOr<MemlockDecision> DecideMemlock(const MemlockFacts& facts,
                                              std::optional<uint64_t> share);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_MEMLOCK_POLICY_H_
