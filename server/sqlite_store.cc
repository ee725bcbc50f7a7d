#include "server/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
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
    absl::MutexLock l(&mu_);
    // Closing cleanly checkpoints the WAL; a crash instead leaves it for the
    // next open to replay, which is just as safe.
    sqlite3_close_v2(db_);
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
    absl::MutexLock l(&mu_);
    Statement st;
    RETURN_IF_ERROR(PrepareLocked("SELECT kind, id, value FROM objects ORDER BY kind, id", &st));
    std::vector<StoreRecord> out;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      out.push_back(StoreRecord{ColumnText(st.get(), 0), ColumnText(st.get(), 1),
                                ColumnBlob(st.get(), 2)});
    }
    if (rc != SQLITE_DONE) return ErrorLocked("load objects");
    return out;
  }

  absl::Status Commit(const WriteBatch& batch) override {
    if (batch.empty()) return absl::OkStatus();
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
    absl::Status s = ApplyLocked(batch);
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
    absl::MutexLock l(&mu_);
    Statement st;
    RETURN_IF_ERROR(PrepareLocked(
        "SELECT fingerprint, response, time_ms FROM requests WHERE request_id = ?", &st));
    sqlite3_bind_text(st.get(), 1, request_id.data(), request_id.size(), SQLITE_TRANSIENT);
    int rc = sqlite3_step(st.get());
    if (rc == SQLITE_DONE) return std::optional<RequestRecord>();
    if (rc != SQLITE_ROW) return ErrorLocked("find request");
    RequestRecord r;
    r.request_id = std::string(request_id);
    r.fingerprint = ColumnBlob(st.get(), 0);
    r.response = ColumnBlob(st.get(), 1);
    r.time_ms = sqlite3_column_int64(st.get(), 2);
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
    if (!batch.puts.empty()) {
      Statement st;
      RETURN_IF_ERROR(PrepareLocked(
          "INSERT OR REPLACE INTO objects (kind, id, value) VALUES (?, ?, ?)", &st));
      for (const StoreRecord& r : batch.puts) {
        sqlite3_reset(st.get());
        sqlite3_bind_text(st.get(), 1, r.kind.data(), r.kind.size(), SQLITE_STATIC);
        sqlite3_bind_text(st.get(), 2, r.id.data(), r.id.size(), SQLITE_STATIC);
        sqlite3_bind_blob(st.get(), 3, r.value.data(), r.value.size(), SQLITE_STATIC);
        if (sqlite3_step(st.get()) != SQLITE_DONE) {
          return ErrorLocked(absl::StrCat("put ", r.kind, "/", r.id));
        }
      }
    }
    if (!batch.deletes.empty()) {
      Statement st;
      RETURN_IF_ERROR(PrepareLocked("DELETE FROM objects WHERE kind = ? AND id = ?", &st));
      for (const auto& [kind, id] : batch.deletes) {
        sqlite3_reset(st.get());
        sqlite3_bind_text(st.get(), 1, kind.data(), kind.size(), SQLITE_STATIC);
        sqlite3_bind_text(st.get(), 2, id.data(), id.size(), SQLITE_STATIC);
        if (sqlite3_step(st.get()) != SQLITE_DONE) {
          return ErrorLocked(absl::StrCat("delete ", kind, "/", id));
        }
      }
    }
    if (batch.request.has_value()) {
      const RequestRecord& r = *batch.request;
      Statement st;
      RETURN_IF_ERROR(PrepareLocked(
          "INSERT INTO requests (request_id, fingerprint, response, time_ms) VALUES (?, ?, ?, ?)",
          &st));
      sqlite3_bind_text(st.get(), 1, r.request_id.data(), r.request_id.size(), SQLITE_STATIC);
      sqlite3_bind_blob(st.get(), 2, r.fingerprint.data(), r.fingerprint.size(), SQLITE_STATIC);
      sqlite3_bind_blob(st.get(), 3, r.response.data(), r.response.size(), SQLITE_STATIC);
      sqlite3_bind_int64(st.get(), 4, r.time_ms);
      if (sqlite3_step(st.get()) != SQLITE_DONE) {
        return ErrorLocked(absl::StrCat("record request ", r.request_id));
      }
    }
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
    const int code = sqlite3_extended_errcode(db_);
    const std::string msg =
        absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db_), " (sqlite ", code, ")");
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

  absl::Mutex mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
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
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace iommu
