// The embedded KvStore (kv_store.h): latest state in memory, history and
// leases in one SQLite file (kv_sqlite_file.h), writes through a group
// commit pipeline.
//
// Write path: callers of Txn / LeaseGrant / LeaseRevoke queue up; the first
// in line becomes the leader, takes everything queued (up to max_batch),
// plans it against the committed state with a BatchPlanner (each request
// sees the ones before it, each write txn gets its own revision), writes the
// whole batch in one SQLite transaction (one fsync), then applies it to the
// in-memory state, publishes it to watchers and wakes the batch. A batch
// whose commit fails fails every request in it, and memory never saw it.
// If the file's revision then differs from memory's (an fsync that failed
// after the log was written), the outcome is unknown: the store refuses
// every later write (UNAVAILABLE) until it is reopened from the file.
//
// Read path: Range at the latest revision and read-only txns are served from
// memory under a reader lock, never behind a commit's fsync; ranges at older
// revisions read history from SQLite on a connection of their own.
//
// Leases expire by the injected Clock; a sweeper thread revokes expired
// leases every `lease_sweep_period` (KeepAlive and TimeToLive consult the
// clock directly, so they are exact at any moment).
//
// Thread-safe. Watch handles must be destroyed before the store, or they
// become inert when it goes.
#ifndef SERVER_KV_SQLITE_KV_STORE_H_
#define SERVER_KV_SQLITE_KV_STORE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/kv/kv_store.h"
#include "server/wal_checkpointer.h"

namespace iommu {
namespace kv {

struct SqliteKvOptions {
  Clock* clock = nullptr;  // nullptr: Clock::Real(). Must outlive the store.
  KvLimits limits;
  int max_batch = 1024;  // Requests per group commit.
  int64_t watch_max_pending_events = 100000;
  absl::Duration lease_sweep_period = absl::Milliseconds(500);
  WalCheckpointOptions checkpoint;
  // Fault injection for tests: called before (written=false) and after
  // (written=true) each batch's SQLite write; an error fails the batch as
  // if the write, or its fsync, had failed.
  std::function<absl::Status(bool written)> write_fault_for_testing;
};

// Opens (creating, mode 0600) the store at `path` and restores its
// revision, keys, leases (TTLs restarted, as etcd does) and compaction
// point. Errors as KvSqliteFile::Open, plus DATA_LOSS for inconsistent
// contents.
absl::StatusOr<std::unique_ptr<KvStore>> OpenSqliteKvStore(const std::string& path,
                                                           SqliteKvOptions options = {});

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_SQLITE_KV_STORE_H_
