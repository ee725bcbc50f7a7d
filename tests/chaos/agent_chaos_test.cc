// Chaos scenario 2: the node agent is frozen (SIGSTOP/SIGCONT) and killed
// (SIGKILL) while VM launchers hold sessions with guest memory mapped: an
// iommu-launcher --hold process (token in $IOMMU_LAUNCHER_TOKEN) on one
// container, and a session of the launcher client library on another.
//   * Frozen for less than the broker's node timeout: the node is READY
//     again at the same address, the --hold launcher is still running with
//     its mapping, and the library session still maps and lists.
//   * Killed and restarted: the old sessions are gone (the --hold launcher
//     exits, the library session's socket is dead), the node re-registers and
//     reconciles: both containers READY again, the agent holds exactly the
//     broker's containers with their windows (nothing duplicated or leaked),
//     nothing is billed for the dead sessions, the broker's counters equal a
//     recount, and a new grant opens a new session that maps.
#include <signal.h>
#include <sys/wait.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/unique_fd.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "launcher/client.h"
#include "proto/agent.grpc.pb.h"
#include "proto/broker.grpc.pb.h"
#include "tests/chaos/chaos_util.h"
#include "tests/cluster.h"
#include "tests/launcher_process.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using chaos::Note;
using launcher::LauncherClient;
using testing::Call;
using testing::PollUntil;

constexpr char kTwoEdus[] = "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6";
constexpr char kDevA[] = "0000:00:04.0";
constexpr char kDevB[] = "0000:00:05.0";
constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr int kStopCycles = 3;
constexpr int kKillCycles = 2;

class AgentChaosTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    StartAgent();
    broker_ = cluster_.BrokerStub();
    v1::CreateTenantRequest t;
    t.set_tenant_id("acme");
    t.mutable_quota()->set_pinned_bytes(64 * kMiB);
    v1::Tenant out;
    ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::CreateTenant, t, &out).ok());
    c1_ = testing::CreateContainerWithWindow(broker_.get(), "acme", "n1", kDevA, 8 * kMiB, kMiB);
    c2_ = testing::CreateContainerWithWindow(broker_.get(), "acme", "n1", kDevB, 8 * kMiB, kMiB);
    ASSERT_FALSE(HasFailure());
    w1_ = WindowOf(c1_);
    w2_ = WindowOf(c2_);
  }

  // Without a journal (--state-dir=""): this suite proves that an agent whose
  // state does not survive it reconciles to an empty node without leaks;
  // tests/agent_restart_test.cc proves that a journaled one loses nothing.
  void StartAgent() {
    absl::Status s = cluster_.StartAgent("n1", kTwoEdus, {"--state-dir="});
    ASSERT_TRUE(s.ok()) << s << "\n" << cluster_.agent("n1").Log();
    agent_ = cluster_.AgentStub("n1");
  }

  std::string Socket() const { return cluster_.dir() + "/n1.sock"; }

  v1::Window WindowOf(const std::string& container) {
    v1::ListWindowsRequest req;
    req.set_container_id(container);
    v1::ListWindowsResponse out;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::ListWindows, req, &out);
    EXPECT_TRUE(s.ok() && out.windows_size() == 1) << s.error_message() << out.DebugString();
    return out.windows_size() ? out.windows(0) : v1::Window();
  }

  std::string Grant(const std::string& container) {
    v1::GrantLauncherRequest req;
    req.set_container_id(container);
    req.set_ttl_seconds(120);
    v1::GrantLauncherResponse out;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::GrantLauncher, req, &out);
    EXPECT_TRUE(s.ok()) << "GrantLauncher " << container << ": " << s.error_message();
    return out.token();
  }

  // iommu-launcher --hold on `container` with 1 MiB of memfd, half of it
  // mapped at the start of `window`; the token comes from the environment.
  void StartHoldingLauncher(testing::LauncherProcess* l, const std::string& container,
                            const v1::Window& window, const std::string& name) {
    absl::Status s = l->Start(
        {"--socket=" + Socket(), "--memfd=1Mi",
         absl::StrFormat("--map=0:0x80000@0x%x", window.base()), "--hold"},
        {"IOMMU_LAUNCHER_TOKEN=" + Grant(container)}, cluster_.dir() + "/" + name + ".err");
    ASSERT_TRUE(s.ok()) << s;
    s = l->WaitForLine("ready", absl::Seconds(10));
    ASSERT_TRUE(s.ok()) << s << "\nstdout:\n" << l->output() << "\nagent log:\n"
                        << cluster_.agent("n1").Log();
  }

  v1::GetInventoryResponse Inventory() {
    v1::GetInventoryResponse inv;
    grpc::Status s =
        Call(agent_.get(), &v1::Agent::Stub::GetInventory, v1::GetInventoryRequest(), &inv);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return inv;
  }

  int AgentMappings(const std::string& container) {
    v1::AgentGetContainerRequest req;
    req.set_container_id(container);
    v1::AgentGetContainerResponse out;
    grpc::Status s = Call(agent_.get(), &v1::Agent::Stub::GetContainer, req, &out);
    return s.ok() ? out.mappings_size() : -1;
  }

  v1::Node Node() {
    v1::GetNodeRequest req;
    req.set_node("n1");
    v1::Node out;
    EXPECT_TRUE(Call(broker_.get(), &v1::Broker::Stub::GetNode, req, &out).ok());
    return out;
  }

  // The broker and the agent agree, after a restart of the agent: both
  // containers READY, the agent holds exactly them with the broker's
  // windows, and the broker's counters equal a recount.
  void ExpectReconciled(const std::string& when) {
    SCOPED_TRACE(when);
    ExpectReconciledWithSessions(0);
  }

  // As ExpectReconciled, with `sessions` launcher sessions still open (and
  // billing, if any, left to the caller).
  void ExpectReconciledWithSessions(uint32_t sessions) {
    absl::StatusOr<chaos::Fleet> fleet = chaos::ReadSettledFleet(broker_.get());
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    for (const auto& [id, c] : fleet->containers) {
      EXPECT_EQ(c.state(), v1::CONTAINER_STATE_READY) << c.ShortDebugString();
    }
    std::set<std::string> listed;
    for (const auto& [id, c] : fleet->containers) listed.insert(id);
    EXPECT_EQ(listed, (std::set<std::string>{c1_, c2_})) << "duplicated or lost containers";
    const std::vector<std::string> violations = chaos::CheckFleet(*fleet);
    EXPECT_TRUE(violations.empty()) << absl::StrJoin(violations, "\n");
    EXPECT_EQ(fleet->nodes["n1"].state(), v1::NODE_STATE_READY);

    v1::GetInventoryResponse inv;
    PollUntil([&] {
      inv = Inventory();
      return inv.containers_size() == 2;
    });
    std::set<std::string> held;
    for (const auto& c : inv.containers()) {
      held.insert(c.id());
      EXPECT_EQ(c.tenant_id(), "acme") << c.ShortDebugString();
      EXPECT_EQ(c.pin_budget_bytes(), 8 * kMiB) << c.ShortDebugString();
    }
    EXPECT_EQ(held, listed) << "agent vs broker";
    EXPECT_EQ(inv.launcher().sessions(), sessions) << inv.launcher().ShortDebugString();
    // Nothing of dead sessions is held or billed.
    if (sessions == 0) {
      EXPECT_EQ(inv.usage_size(), 0) << inv.ShortDebugString();
    }
  }

  testing::Cluster cluster_;
  std::unique_ptr<v1::Broker::Stub> broker_;
  std::unique_ptr<v1::Agent::Stub> agent_;
  std::string c1_, c2_;
  v1::Window w1_, w2_;
};

