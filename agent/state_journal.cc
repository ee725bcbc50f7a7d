#include "agent/state_journal.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/errno_status.h"
#include "common/status_macros.h"

namespace iommu {
namespace agent {
namespace {

// Bumped when the tables change; an agent refuses a journal of another
// version rather than misread what the kernel holds.
constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS containers (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, devices TEXT NOT NULL,
  backend_kind TEXT NOT NULL, backend_state TEXT NOT NULL, fd_names TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, container_id TEXT NOT NULL, tenant TEXT NOT NULL,
  grant_windows TEXT NOT NULL, resume_digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memory (
  id TEXT PRIMARY KEY, session_id TEXT NOT NULL, tenant TEXT NOT NULL, name TEXT NOT NULL,
  dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, fd_name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mappings (
  container_id TEXT NOT NULL, iova INTEGER NOT NULL, size INTEGER NOT NULL,
  readable INTEGER NOT NULL, writable INTEGER NOT NULL, session_id TEXT NOT NULL,
  memory_id TEXT NOT NULL, offset INTEGER NOT NULL, owner TEXT NOT NULL, tenant TEXT NOT NULL,
  PRIMARY KEY (container_id, iova));
CREATE INDEX IF NOT EXISTS mappings_by_session ON mappings (session_id);
)sql";

// One prepared statement; finalized when it goes out of scope.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  int prepare_rc() const { return rc_; }
  Stmt& Text(int i, absl::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // SQLite integers are signed 64-bit: IOVAs and sizes round-trip through
  // the bit pattern.
  Stmt& U64(int i, uint64_t v) {
    sqlite3_bind_int64(stmt_, i, static_cast<sqlite3_int64>(v));
    return *this;
  }
  int Step() { return sqlite3_step(stmt_); }
  // For the next row of a batch.
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string ColText(int i) const {
    const unsigned char* p = sqlite3_column_text(stmt_, i);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, i)));
  }
  uint64_t ColU64(int i) const { return static_cast<uint64_t>(sqlite3_column_int64(stmt_, i)); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

std::vector<std::string> SplitList(const std::string& s) {
  if (s.empty()) return {};
  return absl::StrSplit(s, ',');
}

std::string WindowsText(const std::vector<IovaRange>& windows) {
  std::vector<std::string> parts;
  for (const IovaRange& w : windows) parts.push_back(absl::StrCat(w.start, "-", w.last));
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<std::vector<IovaRange>> ParseWindows(const std::string& s) {
  std::vector<IovaRange> out;
  for (const std::string& part : SplitList(s)) {
    std::pair<std::string, std::string> ends = absl::StrSplit(part, absl::MaxSplits('-', 1));
    IovaRange r;
    if (!absl::SimpleAtoi(ends.first, &r.start) || !absl::SimpleAtoi(ends.second, &r.last) ||
        r.last < r.start) {
      return absl::InvalidArgumentError(absl::StrCat("grant_windows: bad range \"", part, "\""));
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateJournal>> StateJournal::Open(const std::string& path) {
  // Create it private first: it names tenants and their memory.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("agent journal ", path, ": open"));
  ::close(fd);
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
  std::unique_ptr<StateJournal> journal(new StateJournal(path, db));
  if (rc != SQLITE_OK) return journal->Error(rc, "open");
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(journal->Exec("PRAGMA journal_mode=WAL", "set WAL mode"));
  RETURN_IF_ERROR(journal->Exec("PRAGMA synchronous=FULL", "set synchronous=FULL"));
  {
    Stmt version(db, "PRAGMA user_version");
    if (version.prepare_rc() != SQLITE_OK || version.Step() != SQLITE_ROW) {
      return journal->Error(sqlite3_errcode(db), "read the schema version");
    }
    const uint64_t have = version.ColU64(0);
    if (have != 0 && have != kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "agent journal ", path, ": schema version ", have, ", this agent reads version ",
          kSchemaVersion, "; run the agent that wrote it, or move the file aside to start empty"));
    }
  }
  RETURN_IF_ERROR(journal->Exec(kSchema, "create the tables"));
  RETURN_IF_ERROR(journal->Exec(
      absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str(), "set the schema version"));
  return journal;
}

StateJournal::~StateJournal() { sqlite3_close(db_); }

absl::Status StateJournal::Error(int rc, absl::string_view what) const {
  const std::string message =
      absl::StrCat("agent journal ", path_, ": ", what, ": ",
                   db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::FailedPreconditionError(absl::StrCat(
          message, " (damaged; the agent will not guess what the kernel holds: restore or move "
                   "it aside)"));
    default:
      return absl::InternalError(message);
  }
}

absl::Status StateJournal::Exec(const char* sql, absl::string_view what) {
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? absl::OkStatus() : Error(rc, what);
}

absl::StatusOr<JournalState> StateJournal::Load() {
  JournalState state;
  auto check_done = [&](int rc, absl::string_view what) -> absl::Status {
    return rc == SQLITE_DONE ? absl::OkStatus() : Error(rc, what);
  };
  {
    Stmt q(db_, "SELECT id, tenant, devices, backend_kind, backend_state, fd_names "
                "FROM containers ORDER BY id");
    if (q.prepare_rc() != SQLITE_OK) return Error(q.prepare_rc(), "read containers");
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      state.containers.push_back({q.ColText(0), q.ColText(1), SplitList(q.ColText(2)),
                                  q.ColText(3), q.ColText(4), SplitList(q.ColText(5))});
    }
    RETURN_IF_ERROR(check_done(rc, "read containers"));
  }
  {
    Stmt q(db_, "SELECT id, container_id, tenant, grant_windows, resume_digest "
                "FROM sessions ORDER BY id");
    if (q.prepare_rc() != SQLITE_OK) return Error(q.prepare_rc(), "read sessions");
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      absl::StatusOr<std::vector<IovaRange>> windows = ParseWindows(q.ColText(3));
      if (!windows.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "agent journal ", path_, ": session ", q.ColText(0), ": ", windows.status().message()));
      }
      state.sessions.push_back(
          {q.ColText(0), q.ColText(1), q.ColText(2), *std::move(windows), q.ColText(4)});
    }
    RETURN_IF_ERROR(check_done(rc, "read sessions"));
  }
  {
    Stmt q(db_, "SELECT id, session_id, tenant, name, dev, ino, size, fd_name "
                "FROM memory ORDER BY id");
    if (q.prepare_rc() != SQLITE_OK) return Error(q.prepare_rc(), "read memory");
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      JournalMemory m{q.ColText(0), q.ColText(1), q.ColText(2), q.ColText(3),
                      ObjectKey{q.ColU64(4), q.ColU64(5)}, q.ColU64(6), q.ColText(7)};
      state.memory.push_back(std::move(m));
    }
    RETURN_IF_ERROR(check_done(rc, "read memory"));
  }
  {
    Stmt q(db_, "SELECT container_id, iova, size, readable, writable, session_id, memory_id, "
                "offset, owner, tenant FROM mappings ORDER BY container_id, iova");
    if (q.prepare_rc() != SQLITE_OK) return Error(q.prepare_rc(), "read mappings");
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      JournalMapping m;
      m.container_id = q.ColText(0);
      m.iova = q.ColU64(1);
      m.size = q.ColU64(2);
      m.readable = q.ColU64(3) != 0;
      m.writable = q.ColU64(4) != 0;
      m.session_id = q.ColText(5);
      m.memory_id = q.ColText(6);
      m.offset = q.ColU64(7);
      m.owner = q.ColText(8);
      m.tenant = q.ColText(9);
      state.mappings.push_back(std::move(m));
    }
    RETURN_IF_ERROR(check_done(rc, "read mappings"));
  }
  return state;
}

