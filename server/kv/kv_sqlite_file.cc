#include "server/kv/kv_sqlite_file.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/kv/kv_rules.h"
#include "server/record_checksum.h"
#include "server/sqlite_util.h"

namespace iommu {
namespace kv {

// Owns a prepared statement; finalizes it on every path.
class KvSqliteFile::Statement final {
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

namespace {

const char kSchema[] =
    "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);"
    "CREATE TABLE history ("
    "  key BLOB NOT NULL, revision INTEGER NOT NULL, sub INTEGER NOT NULL,"
    "  value BLOB NOT NULL, create_revision INTEGER NOT NULL, version INTEGER NOT NULL,"
    "  lease INTEGER NOT NULL, tombstone INTEGER NOT NULL, sum INTEGER NOT NULL,"
    "  PRIMARY KEY (key, revision, sub)) WITHOUT ROWID;"
    "CREATE INDEX history_by_revision ON history (revision, sub);"
    "CREATE TABLE leases (id INTEGER PRIMARY KEY NOT NULL, ttl INTEGER NOT NULL);"
    "INSERT INTO meta VALUES ('schema_version', 1), ('compacted', 1),"
    "  ('next_lease_id', 1);";

// The columns every history read selects, in this order.
const char kRowColumns[] =
    "key, value, create_revision, revision, version, lease, tombstone, sub, sum";

absl::Status Error(sqlite3* db, absl::string_view what) {
  return SqliteError(db, "kv store", what);
}


void BindBlob(sqlite3_stmt* st, int i, const std::string& s) {
  // Keys are bound as BLOBs everywhere: SQLite orders BLOBs by memcmp, the
  // byte order the model uses, and never compares a BLOB equal to TEXT.
  sqlite3_bind_blob(st, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
}

// The CRC32C of a history row. SQLite's quick_check covers its pages, not
// the bytes of a value: a flipped bit would be served as data. Lengths and
// numbers go first so that bytes moved between fields change the sum.
uint32_t RowChecksum(const std::string& key, int64_t revision, int64_t sub,
                     const std::string& value, int64_t create, int64_t version, int64_t lease,
                     bool tombstone) {
  const int64_t nums[] = {static_cast<int64_t>(key.size()),
                          static_cast<int64_t>(value.size()),
                          revision,
                          sub,
                          create,
                          version,
                          lease,
                          tombstone ? 1 : 0};
  uint32_t crc = Crc32c(0, absl::string_view(reinterpret_cast<const char*>(nums), sizeof(nums)));
  crc = Crc32c(crc, key);
  return Crc32c(crc, value);
}

// Reads a row selected as kRowColumns into *kv; *tombstone says whether it
// is a delete. DATA_LOSS naming the file, key and revision when its
// checksum does not match.
absl::Status RowToKv(const std::string& path, sqlite3_stmt* st, KeyValue* kv, bool* tombstone) {
  kv->key = SqliteColumnBlob(st, 0);
  kv->value = SqliteColumnBlob(st, 1);
  kv->create_revision = sqlite3_column_int64(st, 2);
  kv->mod_revision = sqlite3_column_int64(st, 3);
  kv->version = sqlite3_column_int64(st, 4);
  kv->lease = sqlite3_column_int64(st, 5);
  *tombstone = sqlite3_column_int64(st, 6) != 0;
  const int64_t sub = sqlite3_column_int64(st, 7);
  const uint32_t stored = static_cast<uint32_t>(sqlite3_column_int64(st, 8));
  const uint32_t computed = RowChecksum(kv->key, kv->mod_revision, sub, kv->value,
                                        kv->create_revision, kv->version, kv->lease, *tombstone);
  if (stored == computed) return absl::OkStatus();
  return absl::DataLossError(absl::StrFormat(
      "kv store: %s is damaged: key \"%s\" at revision %d fails its checksum (stored 0x%08x, "
      "computed 0x%08x); restore the last backup",
      path, absl::CHexEscape(kv->key), kv->mod_revision, stored, computed));
}

// " AND key >= ?1 AND key < ?2" for the range; ?1 and ?2 are bound by
// BindRange.
std::string RangeSql(const std::string& range_end) {
  if (range_end.empty()) return "key = ?1";
  if (IsOpenEnded(range_end)) return "key >= ?1";
  return "key >= ?1 AND key < ?2";
}
void BindRange(sqlite3_stmt* st, const std::string& key, const std::string& range_end) {
  BindBlob(st, 1, key);
  if (!range_end.empty() && !IsOpenEnded(range_end)) BindBlob(st, 2, range_end);
}

}  // namespace

KvSqliteFile::KvSqliteFile(std::string path, std::unique_ptr<StoreFileLock> lock, sqlite3* db)
    : path_(std::move(path)), lock_(std::move(lock)), db_(db) {}

KvSqliteFile::~KvSqliteFile() {
  checkpointer_.reset();
  {
    absl::MutexLock l(&read_mu_);
    sqlite3_close_v2(read_db_);
  }
  absl::MutexLock l(&write_mu_);
  insert_row_.reset();
  insert_lease_.reset();
  delete_lease_.reset();
  set_meta_.reset();
  sqlite3_close_v2(db_);
}

absl::StatusOr<std::unique_ptr<KvSqliteFile>> KvSqliteFile::Open(const std::string& path,
                                                                 const WalCheckpointOptions& wal) {
  // Before SQLite sees the file: created 0600, private, and ours alone.
  ASSIGN_OR_RETURN(std::unique_ptr<StoreFileLock> lock, StoreFileLock::Acquire(path));
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::UnavailableError(absl::StrCat("kv store: open ", path, ": ", msg));
  }
  std::unique_ptr<KvSqliteFile> file(new KvSqliteFile(path, std::move(lock), db));
  RETURN_IF_ERROR(file->Configure(wal));
  RETURN_IF_ERROR(file->CheckOrCreateSchema());
  RETURN_IF_ERROR(file->OpenReader());
  ASSIGN_OR_RETURN(file->checkpointer_, WalCheckpointer::Start(path, &file->write_mu_, wal));
  return file;
}

// WAL with synchronous=FULL: a COMMIT returns after the log is fsynced. The
// checkpointer, not the committing thread, folds the log back.
absl::Status KvSqliteFile::Configure(const WalCheckpointOptions& wal) {
  absl::MutexLock l(&write_mu_);
  for (const std::string& pragma :
       {std::string("PRAGMA journal_mode=WAL"), std::string("PRAGMA synchronous=FULL"),
        std::string("PRAGMA busy_timeout=5000"), std::string("PRAGMA wal_autocheckpoint=0"),
        absl::StrCat("PRAGMA journal_size_limit=", wal.restart_bytes)}) {
    absl::Status s = ExecLocked(pragma);
    if (absl::IsDataLoss(s)) {
      return absl::DataLossError(
          absl::StrCat("kv store: ", path_, " is not a SQLite database: ", s.message()));
    }
    RETURN_IF_ERROR(s);
  }
  return absl::OkStatus();
}

absl::Status KvSqliteFile::CheckOrCreateSchema() {
  absl::MutexLock l(&write_mu_);
  int64_t app_id = 0, tables = 0;
  for (auto [sql, out] : {std::make_pair("PRAGMA application_id", &app_id),
                          std::make_pair("SELECT count(*) FROM sqlite_schema", &tables)}) {
    Statement st;
    if (sqlite3_prepare_v2(db_, sql, -1, st.out(), nullptr) != SQLITE_OK ||
        sqlite3_step(st.get()) != SQLITE_ROW) {
      absl::Status s = Error(db_, sql);
      return absl::IsDataLoss(s)
                 ? absl::DataLossError(absl::StrCat("kv store: ", path_,
                                                    " is not a SQLite database: ", s.message()))
                 : s;
    }
    *out = sqlite3_column_int64(st.get(), 0);
  }
  if (app_id == 0 && tables == 0) {  // A new file.
    RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
    absl::Status s = ExecLocked(kSchema);
    if (s.ok()) s = ExecLocked(absl::StrCat("PRAGMA application_id=", kKvApplicationId));
    if (s.ok()) s = ExecLocked("COMMIT");
    if (!s.ok()) ExecLocked("ROLLBACK").IgnoreError();
    return s;
  }
  if (app_id != kKvApplicationId) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "kv store: %s is a SQLite database of something else (application_id 0x%08x, %d "
        "tables, expected 0x%08x); refusing to use it as a kv store",
        path_, app_id, tables, kKvApplicationId));
  }
  {
    Statement st;
    if (sqlite3_prepare_v2(db_, "PRAGMA quick_check(10)", -1, st.out(), nullptr) != SQLITE_OK) {
      return Error(db_, "quick_check");
    }
    std::vector<std::string> problems;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      std::string line = SqliteColumnBlob(st.get(), 0);
      if (line != "ok") problems.push_back(std::move(line));
    }
    if (rc != SQLITE_DONE || !problems.empty()) {
      return absl::DataLossError(absl::StrCat(
          "kv store: ", path_, " is damaged: ", rc != SQLITE_DONE ? sqlite3_errmsg(db_) : "",
          absl::StrJoin(problems, "; ")));
    }
  }
  ASSIGN_OR_RETURN(int64_t version, ReadMetaLocked("schema_version"));
  if (version != kKvSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("kv store: ", path_, " has schema version ",
                                                      version, "; this build reads ",
                                                      kKvSchemaVersion));
  }
  return absl::OkStatus();
}

