// The broker binary on its store file (issue 11): the files are private
// whatever the umask and a file open to others is refused; a second broker
// is refused through any name of the database; a damaged file refuses the
// start with DATA_LOSS; the WAL stays bounded under load and across kill -9.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "server/sqlite_store.h"
#include "server/store.h"
#include "tests/daemon.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using testing::Daemon;
using testing::InsecureBrokerStub;
using testing::TenantQuotas;
using testing::RunCommand;
using testing::RunfilePath;

// docs/OPERATIONS.md promises a WAL below 64 MiB; the checkpointer restarts
// it past 16 MiB, so this load stays near 18 MiB. The bound is tighter than
// the promise so that a broker without checkpointing (45 MB under this very
// load) fails the test.
constexpr int64_t kWalBound = 32 << 20;

grpc::Status CreateTenant(v1::Broker::Stub* stub, const std::string& id, uint64_t quota) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::CreateTenantRequest req;
  req.set_tenant_id(id);
  req.mutable_quota()->set_pinned_bytes(quota);
  v1::Tenant out;
  return stub->CreateTenant(&ctx, req, &out);
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

int64_t SizeOf(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

class BrokerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::NewTempDir("store");
    db_ = dir_ + "/broker.db";
  }
  std::vector<std::string> Args(const std::string& db) const {
    return {"--listen=127.0.0.1:0", "--db=" + db, "--shutdown-grace-ms=500", "--insecure"};
  }
  // Runs a broker that is expected to refuse to start (so it exits).
  testing::CommandResult RunRefused(const std::string& db) const {
    std::vector<std::string> argv = {RunfilePath("server/iommu-broker")};
    for (const std::string& a : Args(db)) argv.push_back(a);
    argv.push_back("--port-file=" + dir_ + "/refused.port");
    return RunBounded(argv);
  }

  // Runs `argv` to completion like RunCommand, but a process still running
  // after 10 s (a broker that started instead of refusing) is killed and
  // reported as exit code -2, so that the test fails instead of hanging.
  testing::CommandResult RunBounded(const std::vector<std::string>& argv) const {
    const std::string err_path = dir_ + "/bounded.err";
    unlink(err_path.c_str());
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) dup2(fd, 2);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    testing::CommandResult r;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (absl::Now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        r.exit_code = -2;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (r.exit_code != -2 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    std::ifstream in(err_path);
    r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return r;
  }

  std::string dir_;
  std::string db_;
  const std::string broker_ = RunfilePath("server/iommu-broker");
};

// Regression (issue 11, item 6): under umask 022 broker.db, -wal and -shm
// were 0644 and held every node's HMAC key in plain text.
TEST_F(BrokerStoreTest, StoreFilesAre0600UnderUmask022AndAnOpenDatabaseIsRefused) {
  const mode_t old = umask(022);
  {
    Daemon d;
    ASSERT_TRUE(d.Start(broker_, Args(db_), dir_, "broker").ok()) << d.Log();
    auto stub = InsecureBrokerStub(d.address());
    ASSERT_TRUE(CreateTenant(stub.get(), "acme", 1 << 20).ok());
    EXPECT_EQ(ModeOf(db_), 0600u);
    EXPECT_EQ(ModeOf(db_ + "-wal"), 0600u);
    EXPECT_EQ(ModeOf(db_ + "-shm"), 0600u);
    stub.reset();
    EXPECT_EQ(d.Stop(), 0);
  }
  umask(old);
  ASSERT_EQ(chmod(db_.c_str(), 0644), 0);
  testing::CommandResult r = RunRefused(db_);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(r.err, HasSubstr("store file " + db_ + " has mode 0644"));
  EXPECT_THAT(r.err, HasSubstr("chmod 600 " + db_));
}

