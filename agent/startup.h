// Start-up helpers for the iommu-agent binary, kept out of main.cc so that
// tests link them: host:port parsing, the --backend decision, the simulated
// backend banner, the port file, the memlock and fd limits, the stop signals
// and the log event a failed start is reported under. Thread-safe (no shared
// state).
#ifndef AGENT_STARTUP_H_
#define AGENT_STARTUP_H_

#include <signal.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/memlock_policy.h"

namespace iommu {
namespace agent {

struct HostPort {
  std::string host;  // Without brackets for IPv6 ("::1").
  int port = 0;
};

// Parses "host:port" or "[v6]:port"; port 0-65535. INVALID_ARGUMENT naming
// `field` otherwise.
absl::StatusOr<HostPort> SplitHostPort(absl::string_view field,
                                       absl::string_view value);

// "host:port", bracketing IPv6 hosts.
std::string JoinHostPort(absl::string_view host, int port);

// True for addresses that accept on every interface (0.0.0.0, ::, [::], *):
// a broker cannot dial them.
bool IsWildcardHost(absl::string_view host);

// What exists under /dev on this host.
struct HostIommu {
  bool dev_iommu = false;          // /dev/iommu
  bool dev_vfio_devices = false;   // /dev/vfio/devices
  bool dev_vfio_vfio = false;      // /dev/vfio/vfio
};
HostIommu ProbeHostIommu();

// Decides the backend from --backend and what the host has: "sim",
// "iommufd" or "vfio-type1" (for --backend=vfio). auto takes iommufd when
// /dev/iommu and /dev/vfio/devices exist, else vfio-type1 when /dev/vfio/vfio
// exists, else FAILED_PRECONDITION telling the operator to pass --backend=sim
// for a simulated node; an unknown value is INVALID_ARGUMENT.
absl::StatusOr<std::string> ChooseBackend(absl::string_view flag,
                                          const HostIommu& host);

// The multi-line warning printed at start with --backend=sim.
std::string SimBanner();

// Writes `contents` to `path` via a temporary file and rename, so a reader
// polling for the file never sees it half-written.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

// What this process may pin (memlock_policy.h): CAP_IPC_LOCK in the
// effective set; without it, RLIMIT_MEMLOCK is first raised to unlimited
// when the hard limit or CAP_SYS_RESOURCE allows; then the limits and VmLck
// (read from /proc/self/status). Errors: getrlimit's errno, or the
// /proc/self/status reader's error naming the file.
absl::StatusOr<MemlockFacts> ProbeMemlock();

// ProbeMemlock, then DecideMemlock with --kernel-pin-bytes-per-tenant
// `share`: the bounds AgentCore enforces and the start-up line, or the
// refusal saying what the limit is, why, and the fixes.
absl::StatusOr<MemlockDecision> EnsureCanPinMemory(std::optional<uint64_t> share);

// The most fds the launcher socket can make the agent hold at its limits:
// per connection its socket, the memory objects its session may register and
// the device fds of its last GetDevices answer (held until its next request).
uint64_t LauncherFdBudget(uint64_t max_connections, uint64_t max_memory_objects,
                          uint64_t max_device_fds);

// Fds the agent needs besides the launcher socket's: gRPC, the backend's
// iommufd / VFIO fds, logs. Generous, since an unused slot costs nothing.
inline constexpr uint64_t kAgentFdReserve = 1024;

// What EnsureFdLimit does for RLIMIT_NOFILE `soft`/`hard` and `needed` fds:
// the soft limit to set (unchanged when it already suffices, never above
// `hard`) and, when even `hard` is short, FAILED_PRECONDITION with the
// numbers and the fix. Pure.
struct FdLimitPlan {
  uint64_t soft = 0;
  absl::Status status;
};
FdLimitPlan PlanFdLimit(uint64_t soft, uint64_t hard, uint64_t needed);

// Raises this process's RLIMIT_NOFILE soft limit as PlanFdLimit says, so
// that launchers at their limits cannot run the agent out of fds (EMFILE
// would also stop its gRPC server and backend). Returns a one-line
// description ("RLIMIT_NOFILE 1024 raised to 7232"), or the plan's error
// after raising the limit as far as the hard limit allows.
absl::StatusOr<std::string> EnsureFdLimit(uint64_t needed);

// Blocks SIGINT and SIGTERM in the calling thread and returns that set. Call
// before any thread exists: threads inherit the mask, so only
// WaitForStopSignal receives them.
sigset_t BlockStopSignals();

// Waits for one of `signals` (blocked by BlockStopSignals) and returns it.
int WaitForStopSignal(const sigset_t& signals);

// `status` (not OK) tagged with the log event the agent reports it under
// when it stops the start ("bad_flag", "backend_refused", ...), so a step
// with several kinds of failure can say which one it met.
absl::Status WithStartEvent(absl::string_view event, absl::Status status);

// The event WithStartEvent put on `status`; `fallback` when there is none.
std::string StartEventOf(const absl::Status& status, absl::string_view fallback);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_STARTUP_H_