absl::Status KvSqliteFile::OpenReader() {
  absl::MutexLock l(&read_mu_);
  const int rc = sqlite3_open_v2(path_.c_str(), &read_db_,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(
        absl::StrCat("kv store: open reader on ", path_, ": ", sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(read_db_, 5000);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> KvSqliteFile::ReadMetaLocked(const char* name) {
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE name = ?", -1, st.out(), nullptr) !=
      SQLITE_OK) {
    return Error(db_, "prepare read meta");
  }
  sqlite3_bind_text(st.get(), 1, name, -1, SQLITE_STATIC);
  const int rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) {
    return absl::DataLossError(
        absl::StrCat("kv store: ", path_, " is damaged: meta.", name, " is missing"));
  }
  if (rc != SQLITE_ROW) return Error(db_, absl::StrCat("read meta.", name));
  return sqlite3_column_int64(st.get(), 0);
}

// Every revision writes at least one row, and compaction only removes rows
// below a revision it has seen written, so the newest row always survives and
// carries the store's revision (0 for a store never written).
absl::StatusOr<int64_t> KvSqliteFile::MaxRevisionLocked() {
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT coalesce(max(revision), 0) FROM history", -1, st.out(),
                         nullptr) != SQLITE_OK ||
      sqlite3_step(st.get()) != SQLITE_ROW) {
    return Error(db_, "read the store's revision");
  }
  return sqlite3_column_int64(st.get(), 0);
}

