// Keeps a SQLite database's write-ahead log bounded while it is written,
// without putting checkpoints on the commit path.
//
// Why the WAL grew without bound before (issue 11): the store turns
// SQLite's own auto-checkpoint off (it would run in the committing thread,
// adding an fsync of the database file to one commit) and checkpointed
// PASSIVE from a thread on a connection of its own. That connection never
// read the database, so it never opened the WAL, and each
// sqlite3_wal_checkpoint_v2 on it did nothing and returned SQLITE_OK. And
// even a working passive checkpoint only copies frames: the log restarts
// from its beginning only when a writer begins while every frame has been
// copied, and under sustained load a commit always lands while a checkpoint
// copies (measured: 32,000 mutations, 223 MB of WAL with passive checkpoints
// alone). Without journal_size_limit even a rewound log keeps its size, and
// after kill -9 nothing shrank it.
//
// Now a thread with its own connection checkpoints PASSIVE every `period`
// (no lock: commits go on meanwhile), and when the -wal file has passed
// `restart_bytes` it holds the writers' mutex for one RESTART checkpoint:
// by then only the frames appended since the passive pass are left to copy,
// so commits wait for a short copy and one fsync of the database file, once
// per `restart_bytes` of log, and the next commit rewinds the log. With
// journal_size_limit set to `restart_bytes` (the store does) the -wal file
// stays below about `restart_bytes` plus what is committed in one `period`
// and one checkpoint.
//
// Thread-safe.
#ifndef SERVER_WAL_CHECKPOINTER_H_
#define SERVER_WAL_CHECKPOINTER_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iommu {

struct WalCheckpointOptions {
  absl::Duration period = absl::Milliseconds(100);
  // 16 MiB: at the highest rate measured (~35 MB of log a second) about two
  // restarts a second, each pausing commits for about one fsync; the WAL
  // peaked at 21-24 MB (docs/BENCHMARKS.md, "WAL checkpointing").
  int64_t restart_bytes = 16 << 20;
};

class WalCheckpointer final {
 public:
  // Opens a connection of its own to the database `path` and starts the
  // thread. `writer_mu` must be held by every writer of the database while
  // it writes, and outlive the checkpointer. UNAVAILABLE when the database
  // cannot be opened.
  static absl::StatusOr<std::unique_ptr<WalCheckpointer>> Start(const std::string& path,
                                                                absl::Mutex* writer_mu,
                                                                WalCheckpointOptions options);

  ~WalCheckpointer();  // Stops and joins the thread, closes its connection.
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  struct Stats {
    int64_t passive = 0;      // Passive checkpoints that completed.
    int64_t restarts = 0;     // RESTART checkpoints that completed.
    int64_t failures = 0;     // Checkpoints that returned an error (busy, I/O).
  };
  Stats stats() const;

 private:
  WalCheckpointer(std::string path, sqlite3* db, absl::Mutex* writer_mu,
                  WalCheckpointOptions options);
  void Run();
  void CheckpointOnce();
  int64_t WalBytes() const;
  void CountFailure(const char* mode, int rc);

  // After a RESTART checkpoint failed, periods to skip before the next one
  // (each attempt may hold commits off for up to 10 ms waiting for readers).
  static constexpr int kRestartBackoffPeriods = 10;

  // Constant after construction.
  const std::string wal_path_;
  sqlite3* const db_;  // Used by the thread only.
  absl::Mutex* const writer_mu_;
  const WalCheckpointOptions options_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  Stats stats_ ABSL_GUARDED_BY(mu_);
  absl::Time last_failure_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int restart_backoff_ = 0;  // Used by the thread only.
  std::thread thread_;
};

}  // namespace iommu

#endif  // SERVER_WAL_CHECKPOINTER_H_
