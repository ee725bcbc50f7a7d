#include "server/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/status_macros.h"
#include "server/record_checksum.h"
#include "server/request_digest.h"
#include "server/sqlite_util.h"
#include "server/store_file_lock.h"

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
    // 1 -> 2: a checksum per row (record_checksum.h), computed for the rows
    // already there by the SQL functions RegisterChecksumFunctions adds.
    "ALTER TABLE objects ADD COLUMN sum INTEGER NOT NULL DEFAULT 0;"
    "UPDATE objects SET sum = iommu_object_sum(kind, id, value);"
    "ALTER TABLE requests ADD COLUMN sum INTEGER NOT NULL DEFAULT 0;"
    "UPDATE requests SET sum = iommu_request_sum(request_id, fingerprint, response, time_ms);",
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

absl::string_view ValueBytes(sqlite3_value* v) {
  const void* p = sqlite3_value_blob(v);
  return p == nullptr ? absl::string_view()
                      : absl::string_view(static_cast<const char*>(p), sqlite3_value_bytes(v));
}

// The checksums as SQL functions, for the migration that adds them.
void ObjectSumFn(sqlite3_context* ctx, int, sqlite3_value** v) {
  sqlite3_result_int64(ctx, ObjectChecksum(ValueBytes(v[0]), ValueBytes(v[1]), ValueBytes(v[2])));
}
void RequestSumFn(sqlite3_context* ctx, int, sqlite3_value** v) {
  sqlite3_result_int64(ctx, RequestChecksum(ValueBytes(v[0]), ValueBytes(v[1]), ValueBytes(v[2]),
                                            sqlite3_value_int64(v[3])));
}
bool RegisterChecksumFunctions(sqlite3* db) {
  const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
  return sqlite3_create_function(db, "iommu_object_sum", 3, flags, nullptr, ObjectSumFn, nullptr,
                                 nullptr) == SQLITE_OK &&
         sqlite3_create_function(db, "iommu_request_sum", 4, flags, nullptr, RequestSumFn,
                                 nullptr, nullptr) == SQLITE_OK;
}

// The connection's last error (sqlite_util.h says which code means what).
absl::Status Error(sqlite3* db, absl::string_view what) {
  return SqliteError(db, "store", what);
}