absl::Status KvSqliteFile::Load(KvState* state, int64_t* compacted, absl::Time now) {
  absl::MutexLock l(&write_mu_);
  ASSIGN_OR_RETURN(int64_t revision, MaxRevisionLocked());
  ASSIGN_OR_RETURN(*compacted, ReadMetaLocked("compacted"));
  ASSIGN_OR_RETURN(int64_t next_lease, ReadMetaLocked("next_lease_id"));
  state->SetCounters(revision, next_lease);
  {
    Statement st;
    if (sqlite3_prepare_v2(db_, "SELECT id, ttl FROM leases", -1, st.out(), nullptr) != SQLITE_OK) {
      return Error(db_, "prepare load leases");
    }
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      state->LoadLease({sqlite3_column_int64(st.get(), 0), sqlite3_column_int64(st.get(), 1)}, now);
    }
    if (rc != SQLITE_DONE) return Error(db_, "load leases");
  }
  // The newest row of each key (the primary key makes the subquery a seek).
  const std::string sql =
      absl::StrCat("SELECT ", kRowColumns,
                   " FROM history AS h WHERE revision = "
                   "(SELECT max(revision) FROM history AS n WHERE n.key = h.key) ORDER BY key");
  Statement st;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, st.out(), nullptr) != SQLITE_OK) {
    return Error(db_, "prepare load keys");
  }
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    bool tombstone = false;
    KeyValue kv;
    RETURN_IF_ERROR(RowToKv(path_, st.get(), &kv, &tombstone));
    if (!tombstone) state->LoadKey(std::move(kv));
  }
  if (rc != SQLITE_DONE) return Error(db_, "load keys");
  return absl::OkStatus();
}

absl::Status KvSqliteFile::ExecLocked(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s = Error(db_, absl::StrCat("exec \"", sql.substr(0, 40), "\""));
    sqlite3_free(err);
    return s;
  }
  return absl::OkStatus();
}

absl::Status KvSqliteFile::SetMetaLocked(const char* name, int64_t value) {
  if (set_meta_ == nullptr) {
    auto st = std::make_unique<Statement>();
    if (sqlite3_prepare_v2(db_, "UPDATE meta SET value = ?2 WHERE name = ?1", -1, st->out(),
                           nullptr) != SQLITE_OK) {
      return Error(db_, "prepare set meta");
    }
    set_meta_ = std::move(st);
  }
  sqlite3_stmt* st = set_meta_->get();
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, value);
  const int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return Error(db_, absl::StrCat("set meta.", name));
  return absl::OkStatus();
}

