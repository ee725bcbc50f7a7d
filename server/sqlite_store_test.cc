#include "server/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/record_checksum.h"
#include "server/request_digest.h"
#include "server/store_test_files.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

TEST(SqliteStoreTest, EverythingSurvivesCloseAndReopen) {
  const std::string path = TempPath("reopen.db");
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok()) << store.status();
    WriteBatch b;
    b.puts.push_back({"tenant", "acme", "A"});
    b.puts.push_back({"tenant", "beta", "B"});
    b.puts.push_back({"window", "w-1", std::string("\0\1\2", 3)});
    b.request = RequestRecord{"req-1", "fp", "resp", 1000};
    ASSERT_TRUE((*store)->Commit(b).ok());
    WriteBatch d;
    d.deletes.push_back({"tenant", "beta"});
    ASSERT_TRUE((*store)->Commit(d).ok());
  }
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].kind, "tenant");
  EXPECT_EQ((*all)[0].id, "acme");
  EXPECT_EQ((*all)[0].value, "A");
  EXPECT_EQ((*all)[1].value, std::string("\0\1\2", 3));
  auto req = (*store)->FindRequest("req-1");
  ASSERT_TRUE(req.ok());
  ASSERT_TRUE(req->has_value());
  EXPECT_EQ((*req)->fingerprint, "fp");
  EXPECT_EQ((*req)->response, "resp");
  EXPECT_EQ((*req)->time_ms, 1000);
}

TEST(SqliteStoreTest, ListsRememberedAnswersWithDigestsAndTimes) {
  auto store = OpenSqliteStore(TempPath("list-requests.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  int n = 0;
  for (const char* id : {"tenant/acme|a", "tenant/acme|b", "operator/admin|a", "bare-id"}) {
    WriteBatch b;
    b.request = RequestRecord{id, absl::StrCat("fp-", id), "resp", 1000 + n++};
    ASSERT_TRUE((*store)->Commit(b).ok());
  }
  auto listed = (*store)->ListRequests();
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::map<std::string, std::pair<uint64_t, int64_t>> got;
  for (const RequestSummary& r : *listed) got[r.request_id] = {r.fingerprint_digest, r.time_ms};
  EXPECT_EQ(got, (std::map<std::string, std::pair<uint64_t, int64_t>>{
                     {"tenant/acme|a", {FingerprintDigest("fp-tenant/acme|a"), 1000}},
                     {"tenant/acme|b", {FingerprintDigest("fp-tenant/acme|b"), 1001}},
                     {"operator/admin|a", {FingerprintDigest("fp-operator/admin|a"), 1002}},
                     {"bare-id", {FingerprintDigest("fp-bare-id"), 1003}}}));
}

TEST(SqliteStoreTest, FailedBatchAppliesNothing) {
  const std::string path = TempPath("atomic.db");
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  WriteBatch first;
  first.request = RequestRecord{"dup", "fp", "r", 1};
  ASSERT_TRUE((*store)->Commit(first).ok());
  // The second batch reuses the request id, which violates the primary key at
  // the end of the batch: the puts before it must be rolled back.
  WriteBatch second;
  second.puts.push_back({"tenant", "x", "X"});
  second.request = RequestRecord{"dup", "fp2", "r2", 2};
  absl::Status s = (*store)->Commit(second);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("record request dup"));
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
  // And the store is usable afterwards.
  WriteBatch third;
  third.puts.push_back({"tenant", "y", "Y"});
  EXPECT_TRUE((*store)->Commit(third).ok());
}

TEST(SqliteStoreTest, SecondOpenOfSameFileIsRefused) {
  const std::string path = TempPath("locked.db");
  auto first = OpenSqliteStore(path);
  ASSERT_TRUE(first.ok());
  auto second = OpenSqliteStore(path);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("in use by another broker"));
}

