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
#include <cstdio>
#include <cstdlib>
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
#include "proto/agent.grpc.pb.h"
#include "tests/cluster.h"
#include "tests/daemon.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using chaos::Note;
using ::testing::AnyOf;
using ::testing::HasSubstr;

// Whether `pid` runs (and is not a zombie), without reaping it.
bool Alive(pid_t pid) {
  const char state = testing::ProcStatState(absl::StrCat("/proc/", pid, "/stat"));
  return state != '?' && state != 'Z';
}

// The private mount namespace and the tmpfs, made in main() before any test
// runs. Empty, or why they could not be made.
std::string* g_setup_error = new std::string();
std::string* g_dir = nullptr;
std::string* g_mnt = nullptr;

// Mounts the 2 MiB tmpfs under TEST_TMPDIR (the process is already in a
// mount namespace of its own, with private propagation).
void MountTmpfs() {
  g_dir = new std::string(testing::NewTempDir("store-fault"));
  g_mnt = new std::string(*g_dir + "/mnt");
  mkdir(g_mnt->c_str(), 0700);
  if (mount("tmpfs", g_mnt->c_str(), "tmpfs", 0, "size=2m,mode=0700") != 0) {
    *g_setup_error = absl::StrCat("mount -t tmpfs ", *g_mnt, ": ", std::strerror(errno));
  }
}

class StoreFaultChaosTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(*g_setup_error, ""); }

  std::vector<std::string> BrokerArgs() const {
    return {"--listen=127.0.0.1:0", "--db=" + *g_mnt + "/broker.db", "--shutdown-grace-ms=500",
            "--insecure"};
  }

  absl::Status StartBroker() {
    stub_.reset();
    absl::Status s = broker_.Start(testing::RunfilePath("server/iommu-broker"), BrokerArgs(),
                                   *g_dir, "broker");
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
    const std::string path = *g_mnt + "/filler";
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

  testing::Daemon broker_;
  std::unique_ptr<v1::Broker::Stub> stub_;
  std::map<std::string, uint64_t> acked_;  // Acknowledged tenants and quotas.
};

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
  ASSERT_EQ(unlink((*g_mnt + "/filler").c_str()), 0);
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
  ASSERT_EQ(mount(nullptr, g_mnt->c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0)
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
  ASSERT_EQ(mount(nullptr, g_mnt->c_str(), nullptr, MS_REMOUNT, nullptr), 0)
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

// The broker's other half of a mutation is its agent: a container created
// (or a window pushed) on the node for a change the store then refuses must
// not stay there. With an agent and the database on the full tmpfs: a
// create, an allocation and a release are refused clearly, the agent holds
// exactly what the broker lists, and once space is back retrying the same
// request ids completes them.
TEST_F(StoreFaultChaosTest, RefusedCreateAndWindowChangesOnFullDiskLeaveNothingOnTheAgent) {
  testing::ClusterOptions options;
  options.broker_args = {"--db=" + *g_mnt + "/agent.db"};
  testing::Cluster cluster(options);
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  ASSERT_TRUE(cluster.StartAgent("n1", "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6").ok());
  auto broker = cluster.BrokerStub();
  auto call = [&](auto method, const auto& req, auto* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return (broker.get()->*method)(&ctx, req, resp);
  };
  v1::CreateTenantRequest t;
  t.set_tenant_id("acme");
  t.mutable_quota()->set_pinned_bytes(64 << 20);
  v1::Tenant tenant;
  ASSERT_TRUE(call(&v1::Broker::Stub::CreateTenant, t, &tenant).ok());
  v1::CreateContainerRequest ca;
  ca.set_request_id("create-a");
  ca.set_tenant_id("acme");
  ca.set_node("n1");
  ca.add_devices("0000:00:04.0");
  v1::Container a;
  ASSERT_TRUE(call(&v1::Broker::Stub::CreateContainer, ca, &a).ok());
  v1::AllocateWindowRequest wa;
  wa.set_request_id("window-a");
  wa.set_container_id(a.id());
  wa.set_size(1 << 20);
  v1::Window first;
  ASSERT_TRUE(call(&v1::Broker::Stub::AllocateWindow, wa, &first).ok());
  auto agent_holds = [&] {
    auto agent = cluster.AgentStub("n1");
    v1::GetInventoryResponse inv;
    grpc::ClientContext ctx;
    std::set<std::string> ids;
    if (!agent->GetInventory(&ctx, v1::GetInventoryRequest(), &inv).ok()) return ids;
    for (const auto& c : inv.containers()) ids.insert(c.id());
    return ids;
  };

  const off_t filled = Fill();
  // Use up what the WAL already has room for, as the first scenario does.
  for (int i = 0; i < 3000; ++i) {
    v1::CreateTenantRequest slack;
    slack.set_tenant_id(absl::StrCat("slack-", i));
    slack.mutable_quota()->set_pinned_bytes(4096);
    v1::Tenant ignored;
    if (!call(&v1::Broker::Stub::CreateTenant, slack, &ignored).ok()) break;
  }
  v1::CreateContainerRequest cb = ca;
  cb.set_request_id("create-b");
  cb.set_devices(0, "0000:00:05.0");
  v1::Container b;
  grpc::Status create = call(&v1::Broker::Stub::CreateContainer, cb, &b);
  v1::AllocateWindowRequest wb = wa;
  wb.set_request_id("window-b");
  v1::Window second;
  grpc::Status allocate = call(&v1::Broker::Stub::AllocateWindow, wb, &second);
  v1::ReleaseWindowRequest rw;
  rw.set_request_id("release-a");
  rw.set_window_id(first.id());
  v1::ReleaseWindowResponse released;
  grpc::Status release = call(&v1::Broker::Stub::ReleaseWindow, rw, &released);
  // A full disk may still take a commit into WAL pages the store already
  // has (a finished checkpoint lets the WAL start over), so each change is
  // acknowledged or refused; a refused one names the store and changed
  // nothing, and the agent holds exactly what the broker lists.
  int refusals = 0;
  for (const grpc::Status* s : {&create, &allocate, &release}) {
    if (s->ok()) continue;
    ++refusals;
    EXPECT_THAT(s->error_code(), AnyOf(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                       grpc::StatusCode::UNAVAILABLE))
        << s->error_message();
    EXPECT_THAT(s->error_message(), HasSubstr("store"));
  }
  ASSERT_TRUE(Alive(cluster.broker().pid())) << cluster.broker().Log();
  absl::StatusOr<chaos::Fleet> fleet = chaos::ReadFleet(broker.get());
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  std::set<std::string> containers = {a.id()};
  if (create.ok()) containers.insert(b.id());
  EXPECT_EQ(fleet->containers.size(), containers.size());
  EXPECT_EQ(fleet->windows.count(first.id()), release.ok() ? 0u : 1u);
  if (allocate.ok()) {
    EXPECT_EQ(fleet->windows.count(second.id()), 1u);
  }
  EXPECT_EQ(fleet->windows.size(), (release.ok() ? 0u : 1u) + (allocate.ok() ? 1u : 0u));
  EXPECT_EQ(agent_holds(), containers) << "the agent and the broker disagree after a full disk";

  // Space back: the same request ids complete, once.
  ASSERT_EQ(unlink((*g_mnt + "/filler").c_str()), 0);
  grpc::Status again;
  testing::PollUntil([&] { return (again = call(&v1::Broker::Stub::CreateContainer, cb, &b)).ok(); },
                     absl::Seconds(10));
  ASSERT_TRUE(again.ok()) << again.error_message();
  ASSERT_TRUE(call(&v1::Broker::Stub::AllocateWindow, wb, &second).ok());
  ASSERT_TRUE(call(&v1::Broker::Stub::ReleaseWindow, rw, &released).ok());
  v1::Container b_again;
  ASSERT_TRUE(call(&v1::Broker::Stub::CreateContainer, cb, &b_again).ok());
  EXPECT_EQ(b_again.id(), b.id());
  fleet = chaos::ReadFleet(broker.get());
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  EXPECT_EQ(fleet->containers.size(), 2u);
  EXPECT_EQ(fleet->windows.size(), 1u);
  EXPECT_TRUE(fleet->windows.count(second.id()));
  const std::vector<std::string> violations = chaos::CheckFleet(*fleet);
  EXPECT_TRUE(violations.empty()) << absl::StrJoin(violations, "\n");
  EXPECT_EQ(agent_holds(), (std::set<std::string>{a.id(), b.id()}));
  Note(absl::StrFormat(
      "disk full with an agent (filler %d KiB): create/allocate/release answered codes "
      "%d/%d/%d (%d refused, naming the store), broker alive, agent == broker; "
      "space back: the same 3 request ids completed once, agent == broker, counters == recount",
      filled / 1024, create.error_code(), allocate.error_code(), release.error_code(), refusals));
}

// Regression: DeleteContainer destroyed the container on its agent first and
// committed the deletion after, so a delete the store refused (a full disk)
// had cut the guest's DMA while the broker went on listing the container
// READY. The delete's intent is now committed before the destroy: whichever
// commit the full disk refuses, the broker never lists READY a container its
// agent does not hold (either nothing happened, or it is DELETING), and the
// same delete repeated once there is space finishes it.
TEST_F(StoreFaultChaosTest, RefusedDeleteOnFullDiskNeverLeavesAReadyContainerWithoutItsAgent) {
  testing::ClusterOptions options;
  options.broker_args = {"--db=" + *g_mnt + "/delete.db"};
  testing::Cluster cluster(options);
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  ASSERT_TRUE(cluster.StartAgent("n1", "0000:00:04.0=1234:11e8@5").ok());
  auto broker = cluster.BrokerStub();
  v1::CreateTenantRequest t;
  t.set_tenant_id("acme");
  t.mutable_quota()->set_pinned_bytes(64 << 20);
  v1::Tenant tenant;
  grpc::ClientContext tctx;
  ASSERT_TRUE(broker->CreateTenant(&tctx, t, &tenant).ok());
  v1::CreateContainerRequest cr;
  cr.set_tenant_id("acme");
  cr.set_node("n1");
  cr.add_devices("0000:00:04.0");
  v1::Container c;
  grpc::ClientContext cctx;
  ASSERT_TRUE(broker->CreateContainer(&cctx, cr, &c).ok());

  Fill();
  v1::DeleteContainerRequest dr;
  dr.set_request_id("delete-on-full-disk");
  dr.set_container_id(c.id());
  v1::DeleteContainerResponse dresp;
  grpc::ClientContext dctx;
  grpc::Status s = broker->DeleteContainer(&dctx, dr, &dresp);
  unlink((*g_mnt + "/filler").c_str());
  ASSERT_FALSE(s.ok()) << "the delete was acknowledged on a full disk";
  EXPECT_THAT(s.error_message(), HasSubstr("store"));

  v1::GetContainerRequest gc;
  gc.set_container_id(c.id());
  v1::Container listed;
  grpc::ClientContext gctx;
  ASSERT_TRUE(broker->GetContainer(&gctx, gc, &listed).ok());
  auto agent = cluster.AgentStub("n1");
  v1::GetInventoryResponse inv;
  grpc::ClientContext ictx;
  ASSERT_TRUE(agent->GetInventory(&ictx, v1::GetInventoryRequest(), &inv).ok());
  if (inv.containers_size() == 1) {
    // The intent was refused: nothing changed.
    EXPECT_EQ(inv.containers(0).id(), c.id());
    EXPECT_EQ(listed.state(), v1::CONTAINER_STATE_READY);
    std::printf("chaos: refused delete: intent refused, container READY on its agent\n");
  } else {
    // The removal was refused after the destroy: DELETING, and said so.
    EXPECT_EQ(inv.containers_size(), 0);
    EXPECT_EQ(listed.state(), v1::CONTAINER_STATE_DELETING)
        << "the broker lists a container its agent does not hold as "
        << v1::ContainerState_Name(listed.state());
    EXPECT_THAT(s.error_message(), HasSubstr("stays DELETING: repeat the delete"));
    std::printf("chaos: refused delete: destroyed, listed DELETING, not READY\n");
  }
  // With space again, the same delete finishes it.
  grpc::ClientContext again;
  s = broker->DeleteContainer(&again, dr, &dresp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  grpc::ClientContext gone;
  EXPECT_EQ(broker->GetContainer(&gone, gc, &listed).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ictx2;
  ASSERT_TRUE(agent->GetInventory(&ictx2, v1::GetInventoryRequest(), &inv).ok());
  EXPECT_EQ(inv.containers_size(), 0);
}

}  // namespace
}  // namespace iommu

// Puts the test in a mount namespace of its own before gtest (or anything
// that starts threads) runs: unshare(CLONE_NEWNS) refuses a multi-threaded
// process. Under a sanitizer whose runtime has already started a thread
// (TSan), the test re-executes itself through unshare(1) instead.
int main(int argc, char** argv) {
  constexpr char kMarker[] = "IOMMU_CHAOS_PRIVATE_MOUNT_NS";
  if (std::getenv(kMarker) == nullptr) {
    if (unshare(CLONE_NEWNS) != 0) {
      if (errno != EINVAL) {
        *iommu::g_setup_error = absl::StrCat("unshare(CLONE_NEWNS): ", std::strerror(errno),
                                             " (this test needs root / CAP_SYS_ADMIN)");
      } else {
        char self[4096];
        const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
          self[n] = '\0';
          setenv(kMarker, "1", 1);
          std::vector<char*> args = {const_cast<char*>("unshare"),
                                     const_cast<char*>("--mount"),
                                     const_cast<char*>("--propagation"),
                                     const_cast<char*>("private"), self};
          for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
          args.push_back(nullptr);
          execv("/usr/bin/unshare", args.data());
        }
        *iommu::g_setup_error = absl::StrCat("re-exec through /usr/bin/unshare --mount: ",
                                             std::strerror(errno));
      }
    } else if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      // Nothing mounted here may propagate back to the host.
      *iommu::g_setup_error = absl::StrCat("mount --make-rprivate /: ", std::strerror(errno));
    }
  }
  if (iommu::g_setup_error->empty()) iommu::MountTmpfs();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
