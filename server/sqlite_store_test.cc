#include "server/sqlite_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/" + name;
  unlink(path.c_str());
  unlink((path + "-wal").c_str());
  unlink((path + "-shm").c_str());
  return path;
}

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
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
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
  auto store = OpenSqliteStore(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
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

}  // namespace
}  // namespace iommu
