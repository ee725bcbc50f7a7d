// Broker replicas on a real etcd (--store=etcd://): one leader serves, the
// others wait without serving; when the leader dies (kill -9) or stops
// (SIGTERM), a standby takes over with every acknowledged change and every
// remembered answer; a leader deposed while paused can land nothing and
// stops. Real processes on loopback, etcd's data under TEST_TMPDIR.
#include <signal.h>
#include <sys/wait.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "server/kv/etcd_kv_store.h"
#include "server/kv/kv_backed_store.h"
#include "tests/daemon.h"
#include "tests/etcd_process.h"
#include "tests/http_get.h"
#include "tests/metrics_testing.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using testing::Daemon;
using testing::InsecureBrokerStub;
using testing::TenantQuotas;

class BrokerHaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = etcd_.Start();
    ASSERT_TRUE(s.ok()) << s;
    dir_ = testing::NewTempDir("ha");
  }

  std::vector<std::string> Args(const std::string& replica) {
    return {"--listen=127.0.0.1:0",
            "--store=etcd://" + etcd_.endpoint(),
            "--etcd-prefix=/ha-test",
            "--replica-name=" + replica,
            "--leader-ttl-seconds=2",
            "--shutdown-grace-ms=500",
            "--metrics-address=127.0.0.1:0",
            "--insecure"};
  }
  // GET `path` on the metrics endpoint `d` logged.
  static absl::StatusOr<testing::HttpResponse> Get(const Daemon& d, const std::string& path) {
    absl::StatusOr<int> port = testing::MetricsPortFromLog(d.Log());
    if (!port.ok()) return port.status();
    return testing::HttpGet("127.0.0.1", *port, path);
  }
  absl::Status Launch(Daemon* d, const std::string& replica) {
    return d->Launch(testing::RunfilePath("server/iommu-broker"), Args(replica), dir_, replica);
  }
  // Waits until `d` logs that it is a standby behind `leader`.
  static bool WaitsBehind(const Daemon& d, const std::string& leader) {
    return testing::PollUntil([&] {
      return absl::StrContains(d.Log(), absl::StrCat("leader=", leader));
    }, absl::Seconds(30));
  }
  static grpc::Status CreateTenant(v1::Broker::Stub* stub, const std::string& id,
                                   uint64_t pinned, v1::Tenant* out) {
    v1::CreateTenantRequest req;
    req.set_request_id("create-" + id);
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(pinned);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return stub->CreateTenant(&ctx, req, out);
  }

  // Every remembered answer in etcd is under a lease that keeps it 24 h
  // plus the hour its lease takes answers (kv/kv_backed_store.h), so etcd
  // forgets it by itself.
  void ExpectAnswersUnderLeases() {
    kv::EtcdKvOptions o;
    o.endpoints = etcd_.endpoint();
    o.prefix = "/ha-test";
    absl::StatusOr<std::unique_ptr<kv::KvStore>> etcd = kv::OpenEtcdKvStore(o);
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    kv::RangeRequest all;
    all.key = kv::kRequestsPrefix;
    all.range_end = "/requests0";  // '0' follows '/': every key under the prefix.
    absl::StatusOr<kv::RangeResponse> answers = (*etcd)->Range(all);
    ASSERT_TRUE(answers.ok()) << answers.status();
    EXPECT_GE(answers->kvs.size(), 20u);
    for (const kv::KeyValue& kv : answers->kvs) {
      ASSERT_NE(kv.lease, 0) << kv.key;
      absl::StatusOr<kv::LeaseStatus> lease = (*etcd)->LeaseTimeToLive(kv.lease);
      ASSERT_TRUE(lease.ok()) << lease.status();
      EXPECT_EQ(lease->granted_ttl_seconds, 25 * 3600) << kv.key;
    }
  }

  testing::EtcdProcess etcd_;
  std::string dir_;
};

