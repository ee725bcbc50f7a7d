// The SQLite store: the conformance suite, then what only a file has:
// reopening, crash safety, file modes, refusing files that are not ours.
#include "server/kv/sqlite_kv_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "server/kv/kv_conformance.h"
#include "server/store_test_files.h"

namespace iommu {
namespace kv {
namespace {

const std::string kAll("\0", 1);

SqliteKvOptions TestOptions(Clock* clock) {
  SqliteKvOptions o;
  o.clock = clock;
  o.lease_sweep_period = absl::Milliseconds(5);
  return o;
}

KvStoreFactory SqliteFactory() {
  return [](const KvStoreConfig& config) {
    static std::atomic<int> n{0};
    SqliteKvOptions o = TestOptions(config.clock);
    o.limits = config.limits;
    o.watch_max_pending_events = config.watch_max_pending_events;
    return OpenSqliteKvStore(TempPath(absl::StrCat("conformance_", n++, ".db")), o);
  };
}

INSTANTIATE_TEST_SUITE_P(Sqlite, KvConformanceTest,
                         ::testing::Values(KvConformanceParam{"sqlite", SqliteFactory()}),
                         [](const auto& info) { return info.param.name; });

std::unique_ptr<KvStore> MustOpen(const std::string& path, Clock* clock) {
  auto s = OpenSqliteKvStore(path, TestOptions(clock));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(SqliteKvStoreTest, ReopenRestoresRevisionKeysLeasesHistoryAndCompactionPoint) {
  FakeClock clock;
  const std::string path = TempPath("reopen.db");
  int64_t lease = 0;
  {
    auto store = MustOpen(path, &clock);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Put("a", "1").ok());     // 1
    ASSERT_TRUE(store->Put("a", "2").ok());     // 2
    ASSERT_TRUE(store->Put("b", "1").ok());     // 3
    ASSERT_TRUE(store->DeleteRange("b").ok());  // 4
    lease = *store->LeaseGrant(30);
    ASSERT_TRUE(store->Put("l", "1", lease).ok());  // 5
    ASSERT_TRUE(store->Compact(2).ok());
  }
  auto store = MustOpen(path, &clock);
  ASSERT_NE(store, nullptr);
  auto all = store->Range({"a", kAll, 0, 0});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->revision, 5);
  EXPECT_EQ(Keys(*all), (std::vector<std::string>{"a", "l"}));
  EXPECT_EQ(all->kvs[0].version, 2);
  EXPECT_EQ(all->kvs[1].lease, lease);
  EXPECT_EQ(store->CompactedRevision(), 2);
  EXPECT_EQ(store->Range({"a", "", 1, 0}).status().code(), absl::StatusCode::kOutOfRange);
  auto at3 = store->Range({"a", kAll, 3, 0});
  ASSERT_TRUE(at3.ok()) << at3.status();
  EXPECT_EQ(Keys(*at3), (std::vector<std::string>{"a", "b"}));
  auto ttl = store->LeaseTimeToLive(lease);
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_EQ(ttl->keys, (std::vector<std::string>{"l"}));
  EXPECT_EQ(ttl->remaining, absl::Seconds(30));  // Restarted, as etcd does.
  auto next = store->LeaseGrant(5);
  ASSERT_TRUE(next.ok());
  EXPECT_NE(*next, lease);
  auto put = store->Put("c", "1");
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->revision, 6);
  ASSERT_TRUE(store->LeaseRevoke(lease).ok());
  EXPECT_TRUE(store->Range({"l", "", 0, 0})->kvs.empty());
}

// The file keeps no revision counter: the newest history row carries it.
// This is the case that could lose it: the last txn a delete, then
// everything compacted.
TEST(SqliteKvStoreTest, RevisionSurvivesReopenAfterDeletingAndCompactingEverything) {
  FakeClock clock;
  const std::string path = TempPath("all_gone.db");
  {
    auto store = MustOpen(path, &clock);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Put("a", "1").ok());
    ASSERT_TRUE(store->DeleteRange("a").ok());
    ASSERT_TRUE(store->Compact(2).ok());
  }
  auto store = MustOpen(path, &clock);
  ASSERT_NE(store, nullptr);
  auto all = store->Range({"a", kAll, 0, 0});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->revision, 2);
  EXPECT_TRUE(all->kvs.empty());
  auto put = store->Put("b", "1");
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->revision, 3);
}