constexpr char kRestore[] =
    "; the broker will not serve from a damaged store: restore the last backup "
    "(docs/OPERATIONS.md, Backups)";

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string path, std::unique_ptr<StoreFileLock> lock, sqlite3* db)
      : path_(std::move(path)), lock_(std::move(lock)), db_(db) {}
  ~SqliteStore() override {
    checkpointer_.reset();
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
    // next open to replay and truncate, which is just as safe. lock_, a
    // member, is released only after this: its fd must outlive SQLite's.
    sqlite3_close_v2(db_);
  }

  // Sets the connection up: WAL, synchronous=FULL (every COMMIT is fsynced
  // before it returns), no auto-checkpoint in the committing thread (the
  // checkpointer does it), and a rewound WAL shrunk to the checkpointer's
  // threshold.
  absl::Status Configure(const SqliteStoreOptions& options) {
    absl::MutexLock l(&mu_);
    if (!RegisterChecksumFunctions(db_)) return ErrorLocked("register checksum functions");
    for (const std::string& pragma :
         {std::string("PRAGMA journal_mode=WAL"), std::string("PRAGMA synchronous=FULL"),
          std::string("PRAGMA foreign_keys=ON"), std::string("PRAGMA busy_timeout=5000"),
          std::string("PRAGMA wal_autocheckpoint=0"),
          absl::StrCat("PRAGMA journal_size_limit=", options.checkpoint.restart_bytes)}) {
      absl::Status s = ExecLocked(pragma);
      if (absl::IsDataLoss(s)) {
        return absl::DataLossError(
            absl::StrCat("store: ", path_, " is not a database: ", s.message(), kRestore));
      }
      RETURN_IF_ERROR(s);
    }
    return absl::OkStatus();
  }

  // SQLite's own check of every page, index and constraint. Refuses to
  // serve from a file that fails it: damage found now is a clear refusal
  // instead of a wrong answer later.
  absl::Status CheckIntegrity() {
    absl::MutexLock l(&mu_);
    Statement st;
    RETURN_IF_ERROR(PrepareLocked("PRAGMA integrity_check(10)", &st));
    std::vector<std::string> problems;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      std::string line = SqliteColumnText(st.get(), 0);
      if (line != "ok") problems.push_back(std::move(line));
    }
    if (rc != SQLITE_DONE) {
      absl::Status s = ErrorLocked("integrity_check");
      return absl::DataLossError(absl::StrCat("store: ", path_, " is damaged: ", s.message(),
                                              kRestore));
    }
    if (!problems.empty()) {
      return absl::DataLossError(absl::StrCat("store: ", path_,
                                              " is damaged: integrity_check: ",
                                              absl::StrJoin(problems, "; "), kRestore));
    }
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

  // Folds a WAL left by a crash into the database file and empties it, so
  // that a broker killed in a loop does not carry its log from run to run.
  absl::Status TruncateWal() {
    absl::MutexLock l(&mu_);
    if (sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr) !=
        SQLITE_OK) {
      return ErrorLocked("checkpoint at open");
    }
    return absl::OkStatus();
  }

  // Opens the second connection that LoadAll and FindRequest use. In WAL
  // mode a reader sees the last committed state and neither waits for nor
  // delays a writer, so a lookup is never stuck behind a commit's fsync (the
  // broker looks requests up under its own lock while another thread
  // commits).
  absl::Status OpenReader() {
    absl::MutexLock l(&read_mu_);
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      sqlite3_close_v2(db);
      return absl::UnavailableError(absl::StrCat("store: open reader on ", path_, ": ", msg));
    }
    sqlite3_busy_timeout(db, 5000);
    read_db_ = db;
    return absl::OkStatus();
  }

  absl::Status StartCheckpointer(const WalCheckpointOptions& options) {
    ASSIGN_OR_RETURN(checkpointer_, WalCheckpointer::Start(path_, &mu_, options));
    return absl::OkStatus();
  }

  // Reads every remembered answer once, so that a damaged one refuses the
  // start rather than a retry later. (Objects are verified by LoadAll.)
  absl::Status VerifyRequests() {
    absl::MutexLock l(&read_mu_);
    Statement st;
    if (sqlite3_prepare_v2(read_db_,
                           "SELECT request_id, fingerprint, response, time_ms, sum FROM requests",
                           -1, st.out(), nullptr) != SQLITE_OK) {
      return Error(read_db_, "prepare verify requests");
    }
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      RETURN_IF_ERROR(RequestFromRow(st.get(), nullptr).status());
    }
    if (rc != SQLITE_DONE) return Error(read_db_, "verify requests");
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<StoreRecord>> LoadAll() override {
    absl::MutexLock l(&read_mu_);
    Statement st;
    if (sqlite3_prepare_v2(read_db_, "SELECT kind, id, value, sum FROM objects ORDER BY kind, id",
                           -1, st.out(), nullptr) != SQLITE_OK) {
      return Error(read_db_, "prepare load objects");
    }
    std::vector<StoreRecord> out;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      StoreRecord r{SqliteColumnText(st.get(), 0), SqliteColumnText(st.get(), 1), SqliteColumnBlob(st.get(), 2)};
      const uint32_t stored = static_cast<uint32_t>(sqlite3_column_int64(st.get(), 3));
      const uint32_t computed = ObjectChecksum(r.kind, r.id, r.value);
      if (stored != computed) {
        return ChecksumError(absl::StrCat("record ", r.kind, "/", r.id), stored, computed);
      }
      out.push_back(std::move(r));
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
                             "SELECT request_id, fingerprint, response, time_ms, sum FROM requests "
                             "WHERE request_id = ?",
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
    absl::StatusOr<RequestRecord> r = RequestFromRow(st, &request_id);
    sqlite3_reset(st);  // Ends the read transaction.
    if (!r.ok()) return r.status();
    return std::optional<RequestRecord>(*std::move(r));
  }

  absl::StatusOr<int64_t> ExpireRequests(int64_t before_ms) override {
    absl::MutexLock l(&mu_);
    Statement st;
    RETURN_IF_ERROR(PrepareLocked("DELETE FROM requests WHERE time_ms < ?", &st));
    sqlite3_bind_int64(st.get(), 1, before_ms);
    if (sqlite3_step(st.get()) != SQLITE_DONE) return ErrorLocked("expire requests");
    return static_cast<int64_t>(sqlite3_changes(db_));
  }

  // Reads the responses too: the row's checksum covers them, and a digest of
  // a damaged fingerprint would make the broker refuse a genuine retry.
  absl::StatusOr<std::vector<RequestSummary>> ListRequests() override {
    absl::MutexLock l(&read_mu_);
    Statement st;
    if (sqlite3_prepare_v2(read_db_,
                           "SELECT request_id, fingerprint, response, time_ms, sum FROM requests",
                           -1, st.out(), nullptr) != SQLITE_OK) {
      return Error(read_db_, "prepare list requests");
    }
    std::vector<RequestSummary> out;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      ASSIGN_OR_RETURN(RequestRecord r, RequestFromRow(st.get(), nullptr));
      out.push_back(SummarizeRequest(std::move(r)));
    }
    if (rc != SQLITE_DONE) return Error(read_db_, "list requests");
    return out;
  }

 private:
  // A row of (request_id, fingerprint, response, time_ms, sum), verified:
  // its checksum matches and, when `wanted` is given, it is the row asked
  // for (a damaged index could lead to another one). DATA_LOSS otherwise,
  // never a record that would make the broker refuse a retry as a
  // different request.
  absl::StatusOr<RequestRecord> RequestFromRow(sqlite3_stmt* st, const absl::string_view* wanted) {
    RequestRecord r;
    r.request_id = SqliteColumnText(st, 0);
    r.fingerprint = SqliteColumnBlob(st, 1);
    r.response = SqliteColumnBlob(st, 2);
    r.time_ms = sqlite3_column_int64(st, 3);
    const uint32_t stored = static_cast<uint32_t>(sqlite3_column_int64(st, 4));
    const uint32_t computed = RequestChecksum(r.request_id, r.fingerprint, r.response, r.time_ms);
    if (stored != computed) {
      return ChecksumError(absl::StrCat("answer to request ", r.request_id), stored, computed);
    }
    if (wanted != nullptr && r.request_id != *wanted) {
      return absl::DataLossError(absl::StrCat("store: ", path_, " is damaged: looking up request ",
                                              *wanted, " found request ", r.request_id, kRestore));
    }
    return r;
  }

  absl::Status ChecksumError(absl::string_view what, uint32_t stored, uint32_t computed) const {
    return absl::DataLossError(absl::StrFormat(
        "store: %s is damaged: %s fails its checksum (stored 0x%08x, computed 0x%08x)%s", path_,
        what, stored, computed, kRestore));
  }

  absl::Status ApplyLocked(const WriteBatch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // The three statements are prepared once and reused: a group commit
    // runs them for every batch it holds.
    if (!batch.puts.empty()) {
      RETURN_IF_ERROR(CachedLocked(
          "INSERT OR REPLACE INTO objects (kind, id, value, sum) VALUES (?, ?, ?, ?)", &put_));
      sqlite3_stmt* st = put_->get();
      for (const StoreRecord& r : batch.puts) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, r.kind.data(), r.kind.size(), SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r.id.data(), r.id.size(), SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, r.value.data(), r.value.size(), SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, ObjectChecksum(r.kind, r.id, r.value));
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
          "INSERT INTO requests (request_id, fingerprint, response, time_ms, sum) "
          "VALUES (?, ?, ?, ?, ?)",
          &insert_request_));
      sqlite3_stmt* st = insert_request_->get();
      sqlite3_reset(st);
      sqlite3_bind_text(st, 1, r.request_id.data(), r.request_id.size(), SQLITE_STATIC);
      sqlite3_bind_blob(st, 2, r.fingerprint.data(), r.fingerprint.size(), SQLITE_STATIC);
      sqlite3_bind_blob(st, 3, r.response.data(), r.response.size(), SQLITE_STATIC);
      sqlite3_bind_int64(st, 4, r.time_ms);
      sqlite3_bind_int64(st, 5, RequestChecksum(r.request_id, r.fingerprint, r.response, r.time_ms));
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

  absl::Status ErrorLocked(absl::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Error(db_, what);
  }

  // Constant after construction. lock_ is declared before the connections
  // so that it is destroyed after them (see store_file_lock.h).
  const std::string path_;
  const std::unique_ptr<StoreFileLock> lock_;

  absl::Mutex mu_;  // The write connection: migrations, commits, expiry.
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  std::unique_ptr<Statement> put_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Statement> delete_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Statement> insert_request_ ABSL_GUARDED_BY(mu_);
  absl::Mutex read_mu_;  // The read connection: LoadAll, FindRequest, ListRequests.
  sqlite3* read_db_ ABSL_PT_GUARDED_BY(read_mu_) = nullptr;
  std::unique_ptr<Statement> find_request_ ABSL_GUARDED_BY(read_mu_);
  // Takes mu_ to truncate the WAL; stopped first in the destructor.
  std::unique_ptr<WalCheckpointer> checkpointer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                       SqliteStoreOptions options) {
  // Before SQLite sees the file: it must be private and ours alone.
  ASSIGN_OR_RETURN(std::unique_ptr<StoreFileLock> lock, StoreFileLock::Acquire(path));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::UnavailableError(absl::StrCat("store: open ", path, ": ", msg));
  }
  auto store = std::make_unique<SqliteStore>(path, std::move(lock), db);
  RETURN_IF_ERROR(store->Configure(options));
  RETURN_IF_ERROR(store->CheckIntegrity());
  RETURN_IF_ERROR(store->Migrate());
  RETURN_IF_ERROR(store->TruncateWal());
  RETURN_IF_ERROR(store->OpenReader());
  RETURN_IF_ERROR(store->VerifyRequests());
  RETURN_IF_ERROR(store->LoadAll().status());
  RETURN_IF_ERROR(store->StartCheckpointer(options.checkpoint));
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace iommu
