// iommu-fdholder: keeps the node agent's fds while the agent restarts, on
// hosts where systemd's fd store is not available (agent/fd_holder.h). Only
// flag parsing and wiring here.
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/fd_holder.h"
#include "agent/log.h"
#include "common/flag_spelling.h"
#include "common/version.h"

ABSL_FLAG(std::string, socket, "/run/iommu-agent/fdholder.sock",
          "Unix socket (SOCK_SEQPACKET) the agent reaches the holder at; the agent's "
          "--fd-store=holder:<this path>.");
ABSL_FLAG(std::string, socket_mode, "0600",
          "Octal permissions of the socket file. Only peers of the holder's uid (or "
          "root) are served whatever the mode.");
ABSL_FLAG(int64_t, max_fds, 65536,
          "Most fds held at once; a PUT of a new name past it is RESOURCE_EXHAUSTED.");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error.");

namespace iommu {
namespace agent {
namespace {

int Fail(absl::string_view event, const absl::Status& status) {
  LogEvent(LogLevel::kError, event, {{"error", status.ToString()}});
  return 1;
}

// Holding up to --max-fds fds needs a file limit above it: raise the soft
// limit to the hard one, and say so if even that is too low.
void RaiseFileLimit(size_t max_fds) {
  rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &limit);
    (void)::getrlimit(RLIMIT_NOFILE, &limit);
  }
  // Headroom for the sockets and one LIST batch per connection.
  constexpr rlim_t kHeadroom = 512;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < max_fds + kHeadroom) {
    LogEvent(LogLevel::kWarning, "fdholder_file_limit_low",
             {{"rlimit_nofile", static_cast<uint64_t>(limit.rlim_cur)},
              {"max_fds", max_fds},
              {"note", "PUTs fail with EMFILE before max_fds is reached"}});
  }
}

int Main(int argc, char** argv) {
  // Block the stop signals before any thread exists, so that only the
  // sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  InstallFlagsUsage("iommu-fdholder",
                    "keeps the node agent's IOMMU fds across its restarts.\n"
                    "Usage: iommu-fdholder [--socket=/run/iommu-agent/fdholder.sock] "
                    "[--socket-mode=0600] [--max-fds=65536]");
  ParseFlags(argc, argv);
  SetLogSource("fdholder");
  absl::StatusOr<LogLevel> level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return Fail("bad_flag", level.status());
  SetMinLogLevel(*level);

  FdHolder::Options options;
  options.socket_path = absl::GetFlag(FLAGS_socket);
  const std::string mode = absl::GetFlag(FLAGS_socket_mode);
  char* end = nullptr;
  const unsigned long m = std::strtoul(mode.c_str(), &end, 8);
  if (mode.empty() || *end != '\0' || m > 0777) {
    return Fail("bad_flag", absl::InvalidArgumentError(absl::StrCat(
                                "socket_mode: must be octal permissions like 0600, got \"",
                                mode, "\"")));
  }
  options.socket_mode = static_cast<mode_t>(m);
  const int64_t max_fds = absl::GetFlag(FLAGS_max_fds);
  if (max_fds < 1 || max_fds > (int64_t{1} << 20)) {
    return Fail("bad_flag", absl::InvalidArgumentError(absl::StrCat(
                                "max_fds: must be 1 to 1048576, got ", max_fds)));
  }
  options.max_fds = static_cast<size_t>(max_fds);
  RaiseFileLimit(options.max_fds);

  absl::StatusOr<std::unique_ptr<FdHolder>> holder = FdHolder::Listen(options);
  if (!holder.ok()) return Fail("listen_failed", holder.status());

  std::thread stopper([&stop_signals, h = holder->get()] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    LogEvent(LogLevel::kWarning, "fdholder_stopping",
             {{"signal", strsignal(signal_number)},
              {"note", "closing every held fd: the agent's containers cannot be re-adopted"}});
    h->Shutdown();
  });
  const absl::Status served = (*holder)->Serve();
  if (!served.ok()) {
    // Serve ended on its own: wake the stopper so it can be joined.
    ::kill(::getpid(), SIGTERM);
  }
  stopper.join();
  holder->reset();
  if (!served.ok()) return Fail("serve_failed", served);
  return 0;
}

}  // namespace
}  // namespace agent
}  // namespace iommu

int main(int argc, char** argv) { return iommu::agent::Main(argc, argv); }