absl::Status StateJournal::PutContainer(const JournalContainer& c) {
  Stmt q(db_, "INSERT OR REPLACE INTO containers VALUES (?, ?, ?, ?, ?, ?)");
  q.Text(1, c.id).Text(2, c.tenant).Text(3, absl::StrJoin(c.devices, ","));
  q.Text(4, c.backend_kind).Text(5, c.backend_state).Text(6, absl::StrJoin(c.fd_names, ","));
  const int rc = q.Step();
  return rc == SQLITE_DONE ? absl::OkStatus() : Error(rc, absl::StrCat("record container ", c.id));
}

absl::Status StateJournal::DeleteContainer(absl::string_view id) {
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "begin"));
  const char* const statements[] = {
      "DELETE FROM mappings WHERE container_id = ?1",
      "DELETE FROM memory WHERE session_id IN (SELECT id FROM sessions WHERE container_id = ?1)",
      "DELETE FROM sessions WHERE container_id = ?1",
      "DELETE FROM containers WHERE id = ?1",
  };
  for (const char* sql : statements) {
    Stmt q(db_, sql);
    q.Text(1, id);
    if (const int rc = q.Step(); rc != SQLITE_DONE) {
      Exec("ROLLBACK", "rollback").IgnoreError();
      return Error(rc, absl::StrCat("forget container ", id));
    }
  }
  return Exec("COMMIT", absl::StrCat("forget container ", id));
}