TEST_F(BrokerHaTest, AStandbyTakesOverWhenTheLeaderDiesOrStopsWithNothingLost) {
  Daemon a;
  ASSERT_TRUE(Launch(&a, "replica-a").ok());
  ASSERT_TRUE(a.WaitForPort().ok()) << a.Log();
  Daemon b;
  ASSERT_TRUE(Launch(&b, "replica-b").ok());
  ASSERT_TRUE(WaitsBehind(b, "replica-a")) << b.Log();
  EXPECT_EQ(b.port(), 0) << "a standby must not serve";
  // A standby is alive, not ready, and says it does not lead.
  absl::StatusOr<testing::HttpResponse> healthz = Get(b, "/healthz");
  ASSERT_TRUE(healthz.ok()) << healthz.status() << b.Log();
  EXPECT_EQ(healthz->status, 200) << healthz->body;
  absl::StatusOr<testing::HttpResponse> readyz = Get(b, "/readyz");
  ASSERT_TRUE(readyz.ok()) << readyz.status();
  EXPECT_EQ(readyz->status, 503) << readyz->body;
  absl::StatusOr<testing::HttpResponse> standby_metrics = Get(b, "/metrics");
  ASSERT_TRUE(standby_metrics.ok());
  EXPECT_TRUE(absl::StrContains(standby_metrics->body,
                                "iommu_broker_leader{replica=\"replica-b\",store=\"etcd\"} 0"))
      << standby_metrics->body;

  std::map<std::string, uint64_t> acked;
  {
    auto stub = InsecureBrokerStub(a.address());
    for (int i = 0; i < 20; ++i) {
      v1::Tenant out;
      const std::string id = absl::StrCat("t", i);
      grpc::Status s = CreateTenant(stub.get(), id, 4096 * (i + 1), &out);
      ASSERT_TRUE(s.ok()) << s.error_message();
      acked[id] = out.quota().pinned_bytes();
    }
  }
  a.Kill();  // kill -9: the standby takes over when the lease runs out.
  ASSERT_TRUE(b.WaitForPort().ok()) << b.Log();
  EXPECT_TRUE(absl::StrContains(b.Log(), "event=leading")) << b.Log();
  absl::StatusOr<testing::HttpResponse> leader_metrics = Get(b, "/metrics");
  ASSERT_TRUE(leader_metrics.ok());
  EXPECT_TRUE(absl::StrContains(leader_metrics->body,
                                "iommu_broker_leader{replica=\"replica-b\",store=\"etcd\"} 1"))
      << leader_metrics->body;
  // It won an election and talks to etcd.
  EXPECT_TRUE(absl::StrContains(leader_metrics->body, "iommu_broker_leader_changes_total 1\n"))
      << leader_metrics->body;
  EXPECT_TRUE(absl::StrContains(leader_metrics->body,
                                "iommu_broker_etcd_round_trip_seconds_count{op=\"txn\"}"))
      << leader_metrics->body;
  EXPECT_EQ(Get(b, "/readyz")->status, 200);
  // iommuctl says who leads.
  testing::CommandResult version = testing::RunCommand(
      {testing::RunfilePath("client/iommuctl"), "--broker=" + b.address(), "--insecure", "version"});
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_TRUE(absl::StrContains(version.out, "Leader: replica-b since "))
      << version.out;
  EXPECT_TRUE(absl::StrContains(version.out, "store etcd://" + etcd_.endpoint())) << version.out;
  testing::CommandResult top = testing::RunCommand(
      {testing::RunfilePath("client/iommuctl"), "--broker=" + b.address(), "--insecure", "top"});
  EXPECT_EQ(top.exit_code, 0) << top.err;
  EXPECT_TRUE(absl::StrContains(top.out, "replica-b since ")) << top.out;
  auto stub = InsecureBrokerStub(b.address());
  EXPECT_EQ(TenantQuotas(stub.get()), acked);
  // A retry of a request the dead leader acknowledged gets its answer.
  v1::Tenant again;
  grpc::Status s = CreateTenant(stub.get(), "t3", 4096 * 4, &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.id(), "t3");
  ASSERT_TRUE(CreateTenant(stub.get(), "after-failover", 1 << 20, &again).ok());
  acked["after-failover"] = 1 << 20;

  // The old leader comes back as a standby; stopping the leader hands over
  // at once (its lease is revoked).
  Daemon a2;
  ASSERT_TRUE(Launch(&a2, "replica-a").ok());
  ASSERT_TRUE(WaitsBehind(a2, "replica-b")) << a2.Log();
  stub.reset();
  EXPECT_EQ(b.Stop(), 0) << b.Log();
  ASSERT_TRUE(a2.WaitForPort().ok()) << a2.Log();
  auto stub2 = InsecureBrokerStub(a2.address());
  EXPECT_EQ(TenantQuotas(stub2.get()), acked);
  // b stopped cleanly and its answers' leases outlived it: a retry of what
  // b acknowledged replays (a second create would be ALREADY_EXISTS).
  ASSERT_TRUE(CreateTenant(stub2.get(), "after-failover", 1 << 20, &again).ok());
  EXPECT_EQ(again.id(), "after-failover");
  ExpectAnswersUnderLeases();
  stub2.reset();
  EXPECT_EQ(a2.Stop(), 0) << a2.Log();
}

