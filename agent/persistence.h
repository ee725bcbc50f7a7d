// Persistence: where the node agent keeps what must outlive its process — the
// journal (agent/state_journal.h) in --state-dir and the kernel objects in
// the fd store (agent/fd_store.h) — and the start-up step that rebuilds an
// AgentCore from them.
//
// A restart (crash, kill -9, upgrade) then loses nothing: containers are
// re-adopted with their mappings and billing, launchers resume their
// sessions, guests' DMA never stops. Without an fd store ("none") the
// journal still keeps billing honest: containers whose kernel objects died
// with the process come back as orphans, billed until the kernel releases
// them.
//
// Thread-safe after Open: the sweeper runs on its own thread.
#ifndef AGENT_PERSISTENCE_H_
#define AGENT_PERSISTENCE_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/agent_core.h"
#include "agent/fd_store.h"
#include "agent/state_journal.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

struct PersistenceOptions {
  // Directory of the journal (created 0700 if missing). Empty: no journal,
  // nothing survives a restart.
  std::string state_dir;
  // "auto" (systemd's fd store when $NOTIFY_SOCKET is set, else "none"),
  // "none", "systemd" or "holder:/path.sock" (OpenFdStore).
  std::string fd_store = "auto";
  // How long a restored session waits for its launcher to resume it.
  absl::Duration resume_timeout = absl::Seconds(60);
};

// INVALID_ARGUMENT naming the flag: a relative state_dir, a resume_timeout
// that is not positive.
absl::Status ValidatePersistenceOptions(const PersistenceOptions& options);

class Persistence final {
 public:
  // Opens the journal (locking it: a second agent on the same state_dir is
  // FAILED_PRECONDITION naming the directory) and the fd store. A state_dir
  // or journal file that another uid owns or that group or others may write
  // is FAILED_PRECONDITION before the journal is read (CheckStateDir). Errors name
  // the flag (state_dir, fd_store) and what failed; an fd holder that cannot
  // be reached is UNAVAILABLE (the agent does not start, so nothing it holds
  // is forgotten).
  static absl::StatusOr<std::unique_ptr<Persistence>> Open(const PersistenceOptions& options);

  Persistence(const Persistence&) = delete;
  Persistence& operator=(const Persistence&) = delete;
  ~Persistence();

  StateJournal* journal() const { return journal_.get(); }
  FdStore* fd_store() const { return fd_store_.get(); }
  // "journal /var/lib/iommu-agent/journal.db, systemd fd store" etc.
  std::string Describe() const;
  // True when containers survive a restart (a journal and a real fd store).
  bool keeps_kernel_objects() const { return journal_ != nullptr && fd_store_kind_ != "none"; }

  // Reads the journal and the fd store and rebuilds `core` (AgentCore::Restore),
  // then points `core` at the journal and the store. Errors: the journal
  // cannot be read (FAILED_PRECONDITION naming it), the store cannot be
  // read. `map_memory` is MapGuestMemory.
  absl::StatusOr<RestoreReport> RestoreInto(
      AgentCore& core, absl::Time now,
      const std::function<absl::StatusOr<GuestMemoryRegion>(UniqueFd)>& map_memory);

  // Ends restored sessions nobody resumed in time, once a second, until
  // StopSweeper or destruction. Call after RestoreInto.
  void StartSweeper(AgentCore* core);
  // Stops the sweeper and waits for it; idempotent. Call before the
  // AgentCore it sweeps is destroyed (the core outlives it only if this
  // object goes first, and the core points at this object's journal).
  void StopSweeper();

  // The agent's start-up step, before anything is served: RestoreInto, then
  // logs what was restored and each problem (and a warning when a restart
  // would lose the containers), then StartSweeper. Errors: RestoreInto's,
  // with nothing started.
  absl::Status RestoreAndStart(
      AgentCore& core, absl::Time now,
      const std::function<absl::StatusOr<GuestMemoryRegion>(UniqueFd)>& map_memory);

 private:
  Persistence() = default;

  PersistenceOptions options_;
  UniqueFd lock_fd_;  // flock'ed for the life of the process.
  std::unique_ptr<StateJournal> journal_;
  std::unique_ptr<FdStore> fd_store_;
  std::string fd_store_kind_;
  absl::Notification stop_;
  std::thread sweeper_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_PERSISTENCE_H_
