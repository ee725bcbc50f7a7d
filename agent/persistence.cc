#include "agent/persistence.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/log.h"
#include "agent/state_dir_check.h"
#include "common/errno_status.h"
#include "common/status_macros.h"

namespace iommu {
namespace agent {

absl::Status ValidatePersistenceOptions(const PersistenceOptions& options) {
  if (!options.state_dir.empty() && options.state_dir[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "state_dir: must be an absolute path (or empty for no journal), got \"",
        options.state_dir, "\""));
  }
  if (options.resume_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("session_resume_timeout: must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Persistence>> Persistence::Open(const PersistenceOptions& options) {
  RETURN_IF_ERROR(ValidatePersistenceOptions(options));
  std::unique_ptr<Persistence> p(new Persistence());
  p->options_ = options;
  if (!options.state_dir.empty()) {
    if (::mkdir(options.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat("state_dir: mkdir ", options.state_dir));
    }
    // Before anything in it is read: the journal decides what a root agent
    // restores, so only the agent's own uid may have written it.
    ASSIGN_OR_RETURN(const UniqueFd dir, CheckStateDir(options.state_dir));
    // One agent per journal: two would each believe they own the kernel
    // objects it names.
    const std::string lock = absl::StrCat(options.state_dir, "/journal.lock");
    p->lock_fd_ = UniqueFd(
        ::openat(dir.get(), "journal.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!p->lock_fd_) return ErrnoStatus(errno, absl::StrCat("state_dir: open ", lock));
    if (::flock(p->lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        return absl::FailedPreconditionError(absl::StrCat(
            "state_dir: ", options.state_dir,
            " is in use by another agent (its journal.lock is held); give each agent its own"));
      }
      return ErrnoStatus(errno, absl::StrCat("state_dir: flock ", lock));
    }
    ASSIGN_OR_RETURN(p->journal_,
                     StateJournal::Open(absl::StrCat(options.state_dir, "/journal.db")));
  }
  std::string spec = options.fd_store;
  if (spec == "auto") {
    const char* notify = std::getenv("NOTIFY_SOCKET");
    spec = notify != nullptr && *notify != '\0' ? "systemd" : "none";
  }
  absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore(spec);
  if (!store.ok()) {
    return absl::Status(store.status().code(),
                        absl::StrCat("fd_store: ", store.status().message()));
  }
  p->fd_store_ = *std::move(store);
  p->fd_store_kind_ = absl::StartsWith(spec, "holder:") ? "holder" : spec;
  return p;
}

Persistence::~Persistence() { StopSweeper(); }

void Persistence::StopSweeper() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (sweeper_.joinable()) sweeper_.join();
}

std::string Persistence::Describe() const {
  return absl::StrCat(journal_ ? absl::StrCat("journal ", journal_->path()) : "no journal", ", ",
                      fd_store_->Describe());
}

absl::StatusOr<RestoreReport> Persistence::RestoreInto(
    AgentCore& core, absl::Time now,
    const std::function<absl::StatusOr<GuestMemoryRegion>(UniqueFd)>& map_memory) {
  JournalState state;
  if (journal_ != nullptr) {
    ASSIGN_OR_RETURN(state, journal_->Load());
  }
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = fd_store_->Retrieve();
  if (!fds.ok()) {
    return absl::Status(fds.status().code(),
                        absl::StrCat("fd_store: ", fd_store_->Describe(), ": ",
                                     fds.status().message()));
  }
  // Stray fds are removed through the store, so it is set first.
  core.SetPersistence(journal_.get(), fd_store_.get());
  return core.Restore(state, *std::move(fds), now + options_.resume_timeout, map_memory);
}

void Persistence::StartSweeper(AgentCore* core) {
  sweeper_ = std::thread([this, core] {
    while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      core->CloseUnresumedSessions(absl::Now());
    }
  });
}

absl::Status Persistence::RestoreAndStart(
    AgentCore& core, absl::Time now,
    const std::function<absl::StatusOr<GuestMemoryRegion>(UniqueFd)>& map_memory) {
  ASSIGN_OR_RETURN(const RestoreReport restored, RestoreInto(core, now, map_memory));
  LogEvent(restored.problems.empty() ? LogLevel::kInfo : LogLevel::kWarning, "restored",
           {{"persistence", Describe()},
            {"containers_adopted", restored.containers_adopted},
            {"containers_orphaned", restored.containers_orphaned},
            {"sessions", restored.sessions_restored},
            {"memory", restored.memory_restored},
            {"memory_fds_lost", restored.memory_fds_lost},
            {"mappings", restored.mappings_restored},
            {"stray_fds_removed", restored.stray_fds_removed}});
  for (const std::string& problem : restored.problems) {
    LogEvent(LogLevel::kError, "restore_problem", {{"problem", problem}});
  }
  if (!keeps_kernel_objects()) {
    LogEvent(LogLevel::kWarning, "restart_loses_containers",
             {{"persistence", Describe()},
              {"hint", "run under systemd with FileDescriptorStoreMax= or pass "
                       "--fd-store=holder:PATH with an iommu-fdholder, so containers and "
                       "guests' DMA survive an agent restart"}});
  }
  StartSweeper(&core);
  return absl::OkStatus();
}

}  // namespace agent
}  // namespace iommu