absl::Status StateJournal::PutSession(const JournalSession& s) {
  Stmt q(db_, "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)");
  q.Text(1, s.id).Text(2, s.container_id).Text(3, s.tenant);
  q.Text(4, WindowsText(s.grant_windows)).Text(5, s.resume_digest);
  const int rc = q.Step();
  return rc == SQLITE_DONE ? absl::OkStatus() : Error(rc, absl::StrCat("record session ", s.id));
}

absl::Status StateJournal::DeleteSession(absl::string_view id) {
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "begin"));
  const char* const statements[] = {
      "DELETE FROM mappings WHERE session_id = ?1",
      "DELETE FROM memory WHERE session_id = ?1",
      "DELETE FROM sessions WHERE id = ?1",
  };
  for (const char* sql : statements) {
    Stmt q(db_, sql);
    q.Text(1, id);
    if (const int rc = q.Step(); rc != SQLITE_DONE) {
      Exec("ROLLBACK", "rollback").IgnoreError();
      return Error(rc, absl::StrCat("forget session ", id));
    }
  }
  return Exec("COMMIT", absl::StrCat("forget session ", id));
}

absl::Status StateJournal::PutMemory(const JournalMemory& m) {
  Stmt q(db_, "INSERT OR REPLACE INTO memory VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  q.Text(1, m.id).Text(2, m.session_id).Text(3, m.tenant).Text(4, m.name);
  q.U64(5, m.key.dev).U64(6, m.key.ino).U64(7, m.size).Text(8, m.fd_name);
  const int rc = q.Step();
  return rc == SQLITE_DONE ? absl::OkStatus() : Error(rc, absl::StrCat("record memory ", m.id));
}

absl::Status StateJournal::PutMapping(const JournalMapping& m) {
  Stmt q(db_, "INSERT OR REPLACE INTO mappings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  q.Text(1, m.container_id).U64(2, m.iova).U64(3, m.size);
  q.U64(4, m.readable ? 1 : 0).U64(5, m.writable ? 1 : 0).Text(6, m.session_id);
  q.Text(7, m.memory_id).U64(8, m.offset).Text(9, m.owner).Text(10, m.tenant);
  const int rc = q.Step();
  return rc == SQLITE_DONE
             ? absl::OkStatus()
             : Error(rc, absl::StrCat("record mapping ", m.container_id, "@", m.iova));
}

absl::Status StateJournal::DeleteMappings(absl::string_view container_id,
                                          const std::vector<uint64_t>& iovas) {
  if (iovas.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "begin"));
  Stmt q(db_, "DELETE FROM mappings WHERE container_id = ? AND iova = ?");
  for (uint64_t iova : iovas) {
    q.Reset();
    q.Text(1, container_id).U64(2, iova);
    if (const int rc = q.Step(); rc != SQLITE_DONE) {
      Exec("ROLLBACK", "rollback").IgnoreError();
      return Error(rc, absl::StrCat("forget mappings of ", container_id));
    }
  }
  return Exec("COMMIT", absl::StrCat("forget mappings of ", container_id));
}

absl::Status StateJournal::Clear() {
  return Exec(
      "BEGIN IMMEDIATE; DELETE FROM mappings; DELETE FROM memory; DELETE FROM sessions; "
      "DELETE FROM containers; COMMIT",
      "clear");
}

}  // namespace agent
}  // namespace iommu