TEST_F(BrokerStoreTest, TlsKeyReadableByOthersIsRefused) {
  testing::CommandResult certs =
      RunCommand({RunfilePath("deploy/make-dev-certs.sh"), "--out", dir_ + "/certs"});
  ASSERT_EQ(certs.exit_code, 0) << certs.err;
  const std::string key = dir_ + "/certs/broker.key";
  EXPECT_EQ(ModeOf(key), 0600u);  // As make-dev-certs.sh makes it.
  ASSERT_EQ(chmod(key.c_str(), 0644), 0);
  testing::CommandResult r =
      RunBounded({broker_, "--listen=127.0.0.1:0", "--db=" + db_,
                  "--tls-cert=" + dir_ + "/certs/broker.crt", "--tls-key=" + key,
                  "--tls-ca=" + dir_ + "/certs/ca.crt"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tls-key " + key + " has mode 0644"));
  EXPECT_THAT(r.err, HasSubstr("chmod 600 " + key));
}

// Regression (issue 11, item 9): the lock was "<path>.lock", so a second
// broker got in through a symlink or hard link to the database; both
// acknowledged writes and acknowledged data was lost.
TEST_F(BrokerStoreTest, SecondBrokerThroughASymlinkOrHardLinkIsRefused) {
  Daemon first;
  ASSERT_TRUE(first.Start(broker_, Args(db_), dir_, "first").ok()) << first.Log();
  auto stub = InsecureBrokerStub(first.address());
  ASSERT_TRUE(CreateTenant(stub.get(), "acme", 4096).ok());
  const std::string sym = dir_ + "/symlink.db";
  const std::string hard = dir_ + "/hardlink.db";
  ASSERT_EQ(symlink(db_.c_str(), sym.c_str()), 0);
  ASSERT_EQ(link(db_.c_str(), hard.c_str()), 0);
  for (const std::string& name : {db_, sym, hard}) {
    testing::CommandResult r = RunRefused(name);
    EXPECT_NE(r.exit_code, 0) << name;
    EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));
    EXPECT_THAT(r.err, HasSubstr(name + " (inode "));
    EXPECT_THAT(r.err, HasSubstr("in use by another broker, pid " + std::to_string(first.pid())));
  }
  // The first broker still serves, and what it acknowledged is durable.
  ASSERT_TRUE(CreateTenant(stub.get(), "beta", 8192).ok());
  const std::map<std::string, uint64_t> want = {{"acme", 4096}, {"beta", 8192}};
  EXPECT_EQ(TenantQuotas(stub.get()), want);
  stub.reset();
  EXPECT_EQ(first.Stop(), 0);
  Daemon again;
  ASSERT_TRUE(again.Start(broker_, Args(hard), dir_, "again").ok()) << again.Log();
  auto stub2 = InsecureBrokerStub(again.address());
  EXPECT_EQ(TenantQuotas(stub2.get()), want);
  stub2.reset();
  EXPECT_EQ(again.Stop(), 0);
}

// Overwrites bytes of `path` at `offset`.
void Scribble(const std::string& path, long offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good());
  f.seekp(offset);
  f.write(bytes.data(), bytes.size());
}

std::vector<long> FindAll(const std::string& path, const std::string& needle) {
  std::ifstream f(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<long> out;
  for (size_t at = all.find(needle); at != std::string::npos; at = all.find(needle, at + 1)) {
    out.push_back(static_cast<long>(at));
  }
  return out;
}

// Writes one tenant (without a request id, so no remembered answer repeats
// its bytes) and stops the broker cleanly, which folds the WAL into the file.
void WriteOneTenant(const std::string& broker, const std::vector<std::string>& args,
                    const std::string& dir, const std::string& id) {
  Daemon d;
  ASSERT_TRUE(d.Start(broker, args, dir, "writer").ok()) << d.Log();
  auto stub = InsecureBrokerStub(d.address());
  ASSERT_TRUE(CreateTenant(stub.get(), id, 1 << 30).ok());
  stub.reset();
  ASSERT_EQ(d.Stop(), 0);
}

// Regression (issue 11, item 10): with bytes flipped in a record the broker
// started normally and served the damage (a changed quota, or a misleading
// FAILED_PRECONDITION on a retry).
TEST_F(BrokerStoreTest, FlippedBytesInARecordValueRefuseTheStartWithDataLoss) {
  WriteOneTenant(broker_, Args(db_), dir_, "flip-me-tenant");
  // The id occurs in the row's key and again inside its value (the Tenant
  // message); damage the second.
  std::vector<long> at = FindAll(db_, "flip-me-tenant");
  ASSERT_EQ(at.size(), 2u);
  Scribble(db_, at[1] + 5, "X");
  testing::CommandResult r = RunRefused(db_);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DATA_LOSS: store: " + db_ + " is damaged: record "
                               "tenant/flip-me-tenant fails its checksum"));
  EXPECT_THAT(r.err, HasSubstr("restore the last backup"));
}

TEST_F(BrokerStoreTest, FlippedBytesInABtreePageRefuseTheStartWithDataLoss) {
  WriteOneTenant(broker_, Args(db_), dir_, "acme");
  // Page 2 is the b-tree of the meta table: overwrite its page header.
  Scribble(db_, 4096, std::string(8, '\xff'));
  testing::CommandResult r = RunRefused(db_);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DATA_LOSS: store: " + db_ + " is damaged"));
  EXPECT_THAT(r.err, HasSubstr("restore the last backup"));
}

