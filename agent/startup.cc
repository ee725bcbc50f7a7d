#include "agent/startup.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdlib>
#include <fstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "agent/kernel_pins.h"

namespace iommu {
namespace agent {
namespace {

bool Exists(const char* path) {
  struct stat st;
  return stat(path, &st) == 0;
}

absl::Status BadAddress(absl::string_view field, absl::string_view value,
                        absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": ", rule, ", got \"", absl::CEscape(value), "\""));
}

}  // namespace

absl::StatusOr<HostPort> SplitHostPort(absl::string_view field,
                                       absl::string_view value) {
  HostPort out;
  absl::string_view port;
  if (!value.empty() && value[0] == '[') {
    const size_t close = value.find(']');
    if (close == absl::string_view::npos || close + 1 >= value.size() ||
        value[close + 1] != ':') {
      return BadAddress(field, value, "must be [ipv6]:port");
    }
    out.host = std::string(value.substr(1, close - 1));
    port = value.substr(close + 2);
  } else {
    const size_t colon = value.rfind(':');
    if (colon == absl::string_view::npos) {
      return BadAddress(field, value, "must be host:port");
    }
    out.host = std::string(value.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return BadAddress(field, value, "IPv6 hosts must be bracketed, [::1]:port");
    }
    port = value.substr(colon + 1);
  }
  if (out.host.empty()) return BadAddress(field, value, "host is empty");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(port, &out.port) || out.port > 65535) {
    return BadAddress(field, value, "port must be a number 0-65535");
  }
  return out;
}

std::string JoinHostPort(absl::string_view host, int port) {
  if (host.find(':') != absl::string_view::npos) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

bool IsWildcardHost(absl::string_view host) {
  return host == "0.0.0.0" || host == "::" || host == "*" || host == "[::]";
}

HostIommu ProbeHostIommu() {
  HostIommu h;
  h.dev_iommu = Exists("/dev/iommu");
  h.dev_vfio_devices = Exists("/dev/vfio/devices");
  h.dev_vfio_vfio = Exists("/dev/vfio/vfio");
  return h;
}

absl::StatusOr<std::string> ChooseBackend(absl::string_view flag,
                                          const HostIommu& host) {
  if (flag == "sim") return std::string("sim");
  if (flag == "iommufd") return std::string("iommufd");
  if (flag == "vfio") return std::string("vfio-type1");
  if (flag == "auto") {
    // iommufd first: it shares pinned pages between IOASes through the
    // agent's own ledger the same way, and is where the kernel is going.
    if (host.dev_iommu && host.dev_vfio_devices) return std::string("iommufd");
    if (host.dev_vfio_vfio) return std::string("vfio-type1");
    return absl::FailedPreconditionError(
        "backend: auto found no IOMMU here (no /dev/iommu + /dev/vfio/devices, "
        "no /dev/vfio/vfio); refusing to fall back to a simulation silently. "
        "Pass --backend=sim explicitly for a simulated node");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "backend: must be auto, iommufd, vfio or sim, got \"", absl::CEscape(flag),
      "\""));
}

std::string SimBanner() {
  return "\n"
         "############################################################\n"
         "##                                                        ##\n"
         "##   SIMULATED BACKEND: no real IOMMU, no real DMA,       ##\n"
         "##   no pinned memory.                                    ##\n"
         "##   Devices, containers and mappings exist only in this  ##\n"
         "##   process. Never use this node for real guests.        ##\n"
         "##                                                        ##\n"
         "############################################################\n"
         "\n";
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", tmp));
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return ErrnoStatus(err, absl::StrCat("write ", tmp));
    }
    done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return ErrnoStatus(err, absl::StrCat("close ", tmp));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return ErrnoStatus(err, absl::StrCat("rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

namespace {

// CAP_IPC_LOCK (14) in the effective set, read from /proc/self/status so no
// libcap is needed.
bool HasCapIpcLock() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    const uint64_t caps = std::strtoull(line.c_str() + 7, nullptr, 16);
    return (caps >> 14) & 1;
  }
  return false;
}

uint64_t LimitBytes(rlim_t v) {
  return v == RLIM_INFINITY ? kUnlimitedBytes : static_cast<uint64_t>(v);
}

}  // namespace

