// Broker replicas on a real etcd (--store=etcd://): one leader serves, the
// others stand by and forward the calls they take to it; when the leader
// dies (kill -9) or stops (SIGTERM), a standby takes over with every
// acknowledged change and every remembered answer; a leader deposed while
// paused can land nothing and stops. Real processes on loopback, etcd's data
// under TEST_TMPDIR.
#include <signal.h>
#include <sys/wait.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/tls.h"
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
  // The address `d` listens at (logged before it leads; its port file is
  // written once it serves as the leader), or "" before it listens.
  static std::string ListeningAddress(const Daemon& d) {
    const std::string log = d.Log();
    const size_t event = log.find("event=listening ");
    if (event == std::string::npos) return "";
    const size_t port = log.find(" port=", event);
    if (port == std::string::npos) return "";
    const size_t end = log.find_first_not_of("0123456789", port + 6);
    return "127.0.0.1:" + log.substr(port + 6, end - port - 6);
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
  EXPECT_EQ(b.port(), 0) << "a standby must not write its port file: it does not lead";
  const std::string standby = ListeningAddress(b);
  ASSERT_FALSE(standby.empty()) << b.Log();
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
    // Half through the leader, half through the standby, which forwards
    // them: every one lands in the leader's state, and a retry through the
    // other replica gets the first answer.
    auto leader = InsecureBrokerStub(a.address());
    auto forwarding = InsecureBrokerStub(standby);
    for (int i = 0; i < 20; ++i) {
      v1::Tenant out;
      const std::string id = absl::StrCat("t", i);
      grpc::Status s =
          CreateTenant(i % 2 == 0 ? leader.get() : forwarding.get(), id, 4096 * (i + 1), &out);
      ASSERT_TRUE(s.ok()) << s.error_message() << b.Log();
      acked[id] = out.quota().pinned_bytes();
    }
    EXPECT_EQ(TenantQuotas(leader.get()), acked);
    EXPECT_EQ(TenantQuotas(forwarding.get()), acked);
    v1::Tenant again;
    grpc::Status s = CreateTenant(forwarding.get(), "t2", 4096 * 3, &again);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(again.id(), "t2");
    // The standby found the leader's address in the leader key.
    EXPECT_TRUE(
        absl::StrContains(b.Log(), "event=standby leader=replica-a leader_address=" + a.address()))
        << b.Log();
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

// Agents and iommuctl are given every replica's address; whichever they
// reach answers (a standby by forwarding to the leader), and they carry on
// through a failover without being told.
TEST_F(BrokerHaTest, AnAgentAndIommuctlGivenEveryReplicaFollowTheLeader) {
  const int port_a = testing::PickFreePort();
  const int port_b = testing::PickFreePort();
  const std::string b_address = absl::StrCat("127.0.0.1:", port_b);
  const std::string replicas = absl::StrCat("127.0.0.1:", port_a, ",", b_address);
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
  // The standby alone: it forwards to the leader.
  testing::CommandResult via_standby = ctl({"--broker=" + b_address, "tenant", "get", "acme"});
  EXPECT_EQ(via_standby.exit_code, 0) << via_standby.err << b.Log();
  EXPECT_TRUE(absl::StrContains(via_standby.out, "acme")) << via_standby.out;

  a.Kill();
  // Right after the kill nothing serves until b's lease campaign wins (b
  // forwards to a dead leader): iommuctl rides through that by itself (client/call_retry.h), with
  // no retry by hand, and its mutation lands once.
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

// With mTLS a standby forwards each call as its caller's, not as its own
// (the broker's): the leader authorizes the caller, and a Watch is relayed.
TEST_F(BrokerHaTest, AStandbyForwardsEachCallWithItsCallersRights) {
  const std::string certs = dir_ + "/certs";
  testing::CommandResult issued = testing::RunCommand(
      {testing::RunfilePath("deploy/make-dev-certs.sh"), "--out", certs, "--tenant", "acme"});
  ASSERT_EQ(issued.exit_code, 0) << issued.err;
  auto launch = [&](Daemon* d, const std::string& replica) {
    std::vector<std::string> args = Args(replica);
    args.pop_back();  // --insecure
    args.push_back("--tls-cert=" + certs + "/broker.crt");
    args.push_back("--tls-key=" + certs + "/broker.key");
    args.push_back("--tls-ca=" + certs + "/ca.crt");
    return d->Launch(testing::RunfilePath("server/iommu-broker"), args, dir_, replica);
  };
  Daemon a, b;
  ASSERT_TRUE(launch(&a, "replica-a").ok());
  ASSERT_TRUE(a.WaitForPort().ok()) << a.Log();
  ASSERT_TRUE(launch(&b, "replica-b").ok());
  ASSERT_TRUE(WaitsBehind(b, "replica-a")) << b.Log();
  const std::string standby = ListeningAddress(b);
  ASSERT_FALSE(standby.empty()) << b.Log();
  auto stub_as = [&](const std::string& stem) {
    TransportConfig t;
    t.cert_file = absl::StrCat(certs, "/", stem, ".crt");
    t.key_file = absl::StrCat(certs, "/", stem, ".key");
    t.ca_file = certs + "/ca.crt";
    return v1::Broker::NewStub(
        grpc::CreateChannel(standby, MakeChannelCredentials(t, Identity{Role::kBroker, ""})));
  };
  auto op = stub_as("operator-admin");
  v1::Tenant out;
  ASSERT_TRUE(CreateTenant(op.get(), "acme", 1 << 20, &out).ok());
  ASSERT_TRUE(CreateTenant(op.get(), "other", 1 << 20, &out).ok());

  // The tenant reads its own tenant through the standby, and the leader
  // refuses it what only an operator may do, naming the tenant as caller.
  auto acme = stub_as("tenant-acme");
  grpc::ClientContext get_ctx;
  v1::GetTenantRequest get;
  get.set_tenant_id("acme");
  grpc::Status s = acme->GetTenant(&get_ctx, get, &out);
  EXPECT_TRUE(s.ok()) << s.error_message();
  grpc::ClientContext list_ctx;
  v1::ListTenantsResponse tenants;
  s = acme->ListTenants(&list_ctx, v1::ListTenantsRequest(), &tenants);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(), "ListTenants: needs the operator role; caller is tenant/acme");
  EXPECT_TRUE(absl::StrContains(a.Log(), "caller=tenant/acme")) << a.Log();

  // A watch through the standby sees a change made at the leader.
  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::WatchRequest watch;
  watch.add_kinds(v1::OBJECT_KIND_TENANT);
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> stream = op->Watch(&watch_ctx, watch);
  v1::WatchResponse first;
  ASSERT_TRUE(stream->Read(&first)) << stream->Finish().error_message();
  {
    auto direct = v1::Broker::NewStub(grpc::CreateChannel(
        a.address(),
        MakeChannelCredentials(TransportConfig{false, certs + "/operator-admin.crt",
                                               certs + "/operator-admin.key", certs + "/ca.crt"},
                               Identity{Role::kBroker, ""})));
    ASSERT_TRUE(CreateTenant(direct.get(), "watched", 1 << 20, &out).ok());
  }
  bool seen = false;
  v1::WatchResponse r;
  while (!seen && stream->Read(&r)) {
    for (const v1::WatchEvent& e : r.events()) seen |= e.tenant().id() == "watched";
  }
  EXPECT_TRUE(seen) << "the relayed watch did not show the change";
  // Stopping the standby ends the relayed watch at once, as retryable, not
  // cut by gRPC at the end of the grace.
  EXPECT_EQ(b.Stop(), 0) << b.Log();
  while (stream->Read(&r)) {
  }
  grpc::Status ended = stream->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAVAILABLE) << ended.error_message();
  EXPECT_TRUE(absl::StrContains(ended.error_message(), "is stopping; resume"))
      << ended.error_message();
  EXPECT_EQ(a.Stop(), 0) << a.Log();
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
           {"--store=etcd://nohost"},
           {"--store=zookeeper://x:1"},
           {"--store=etcd://" + etcd_.endpoint(), "--etcd-prefix=no-slash"},
           // Published in the leader key as "<name> <address>": no spaces.
           {"--store=etcd://" + etcd_.endpoint(), "--replica-name=two words"},
           {"--store=etcd://" + etcd_.endpoint(), "--advertise-address=host :7400"}}) {
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