TEST(SqliteStoreTest, UsesWalAndFullSync) {
  const std::string path = TempPath("pragmas.db");
  { ASSERT_TRUE(OpenSqliteStore(path).ok()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))), "wal");
  sqlite3_finalize(st);
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='schema_version'", -1, &st,
                               nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), kSqliteSchemaVersion);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST(SqliteStoreTest, RefusesSchemaFromNewerRelease) {
  const std::string path = TempPath("newer.db");
  { ASSERT_TRUE(OpenSqliteStore(path).ok()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = 99 WHERE key='schema_version'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 99 is newer"));
}

TEST(SqliteStoreTest, RefusesFileThatIsNotADatabase) {
  const std::string path = TempPath("garbage.db");
  std::ofstream(path) << std::string(4096, 'x');
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);  // Else refused for its mode first.
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(store.status().message(), HasSubstr(path + " is not a database"));
}

TEST(SqliteStoreTest, ExpiresOldRequestsOnly) {
  const std::string path = TempPath("expire.db");
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  for (int i = 0; i < 4; ++i) {
    WriteBatch b;
    b.request = RequestRecord{"r" + std::to_string(i), "f", "x", i * 100};
    ASSERT_TRUE((*store)->Commit(b).ok());
  }
  auto n = (*store)->ExpireRequests(200);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  EXPECT_FALSE((*store)->FindRequest("r1")->has_value());
  EXPECT_TRUE((*store)->FindRequest("r2")->has_value());
}

TEST(SqliteStoreTest, CommitGroupAppliesBatchesInOrderAndDurably) {
  const std::string path = TempPath("group.db");
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    std::vector<WriteBatch> group(3);
    group[0].puts.push_back({"tenant", "a", "A1"});
    group[0].request = RequestRecord{"r0", "fp0", "resp0", 1};
    group[1].deletes.push_back({"tenant", "a"});  // Deletes what batch 0 wrote...
    group[1].request = RequestRecord{"r1", "fp1", "resp1", 2};
    group[2].puts.push_back({"tenant", "a", "A3"});  // ...and batch 2 writes it again.
    group[2].puts.push_back({"tenant", "b", "B"});
    ASSERT_TRUE((*store)->CommitGroup(group).ok());
  }
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].value, "A3");
  EXPECT_EQ((*all)[1].value, "B");
  for (const char* id : {"r0", "r1"}) {
    auto r = (*store)->FindRequest(id);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->has_value()) << id;
  }
}

TEST(SqliteStoreTest, FailedBatchFailsItsWholeGroup) {
  const std::string path = TempPath("group_atomic.db");
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  std::vector<WriteBatch> group(2);
  group[0].puts.push_back({"tenant", "a", "A"});
  group[0].request = RequestRecord{"same", "fp", "r", 1};
  group[1].puts.push_back({"tenant", "b", "B"});
  group[1].request = RequestRecord{"same", "fp", "r", 1};  // Primary key violation.
  absl::Status s = (*store)->CommitGroup(group);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("record request same"));
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
  auto r = (*store)->FindRequest("same");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

// Opens the store at `path` and commits `batch`; returns the open store, or
// nullptr after recording the failure (the caller ASSERTs non-null).
std::unique_ptr<Store> OpenAndCommit(const std::string& path, const WriteBatch& batch) {
  auto store = OpenSqliteStore(path);
  if (!store.ok()) {
    ADD_FAILURE() << "open " << path << ": " << store.status();
    return nullptr;
  }
  if (absl::Status s = (*store)->Commit(batch); !s.ok()) {
    ADD_FAILURE() << "commit to " << path << ": " << s;
    return nullptr;
  }
  return *std::move(store);
}

// A batch that puts the one object `kind`/`id` = `value`.
WriteBatch PutBatch(const std::string& kind, const std::string& id, const std::string& value) {
  WriteBatch b;
  b.puts.push_back({kind, id, value});
  return b;
}

// Runs `sql` on a connection of its own, as an operator or a damaged disk
// would change the file behind the store's back.
void ExecRaw(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

// Regression (issue 11, item 6): under umask 022 the database, -wal and
// -shm were created 0644, readable by anyone on the node, with every node's
// token-signing key inside.
TEST(SqliteStoreTest, DatabaseWalAndShmAreCreated0600UnderUmask022) {
  const std::string path = TempPath("modes.db");
  const mode_t old = umask(022);
  auto store = OpenSqliteStore(path);
  umask(old);
  ASSERT_TRUE(store.ok()) << store.status();
  WriteBatch b;
  b.puts.push_back({"node_key", "n1", "secret"});
  ASSERT_TRUE((*store)->Commit(b).ok());
  EXPECT_EQ(ModeOf(path), 0600u);
  EXPECT_EQ(ModeOf(path + "-wal"), 0600u);
  EXPECT_EQ(ModeOf(path + "-shm"), 0600u);
}

TEST(SqliteStoreTest, RefusesADatabaseReadableByOthers) {
  const std::string path = TempPath("open.db");
  { ASSERT_TRUE(OpenSqliteStore(path).ok()); }
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr(path + " has mode 0644"));
  EXPECT_THAT(store.status().message(), HasSubstr("chmod 600 " + path));
}