TEST_F(AgentChaosTest, StoppedAgentKeepsSessionsAndKilledAgentReconcilesWithoutLeaks) {
  const absl::Time start = absl::Now();
  // Sessions: a --hold launcher on c1, a library session on c2.
  testing::LauncherProcess holder;
  StartHoldingLauncher(&holder, c1_, w1_, "holder");
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<std::unique_ptr<LauncherClient>> lib = LauncherClient::Connect(Socket());
  ASSERT_TRUE(lib.ok()) << lib.status();
  ASSERT_TRUE((*lib)->OpenSession(Grant(c2_)).ok());
  absl::StatusOr<UniqueFd> memfd = LauncherClient::CreateMemfd(kMiB, "guest");
  ASSERT_TRUE(memfd.ok()) << memfd.status();
  auto mem = (*lib)->RegisterMemory(memfd->get(), "guest");
  ASSERT_TRUE(mem.ok()) << mem.status();
  ASSERT_TRUE((*lib)->Map(mem->memory_id(), 0, 64 * kKiB, w2_.base(), true, true).ok());
  EXPECT_EQ(AgentMappings(c1_), 1);
  EXPECT_EQ(AgentMappings(c2_), 1);

  // --- SIGSTOP / SIGCONT, each shorter than the node timeout (1.5 s).
  const std::string address = cluster_.agent("n1").address();
  // 0.4-0.7 s stopped: under the node timeout, and beyond several
  // heartbeat intervals (100 ms).
  int maps_after_stop = 0;
  for (int cycle = 0; cycle < kStopCycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("stop cycle ", cycle));
    const int64_t before = Node().last_heartbeat_ms();
    ASSERT_EQ(kill(cluster_.agent("n1").pid(), SIGSTOP), 0);
    absl::SleepFor(absl::Milliseconds(400 + 150 * cycle));
    ASSERT_EQ(kill(cluster_.agent("n1").pid(), SIGCONT), 0);
    // Heartbeats resume; the node stays (or is again) READY at its address.
    EXPECT_TRUE(PollUntil([&] { return Node().last_heartbeat_ms() > before + 300; }))
        << Node().ShortDebugString();
    ASSERT_TRUE(cluster_.WaitForNodeState("n1", v1::NODE_STATE_READY).ok());
    EXPECT_EQ(Node().agent_address(), address);
    // Both sessions still work.
    EXPECT_TRUE(holder.Running()) << "the --hold launcher died:\n" << holder.output();
    EXPECT_EQ(AgentMappings(c1_), 1);
    absl::Status m = (*lib)->Map(mem->memory_id(), (cycle + 1) * 64 * kKiB, 64 * kKiB,
                                 w2_.base() + (cycle + 1) * 64 * kKiB, true, true);
    EXPECT_TRUE(m.ok()) << m;
    maps_after_stop += m.ok();
    auto listed = (*lib)->ListMappings();
    ASSERT_TRUE(listed.ok()) << listed.status();
    EXPECT_EQ(listed->size(), static_cast<size_t>(cycle + 2));
  }
  EXPECT_EQ(AgentMappings(c2_), kStopCycles + 1);
  Note(absl::StrFormat(
      "%d SIGSTOP/SIGCONT cycles (0.4-0.7 s): node READY at the same address each time, "
      "--hold launcher alive with its mapping, %d new maps on the library session succeeded",
      kStopCycles, maps_after_stop));

  // --- SIGKILL and restart.
  for (int cycle = 0; cycle < kKillCycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("kill cycle ", cycle));
    cluster_.agent("n1").Kill();
    // The old sessions are gone with the agent's end of their sockets.
    absl::StatusOr<int> exited = holder.WaitExit(absl::Seconds(10));
    ASSERT_TRUE(exited.ok()) << "the --hold launcher outlived its agent";
    EXPECT_FALSE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0)
        << "launcher exit " << *exited << ": " << holder.output();
    if (*lib != nullptr) {
      auto listed = (*lib)->ListMappings();
      EXPECT_EQ(listed.status().code(), absl::StatusCode::kUnavailable) << listed.status();
      lib->reset();
    }
    if (cycle == 0) {
      // Silent for longer than the node timeout: UNAVAILABLE, and so are
      // its containers.
      ASSERT_TRUE(cluster_.WaitForNodeState("n1", v1::NODE_STATE_UNAVAILABLE).ok());
      v1::GetContainerRequest gc;
      gc.set_container_id(c1_);
      v1::Container got;
      ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::GetContainer, gc, &got).ok());
      EXPECT_EQ(got.state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
    }
    // (cycle 1 restarts at once, before the broker notices the silence.)
    StartAgent();
    ASSERT_FALSE(HasFailure());
    ExpectReconciled(absl::StrCat("after kill -9 ", cycle));
    // A new grant opens a new session, which maps.
    StartHoldingLauncher(&holder, c1_, w1_, absl::StrCat("holder-", cycle));
    ASSERT_FALSE(HasFailure());
    EXPECT_EQ(AgentMappings(c1_), 1);
    EXPECT_EQ(AgentMappings(c2_), 0);
    // The agent knows c2's window again (pushed at reconcile): a new library
    // session maps inside it and is refused just past it.
    lib = LauncherClient::Connect(Socket());
    ASSERT_TRUE(lib.ok()) << lib.status();
    ASSERT_TRUE((*lib)->OpenSession(Grant(c2_)).ok());
    mem = (*lib)->RegisterMemory(memfd->get(), "guest");
    ASSERT_TRUE(mem.ok()) << mem.status();
    absl::Status inside = (*lib)->Map(mem->memory_id(), 0, 64 * kKiB, w2_.base(), true, true);
    EXPECT_TRUE(inside.ok()) << inside;
    absl::Status outside =
        (*lib)->Map(mem->memory_id(), 0, 64 * kKiB, w2_.base() + w2_.size(), true, true);
    EXPECT_FALSE(outside.ok()) << "a map past the window was accepted after the restart";
    v1::GetInventoryResponse inv = Inventory();
    EXPECT_EQ(inv.launcher().sessions(), 2u);
    ASSERT_EQ(inv.usage_size(), 1) << inv.ShortDebugString();
    EXPECT_EQ(inv.usage(0).billed_bytes(), 0x80000u + 64 * kKiB);
  }
  Note(absl::StrFormat(
      "%d kill -9 cycles: --hold launcher exited, library session UNAVAILABLE, node "
      "re-registered, 2 containers READY, agent == broker (no duplicate, no leak), 0 sessions "
      "and 0 bytes billed after restart, counters == recount, new grants opened new sessions "
      "that map inside the restored windows (and not past them); wall time %s",
      kKillCycles, absl::FormatDuration(absl::Now() - start)));
  holder.Kill();
}

