// StateJournal: what the node agent must know to rebuild itself after a
// crash or an upgrade, on local disk: the containers it holds, the launcher
// sessions open on them, the guest memory those sessions registered and every
// DMA mapping. The kernel objects themselves (container, group, device and
// memory fds) survive in the fd store (agent/fd_store.h); the journal says
// what they are and what is mapped in them, which no ioctl can list.
//
// One SQLite file (WAL, synchronous=FULL, 0600): every write is one
// transaction, durable when the call returns, so a torn write loses nothing
// that was acknowledged and the file is never half-updated.
//
// The invariant the agent keeps with it: the journal is a superset of the
// kernel. A mapping is journaled before the map ioctl and forgotten after the
// unmap ioctl; a container is journaled after it exists and forgotten after
// it is destroyed. A crash between the two steps leaves a record of something
// the kernel may not hold, which is billed (never less than the kernel pins)
// until it is unmapped or found gone.
//
// Thread-compatible: the AgentCore calls it under its own mutex.
#ifndef AGENT_STATE_JOURNAL_H_
#define AGENT_STATE_JOURNAL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/backend.h"
#include "agent/ledger.h"

struct sqlite3;

namespace iommu {
namespace agent {

struct JournalContainer {
  std::string id;
  std::string tenant;
  std::vector<std::string> devices;  // In creation order.
  std::string backend_kind;          // Backend::kind() that made it.
  std::string backend_state;         // PersistedContainer::state.
  std::vector<std::string> fd_names; // Names in the fd store, full.
};

struct JournalSession {
  std::string id;
  std::string container_id;
  std::string tenant;
  std::vector<IovaRange> grant_windows;
  std::string resume_digest;  // SHA-256 of the resume token, hex.
};

struct JournalMemory {
  std::string id;
  std::string session_id;
  std::string tenant;
  std::string name;
  ObjectKey key;
  uint64_t size = 0;
  std::string fd_name;  // Name of the memfd in the fd store.
};

struct JournalMapping {
  std::string container_id;
  uint64_t iova = 0;
  uint64_t size = 0;
  bool readable = false;
  bool writable = false;
  std::string session_id;
  std::string memory_id;
  uint64_t offset = 0;
  std::string owner;
  std::string tenant;
};

// Everything the journal holds, sorted by id (mappings by container, iova).
struct JournalState {
  std::vector<JournalContainer> containers;
  std::vector<JournalSession> sessions;
  std::vector<JournalMemory> memory;
  std::vector<JournalMapping> mappings;
};

class StateJournal final {
 public:
  // Opens (creating, mode 0600) the journal at `path`. Errors: the file
  // cannot be opened or created (the errno, naming the path); it is not a
  // journal of this version or is damaged (FAILED_PRECONDITION naming the
  // path and what SQLite said: the agent refuses to start rather than forget
  // what the kernel may still hold; move the file aside to start empty).
  static absl::StatusOr<std::unique_ptr<StateJournal>> Open(const std::string& path);

  StateJournal(const StateJournal&) = delete;
  StateJournal& operator=(const StateJournal&) = delete;
  ~StateJournal();

  const std::string& path() const { return path_; }

  // Reads everything. Errors: FAILED_PRECONDITION naming the path and the
  // record that does not parse.
  absl::StatusOr<JournalState> Load();

  // Each write is one durable transaction. Errors: INTERNAL naming the path
  // and SQLite's message (a full disk is RESOURCE_EXHAUSTED); nothing is
  // written then.
  absl::Status PutContainer(const JournalContainer& c);
  // Forgets the container with its sessions, their memory and its mappings.
  absl::Status DeleteContainer(absl::string_view id);
  absl::Status PutSession(const JournalSession& s);
  // Forgets the session with its memory and mappings.
  absl::Status DeleteSession(absl::string_view id);
  absl::Status PutMemory(const JournalMemory& m);
  absl::Status PutMapping(const JournalMapping& m);
  // Forgets the mappings of `container_id` starting at `iovas`.
  absl::Status DeleteMappings(absl::string_view container_id, const std::vector<uint64_t>& iovas);
  // Forgets everything (an agent started on a journal whose kernel objects
  // are all gone).
  absl::Status Clear();

 private:
  StateJournal(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  // Runs `sql` (no parameters); the status names `what`.
  absl::Status Exec(const char* sql, absl::string_view what);
  absl::Status Error(int rc, absl::string_view what) const;

  const std::string path_;
  sqlite3* const db_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_STATE_JOURNAL_H_
