#include "agent/memlock_policy.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace iommu {
namespace agent {
namespace {

std::string Bytes(uint64_t v) {
  return v == kUnlimitedBytes ? std::string("unlimited") : absl::StrCat(v, " bytes");
}

}  // namespace

absl::StatusOr<MemlockDecision> DecideMemlock(const MemlockFacts& facts,
                                              std::optional<uint64_t> share) {
  if (share.has_value() && *share == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kKernelPinShareFlag, ": must be greater than 0 bytes"));
  }
  MemlockDecision d;
  const std::string share_text =
      share.has_value()
          ? absl::StrCat("; the agent bounds each tenant to ", *share,
                         " kernel-counted bytes (--", kKernelPinShareFlag, ")")
          : std::string();
  const bool enforced = !facts.cap_ipc_lock && facts.limit_bytes != kUnlimitedBytes;
  if (!enforced) {
    const char* why = facts.cap_ipc_lock ? "CAP_IPC_LOCK"
                      : facts.raised     ? "RLIMIT_MEMLOCK raised to unlimited"
                                         : "RLIMIT_MEMLOCK unlimited";
    d.per_tenant_bytes = share.value_or(kUnlimitedBytes);
    d.description = absl::StrCat(
        why,
        ": the kernel counts pins per mapping but does not enforce a limit "
        "(CAP_IPC_LOCK / RLIMIT_MEMLOCK infinity)",
        share_text);
    return d;
  }
  if (share.has_value() && *share > facts.limit_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        kKernelPinShareFlag, ": must be at most RLIMIT_MEMLOCK (", facts.limit_bytes,
        " bytes), got ", *share));
  }
  if (!share.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "memlock: RLIMIT_MEMLOCK is ", Bytes(facts.limit_bytes), " (hard ",
        Bytes(facts.hard_limit_bytes),
        ") and the agent has neither CAP_IPC_LOCK nor CAP_SYS_RESOURCE to raise it, so the kernel "
        "enforces it on every DMA pin. The kernel counts pins per mapping, not per page "
        "(65535 mappings of one 4 KiB page count 256 MiB), so one tenant's many small "
        "mappings could exhaust the limit for every tenant on this node; refusing to start. "
        "Fix: run the agent with LimitMEMLOCK=infinity or AmbientCapabilities=CAP_IPC_LOCK "
        "(systemd), or securityContext.capabilities.add: [IPC_LOCK] (Kubernetes); or pass --",
        kKernelPinShareFlag, "=BYTES (at most ", facts.limit_bytes,
        ") to have the agent bound each tenant's kernel-counted bytes within the limit"));
  }
  if (facts.locked_at_start_bytes >= facts.limit_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "memlock: the agent already has ", facts.locked_at_start_bytes,
        " bytes locked (VmLck) of its RLIMIT_MEMLOCK ", facts.limit_bytes,
        " bytes; nothing is left to pin guest memory with"));
  }
  d.per_tenant_bytes = *share;
  d.node_bytes = facts.limit_bytes - facts.locked_at_start_bytes;
  d.description = absl::StrCat(
      "RLIMIT_MEMLOCK ", facts.limit_bytes,
      " bytes: the kernel counts pins per mapping and enforces the limit", share_text,
      " and the node to ", d.node_bytes, " bytes (the limit minus ",
      facts.locked_at_start_bytes, " bytes locked at start)");
  return d;
}

}  // namespace agent
}  // namespace iommu
