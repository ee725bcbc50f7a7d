// Failover under load: 3 broker replicas on a real 3-member etcd cluster, a
// sim agent and concurrent clients that write with request ids through every
// replica's address and retry until acknowledged. The leader is killed with
// SIGKILL again and again; then one etcd member, then two.
//
// Proven: no acknowledged mutation is lost; a retry returns the first
// answer (same quota, same window); nothing unacknowledged is half-applied;
// no two windows overlap; the agent stays registered; one etcd member down
// changes nothing, two down give clear errors and no corruption, and the
// service comes back with them. The takeover times are printed (a
// benchmark, bench/, measures them; nothing here asserts a time).
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <iostream>
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/broker_target.h"
#include "common/reconnect.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/daemon.h"
#include "tests/etcd_cluster.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using testing::Daemon;

constexpr int kBrokers = 3;
constexpr int kTenantWriters = 4;
constexpr int kKills = 3;

class BrokerFailoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = etcd_.Start(3);
    ASSERT_TRUE(s.ok()) << s;
    dir_ = testing::NewTempDir("failover");
    std::vector<std::string> addresses;
    for (int i = 0; i < kBrokers; ++i) {
      ports_[i] = testing::PickFreePort();
      addresses.push_back(absl::StrCat("127.0.0.1:", ports_[i]));
    }
    replicas_ = absl::StrJoin(addresses, ",");
    absl::StatusOr<std::string> target = BrokerTarget("--broker", replicas_);
    ASSERT_TRUE(target.ok()) << target.status();
    target_ = *target;
  }

  absl::Status LaunchBroker(int i) {
    return brokers_[i].Launch(
        testing::RunfilePath("server/iommu-broker"),
        {absl::StrCat("--listen=127.0.0.1:", ports_[i]), "--store=etcd://" + etcd_.endpoints(),
         "--etcd-prefix=/failover", absl::StrCat("--replica-name=b", i),
         "--leader-ttl-seconds=2", "--shutdown-grace-ms=500", "--heartbeat-interval-ms=200",
         "--node-timeout-ms=5000", "--insecure"},
        dir_, absl::StrCat("b", i));
  }

  // The replica that leads, or -1. Every replica answers GetVersion (a
  // standby forwards it), so the answer's replica name says which one leads.
  int Leader() {
    for (int i = 0; i < kBrokers; ++i) {
      if (brokers_[i].pid() <= 0) continue;
      auto stub = testing::InsecureBrokerStub(absl::StrCat("127.0.0.1:", ports_[i]));
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
      v1::GetVersionResponse v;
      if (!stub->GetVersion(&ctx, v1::GetVersionRequest(), &v).ok()) continue;
      for (int j = 0; j < kBrokers; ++j) {
        if (v.replica() == absl::StrCat("b", j) && brokers_[j].pid() > 0) return j;
      }
      return -1;
    }
    return -1;
  }

  // Whether replica i's running process took the lead: every start logs
  // event=listening, and a replica logs event=serving once it leads (the
  // log holds every start of the replica, so only what follows the last
  // event=listening counts). A second opinion on Leader(): a kill of a
  // standby taken for the leader would test forwarding, not failover.
  bool Led(int i) {
    const std::string log = brokers_[i].Log();
    const size_t start = log.rfind("event=listening ");
    return start != std::string::npos && log.find("event=serving ", start) != std::string::npos;
  }

  // The end of every broker's log, for failure messages.
  std::string Tails() {
    std::string out;
    for (int i = 0; i < kBrokers; ++i) {
      std::string log = brokers_[i].Log();
      std::vector<std::string> lines = absl::StrSplit(log, '\n');
      const size_t from = lines.size() > 12 ? lines.size() - 12 : 0;
      absl::StrAppend(&out, "--- b", i, "\n",
                      absl::StrJoin(lines.begin() + from, lines.end(), "\n"), "\n");
    }
    return out;
  }

  // As an orchestrator should connect: every replica's address, and a short
  // reconnect backoff (gRPC's default grows to minutes while no replica
  // listens, which would stretch a failover far past the new leader's start).
  std::unique_ptr<v1::Broker::Stub> Client() {
    grpc::ChannelArguments args;
    SetReconnectBackoff(absl::Milliseconds(100), absl::Milliseconds(500), &args);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return v1::Broker::NewStub(
        grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args));
  }

  // One write, retried with its request id until acknowledged or `give_up`.
  template <typename Req, typename Resp, typename Method>
  bool Retry(v1::Broker::Stub* stub, Method method, const Req& req, Resp* out,
             const std::atomic<bool>& give_up, int* attempts,
             absl::Time deadline = absl::InfiniteFuture()) {
    while (!give_up && absl::Now() < deadline) {
      ++*attempts;
      grpc::ClientContext ctx;
      // wait_for_ready: a fail-fast call on a channel in TRANSIENT_FAILURE
      // fails at once and leaves the reconnect to gRPC's backup poller
      // (every 5 s), which stretched a failover to 8-28 s; a waiting call
      // drives the connection to the new leader itself.
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      ctx.set_wait_for_ready(true);
      grpc::Status s = (stub->*method)(&ctx, req, out);
      if (s.ok()) return true;
      // A refusal that is not about availability (UNAVAILABLE covers a
      // deposed leader's fenced write and a stopping replica's refusal) is a
      // bug of the broker (e.g. a retry refused as a different request).
      // ABORTED "in flight": the retry overtook its own first attempt (its
      // deadline passed while a slow commit went on); the broker says to
      // retry after it finishes. CANCELLED (this client never cancels):
      // gRPC's answer to a call that reached a replica as it shut down, after
      // its gate closed (server/call_gate.h).
      const bool overtaken = s.error_code() == grpc::StatusCode::ABORTED &&
                             absl::StrContains(s.error_message(), "in flight");
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
          s.error_code() != grpc::StatusCode::CANCELLED && !overtaken) {
        ADD_FAILURE() << "refused: " << s.error_code() << " " << s.error_message();
        return false;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  testing::EtcdCluster etcd_;
  std::string dir_;
  int ports_[kBrokers] = {};
  Daemon brokers_[kBrokers];
  std::string replicas_;
  std::string target_;
};

TEST_F(BrokerFailoverTest, KillingTheLeaderUnderLoadLosesNothingAndEtcdMembersMayFail) {
  for (int i = 0; i < kBrokers; ++i) ASSERT_TRUE(LaunchBroker(i).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return Leader() >= 0; }, absl::Seconds(30)));

  Daemon agent;
  ASSERT_TRUE(agent
                  .Start(testing::RunfilePath("agent/iommu-agent"),
                         {"--node=n1", "--broker=" + replicas_, "--listen=127.0.0.1:0",
                          "--backend=sim", "--sim-devices=0000:00:04.0=1234:11e8@4",
                          "--launcher-socket=" + dir_ + "/n1.sock",
                          "--state-dir=" + dir_ + "/n1.state", "--insecure",
                          "--registration-max-backoff=200ms"},
                         dir_, "agent-n1")
                  .ok())
      << agent.Log();
  auto setup = Client();
  std::atomic<bool> never{false};
  int ignored = 0;
  v1::Tenant t;
  v1::CreateTenantRequest tr;
  tr.set_request_id("setup-tenant");
  tr.set_tenant_id("windows");
  tr.mutable_quota()->set_pinned_bytes(1ull << 30);
  ASSERT_TRUE(Retry(setup.get(), &v1::Broker::Stub::CreateTenant, tr, &t, never, &ignored));
  v1::CreateContainerRequest cr;
  cr.set_request_id("setup-container");
  cr.set_tenant_id("windows");
  cr.set_node("n1");
  cr.add_devices("0000:00:04.0");
  v1::Container container;
  ASSERT_TRUE(testing::PollUntil(
      [&] {
        grpc::ClientContext ctx;
        return setup->CreateContainer(&ctx, cr, &container).ok();
      },
      absl::Seconds(30)))
      << agent.Log();

  absl::Mutex mu;
  std::map<std::string, uint64_t> acked;             // tenant -> quota
  std::map<std::string, v1::Window> acked_windows;   // request id -> window
  std::vector<std::string> in_flight;                // unacknowledged at the stop
  absl::Time last_ack = absl::Now();
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < kTenantWriters; ++w) {
    writers.emplace_back([&, w] {
      auto stub = Client();
      for (int n = 0; !stop; ++n) {
        v1::CreateTenantRequest req;
        req.set_request_id(absl::StrCat("w", w, "-", n));
        req.set_tenant_id(absl::StrCat("w", w, "-", n));
        req.mutable_quota()->set_pinned_bytes(4096ull * (n + 1));
        v1::Tenant out;
        int attempts = 0;
        if (!Retry(stub.get(), &v1::Broker::Stub::CreateTenant, req, &out, stop, &attempts)) {
          absl::MutexLock l(&mu);
          in_flight.push_back(req.tenant_id());
          return;
        }
        EXPECT_EQ(out.quota().pinned_bytes(), req.quota().pinned_bytes()) << "not the first answer";
        absl::MutexLock l(&mu);
        acked[out.id()] = out.quota().pinned_bytes();
        last_ack = absl::Now();
      }
    });
  }
  writers.emplace_back([&] {
    auto stub = Client();
    for (int n = 0; n < 40 && !stop; ++n) {
      v1::AllocateWindowRequest req;
      req.set_request_id(absl::StrCat("win-", n));
      req.set_container_id(container.id());
      req.set_size(4096);
      v1::Window out;
      int attempts = 0;
      if (!Retry(stub.get(), &v1::Broker::Stub::AllocateWindow, req, &out, stop, &attempts)) {
        return;
      }
      absl::MutexLock l(&mu);
      acked_windows[req.request_id()] = out;
      absl::SleepFor(absl::Milliseconds(100));
    }
  });

  std::vector<double> takeover_s;
  for (int k = 0; k < kKills; ++k) {
    absl::SleepFor(absl::Seconds(2));
    int leader = -1;
    ASSERT_TRUE(testing::PollUntil([&] { return (leader = Leader()) >= 0; }, absl::Seconds(30)))
        << brokers_[0].Log() << brokers_[1].Log() << brokers_[2].Log();
    // The leader answers as soon as it leads and logs event=serving just
    // after: a short wait for the line.
    ASSERT_TRUE(testing::PollUntil([&] { return Led(leader); }, absl::Seconds(10)))
        << "replica b" << leader << " does not lead\n"
        << Tails();
    const absl::Time killed = absl::Now();
    brokers_[leader].Kill();
    // Takeover: from the kill to the first write started after it and
    // acknowledged.
    auto probe = Client();
    v1::CreateTenantRequest req;
    req.set_request_id(absl::StrCat("probe-", k));
    req.set_tenant_id(absl::StrCat("probe-", k));
    req.mutable_quota()->set_pinned_bytes(4096);
    v1::Tenant out;
    int attempts = 0;
    ASSERT_TRUE(Retry(probe.get(), &v1::Broker::Stub::CreateTenant, req, &out, never, &attempts,
                      absl::Now() + absl::Seconds(60)))
        << Tails();
    takeover_s.push_back(absl::ToDoubleSeconds(absl::Now() - killed));
    {
      absl::MutexLock l(&mu);
      acked[out.id()] = out.quota().pinned_bytes();
    }
    ASSERT_TRUE(LaunchBroker(leader).ok());  // Back as a standby.
  }

  // One etcd member down: writes go on.
  etcd_.Kill(2);
  const absl::Time member_down = absl::Now();
  ASSERT_TRUE(testing::PollUntil(
      [&] {
        absl::MutexLock l(&mu);
        return last_ack > member_down + absl::Milliseconds(500);
      },
      absl::Seconds(30)));
  stop = true;
  for (std::thread& t : writers) t.join();

  // Two down: no quorum. A write is refused with a clear error, not hung
  // and not half-done.
  etcd_.Kill(1);
  {
    auto stub = Client();
    v1::CreateTenantRequest req;
    req.set_request_id("no-quorum");
    req.set_tenant_id("no-quorum");
    req.mutable_quota()->set_pinned_bytes(4096);
    v1::Tenant out;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    grpc::Status s = stub->CreateTenant(&ctx, req, &out);
    EXPECT_FALSE(s.ok());
    // CANCELLED: the call reached the leader just as it shut down, its
    // lease lost (documented as "retry", like the rest).
    EXPECT_TRUE(s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                s.error_code() == grpc::StatusCode::CANCELLED)
        << s.error_code() << " " << s.error_message();
  }
  // Both back: the service recovers by itself (a leader that lost its lease
  // meanwhile exits and a standby takes over).
  ASSERT_TRUE(etcd_.Restart(1).ok());
  ASSERT_TRUE(etcd_.Restart(2).ok());
  auto stub = Client();
  std::atomic<bool> give_up{false};
  std::thread deadline([&] {
    absl::SleepFor(absl::Seconds(60));
    give_up = true;
  });
  v1::CreateTenantRequest after;
  after.set_request_id("after-recovery");
  after.set_tenant_id("after-recovery");
  after.mutable_quota()->set_pinned_bytes(4096);
  v1::Tenant out;
  int attempts = 0;
  // A replica that exited (leadership lost without quorum) is started again,
  // as its supervisor would.
  bool recovered = false;
  while (!give_up && !recovered) {
    for (int i = 0; i < kBrokers; ++i) {
      if (brokers_[i].pid() <= 0) {
        ASSERT_TRUE(LaunchBroker(i).ok());
      }
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
    ++attempts;
    recovered = stub->CreateTenant(&ctx, after, &out).ok();
    if (!recovered) absl::SleepFor(absl::Milliseconds(200));
    for (int i = 0; i < kBrokers; ++i) {
      int status = 0;
      if (brokers_[i].pid() > 0 && waitpid(brokers_[i].pid(), &status, WNOHANG) > 0) {
        brokers_[i].Wait();
      }
    }
  }
  give_up = true;
  deadline.join();
  ASSERT_TRUE(recovered) << "no write acknowledged after etcd's quorum returned\n"
                         << Tails();

  // Nothing acknowledged lost, nothing else there but what was in flight.
  std::map<std::string, uint64_t> seen = testing::TenantQuotas(stub.get());
  seen.erase("windows");
  seen.erase("after-recovery");
  seen.erase("no-quorum");  // Refused, or committed just as quorum went.
  for (const std::string& id : in_flight) seen.erase(id);
  EXPECT_EQ(seen, acked);
  EXPECT_GT(acked.size(), 20u);

  // Windows: every acknowledged one is there, no two overlap.
  v1::ListWindowsRequest lw;
  lw.set_container_id(container.id());
  v1::ListWindowsResponse windows;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->ListWindows(&ctx, lw, &windows).ok());
  std::map<std::string, v1::Window> by_id;
  for (const v1::Window& w : windows.windows()) by_id[w.id()] = w;
  for (const auto& [req, w] : acked_windows) {
    ASSERT_TRUE(by_id.count(w.id())) << req;
    EXPECT_EQ(by_id[w.id()].base(), w.base()) << req;
  }
  std::vector<v1::Window> sorted(windows.windows().begin(), windows.windows().end());
  std::sort(sorted.begin(), sorted.end(),
            [](const v1::Window& a, const v1::Window& b) { return a.base() < b.base(); });
  for (size_t i = 1; i < sorted.size(); ++i) {
    EXPECT_LE(sorted[i - 1].base() + sorted[i - 1].size(), sorted[i].base()) << "overlap";
  }
  // The agent followed every leader.
  EXPECT_EQ(agent.pid() > 0 && kill(agent.pid(), 0) == 0, true) << agent.Log();

  std::vector<std::string> shown;
  for (double s : takeover_s) shown.push_back(absl::StrFormat("%.2f", s));
  std::cout << "failover: kill -9 of the leader to the next acknowledged write: "
            << absl::StrJoin(shown, " s, ") << " s (" << acked.size() << " tenants, "
            << acked_windows.size() << " windows acknowledged)\n";
  RecordProperty("takeover_seconds", absl::StrJoin(shown, ","));
}

}  // namespace
}  // namespace iommu
