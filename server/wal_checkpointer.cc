#include "server/wal_checkpointer.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace iommu {

absl::StatusOr<std::unique_ptr<WalCheckpointer>> WalCheckpointer::Start(
    const std::string& path, absl::Mutex* writer_mu, WalCheckpointOptions options) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::UnavailableError(absl::StrCat("store: open checkpointer on ", path, ": ", msg));
  }
  // A RESTART checkpoint waits for readers to move to the newest snapshot,
  // and it waits holding the writers' mutex: the broker's own readers are
  // single lookups, so 10 ms covers them; a long reader (a backup) makes it
  // give up quickly, and it is retried after kRestartBackoffPeriods.
  sqlite3_busy_timeout(db, 10);
  // A connection that has not read the database yet has not opened its WAL,
  // and sqlite3_wal_checkpoint_v2 on it does nothing and returns SQLITE_OK:
  // this is why the old checkpointer never checkpointed anything. Read the
  // schema once so that the connection is in WAL mode before the thread runs.
  char* err = nullptr;
  if (sqlite3_exec(db, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, &err) !=
      SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    sqlite3_close_v2(db);
    return absl::UnavailableError(absl::StrCat("store: checkpointer read of ", path, ": ", msg));
  }
  std::unique_ptr<WalCheckpointer> c(
      new WalCheckpointer(path + "-wal", db, writer_mu, options));
  c->thread_ = std::thread([p = c.get()] { p->Run(); });
  return c;
}

WalCheckpointer::WalCheckpointer(std::string wal_path, sqlite3* db, absl::Mutex* writer_mu,
                                 WalCheckpointOptions options)
    : wal_path_(std::move(wal_path)), db_(db), writer_mu_(writer_mu), options_(options) {}

WalCheckpointer::~WalCheckpointer() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  thread_.join();
  sqlite3_close_v2(db_);
}

WalCheckpointer::Stats WalCheckpointer::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

void WalCheckpointer::Run() {
  absl::MutexLock l(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.period)) {
    mu_.Unlock();
    CheckpointOnce();
    mu_.Lock();
  }
}

int64_t WalCheckpointer::WalBytes() const {
  struct stat st;
  return stat(wal_path_.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

void WalCheckpointer::CheckpointOnce() {
  // Copy what is committed so far into the database file, alongside commits.
  int log_frames = -1, copied = -1;
  int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
  if (rc == SQLITE_OK && log_frames < 0) rc = SQLITE_ERROR;  // Not in WAL mode: did nothing.
  if (rc != SQLITE_OK) {
    CountFailure("passive", rc);
  } else {
    absl::MutexLock l(&mu_);
    ++stats_.passive;
  }
  if (WalBytes() <= options_.restart_bytes) return;
  if (restart_backoff_ > 0) {
    --restart_backoff_;
    return;
  }
  // Make the next commit rewind the log (and shrink the file to
  // journal_size_limit). That needs every frame copied with no writer in
  // between, or a commit landing meanwhile leaves a frame behind (the
  // starvation described in the header): hold the writers' mutex. The
  // passive pass above left little to copy; the cost to commits is that
  // copy and one fsync of the database file, once per restart_bytes of log.
  // RESTART rather than TRUNCATE: the file keeps its blocks, so the commits
  // after it overwrite the log instead of growing the file again.
  {
    absl::MutexLock w(writer_mu_);
    rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_RESTART, &log_frames, &copied);
  }
  if (rc == SQLITE_OK && log_frames != copied) rc = SQLITE_BUSY;  // Frames left behind.
  if (rc != SQLITE_OK) {
    // Most likely a reader holding an old snapshot: do not hold commits off
    // for it every period.
    restart_backoff_ = kRestartBackoffPeriods;
    CountFailure("restart", rc);
    return;
  }
  absl::MutexLock l(&mu_);
  ++stats_.restarts;
}

void WalCheckpointer::CountFailure(const char* mode, int rc) {
  // Errors only delay the checkpoint: commits stay durable in the WAL, and
  // the next period tries again. Logged at most once a minute.
  const std::string error = sqlite3_errmsg(db_);
  absl::MutexLock l(&mu_);
  ++stats_.failures;
  const absl::Time now = absl::Now();
  if (now - last_failure_log_ < absl::Minutes(1)) return;
  last_failure_log_ = now;
  LogEvent(LogLevel::kWarning, "wal_checkpoint_failed",
           {{"mode", mode}, {"sqlite", rc}, {"error", error}, {"wal", wal_path_},
            {"wal_bytes", WalBytes()}, {"failures", stats_.failures}});
}

}  // namespace iommu
