#include "server/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/status_macros.h"

namespace iommu {
namespace {

// Each entry migrates the schema from version i to i + 1. Never edit a
// released entry: append a new one.
const char* const kMigrations[] = {
    // 0 -> 1
    "CREATE TABLE objects ("
    "  kind TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  value BLOB NOT NULL,"
    "  PRIMARY KEY (kind, id)) WITHOUT ROWID;"
    "CREATE TABLE requests ("
    "  request_id TEXT PRIMARY KEY NOT NULL,"
    "  fingerprint BLOB NOT NULL,"
    "  response BLOB NOT NULL,"
    "  time_ms INTEGER NOT NULL);"
    "CREATE INDEX requests_by_time ON requests (time_ms);",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSqliteSchemaVersion,
              "one migration per schema version");

// Owns a prepared statement; finalizes it on every path.
class Statement final {
 public:
  Statement() = default;
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt** out() { return &stmt_; }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// Owns the lock file that keeps a second broker off the same database.
class LockFile final {
 public:
  explicit LockFile(int fd) : fd_(fd) {}
  ~LockFile() {
    if (fd_ >= 0) close(fd_);
  }
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

 private:
  int fd_;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(sqlite3* db, std::unique_ptr<LockFile> lock) : db_(db), lock_(std::move(lock)) {}
  ~SqliteStore() override {
    if (checkpointer_.joinable()) {
      {
        absl::MutexLock l(&checkpoint_mu_);
        stop_checkpointer_ = true;
      }
      checkpointer_.join();
    }
    {
      absl::MutexLock l(&read_mu_);
      find_request_.reset();
      sqlite3_close_v2(read_db_);
    }
    absl::MutexLock l(&mu_);
    put_.reset();
    delete_.reset();
    insert_request_.reset();
    // Closing cleanly checkpoints the WAL; a crash instead leaves it for the
    // next open to replay, which is just as safe.
    sqlite3_close_v2(db_);
  }

  // Opens the second connection that LoadAll and FindRequest use. In WAL
  // mode a reader sees the last committed state and neither waits for nor
  // delays a writer, so a lookup is never stuck behind a commit's fsync (the
  // broker looks requests up under its own lock while another thread
  // commits).
  // Moves WAL checkpoints off the commit path. By default the commit that
  // grows the WAL past 1000 pages copies it into the database file and
  // fsyncs that, in the committer's thread: tens of milliseconds added to
  // one commit, which every request waiting on that group pays. Instead a
  // thread of our own checkpoints (PASSIVE: never blocks a writer or a
  // reader) on its own connection every `period`. Durability does not
  // change: a commit is durable once its WAL frames are fsynced.
  absl::Status StartCheckpointer(const std::string& path, absl::Duration period) {
    {
      absl::MutexLock l(&mu_);
      RETURN_IF_ERROR(ExecLocked("PRAGMA wal_autocheckpoint=0"));
    }
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      sqlite3_close_v2(db);
      return absl::UnavailableError(absl::StrCat("store: open checkpointer on ", path, ": ", msg));
    }
    sqlite3_busy_timeout(db, 5000);
    checkpointer_ = std::thread([this, db, period] {
      absl::MutexLock l(&checkpoint_mu_);
      while (!checkpoint_mu_.AwaitWithTimeout(absl::Condition(&stop_checkpointer_), period)) {
        checkpoint_mu_.Unlock();
        // Errors (busy, I/O) only delay the checkpoint; the next try or the
        // clean close does it, and commits are durable regardless.
        sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        checkpoint_mu_.Lock();
      }
      sqlite3_close_v2(db);
    });
    return absl::OkStatus();
  }

  absl::Status OpenReader(const std::string& path) {
    absl::MutexLock l(&read_mu_);
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      sqlite3_close_v2(db);
      return absl::UnavailableError(absl::StrCat("store: open reader on ", path, ": ", msg));
    }
    sqlite3_busy_timeout(db, 5000);
    read_db_ = db;
    return absl::OkStatus();
  }