// The other side of invariant 6: the broker is killed with SIGKILL (three
// times) while a launcher holds a session. The node's DMA must not notice:
// the --hold launcher keeps running with its mapping, the agent re-registers
// with each new broker and keeps its containers (the store lists them), and
// the broker's view is back to READY with counters equal to a recount.
TEST_F(AgentChaosTest, BrokerKill9LeavesLiveSessionsAndContainersAlone) {
  const absl::Time start = absl::Now();
  testing::LauncherProcess holder;
  StartHoldingLauncher(&holder, c1_, w1_, "holder");
  ASSERT_FALSE(HasFailure());
  for (int cycle = 0; cycle < 3; ++cycle) {
    SCOPED_TRACE(absl::StrCat("broker kill cycle ", cycle));
    broker_.reset();
    cluster_.broker().Kill();
    absl::SleepFor(absl::Milliseconds(100 * cycle));
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    broker_ = cluster_.BrokerStub();
    ASSERT_TRUE(cluster_.WaitForNodeState("n1", v1::NODE_STATE_READY).ok());
    ExpectReconciledWithSessions(/*sessions=*/1);
    EXPECT_TRUE(holder.Running()) << "the --hold launcher died:\n" << holder.output();
    EXPECT_EQ(AgentMappings(c1_), 1);
  }
  // Billing reached the new broker through heartbeats.
  EXPECT_TRUE(PollUntil([&] {
    absl::StatusOr<chaos::Fleet> f = chaos::ReadFleet(broker_.get());
    return f.ok() && f->usage.tenants_size() == 1 && f->usage.tenants(0).pinned_bytes() == 0x80000;
  })) << "the broker's usage never showed the session's 0x80000 pinned bytes";
  Note(absl::StrFormat(
      "3 broker kill -9 cycles with a --hold session: launcher alive with its mapping, node READY, "
      "agent == broker (2 containers), counters == recount, 0x80000 pinned bytes reported to the "
      "new broker; wall time %s",
      absl::FormatDuration(absl::Now() - start)));
  holder.Kill();
}

// Regression: the agent remembers used tokens only in memory and the grant
// key survives its restart, so a used token once opened a second session
// after kill -9 and a restart. Grants are now bound to the agent's run
// (LauncherGrant.agent_incarnation).
TEST_F(AgentChaosTest, TokenUsedBeforeAnAgentRestartOpensNoSessionAfterIt) {
  const std::string token = Grant(c1_);
  {
    absl::StatusOr<std::unique_ptr<LauncherClient>> first = LauncherClient::Connect(Socket());
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE((*first)->OpenSession(token).ok());
  }
  cluster_.agent("n1").Kill();
  StartAgent();
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(PollUntil([&] { return Inventory().containers_size() == 2; }));
  absl::StatusOr<std::unique_ptr<LauncherClient>> again = LauncherClient::Connect(Socket());
  ASSERT_TRUE(again.ok()) << again.status();
  auto opened = (*again)->OpenSession(token);
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kUnauthenticated)
      << "a used token opened a second session after the agent restarted: "
      << (opened.ok() ? opened->ShortDebugString() : opened.status().ToString());
}

}  // namespace
}  // namespace iommu