// Records that pass their checksums but break what the broker's state must
// hold (here a device held by two containers, which placement would then
// hand out again) refuse the start like a damaged file, naming the records.
TEST_F(BrokerStoreTest, RecordsThatBreakTheStatesInvariantsRefuseTheStartWithDataLoss) {
  {
    absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(db_);
    ASSERT_TRUE(store.ok()) << store.status();
    v1::Tenant t;
    t.set_id("t");
    v1::Node n;
    n.set_name("n1");
    WriteBatch b;
    b.puts.push_back({"tenant", "t", t.SerializeAsString()});
    b.puts.push_back({"node", "n1", n.SerializeAsString()});
    for (const std::string id : {"c-1", "c-2"}) {
      v1::Container c;
      c.set_id(id);
      c.set_tenant_id("t");
      c.set_node("n1");
      c.add_devices("0000:00:04.0");
      v1::IovaRange* r = c.mutable_geometry()->add_usable_ranges();
      r->set_start(0);
      r->set_last((1ULL << 32) - 1);
      c.mutable_geometry()->set_page_size_bitmap(4096);
      b.puts.push_back({"container", id, c.SerializeAsString()});
    }
    ASSERT_TRUE((*store)->Commit(b).ok());
  }
  testing::CommandResult r = RunRefused(db_);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DATA_LOSS: store: containers c-1 and c-2 both hold device "
                               "n1/0000:00:04.0"));
  EXPECT_THAT(r.err, HasSubstr("restore the last backup"));
}

// Regression (issue 11, item 10): a remembered answer damaged while the
// broker ran made a retry fail with FAILED_PRECONDITION "request_id ...
// was already used for a different request", as if the client were wrong.
TEST_F(BrokerStoreTest, DamagedRememberedAnswerIsDataLossOnRetryNotADifferentRequest) {
  Daemon d;
  ASSERT_TRUE(d.Start(broker_, Args(db_), dir_, "broker").ok()) << d.Log();
  auto stub = InsecureBrokerStub(d.address());
  v1::CreateTenantRequest req;
  req.set_request_id("retry-me");
  req.set_tenant_id("acme");
  req.mutable_quota()->set_pinned_bytes(4096);
  {
    grpc::ClientContext ctx;
    v1::Tenant out;
    ASSERT_TRUE(stub->CreateTenant(&ctx, req, &out).ok());
  }
  // A flipped bit in the stored fingerprint, beside the running broker.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE requests SET fingerprint = "
                         "CAST(substr(fingerprint, 1, length(fingerprint) - 1) || 'X' AS BLOB) "
                         "WHERE request_id LIKE '%|retry-me'",  // Scoped by the caller.
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_changes(db), 1);
  sqlite3_close(db);
  grpc::ClientContext ctx;
  v1::Tenant out;
  grpc::Status s = stub->CreateTenant(&ctx, req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("|retry-me fails its checksum"));
  stub.reset();
  d.Kill();
}

// Regression (issue 11, item 8): the WAL grew ~15 KB per mutation while the
// broker ran, and kill -9 + restart did not shrink it.
TEST_F(BrokerStoreTest, WalStaysBoundedUnderLoadAndAcrossKill9) {
  Daemon d;
  ASSERT_TRUE(d.Start(broker_, Args(db_), dir_, "broker").ok()) << d.Log();
  std::atomic<bool> done{false};
  std::atomic<int64_t> max_wal{0};
  std::thread sampler([&] {
    while (!done.load()) {
      max_wal = std::max(max_wal.load(), SizeOf(db_ + "-wal"));
      absl::SleepFor(absl::Milliseconds(5));
    }
  });
  constexpr int kClients = 8;
  constexpr int kPerClient = 500;
  std::vector<std::map<std::string, uint64_t>> acked(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto stub = InsecureBrokerStub(d.address());
      for (int i = 0; i < kPerClient; ++i) {
        grpc::ClientContext ctx;
        v1::CreateTenantRequest req;
        req.set_request_id(absl::StrCat("r-", c, "-", i));
        req.set_tenant_id(absl::StrCat("t-", c, "-", i));
        req.mutable_quota()->set_pinned_bytes(4096 * (i + 1));
        v1::Tenant out;
        if (stub->CreateTenant(&ctx, req, &out).ok()) acked[c][out.id()] = 4096 * (i + 1);
      }
    });
  }
  for (std::thread& t : clients) t.join();
  d.Kill();
  done = true;
  sampler.join();
  std::map<std::string, uint64_t> want;
  for (const auto& m : acked) want.insert(m.begin(), m.end());
  EXPECT_EQ(want.size(), static_cast<size_t>(kClients * kPerClient));
  EXPECT_LT(max_wal.load(), kWalBound);
  std::printf("mutations=%d max_wal_bytes=%lld wal_after_kill=%lld\n", kClients * kPerClient,
              static_cast<long long>(max_wal.load()),
              static_cast<long long>(SizeOf(db_ + "-wal")));

  // After kill -9 the restarted broker replays the WAL and empties it.
  Daemon again;
  ASSERT_TRUE(again.Start(broker_, Args(db_), dir_, "again").ok()) << again.Log();
  EXPECT_EQ(SizeOf(db_ + "-wal"), 0);
  auto stub = InsecureBrokerStub(again.address());
  EXPECT_EQ(TenantQuotas(stub.get()), want);
  stub.reset();
  EXPECT_EQ(again.Stop(), 0);
}

}  // namespace
}  // namespace iommu