  absl::Status Migrate() {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(ExecLocked("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)"));
    int version = 0;
    {
      Statement st;
      RETURN_IF_ERROR(PrepareLocked("SELECT value FROM meta WHERE key = 'schema_version'", &st));
      int rc = sqlite3_step(st.get());
      if (rc == SQLITE_ROW) {
        version = sqlite3_column_int(st.get(), 0);
      } else if (rc != SQLITE_DONE) {
        return ErrorLocked("read schema_version");
      }
    }
    if (version > kSqliteSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("store: schema version ", version, " is newer than this broker's ",
                       kSqliteSchemaVersion, "; run the newer broker or restore a backup"));
    }
    for (int v = version; v < kSqliteSchemaVersion; ++v) {
      RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
      absl::Status s = ExecLocked(kMigrations[v]);
      if (s.ok()) {
        s = ExecLocked(absl::StrCat(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ", v + 1, ")"));
      }
      if (!s.ok()) {
        ExecLocked("ROLLBACK").IgnoreError();
        return s;
      }
      RETURN_IF_ERROR(ExecLocked("COMMIT"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<StoreRecord>> LoadAll() override {
    absl::MutexLock l(&read_mu_);
    Statement st;
    if (sqlite3_prepare_v2(read_db_, "SELECT kind, id, value FROM objects ORDER BY kind, id", -1,
                           st.out(), nullptr) != SQLITE_OK) {
      return Error(read_db_, "prepare load objects");
    }
    std::vector<StoreRecord> out;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      out.push_back(StoreRecord{ColumnText(st.get(), 0), ColumnText(st.get(), 1),
                                ColumnBlob(st.get(), 2)});
    }
    if (rc != SQLITE_DONE) return Error(read_db_, "load objects");
    return out;
  }

  absl::Status Commit(const WriteBatch& batch) override {
    return CommitGroup(absl::MakeConstSpan(&batch, 1));
  }

  absl::Status CommitGroup(absl::Span<const WriteBatch> batches) override {
    if (std::all_of(batches.begin(), batches.end(),
                    [](const WriteBatch& b) { return b.empty(); })) {
      return absl::OkStatus();
    }
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
    absl::Status s;
    for (const WriteBatch& batch : batches) {
      s = ApplyLocked(batch);
      if (!s.ok()) break;
    }
    if (!s.ok()) {
      ExecLocked("ROLLBACK").IgnoreError();
      return s;
    }
    s = ExecLocked("COMMIT");
    if (!s.ok()) {
      // A failed COMMIT may leave the transaction open; make sure it is gone
      // so the next call starts clean.
      ExecLocked("ROLLBACK").IgnoreError();
    }
    return s;
  }

  absl::StatusOr<std::optional<RequestRecord>> FindRequest(absl::string_view request_id) override {
    absl::MutexLock l(&read_mu_);
    if (find_request_ == nullptr) {
      find_request_ = std::make_unique<Statement>();
      if (sqlite3_prepare_v2(read_db_,
                             "SELECT fingerprint, response, time_ms FROM requests WHERE "
                             "request_id = ?",
                             -1, find_request_->out(), nullptr) != SQLITE_OK) {
        find_request_.reset();
        return Error(read_db_, "prepare find request");
      }
    }
    sqlite3_stmt* st = find_request_->get();
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, request_id.data(), request_id.size(), SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
      sqlite3_reset(st);  // Ends the read transaction.
      return std::optional<RequestRecord>();
    }
    if (rc != SQLITE_ROW) {
      absl::Status s = Error(read_db_, "find request");
      sqlite3_reset(st);
      return s;
    }
    RequestRecord r;
    r.request_id = std::string(request_id);
    r.fingerprint = ColumnBlob(st, 0);
    r.response = ColumnBlob(st, 1);
    r.time_ms = sqlite3_column_int64(st, 2);
    sqlite3_reset(st);  // Ends the read transaction.
    return std::optional<RequestRecord>(std::move(r));
  }

  absl::StatusOr<int64_t> ExpireRequests(int64_t before_ms) override {
    absl::MutexLock l(&mu_);
    Statement st;
    RETURN_IF_ERROR(PrepareLocked("DELETE FROM requests WHERE time_ms < ?", &st));
    sqlite3_bind_int64(st.get(), 1, before_ms);
    if (sqlite3_step(st.get()) != SQLITE_DONE) return ErrorLocked("expire requests");
    return static_cast<int64_t>(sqlite3_changes(db_));
  }

 private:
  absl::Status ApplyLocked(const WriteBatch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // The three statements are prepared once and reused: a group commit
    // runs them for every batch it holds.
    if (!batch.puts.empty()) {
      RETURN_IF_ERROR(CachedLocked(
          "INSERT OR REPLACE INTO objects (kind, id, value) VALUES (?, ?, ?)", &put_));
      sqlite3_stmt* st = put_->get();
      for (const StoreRecord& r : batch.puts) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, r.kind.data(), r.kind.size(), SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r.id.data(), r.id.size(), SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, r.value.data(), r.value.size(), SQLITE_STATIC);
        const int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return ErrorLocked(absl::StrCat("put ", r.kind, "/", r.id));
      }
    }
    if (!batch.deletes.empty()) {
      RETURN_IF_ERROR(CachedLocked("DELETE FROM objects WHERE kind = ? AND id = ?", &delete_));
      sqlite3_stmt* st = delete_->get();
      for (const auto& [kind, id] : batch.deletes) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, kind.data(), kind.size(), SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id.data(), id.size(), SQLITE_STATIC);
        const int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return ErrorLocked(absl::StrCat("delete ", kind, "/", id));
      }
    }
    if (batch.request.has_value()) {
      const RequestRecord& r = *batch.request;
      RETURN_IF_ERROR(CachedLocked(
          "INSERT INTO requests (request_id, fingerprint, response, time_ms) VALUES (?, ?, ?, ?)",
          &insert_request_));
      sqlite3_stmt* st = insert_request_->get();
      sqlite3_reset(st);
      sqlite3_bind_text(st, 1, r.request_id.data(), r.request_id.size(), SQLITE_STATIC);
      sqlite3_bind_blob(st, 2, r.fingerprint.data(), r.fingerprint.size(), SQLITE_STATIC);
      sqlite3_bind_blob(st, 3, r.response.data(), r.response.size(), SQLITE_STATIC);
      sqlite3_bind_int64(st, 4, r.time_ms);
      const int rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) return ErrorLocked(absl::StrCat("record request ", r.request_id));
    }
    return absl::OkStatus();
  }

  // Prepares `sql` into *st the first time; later calls reuse it.
  absl::Status CachedLocked(const char* sql, std::unique_ptr<Statement>* st)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (*st != nullptr) return absl::OkStatus();
    auto fresh = std::make_unique<Statement>();
    RETURN_IF_ERROR(PrepareLocked(sql, fresh.get()));
    *st = std::move(fresh);
    return absl::OkStatus();
  }

  absl::Status ExecLocked(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      absl::Status s = ErrorLocked(absl::StrCat("exec \"", sql.substr(0, 40), "\""));
      sqlite3_free(err);
      return s;
    }
    return absl::OkStatus();
  }

  absl::Status PrepareLocked(const char* sql, Statement* st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (sqlite3_prepare_v2(db_, sql, -1, st->out(), nullptr) != SQLITE_OK) {
      return ErrorLocked(absl::StrCat("prepare \"", sql, "\""));
    }
    return absl::OkStatus();
  }

  // The connection's last error as a Status. Busy/locked and I/O errors are
  // UNAVAILABLE (the caller may retry); corruption is DATA_LOSS.
  absl::Status ErrorLocked(absl::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Error(db_, what);
  }
  static absl::Status Error(sqlite3* db, absl::string_view what) {
    const int code = sqlite3_extended_errcode(db);
    const std::string msg =
        absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db), " (sqlite ", code, ")");
    switch (code & 0xff) {
      case SQLITE_CORRUPT:
      case SQLITE_NOTADB:
        return absl::DataLossError(msg);
      case SQLITE_FULL:
        return absl::ResourceExhaustedError(msg);
      default:
        return absl::UnavailableError(msg);
    }
  }

  static std::string ColumnText(sqlite3_stmt* st, int col) {
    const unsigned char* p = sqlite3_column_text(st, col);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(st, col));
  }
  static std::string ColumnBlob(sqlite3_stmt* st, int col) {
    const void* p = sqlite3_column_blob(st, col);
    return p == nullptr ? std::string()
                        : std::string(static_cast<const char*>(p), sqlite3_column_bytes(st, col));
  }

  absl::Mutex mu_;  // The write connection: migrations, commits, expiry.
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  std::unique_ptr<Statement> put_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Statement> delete_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Statement> insert_request_ ABSL_GUARDED_BY(mu_);
  absl::Mutex read_mu_;  // The read connection: LoadAll, FindRequest.
  sqlite3* read_db_ ABSL_PT_GUARDED_BY(read_mu_) = nullptr;
  std::unique_ptr<Statement> find_request_ ABSL_GUARDED_BY(read_mu_);
  absl::Mutex checkpoint_mu_;
  bool stop_checkpointer_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  std::thread checkpointer_;
  const std::unique_ptr<LockFile> lock_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  // One broker per database: a second one would corrupt nothing (SQLite
  // locks) but would serve stale in-memory state.
  const std::string lock_path = path + ".lock";
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("store: open ", lock_path, ": ", std::strerror(errno)));
  }
  auto lock = std::make_unique<LockFile>(fd);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    return absl::UnavailableError(absl::StrCat("store: ", path,
                                               " is in use by another broker (lock ", lock_path,
                                               " held): ", std::strerror(errno)));
  }

  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::UnavailableError(absl::StrCat("store: open ", path, ": ", msg));
  }
  auto store = std::make_unique<SqliteStore>(db, std::move(lock));
  // WAL + synchronous=FULL: every COMMIT is fsynced before it returns.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                             "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"}) {
    char* err = nullptr;
    if (sqlite3_exec(db, pragma, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db);
      sqlite3_free(err);
      const int code = sqlite3_extended_errcode(db) & 0xff;
      if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
        return absl::DataLossError(absl::StrCat("store: ", path, " is not a database: ", msg));
      }
      return absl::UnavailableError(absl::StrCat("store: ", pragma, ": ", msg));
    }
  }
  RETURN_IF_ERROR(store->Migrate());
  RETURN_IF_ERROR(store->OpenReader(path));
  RETURN_IF_ERROR(store->StartCheckpointer(path, absl::Milliseconds(100)));
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace iommu