absl::Status KvSqliteFile::Write(const ChangeSet& changes) {
  absl::MutexLock l(&write_mu_);
  RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
  absl::Status s = WriteLocked(changes);
  if (s.ok()) s = ExecLocked("COMMIT");
  // A failed COMMIT may leave the transaction open: end it so that the next
  // batch starts clean.
  if (!s.ok()) ExecLocked("ROLLBACK").IgnoreError();
  return s;
}

absl::Status KvSqliteFile::WriteLocked(const ChangeSet& changes) {
  for (auto [stmt, sql] :
       {std::make_pair(&insert_row_,
                       "INSERT INTO history (key, revision, sub, value, create_revision, version,"
                       " lease, tombstone, sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        std::make_pair(&insert_lease_, "INSERT INTO leases (id, ttl) VALUES (?, ?)"),
        std::make_pair(&delete_lease_, "DELETE FROM leases WHERE id = ?")}) {
    if (*stmt != nullptr) continue;
    auto st = std::make_unique<Statement>();
    if (sqlite3_prepare_v2(db_, sql, -1, st->out(), nullptr) != SQLITE_OK) {
      return Error(db_, absl::StrCat("prepare \"", sql, "\""));
    }
    *stmt = std::move(st);
  }
  for (const LeaseRecord& lease : changes.granted) {
    sqlite3_stmt* st = insert_lease_->get();
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, lease.id);
    sqlite3_bind_int64(st, 2, lease.ttl_seconds);
    if (sqlite3_step(st) != SQLITE_DONE) return Error(db_, absl::StrCat("grant lease ", lease.id));
  }
  for (const WatchBatch& txn : changes.txns) {
    int sub = 0;
    for (const Event& e : txn.events) {
      sqlite3_stmt* st = insert_row_->get();
      sqlite3_reset(st);
      BindBlob(st, 1, e.kv.key);
      sqlite3_bind_int64(st, 2, txn.revision);
      const int row_sub = sub++;
      sqlite3_bind_int64(st, 3, row_sub);
      BindBlob(st, 4, e.kv.value);
      sqlite3_bind_int64(st, 5, e.kv.create_revision);
      sqlite3_bind_int64(st, 6, e.kv.version);
      sqlite3_bind_int64(st, 7, e.kv.lease);
      const bool tombstone = e.type == EventType::kDelete;
      sqlite3_bind_int64(st, 8, tombstone ? 1 : 0);
      sqlite3_bind_int64(st, 9,
                         RowChecksum(e.kv.key, txn.revision, row_sub, e.kv.value,
                                     e.kv.create_revision, e.kv.version, e.kv.lease, tombstone));
      const int rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) return Error(db_, absl::StrCat("write revision ", txn.revision));
    }
  }
  for (int64_t id : changes.revoked) {
    sqlite3_stmt* st = delete_lease_->get();
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_DONE) return Error(db_, absl::StrCat("revoke lease ", id));
  }
  // The store's revision is not written: it is the newest row's (see
  // MaxRevisionLocked), which saves a b-tree update per commit.
  if (changes.granted.empty()) return absl::OkStatus();
  return SetMetaLocked("next_lease_id", changes.next_lease_id);
}

absl::StatusOr<int64_t> KvSqliteFile::DurableRevision() {
  absl::MutexLock l(&write_mu_);
  return MaxRevisionLocked();
}

absl::Status KvSqliteFile::Compact(int64_t revision) {
  absl::MutexLock l(&write_mu_);
  RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
  // Superseded rows (a newer row of the key at or below `revision`) and
  // tombstones below it: no read at `revision` or later can see them.
  absl::Status s = ExecLocked(absl::StrCat(
      "DELETE FROM history WHERE revision < ", revision,
      " AND (tombstone = 1 OR EXISTS (SELECT 1 FROM history AS n WHERE n.key = history.key"
      " AND n.revision > history.revision AND n.revision <= ",
      revision, "))"));
  if (s.ok()) s = SetMetaLocked("compacted", revision);
  if (s.ok()) s = ExecLocked("COMMIT");
  if (!s.ok()) ExecLocked("ROLLBACK").IgnoreError();
  return s;
}