// Regression (issue 11, item 9): the lock was "<path>.lock", so a symlink or
// hard link to the database let a second broker in.
TEST(SqliteStoreTest, SecondOpenThroughASymlinkOrHardLinkIsRefused) {
  const std::string path = TempPath("linked.db");
  const std::string sym = TempPath("linked-sym.db");
  const std::string hard = TempPath("linked-hard.db");
  auto first = OpenSqliteStore(path);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(symlink(path.c_str(), sym.c_str()), 0);
  ASSERT_EQ(link(path.c_str(), hard.c_str()), 0);
  for (const std::string& name : {sym, hard}) {
    auto second = OpenSqliteStore(name);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << name;
    EXPECT_THAT(second.status().message(), HasSubstr(name + " (inode "));
    EXPECT_THAT(second.status().message(),
                HasSubstr("in use by another broker, pid " + std::to_string(getpid())));
  }
}

// Regression (issue 11, item 10): a flipped bit in a value was served.
TEST(SqliteStoreTest, ChangedObjectValueIsDataLossAtOpen) {
  const std::string path = TempPath("flip-object.db");
  ASSERT_NE(OpenAndCommit(path, PutBatch("tenant", "acme", "quota=1G")), nullptr);  // And closed.
  ExecRaw(path, "UPDATE objects SET value = CAST('quota=9G' AS BLOB) WHERE id = 'acme'");
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(store.status().message(),
              HasSubstr("store: " + path + " is damaged: record tenant/acme fails its checksum"));
  EXPECT_THAT(store.status().message(), HasSubstr("restore the last backup"));
}

TEST(SqliteStoreTest, ChangedObjectValueIsDataLossOnLoadWhileOpen) {
  const std::string path = TempPath("flip-load.db");
  std::unique_ptr<Store> store = OpenAndCommit(path, PutBatch("tenant", "acme", "quota=1G"));
  ASSERT_NE(store, nullptr);
  ExecRaw(path, "UPDATE objects SET value = CAST('quota=9G' AS BLOB) WHERE id = 'acme'");
  auto all = store->LoadAll();
  EXPECT_EQ(all.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(all.status().message(), HasSubstr("record tenant/acme fails its checksum"));
}

// Regression (issue 11, item 10): a damaged remembered answer made a retry
// look like "request_id already used for a different request"
// (FAILED_PRECONDITION). It is DATA_LOSS, at open and on lookup.
TEST(SqliteStoreTest, ChangedRequestFingerprintIsDataLossNotADifferentRequest) {
  const std::string path = TempPath("flip-request.db");
  WriteBatch b;
  b.request = RequestRecord{"req-1", "fp", "resp", 1000};
  std::unique_ptr<Store> store = OpenAndCommit(path, b);
  ASSERT_NE(store, nullptr);
  ExecRaw(path, "UPDATE requests SET fingerprint = CAST('fq' AS BLOB) WHERE request_id = 'req-1'");
  auto found = store->FindRequest("req-1");
  EXPECT_EQ(found.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(found.status().message(), HasSubstr("answer to request req-1 fails its checksum"));
  // Nor does the listing the broker indexes vouch for it.
  auto listed = store->ListRequests();
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(listed.status().message(), HasSubstr("answer to request req-1 fails its checksum"));
  store.reset();
  auto reopened = OpenSqliteStore(path);
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(reopened.status().message(), HasSubstr("answer to request req-1 fails its checksum"));
}

// Overwrites `n` bytes at `offset` of `path` with `byte`.
void Scribble(const std::string& path, long offset, int n, char byte) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good());
  f.seekp(offset);
  f.write(std::string(n, byte).data(), n);
}