TEST(SqliteKvStoreTest, FilesAreCreatedPrivateWhateverTheUmask) {
  const std::string path = TempPath("mode.db");
  const mode_t old = umask(0);
  {
    auto store = MustOpen(path, Clock::Real());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Put("a", "1").ok());
    EXPECT_EQ(ModeOf(path), 0600);
    EXPECT_EQ(ModeOf(path + "-wal"), 0600);
  }
  umask(old);
}

TEST(SqliteKvStoreTest, SecondOpenOfTheSameFileIsRefused) {
  const std::string path = TempPath("twice.db");
  auto first = MustOpen(path, Clock::Real());
  ASSERT_NE(first, nullptr);
  auto second = OpenSqliteKvStore(path);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_NE(second.status().message().find("in use"), std::string::npos) << second.status();
}

TEST(SqliteKvStoreTest, FileThatIsNotADatabaseIsRefusedAsDataLoss) {
  const std::string path = TempPath("garbage.db");
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>(i * 37));
  }
  chmod(path.c_str(), 0600);
  auto s = OpenSqliteKvStore(path);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_NE(s.status().message().find("not a SQLite database"), std::string::npos) << s.status();
}

TEST(SqliteKvStoreTest, ForeignSqliteDatabaseIsRefused) {
  const std::string path = TempPath("foreign.db");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE objects (kind TEXT)", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  chmod(path.c_str(), 0600);
  auto s = OpenSqliteKvStore(path);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_NE(s.status().message().find("database of something else"), std::string::npos)
      << s.status();
}

TEST(SqliteKvStoreTest, FlippedBytesInAValueAreRefusedAsDataLoss) {
  const std::string path = TempPath("flipped.db");
  {
    auto store = MustOpen(path, Clock::Real());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Put("quota", "100").ok());
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "UPDATE history SET value = CAST('900' AS BLOB)", nullptr, nullptr,
                           nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto s = OpenSqliteKvStore(path);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_NE(s.status().message().find("key \"quota\" at revision 1 fails its checksum"),
            std::string::npos)
      << s.status();
}

// Fails the write of the next `n` batches at the chosen point.
struct WriteFault {
  std::atomic<int> remaining{0};
  bool after_write = false;
  std::function<absl::Status(bool)> Hook() {
    return [this](bool written) {
      if (written != after_write || remaining.load() <= 0) return absl::OkStatus();
      --remaining;
      return absl::UnavailableError("injected: disk on fire");
    };
  }
};

TEST(SqliteKvStoreTest, FailedCommitFailsItsBatchAndChangesNothing) {
  FakeClock clock;
  WriteFault fault;
  SqliteKvOptions o = TestOptions(&clock);
  o.write_fault_for_testing = fault.Hook();
  auto store = OpenSqliteKvStore(TempPath("fault_before.db"), o);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put("a", "1").ok());
  fault.remaining = 1;
  auto failed = (*store)->Put("b", "1");
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_NE(failed.status().message().find("disk on fire"), std::string::npos);
  EXPECT_FALSE((*store)->Get("b")->has_value());
  auto next = (*store)->Put("c", "1");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->revision, 2) << "a failed commit must not use up a revision";
}