absl::StatusOr<RangeResponse> KvSqliteFile::ReadRange(const RangeRequest& request) {
  absl::MutexLock l(&read_mu_);
  const std::string sql =
      absl::StrCat("SELECT ", kRowColumns, " FROM history WHERE ", RangeSql(request.range_end),
                   " AND revision <= ?3 ORDER BY key, revision, sub");
  Statement st;
  if (sqlite3_prepare_v2(read_db_, sql.c_str(), -1, st.out(), nullptr) != SQLITE_OK) {
    return Error(read_db_, "prepare range at revision");
  }
  BindRange(st.get(), request.key, request.range_end);
  sqlite3_bind_int64(st.get(), 3, request.revision);
  RangeResponse r;
  r.revision = request.revision;
  // Rows come oldest first per key: the last row of each key wins.
  std::optional<KeyValue> pending;
  bool pending_tomb = false;
  auto flush = [&] {
    if (!pending.has_value() || pending_tomb) return;
    ++r.count;
    if (request.limit == 0 || static_cast<int64_t>(r.kvs.size()) < request.limit) {
      r.kvs.push_back(std::move(*pending));
    }
  };
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    bool tomb = false;
    KeyValue kv;
    RETURN_IF_ERROR(RowToKv(path_, st.get(), &kv, &tomb));
    if (pending.has_value() && pending->key != kv.key) flush();
    pending = std::move(kv);
    pending_tomb = tomb;
  }
  if (rc != SQLITE_DONE) return Error(read_db_, "range at revision");
  flush();
  r.more = r.count > static_cast<int64_t>(r.kvs.size());
  return r;
}

absl::Status KvSqliteFile::PrevKvLocked(Statement* st, const std::string& key, int64_t before,
                                        Event* event) {
  if (st->get() == nullptr) {
    const std::string sql = absl::StrCat("SELECT ", kRowColumns,
                                         " FROM history WHERE key = ?1 AND revision < ?2"
                                         " ORDER BY revision DESC LIMIT 1");
    if (sqlite3_prepare_v2(read_db_, sql.c_str(), -1, st->out(), nullptr) != SQLITE_OK) {
      return Error(read_db_, "prepare prev kv");
    }
  }
  sqlite3_reset(st->get());
  BindBlob(st->get(), 1, key);
  sqlite3_bind_int64(st->get(), 2, before);
  const int rc = sqlite3_step(st->get());
  if (rc == SQLITE_ROW) {
    bool tomb = false;
    KeyValue kv;
    RETURN_IF_ERROR(RowToKv(path_, st->get(), &kv, &tomb));
    if (!tomb) event->prev_kv = std::move(kv);
    return absl::OkStatus();
  }
  if (rc != SQLITE_DONE) return Error(read_db_, "prev kv");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WatchBatch>> KvSqliteFile::ReadEvents(const std::string& key,
                                                                 const std::string& range_end,
                                                                 int64_t from, int64_t to,
                                                                 int64_t max_events) {
  absl::MutexLock l(&read_mu_);
  // The key condition runs inside SQLite, so rows of other keys are never
  // copied out; the (revision, sub) index bounds the scan.
  const std::string sql =
      absl::StrCat("SELECT ", kRowColumns, " FROM history WHERE ", RangeSql(range_end),
                   " AND revision >= ?3 AND revision <= ?4"
                   " ORDER BY revision, sub");
  Statement st, prev;
  if (sqlite3_prepare_v2(read_db_, sql.c_str(), -1, st.out(), nullptr) != SQLITE_OK) {
    return Error(read_db_, "prepare read events");
  }
  BindRange(st.get(), key, range_end);
  sqlite3_bind_int64(st.get(), 3, from);
  sqlite3_bind_int64(st.get(), 4, to);
  std::vector<WatchBatch> out;
  int64_t count = 0;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    bool tomb = false;
    KeyValue kv;
    RETURN_IF_ERROR(RowToKv(path_, st.get(), &kv, &tomb));
    if (out.empty() || out.back().revision != kv.mod_revision) {
      if (count >= max_events) break;
      out.push_back(WatchBatch{kv.mod_revision, {}});
    }
    Event e;
    e.type = tomb ? EventType::kDelete : EventType::kPut;
    RETURN_IF_ERROR(PrevKvLocked(&prev, kv.key, kv.mod_revision, &e));
    if (tomb) {
      e.kv.key = std::move(kv.key);
      e.kv.mod_revision = kv.mod_revision;
    } else {
      e.kv = std::move(kv);
    }
    out.back().events.push_back(std::move(e));
    ++count;
  }
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return Error(read_db_, "read events");
  return out;
}

}  // namespace kv
}  // namespace iommu