absl::StatusOr<MemlockFacts> ProbeMemlock() {
  MemlockFacts facts;
  facts.cap_ipc_lock = HasCapIpcLock();
  if (!facts.cap_ipc_lock) {
    struct rlimit want = {RLIM_INFINITY, RLIM_INFINITY};
    facts.raised = setrlimit(RLIMIT_MEMLOCK, &want) == 0;
    struct rlimit cur = {0, 0};
    if (!facts.raised && getrlimit(RLIMIT_MEMLOCK, &cur) == 0 && cur.rlim_cur < cur.rlim_max) {
      // At least as far as the hard limit: always allowed.
      cur.rlim_cur = cur.rlim_max;
      setrlimit(RLIMIT_MEMLOCK, &cur);
    }
  }
  struct rlimit have = {0, 0};
  if (getrlimit(RLIMIT_MEMLOCK, &have) != 0) {
    return ErrnoStatus(errno, "getrlimit RLIMIT_MEMLOCK");
  }
  facts.limit_bytes = LimitBytes(have.rlim_cur);
  facts.hard_limit_bytes = LimitBytes(have.rlim_max);
  absl::StatusOr<ProcessPins> pins = ReadProcessPins();
  if (!pins.ok()) return pins.status();
  facts.locked_at_start_bytes = pins->locked_bytes;
  return facts;
}

absl::StatusOr<MemlockDecision> EnsureCanPinMemory(std::optional<uint64_t> share) {
  absl::StatusOr<MemlockFacts> facts = ProbeMemlock();
  if (!facts.ok()) return facts.status();
  return DecideMemlock(*facts, share);
}

uint64_t LauncherFdBudget(uint64_t max_connections, uint64_t max_memory_objects,
                          uint64_t max_device_fds) {
  return max_connections * (1 + max_memory_objects + max_device_fds);
}

FdLimitPlan PlanFdLimit(uint64_t soft, uint64_t hard, uint64_t needed) {
  FdLimitPlan plan;
  if (soft >= needed) {
    plan.soft = soft;
    return plan;
  }
  plan.soft = hard < needed ? hard : needed;
  if (hard < needed) {
    plan.status = absl::FailedPreconditionError(absl::StrCat(
        "nofile: the agent may need ", needed, " fds at its launcher limits but RLIMIT_NOFILE "
        "allows ", hard, " (hard); launchers at those limits could exhaust the agent's fd table. "
        "Raise it (LimitNOFILE= in systemd) or lower --max-launcher-connections or "
        "--max-session-memory-objects"));
  }
  return plan;
}

absl::StatusOr<std::string> EnsureFdLimit(uint64_t needed) {
  struct rlimit have = {0, 0};
  if (getrlimit(RLIMIT_NOFILE, &have) != 0) {
    return ErrnoStatus(errno, "getrlimit RLIMIT_NOFILE");
  }
  // RLIM_INFINITY is the largest rlim_t, so it compares as "enough".
  const FdLimitPlan plan = PlanFdLimit(have.rlim_cur, have.rlim_max, needed);
  if (plan.soft != have.rlim_cur) {
    struct rlimit want = {static_cast<rlim_t>(plan.soft), have.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
      return ErrnoStatus(errno, absl::StrCat("setrlimit RLIMIT_NOFILE soft=", plan.soft));
    }
  }
  if (!plan.status.ok()) return plan.status;
  if (plan.soft == have.rlim_cur) {
    return absl::StrCat("RLIMIT_NOFILE ", have.rlim_cur, " covers the ", needed, " needed");
  }
  return absl::StrCat("RLIMIT_NOFILE ", have.rlim_cur, " raised to ", plan.soft);
}

sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int WaitForStopSignal(const sigset_t& signals) {
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  return signal_number;
}

namespace {
constexpr absl::string_view kStartEventPayload = "iommu.agent/start_event";
}  // namespace

absl::Status WithStartEvent(absl::string_view event, absl::Status status) {
  status.SetPayload(kStartEventPayload, absl::Cord(event));
  return status;
}

std::string StartEventOf(const absl::Status& status, absl::string_view fallback) {
  const auto event = status.GetPayload(kStartEventPayload);
  return event.has_value() ? std::string(*event) : std::string(fallback);
}

}  // namespace agent
}  // namespace iommu