TEST_F(BrokerHaTest, ALeaderDeposedWhilePausedLandsNothingAndStops) {
  Daemon a;
  ASSERT_TRUE(Launch(&a, "replica-a").ok());
  ASSERT_TRUE(a.WaitForPort().ok()) << a.Log();
  auto stub_a = InsecureBrokerStub(a.address());
  v1::Tenant out;
  ASSERT_TRUE(CreateTenant(stub_a.get(), "before", 4096, &out).ok());
  Daemon b;
  ASSERT_TRUE(Launch(&b, "replica-b").ok());
  ASSERT_TRUE(WaitsBehind(b, "replica-a")) << b.Log();

  // Paused past its lease: b takes over and writes.
  kill(a.pid(), SIGSTOP);
  ASSERT_TRUE(b.WaitForPort().ok()) << b.Log();
  auto stub_b = InsecureBrokerStub(b.address());
  ASSERT_TRUE(CreateTenant(stub_b.get(), "by-b", 8192, &out).ok());

  // a wakes up still believing it leads. Whatever it was about to write
  // cannot land: the write is fenced by the leader key.
  kill(a.pid(), SIGCONT);
  grpc::Status late = CreateTenant(stub_a.get(), "by-deposed-a", 4096, &out);
  EXPECT_FALSE(late.ok()) << "a deposed leader acknowledged a write";
  std::map<std::string, uint64_t> want = {{"before", 4096}, {"by-b", 8192}};
  EXPECT_EQ(TenantQuotas(stub_b.get()), want);
  // And it notices and stops with a failure, for its supervisor to restart
  // it as a standby.
  stub_a.reset();
  const int status = a.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << a.Log();
  EXPECT_TRUE(absl::StrContains(a.Log(), "leadership_lost")) << a.Log();
  stub_b.reset();
  EXPECT_EQ(b.Stop(), 0) << b.Log();
}

