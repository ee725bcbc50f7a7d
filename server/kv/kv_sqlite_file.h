// The durable half of SqliteKvStore: one SQLite database (WAL,
// synchronous=FULL) holding the MVCC history of every key, the leases and
// the store's counters. Every write of a batch is one SQLite transaction, so
// one fsync; nothing here keeps state in memory beyond prepared statements.
//
// Schema (application_id 'IKV1', meta.schema_version 1):
//   history(key, revision, sub, value, create_revision, version, lease,
//           tombstone, sum)  -- one row per change; mod_revision is
//                          `revision`; `sub` orders the changes of one txn;
//                          `sum` is a CRC32C of the row, checked on every
//                          read (DATA_LOSS on mismatch).
//   leases(id, ttl)     -- live leases.
//   meta(name, value)   -- schema_version, compacted, next_lease_id.
// The store's revision is the newest history row's.
//
// The file is created 0600 whatever the umask and flock'ed for the life of
// the object (server/store_file_lock.h); the WAL is kept bounded by a
// WalCheckpointer that shares the write mutex.
//
// Thread-safe: writes serialize on the write connection's mutex; history
// reads use a second connection with its own mutex, so they never wait for a
// commit's fsync.
#ifndef SERVER_KV_KV_SQLITE_FILE_H_
#define SERVER_KV_KV_SQLITE_FILE_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/kv/kv_state.h"
#include "server/kv/kv_store.h"
#include "server/store_file_lock.h"
#include "server/wal_checkpointer.h"

namespace iommu {
namespace kv {

inline constexpr int kKvSchemaVersion = 1;
inline constexpr int32_t kKvApplicationId = 0x494b5631;  // "IKV1"

class KvSqliteFile final {
 public:
  // Opens or creates the store at `path`. Errors: FAILED_PRECONDITION when
  // another process holds the file, it is open to group or others, it is a
  // SQLite database of something else (application_id), or its schema is
  // newer than this build; DATA_LOSS when it is not a database or fails
  // SQLite's quick_check; UNAVAILABLE when it cannot be opened.
  static absl::StatusOr<std::unique_ptr<KvSqliteFile>> Open(const std::string& path,
                                                            const WalCheckpointOptions& wal);
  ~KvSqliteFile();
  KvSqliteFile(const KvSqliteFile&) = delete;
  KvSqliteFile& operator=(const KvSqliteFile&) = delete;

  // Fills an empty `state` with the latest version of every live key, the
  // leases (TTLs restarted at `now`) and the counters; sets *compacted.
  absl::Status Load(KvState* state, int64_t* compacted, absl::Time now);

  // Makes `changes` durable in one transaction. On error nothing of it is
  // in the file (the transaction is rolled back), except when the final
  // fsync failed: then the outcome is unknown (UNAVAILABLE).
  absl::Status Write(const ChangeSet& changes);

  // The revision the file holds (its newest row's), read on the write
  // connection: after a failed Write it tells whether the batch landed.
  absl::StatusOr<int64_t> DurableRevision();

  // Removes history rows no read at or above `revision` can see and records
  // the compaction point. The caller checked `revision`.
  absl::Status Compact(int64_t revision);

  // The range as it was at `revision` (> 0), from history. The caller
  // checks the compaction point before and after.
  absl::StatusOr<RangeResponse> ReadRange(const RangeRequest& request);

  // The changes of (key, range_end) with revision in [from, to], grouped by
  // revision, each with its prev_kv when history still has it. Stops after
  // the revision that brings the count of events to `max_events` or more.
  absl::StatusOr<std::vector<WatchBatch>> ReadEvents(const std::string& key,
                                                     const std::string& range_end, int64_t from,
                                                     int64_t to, int64_t max_events);

 private:
  class Statement;
  KvSqliteFile(std::string path, std::unique_ptr<StoreFileLock> lock, sqlite3* db);
  absl::Status Configure(const WalCheckpointOptions& wal);
  absl::Status CheckOrCreateSchema();
  absl::Status OpenReader();
  absl::Status WriteLocked(const ChangeSet& changes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status ExecLocked(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status SetMetaLocked(const char* name, int64_t value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<int64_t> ReadMetaLocked(const char* name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<int64_t> MaxRevisionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Sets event->prev_kv from the key's newest row below `before` (none if
  // that row is a delete or was compacted). `st` caches the statement.
  absl::Status PrevKvLocked(Statement* st, const std::string& key, int64_t before, Event* event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);

  // Constant after construction; lock_ outlives the connections (it is
  // destroyed after them, see store_file_lock.h).
  const std::string path_;
  const std::unique_ptr<StoreFileLock> lock_;

  absl::Mutex write_mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(write_mu_);
  std::unique_ptr<Statement> insert_row_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<Statement> insert_lease_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<Statement> delete_lease_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<Statement> set_meta_ ABSL_GUARDED_BY(write_mu_);

  absl::Mutex read_mu_;
  sqlite3* read_db_ ABSL_PT_GUARDED_BY(read_mu_) = nullptr;

  // Takes write_mu_ for its RESTART checkpoints; stopped first.
  std::unique_ptr<WalCheckpointer> checkpointer_;
};

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_KV_SQLITE_FILE_H_