TEST(SqliteKvStoreTest, CommitWithUnknownOutcomeRefusesWritesUntilReopened) {
  FakeClock clock;
  WriteFault fault;
  fault.after_write = true;
  SqliteKvOptions o = TestOptions(&clock);
  o.write_fault_for_testing = fault.Hook();
  const std::string path = TempPath("fault_after.db");
  {
    auto store = OpenSqliteKvStore(path, o);
    ASSERT_TRUE(store.ok()) << store.status();
    fault.remaining = 1;
    EXPECT_EQ((*store)->Put("a", "1").status().code(), absl::StatusCode::kUnavailable);
    auto refused = (*store)->Put("b", "1");
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
    EXPECT_NE(refused.status().message().find("until the store is reopened"), std::string::npos)
        << refused.status();
    EXPECT_EQ((*store)->Compact(1).code(), absl::StatusCode::kUnavailable);
    EXPECT_TRUE((*store)->Range({"a", "", 0, 0}).ok()) << "reads go on from memory";
  }
  auto store = MustOpen(path, &clock);
  ASSERT_NE(store, nullptr);
  auto a = store->Get("a");
  ASSERT_TRUE(a.ok() && a->has_value()) << "the write had reached the file";
  auto b = store->Put("b", "1");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->revision, 2);
}

std::string ChildPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir ? srcdir : ".", "/iommu_broker/server/kv/kv_load_child");
}

// Runs the child on `path` until it acknowledged `acks` puts, SIGKILLs it
// and returns every acknowledged (key, revision).
std::vector<std::pair<std::string, int64_t>> RunAndKill(const std::string& path, size_t acks) {
  int pipefd[2];
  EXPECT_EQ(pipe(pipefd), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], STDOUT_FILENO);
    close(pipefd[0]);
    const std::string child = ChildPath();
    execl(child.c_str(), child.c_str(), path.c_str(), "8", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(pipefd[1]);
  std::string text;
  std::vector<std::pair<std::string, int64_t>> acked;
  char buf[4096];
  while (acked.size() < acks) {
    const ssize_t n = read(pipefd[0], buf, sizeof(buf));
    if (n <= 0) break;
    text.append(buf, n);
    size_t nl;
    while ((nl = text.find('\n')) != std::string::npos) {
      std::vector<std::string> f = absl::StrSplit(text.substr(0, nl), ' ');
      text.erase(0, nl + 1);
      int64_t rev = 0;
      if (f.size() == 2 && absl::SimpleAtoi(f[1], &rev)) acked.emplace_back(f[0], rev);
    }
  }
  kill(pid, SIGKILL);  // Mid-load: other puts are in flight.
  int status = 0;
  waitpid(pid, &status, 0);
  close(pipefd[0]);
  EXPECT_TRUE(WIFSIGNALED(status)) << "the child ended before it was killed: " << status;
  return acked;
}

TEST(SqliteKvStoreTest, WriterKilledMidLoadLosesNothingAcknowledged) {
  const std::string path = TempPath("killed.db");
  int64_t floor = 0;
  for (int round = 0; round < 3; ++round) {
    const auto acked = RunAndKill(path, 400);
    ASSERT_GE(acked.size(), 400u) << "round " << round;
    auto store = MustOpen(path, Clock::Real());
    ASSERT_NE(store, nullptr);
    auto all = store->Range({"k/", "k0", 0, 0});
    ASSERT_TRUE(all.ok()) << all.status();
    std::set<std::string> keys;
    for (const KeyValue& kv : all->kvs) keys.insert(kv.key);
    int64_t max_acked = 0;
    for (const auto& [key, rev] : acked) {
      EXPECT_TRUE(keys.count(key)) << "acknowledged " << key << " at " << rev << " was lost";
      max_acked = std::max(max_acked, rev);
    }
    EXPECT_GE(all->revision, max_acked);
    EXPECT_GT(all->revision, floor);
    // Revisions are gapless across the crash: one per surviving put.
    EXPECT_EQ(all->revision, static_cast<int64_t>(all->kvs.size()));
    floor = all->revision;
  }
}

}  // namespace
}  // namespace kv
}  // namespace iommu