// Agents and iommuctl are given every replica's address; only the leader
// listens, and they follow it through a failover without being told.
TEST_F(BrokerHaTest, AnAgentAndIommuctlGivenEveryReplicaFollowTheLeader) {
  const int port_a = testing::PickFreePort();
  const int port_b = testing::PickFreePort();
  const std::string replicas = absl::StrCat("127.0.0.1:", port_a, ",127.0.0.1:", port_b);
  auto start = [&](Daemon* d, const std::string& name, int port) {
    std::vector<std::string> args = Args(name);
    args[0] = absl::StrCat("--listen=127.0.0.1:", port);
    // Short node liveness, so that a node the new leader never hears from
    // would show as UNAVAILABLE within the test.
    args.push_back("--heartbeat-interval-ms=200");
    args.push_back("--node-timeout-ms=2000");
    return d->Launch(testing::RunfilePath("server/iommu-broker"), args, dir_, name);
  };
  Daemon a, b;
  ASSERT_TRUE(start(&a, "replica-a", port_a).ok());
  ASSERT_TRUE(a.WaitForPort().ok()) << a.Log();
  ASSERT_TRUE(start(&b, "replica-b", port_b).ok());
  ASSERT_TRUE(WaitsBehind(b, "replica-a")) << b.Log();

  Daemon agent;
  ASSERT_TRUE(agent
                  .Start(testing::RunfilePath("agent/iommu-agent"),
                         {"--node=n1", "--broker=" + replicas, "--listen=127.0.0.1:0",
                          "--backend=sim", "--sim-devices=0000:00:04.0=1234:11e8@4",
                          "--launcher-socket=" + dir_ + "/n1.sock",
                          "--state-dir=" + dir_ + "/n1.state", "--insecure",
                          "--registration-max-backoff=200ms"},
                         dir_, "agent-n1")
                  .ok())
      << agent.Log();
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {testing::RunfilePath("client/iommuctl"), "--broker=" + replicas,
                               "--insecure"});
    return testing::RunCommand(args);
  };
  auto node_ready = [&] {
    testing::CommandResult r = ctl({"node", "list"});
    return r.exit_code == 0 && absl::StrContains(r.out, "n1") && absl::StrContains(r.out, " ready");
  };
  ASSERT_TRUE(testing::PollUntil(node_ready, absl::Seconds(30))) << agent.Log();
  testing::CommandResult created = ctl({"tenant", "create", "acme", "--pinned=1Gi"});
  ASSERT_EQ(created.exit_code, 0) << created.err;

  a.Kill();
  // Right after the kill no replica listens until b's lease campaign wins:
  // iommuctl rides through that by itself (client/call_retry.h), with no
  // retry by hand, and its mutation lands once.
  testing::CommandResult during =
      ctl({"--timeout=30s", "tenant", "create", "during-failover", "--pinned=1Gi"});
  EXPECT_EQ(during.exit_code, 0) << during.err << b.Log();
  ASSERT_TRUE(b.WaitForPort().ok()) << b.Log();
  // The same command line reaches the new leader, and the agent has
  // registered with it by itself.
  ASSERT_TRUE(testing::PollUntil(node_ready, absl::Seconds(30))) << agent.Log() << b.Log();
  testing::CommandResult listed = ctl({"tenant", "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_TRUE(absl::StrContains(listed.out, "acme")) << listed.out;
  EXPECT_TRUE(absl::StrContains(listed.out, "during-failover")) << listed.out;

  testing::CommandResult bad = ctl({"--broker=127.0.0.1:1,nohost", "tenant", "list"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(bad.err, "--broker")) << bad.err;
  // The new leader did not know the agent's session: it registered again.
  EXPECT_TRUE(absl::StrContains(agent.Log(), "event=session_lost")) << agent.Log();
  agent.Stop();
  EXPECT_EQ(b.Stop(), 0) << b.Log();
}

// From the embedded SQLite file to etcd: iommu-store-migrate moves
// everything, says what, and refuses a running source or a non-empty
// destination.
TEST_F(BrokerHaTest, AFleetMovesFromSqliteToEtcdWithNothingLost) {
  const std::string db = dir_ + "/broker.db";
  Daemon single;
  ASSERT_TRUE(single
                  .Start(testing::RunfilePath("server/iommu-broker"),
                         {"--listen=127.0.0.1:0", "--store=sqlite:" + db, "--insecure",
                          "--shutdown-grace-ms=500"},
                         dir_, "single")
                  .ok())
      << single.Log();
  std::map<std::string, uint64_t> acked;
  {
    auto stub = InsecureBrokerStub(single.address());
    for (int i = 0; i < 7; ++i) {
      v1::Tenant out;
      ASSERT_TRUE(CreateTenant(stub.get(), absl::StrCat("m", i), 4096 << i, &out).ok());
      acked[out.id()] = out.quota().pinned_bytes();
    }
  }
  const std::vector<std::string> migrate = {
      testing::RunfilePath("server/iommu-store-migrate"), "--from=sqlite:" + db,
      "--to=etcd://" + etcd_.endpoint(), "--etcd-prefix=/migrated", "--batch-records=3"};
  testing::CommandResult busy = testing::RunCommand(migrate);
  EXPECT_EQ(busy.exit_code, 1) << "the source is in use: " << busy.out << busy.err;
  EXPECT_EQ(single.Stop(), 0);

  testing::CommandResult moved = testing::RunCommand(migrate);
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  EXPECT_TRUE(absl::StrContains(moved.out, "moved 7 records (tenant: 7) in 3 batches"))
      << moved.out;
  testing::CommandResult again = testing::RunCommand(migrate);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(again.err, "holds 7 records already")) << again.err;

  Daemon on_etcd;
  std::vector<std::string> args = Args("replica-a");
  args[2] = "--etcd-prefix=/migrated";
  ASSERT_TRUE(on_etcd.Start(testing::RunfilePath("server/iommu-broker"), args, dir_, "on-etcd")
                  .ok())
      << on_etcd.Log();
  auto stub = InsecureBrokerStub(on_etcd.address());
  EXPECT_EQ(TenantQuotas(stub.get()), acked);
  stub.reset();
  EXPECT_EQ(on_etcd.Stop(), 0);
}

TEST_F(BrokerHaTest, BadStoreFlagsAreRefusedAtStart) {
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--store=etcd://nohost"}, {"--store=zookeeper://x:1"},
           {"--store=etcd://" + etcd_.endpoint(), "--etcd-prefix=no-slash"}}) {
    std::vector<std::string> argv = {testing::RunfilePath("server/iommu-broker"),
                                     "--listen=127.0.0.1:0", "--insecure"};
    argv.insert(argv.end(), bad.begin(), bad.end());
    testing::CommandResult r = testing::RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << bad[0] << ": " << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, bad.back().substr(2, bad.back().find('=') - 2)))
        << r.err;
  }
}

}  // namespace
}  // namespace iommu