// Where `needle` first occurs in the file, or -1.
long FindInFile(const std::string& path, const std::string& needle) {
  std::ifstream f(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t at = all.find(needle);
  return at == std::string::npos ? -1 : static_cast<long>(at);
}

TEST(SqliteStoreTest, FlippedBytesInsideAValueOnDiskAreDataLossAtOpen) {
  const std::string path = TempPath("flip-disk-value.db");
  // Closed cleanly: everything is in the database file.
  ASSERT_NE(OpenAndCommit(path, PutBatch("tenant", "acme", "MARKER-quota-1073741824")), nullptr);
  const long at = FindInFile(path, "MARKER-quota-1073741824");
  ASSERT_GT(at, 0);
  Scribble(path, at + 13, 1, '9');
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(store.status().message(), HasSubstr("record tenant/acme fails its checksum"));
}

TEST(SqliteStoreTest, DamagedBtreePageIsDataLossAtOpen) {
  const std::string path = TempPath("flip-page.db");
  WriteBatch b;
  for (int i = 0; i < 500; ++i) {
    b.puts.push_back({"container", "c-" + std::to_string(i), std::string(100, 'v')});
  }
  ASSERT_NE(OpenAndCommit(path, b), nullptr);  // And closed.
  // Page 3 is a b-tree page of this schema; scribble over its cell area.
  Scribble(path, 2 * 4096 + 8, 64, '\xff');
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(store.status().message(), HasSubstr("store: " + path + " is damaged"));
}

// A store written by the release before checksums (schema 1) is migrated:
// its rows get their checksums and still load, and damage after is caught.
TEST(SqliteStoreTest, MigratesSchema1RowsToChecksummedRows) {
  const std::string path = TempPath("v1.db");
  ExecRaw(path,
          "PRAGMA journal_mode=WAL;"
          "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER);"
          "INSERT INTO meta VALUES ('schema_version', 1);"
          "CREATE TABLE objects (kind TEXT NOT NULL, id TEXT NOT NULL, value BLOB NOT NULL,"
          "  PRIMARY KEY (kind, id)) WITHOUT ROWID;"
          "CREATE TABLE requests (request_id TEXT PRIMARY KEY NOT NULL, fingerprint BLOB NOT NULL,"
          "  response BLOB NOT NULL, time_ms INTEGER NOT NULL);"
          "CREATE INDEX requests_by_time ON requests (time_ms);"
          "INSERT INTO objects VALUES ('tenant', 'acme', CAST('A' AS BLOB));"
          "INSERT INTO requests VALUES ('req-1', CAST('fp' AS BLOB), CAST('resp' AS BLOB), 7);");
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto all = (*store)->LoadAll();
    ASSERT_TRUE(all.ok()) << all.status();
    ASSERT_EQ(all->size(), 1u);
    EXPECT_EQ((*all)[0].value, "A");
    auto req = (*store)->FindRequest("req-1");
    ASSERT_TRUE(req.ok()) << req.status();
    ASSERT_TRUE(req->has_value());
    EXPECT_EQ((*req)->fingerprint, "fp");
  }
  ExecRaw(path, "UPDATE objects SET value = CAST('B' AS BLOB)");
  EXPECT_EQ(OpenSqliteStore(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(SqliteStoreTest, AWalLeftByACrashIsReplayedAndEmptiedAtOpen) {
  const std::string path = TempPath("wal-open.db");
  { ASSERT_TRUE(OpenSqliteStore(path).ok()); }
  // A connection that dies without checkpointing, as a killed broker does,
  // leaves its commits in the WAL.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr), SQLITE_OK);
    const std::string value(200000, 'x');
    const std::string sql = "INSERT INTO objects (kind, id, value, sum) VALUES ('tenant', 'acme', "
                            "CAST('" + value + "' AS BLOB), " +
                            std::to_string(ObjectChecksum("tenant", "acme", value)) + ")";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  struct stat st;
  ASSERT_EQ(stat((path + "-wal").c_str(), &st), 0);
  ASSERT_GT(st.st_size, 200000);
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ(stat((path + "-wal").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0);
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].id, "acme");
}

// A long reader (an operator's backup) pins the WAL. The checkpointer must
// not hold commits off waiting for it every period, and once it is gone the
// WAL goes back under its bound.
TEST(SqliteStoreTest, LongReaderNeitherStallsCommitsNorLeavesTheWalLarge) {
  const std::string path = TempPath("long-reader.db");
  SqliteStoreOptions options;
  options.checkpoint.period = absl::Milliseconds(10);
  options.checkpoint.restart_bytes = 64 << 10;
  auto store = OpenSqliteStore(path, options);
  ASSERT_TRUE(store.ok()) << store.status();
  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &reader), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM objects;", nullptr, nullptr, nullptr),
            SQLITE_OK);
  absl::Duration slowest;
  for (int i = 0; i < 200; ++i) {
    WriteBatch b;
    b.puts.push_back({"blob", std::to_string(i % 10), std::string(20000, 'a' + i % 26)});
    const absl::Time start = absl::Now();
    ASSERT_TRUE((*store)->Commit(b).ok());
    slowest = std::max(slowest, absl::Now() - start);
  }
  struct stat st;
  ASSERT_EQ(stat((path + "-wal").c_str(), &st), 0);
  EXPECT_GT(st.st_size, 1 << 20);  // Pinned by the reader meanwhile.
  ASSERT_EQ(sqlite3_exec(reader, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(reader);
  // Each RESTART attempt may wait 10 ms for readers, then backs off; before,
  // each waited a second.
  EXPECT_LT(slowest, absl::Milliseconds(500));
  // The next restart (within the backoff) and commit bring the file back
  // down to journal_size_limit.
  absl::SleepFor(absl::Milliseconds(400));
  for (int i = 0; i < 3; ++i) {
    WriteBatch b;
    b.puts.push_back({"blob", "x", std::string(100, 'x')});
    ASSERT_TRUE((*store)->Commit(b).ok());
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(stat((path + "-wal").c_str(), &st), 0);
  EXPECT_LT(st.st_size, 1 << 20);
}

}  // namespace
}  // namespace iommu
