// Chaos scenario 3: the broker's store loses its disk. The database lives on
// a small tmpfs mounted in a private mount namespace of this test (so nothing
// leaks to the host, and the namespace dies with the test; the test runs as
// root).
//   * Disk full: the tmpfs is filled while the broker runs. Mutations then
//     fail with a clear non-OK status naming the store (RESOURCE_EXHAUSTED
//     or UNAVAILABLE), never OK and never a crash; reads keep working and
//     show exactly what was acknowledged (a refused change left nothing);
//     retrying an acknowledged request id still returns its first answer.
//     Once space is freed, mutations are accepted again, and after kill -9
//     and a restart everything acknowledged is there.
//   * Read-only: a tmpfs with files open for writing cannot be remounted
//     read-only (EBUSY), so the broker is killed, the filesystem remounted
//     ro and the broker started on it: it must refuse to start with a clear
//     message and exit status (not a signal), or, if it starts, serve reads
//     and refuse mutations clearly. Remounted rw, it starts, has everything
//     acknowledged and accepts mutations.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/chaos/chaos_util.h"
#include "tests/daemon.h"

namespace iommu {
namespace {

using chaos::Note;
using ::testing::AnyOf;
using ::testing::HasSubstr;

// Whether `pid` runs (and is not a zombie), without reaping it.
bool Alive(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(in, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

class StoreFaultChaosTest : public ::testing::Test {
 protected:
  // The private mount namespace and the tmpfs. Runs before any gRPC thread
  // exists: unshare(CLONE_NEWNS) refuses a multi-threaded process.
  static void SetUpTestSuite() {
    if (unshare(CLONE_NEWNS) != 0) {
      setup_error_ = absl::StrCat("unshare(CLONE_NEWNS): ", std::strerror(errno),
                                  " (this test needs root / CAP_SYS_ADMIN)");
      return;
    }
    // Nothing mounted here propagates back to the host.
    if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      setup_error_ = absl::StrCat("mount --make-rprivate /: ", std::strerror(errno));
      return;
    }
    dir_ = new std::string(testing::NewTempDir("store-fault"));
    mnt_ = new std::string(*dir_ + "/mnt");
    mkdir(mnt_->c_str(), 0700);
    if (mount("tmpfs", mnt_->c_str(), "tmpfs", 0, "size=2m,mode=0700") != 0) {
      setup_error_ = absl::StrCat("mount -t tmpfs ", *mnt_, ": ", std::strerror(errno));
    }
  }

  void SetUp() override { ASSERT_EQ(setup_error_, ""); }

  std::vector<std::string> BrokerArgs() const {
    return {"--listen=127.0.0.1:0", "--db=" + *mnt_ + "/broker.db", "--shutdown_grace_ms=500",
            "--insecure"};
  }

  absl::Status StartBroker() {
    stub_.reset();
    absl::Status s = broker_.Start(testing::RunfilePath("server/iommu-broker"), BrokerArgs(),
                                   *dir_, "broker");
    if (s.ok()) stub_ = chaos::BrokerStubFor(broker_.address());
    return s;
  }

  grpc::Status CreateTenant(const std::string& id, v1::Tenant* out) {
    v1::CreateTenantRequest req;
    req.set_request_id("req-" + id);
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(4096 * (1 + acked_.size()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::Status s = stub_->CreateTenant(&ctx, req, out);
    if (s.ok()) acked_[out->id()] = out->quota().pinned_bytes();
    return s;
  }

  // Every tenant the broker lists, with its quota; or the read's error.
  absl::StatusOr<std::map<std::string, uint64_t>> ListTenants() {
    absl::StatusOr<chaos::Fleet> f = chaos::ReadFleet(stub_.get());
    if (!f.ok()) return f.status();
    std::map<std::string, uint64_t> out;
    for (const auto& [id, t] : f->tenants) out[id] = t.quota().pinned_bytes();
    return out;
  }

  // Fills the tmpfs to its last byte; returns the filler's size.
  off_t Fill() {
    const std::string path = *mnt_ + "/filler";
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    std::string chunk(4096, 'x');
    off_t total = 0;
    for (int i = 0; i < 4096; ++i) {  // 16 MiB at most: far past 2 MiB.
      const ssize_t n = write(fd, chunk.data(), chunk.size());
      if (n <= 0) break;
      total += n;
    }
    close(fd);
    return total;
  }

  static std::string* dir_;
  static std::string* mnt_;
  static std::string setup_error_;
  testing::Daemon broker_;
  std::unique_ptr<v1::Broker::Stub> stub_;
  std::map<std::string, uint64_t> acked_;  // Acknowledged tenants and quotas.
};

std::string* StoreFaultChaosTest::dir_ = nullptr;
std::string* StoreFaultChaosTest::mnt_ = nullptr;
std::string StoreFaultChaosTest::setup_error_;

TEST_F(StoreFaultChaosTest, DiskFullRefusesMutationsClearlyAndLosesNothing) {
  const absl::Time start = absl::Now();
  ASSERT_TRUE(StartBroker().ok()) << broker_.Log();
  v1::Tenant t;
  for (int i = 0; i < 20; ++i) {
    grpc::Status s = CreateTenant(absl::StrCat("before-", i), &t);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  v1::Tenant first_answer;
  ASSERT_TRUE(CreateTenant("retry-me", &first_answer).ok());

  const off_t filled = Fill();
  // Mutations until the store runs out of room: WAL pages already allocated
  // may take a few more commits first. Each acknowledged one is recorded.
  int acked_while_full = 0;
  grpc::Status refused;
  for (int i = 0; i < 3000 && refused.ok(); ++i) {
    refused = CreateTenant(absl::StrCat("full-", i), &t);
    acked_while_full += refused.ok();
  }
  ASSERT_FALSE(refused.ok()) << "3000 mutations acknowledged on a full disk";
  EXPECT_THAT(refused.error_code(), AnyOf(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                          grpc::StatusCode::UNAVAILABLE))
      << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("store"));
  ASSERT_TRUE(Alive(broker_.pid())) << "the broker died on a full disk:\n" << broker_.Log();
  // More mutations on the full disk: each refused clearly, none a crash.
  int refused_count = 1;
  std::set<std::string> codes = {absl::StrCat(refused.error_code())};
  for (int i = 0; i < 10; ++i) {
    grpc::Status s = CreateTenant(absl::StrCat("more-", i), &t);
    if (s.ok()) continue;  // Recorded as acknowledged; checked below like any.
    ++refused_count;
    codes.insert(absl::StrCat(s.error_code()));
    EXPECT_THAT(s.error_message(), HasSubstr("store")) << s.error_code();
  }
  ASSERT_TRUE(Alive(broker_.pid())) << broker_.Log();

  // Reads work and show exactly what was acknowledged; a retry of an
  // acknowledged request still gets its first answer.
  absl::StatusOr<std::map<std::string, uint64_t>> seen = ListTenants();
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, acked_);
  {
    v1::CreateTenantRequest req;
    req.set_request_id("req-retry-me");
    req.set_tenant_id("retry-me");
    req.mutable_quota()->set_pinned_bytes(first_answer.quota().pinned_bytes());
    grpc::ClientContext ctx;
    v1::Tenant again;
    grpc::Status s = stub_->CreateTenant(&ctx, req, &again);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(again.SerializeAsString(), first_answer.SerializeAsString());
  }

  // Space back: mutations are accepted again (the broker may need a moment
  // for its WAL checkpoint to catch up).
  ASSERT_EQ(unlink((*mnt_ + "/filler").c_str()), 0);
  bool accepted = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  for (int i = 0; !accepted && absl::Now() < deadline; ++i) {
    accepted = CreateTenant(absl::StrCat("after-", i), &t).ok();
    if (!accepted) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(accepted) << "no mutation accepted 10 s after space was freed:\n" << broker_.Log();
  for (int i = 0; i < 5; ++i) {
    grpc::Status s = CreateTenant(absl::StrCat("later-", i), &t);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }

  // kill -9 and restart: everything acknowledged is there, nothing else.
  broker_.Kill();
  ASSERT_TRUE(StartBroker().ok()) << broker_.Log();
  seen = ListTenants();
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, acked_);
  Note(absl::StrFormat(
      "disk full (tmpfs 2 MiB, filler %d KiB): %d mutations still acknowledged from allocated WAL "
      "pages, then %d refused with codes {%s} naming the store, broker alive, reads == %d "
      "acknowledged tenants, retry returned the first answer; after freeing space mutations "
      "accepted again; after kill -9 + restart all %d acknowledged tenants present; wall time %s",
      filled / 1024, acked_while_full, refused_count, absl::StrJoin(codes, ","), seen->size(),
      acked_.size(), absl::FormatDuration(absl::Now() - start)));

  // ----- read-only filesystem (after a kill: a busy tmpfs cannot go ro).
  broker_.Kill();
  stub_.reset();
  ASSERT_EQ(mount(nullptr, mnt_->c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0)
      << std::strerror(errno);
  absl::Status started = StartBroker();
  std::string ro_outcome;
  if (!started.ok()) {
    const int status = broker_.early_exit_status();
    ASSERT_NE(status, -1) << started;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0)
        << "the broker on a read-only store should exit with an error, got wait status "
        << status << ":\n"
        << broker_.Log();
    EXPECT_THAT(broker_.Log(), HasSubstr("Read-only file system"));
    ro_outcome = absl::StrCat("refused to start (exit ", WEXITSTATUS(status),
                              ", log names \"Read-only file system\")");
  } else {
    // It started: reads work, mutations are refused clearly.
    seen = ListTenants();
    ASSERT_TRUE(seen.ok()) << seen.status();
    EXPECT_EQ(*seen, acked_);
    grpc::Status s = CreateTenant("on-ro", &t);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.error_message(), HasSubstr("store"));
    EXPECT_TRUE(Alive(broker_.pid())) << broker_.Log();
    ro_outcome = "started read-only: reads OK, mutation refused";
    broker_.Kill();
    stub_.reset();
  }
  ASSERT_EQ(mount(nullptr, mnt_->c_str(), nullptr, MS_REMOUNT, nullptr), 0)
      << std::strerror(errno);
  ASSERT_TRUE(StartBroker().ok()) << broker_.Log();
  seen = ListTenants();
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, acked_);
  grpc::Status s = CreateTenant("after-rw", &t);
  EXPECT_TRUE(s.ok()) << s.error_message();
  broker_.Kill();
  Note(absl::StrFormat(
      "read-only store: broker %s; remounted rw: started, %d acknowledged tenants present, "
      "mutations accepted; wall time %s",
      ro_outcome, acked_.size() - 1, absl::FormatDuration(absl::Now() - start)));
}

}  // namespace
}  // namespace iommu
