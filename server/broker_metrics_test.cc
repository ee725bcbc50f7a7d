// BrokerMetrics: the state gauges from a BrokerStats snapshot (pure), the
// snapshot a live Broker takes (Broker::Stats), store commits timed through
// TimedStore, and RPCs timed by the interceptor of common/rpc_metrics.h on a
// real (in-process) gRPC server. Asserts on the scrape text, as Prometheus
// would read it; never on timings.
#include "server/broker_metrics.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/rpc_metrics.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"
#include "server/test_nodes.h"
#include "server/timed_store.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;


TEST(BrokerMetricsTest, StateGaugesFromStats) {
  BrokerStats s;
  s.tenants.push_back({"acme", 1 << 30, 0, 2 << 20, 1 << 20, 3 << 20});
  s.containers_ready = 2;
  s.containers_failed = 1;
  s.windows = 3;
  s.nodes_ready = 1;
  s.nodes_unavailable = 1;
  s.nodes = {{"n1", true}, {"n2", false}};
  BrokerMetrics m;
  m.SetStatsSource([&] { return s; });
  const std::string text = m.ScrapeText();
  for (const char* want : {
           "iommu_broker_tenants 1\n",
           "iommu_broker_tenant_quota_pinned_bytes{tenant=\"acme\"} 1073741824\n",
           "iommu_broker_tenant_quota_window_bytes{tenant=\"acme\"} 0\n",
           "iommu_broker_tenant_reserved_bytes{tenant=\"acme\"} 2097152\n",
           "iommu_broker_tenant_pinned_bytes{tenant=\"acme\"} 1048576\n",
           "iommu_broker_tenant_mapped_bytes{tenant=\"acme\"} 3145728\n",
           "iommu_broker_containers{state=\"ready\"} 2\n",
           "iommu_broker_containers{state=\"node_unavailable\"} 0\n",
           "iommu_broker_containers{state=\"failed\"} 1\n",
           "iommu_broker_windows 3\n",
           "iommu_broker_nodes{state=\"ready\"} 1\n",
           "iommu_broker_nodes{state=\"cordoned\"} 0\n",
           "iommu_broker_nodes{state=\"unavailable\"} 1\n",
           "iommu_broker_registrations_waiting 0\n",
           "iommu_broker_node_up{node=\"n1\"} 1\n",
           "iommu_broker_node_up{node=\"n2\"} 0\n",
       }) {
    EXPECT_THAT(text, HasSubstr(want));
  }
}

TEST(BrokerMetricsTest, EventFamiliesAreListedBeforeTheirFirstSample) {
  BrokerMetrics m;
  const std::string text = m.ScrapeText();
  EXPECT_THAT(text, HasSubstr("# TYPE iommu_broker_rpc_duration_seconds histogram"));
  EXPECT_THAT(text, HasSubstr("# TYPE iommu_broker_authz_denials_total counter"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_store_commit_duration_seconds_count 0\n"));
  // No stats source yet: no state gauges, and no crash.
  EXPECT_THAT(text, Not(HasSubstr("iommu_broker_tenants")));
}

TEST(BrokerMetricsTest, CountsDenialsByMethodAndRole) {
  BrokerMetrics m;
  m.CountDenial("DeleteTenant", "tenant");
  m.CountDenial("DeleteTenant", "tenant");
  m.CountDenial("Register", "anonymous");
  const std::string text = m.ScrapeText();
  EXPECT_THAT(text, HasSubstr(
                        "iommu_broker_authz_denials_total{method=\"DeleteTenant\",role=\"tenant\"} 2\n"));
  EXPECT_THAT(text, HasSubstr(
                        "iommu_broker_authz_denials_total{method=\"Register\",role=\"anonymous\"} 1\n"));
}

TEST(BrokerMetricsTest, CountsLeaderChangesEtcdRoundTripsAndFencedWrites) {
  BrokerMetrics m;
  std::string text = m.ScrapeText();
  EXPECT_THAT(text, HasSubstr("iommu_broker_leader_changes_total 0\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_last_leader_change_timestamp_seconds 0\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_fenced_writes_total 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE iommu_broker_etcd_round_trip_seconds histogram"));

  m.CountLeaderChange(absl::FromUnixSeconds(1700000000));
  m.CountLeaderChange(absl::FromUnixSeconds(1700000100));
  m.ObserveEtcdCall("txn", absl::Milliseconds(3));
  m.ObserveEtcdCall("txn", absl::Milliseconds(30));
  m.ObserveEtcdCall("lease_keep_alive", absl::Microseconds(400));
  m.CountFencedWrite();
  text = m.ScrapeText();
  EXPECT_THAT(text, HasSubstr("iommu_broker_leader_changes_total 2\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_last_leader_change_timestamp_seconds 1700000100\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_fenced_writes_total 1\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_etcd_round_trip_seconds_count{op=\"txn\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_etcd_round_trip_seconds_bucket{op=\"txn\",le=\"0.005\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("iommu_broker_etcd_round_trip_seconds_count{op=\"lease_keep_alive\"} 1\n"));
}

// A live Broker on a TimedStore: the snapshot follows the broker's state and
// every commit is timed.
class LiveBrokerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics_ = std::make_shared<BrokerMetrics>();
    timed_ = std::make_unique<TimedStore>(
        &store_, [m = metrics_.get()](absl::Duration d) { m->ObserveStoreCommit(d); });
    BrokerOptions o;
    o.now_ms = [this] {
      absl::MutexLock l(&mu_);
      return now_ms_;
    };
    auto b = Broker::Create(timed_.get(), &agents_, o);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    metrics_->SetStatsSource([b = broker_.get()] { return b->Stats(); });
  }

  std::string RegisterNode(const std::string& name, const std::vector<std::string>& addresses) {
    std::vector<v1::Device> devices;
    uint32_t group = 1;
    for (const std::string& a : addresses) {
      v1::Device& d = devices.emplace_back();
      d.set_address(a);
      d.set_iommu_group(group++);
      d.set_vendor_id(0x1234);
      d.set_device_id(0x11e8);
      d.set_driver("vfio-pci");
      d.set_assignable(true);
    }
    absl::StatusOr<v1::RegisterResponse> resp = RegisterReadyNode(broker_.get(), name, devices);
    EXPECT_OK(resp);
    return resp.ok() ? resp->session_id() : "";
  }

  void Advance(int64_t ms) {
    absl::MutexLock l(&mu_);
    now_ms_ += ms;
  }

  absl::Mutex mu_;
  int64_t now_ms_ ABSL_GUARDED_BY(mu_) = 1'000'000;
  FakeStore store_;
  OkAgents agents_;
  std::shared_ptr<BrokerMetrics> metrics_;
  std::unique_ptr<TimedStore> timed_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(LiveBrokerMetricsTest, GaugesFollowTheBrokersState) {
  EXPECT_THAT(metrics_->ScrapeText(), HasSubstr("iommu_broker_tenants 0\n"));

  v1::CreateTenantRequest tr;
  tr.set_tenant_id("acme");
  tr.mutable_quota()->set_pinned_bytes(64 << 20);
  tr.mutable_quota()->set_window_bytes(16 << 20);
  v1::Tenant t;
  ASSERT_TRUE(broker_->CreateTenant(tr, &t).ok());
  const std::string session = RegisterNode("n1", {"0000:00:04.0", "0000:00:05.0"});
  RegisterNode("n2", {"0000:00:06.0"});

  v1::CreateContainerRequest cr;
  cr.set_tenant_id("acme");
  cr.set_node("n1");
  cr.add_devices("0000:00:04.0");
  v1::Container c;
  ASSERT_TRUE(broker_->CreateContainer(cr, &c).ok());
  v1::AllocateWindowRequest wr;
  wr.set_container_id(c.id());
  wr.set_size(2 << 20);
  v1::Window w;
  absl::Status s = broker_->AllocateWindow(wr, &w);
  ASSERT_TRUE(s.ok()) << s;

  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(session);
  v1::PinUsage* u = hb.add_usage();
  u->set_tenant_id("acme");
  u->set_billed_bytes(1 << 20);
  u->set_mapped_bytes(2 << 20);
  v1::HeartbeatResponse hbr;
  s = broker_->Heartbeat(hb, &hbr);
  ASSERT_TRUE(s.ok()) << s;

  v1::CordonNodeRequest cordon;
  cordon.set_node("n2");
  v1::Node n;
  ASSERT_TRUE(broker_->CordonNode(cordon, &n).ok());

  std::string text = metrics_->ScrapeText();
  for (const char* want : {
           "iommu_broker_tenants 1\n",
           "iommu_broker_tenant_quota_pinned_bytes{tenant=\"acme\"} 67108864\n",
           "iommu_broker_tenant_quota_window_bytes{tenant=\"acme\"} 16777216\n",
           "iommu_broker_tenant_reserved_bytes{tenant=\"acme\"} 2097152\n",
           "iommu_broker_tenant_pinned_bytes{tenant=\"acme\"} 1048576\n",
           "iommu_broker_tenant_mapped_bytes{tenant=\"acme\"} 2097152\n",
           "iommu_broker_containers{state=\"ready\"} 1\n",
           "iommu_broker_windows 1\n",
           "iommu_broker_nodes{state=\"ready\"} 1\n",
           "iommu_broker_nodes{state=\"cordoned\"} 1\n",
           "iommu_broker_nodes{state=\"unavailable\"} 0\n",
           "iommu_broker_node_up{node=\"n1\"} 1\n",
           "iommu_broker_node_up{node=\"n2\"} 1\n",
       }) {
    EXPECT_THAT(text, HasSubstr(want));
  }
  // Tenant, node n1, n2, container, window, cordon: every one committed.
  EXPECT_THAT(text, HasSubstr("iommu_broker_store_commit_duration_seconds_count 6\n"));

  // n1 stops heartbeating: the node is unavailable, its container too.
  Advance(10'000);
  broker_->CheckLiveness();
  text = metrics_->ScrapeText();
  for (const char* want : {
           "iommu_broker_containers{state=\"ready\"} 0\n",
           "iommu_broker_containers{state=\"node_unavailable\"} 1\n",
           "iommu_broker_nodes{state=\"unavailable\"} 2\n",
           "iommu_broker_node_up{node=\"n1\"} 0\n",
       }) {
    EXPECT_THAT(text, HasSubstr(want));
  }
}

TEST_F(LiveBrokerMetricsTest, FailedCommitIsTimedToo) {
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  v1::CreateTenantRequest tr;
  tr.set_tenant_id("acme");
  tr.mutable_quota()->set_pinned_bytes(1 << 20);
  v1::Tenant t;
  EXPECT_EQ(broker_->CreateTenant(tr, &t).code(), absl::StatusCode::kUnavailable);
  const std::string text = metrics_->ScrapeText();
  EXPECT_THAT(text, HasSubstr("iommu_broker_store_commit_duration_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_tenants 0\n"));
}

// A Broker service that knows one tenant; every other method is the
// generated UNIMPLEMENTED.
class OneTenantService final : public v1::Broker::Service {
  grpc::Status GetTenant(grpc::ServerContext*, const v1::GetTenantRequest* req,
                         v1::Tenant* out) override {
    if (req->tenant_id() != "acme") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "tenant_id: no tenant");
    }
    out->set_id("acme");
    return grpc::Status::OK;
  }
};

class RpcMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
    f.push_back(std::make_unique<RpcMetricsInterceptorFactory>(
        ServiceMethods({"iommu.v1.Broker"}),
        [m = &metrics_](absl::string_view method, absl::string_view code, absl::Duration d) {
          m->ObserveRpc(method, code, d);
        }));
    builder.experimental().SetInterceptorCreators(std::move(f));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = server_->InProcessChannel(grpc::ChannelArguments());
  }
  void TearDown() override { server_->Shutdown(); }

  grpc::Status GetTenant(const std::string& id) {
    auto stub = v1::Broker::NewStub(channel_);
    grpc::ClientContext ctx;
    v1::GetTenantRequest req;
    req.set_tenant_id(id);
    v1::Tenant out;
    return stub->GetTenant(&ctx, req, &out);
  }

  BrokerMetrics metrics_;
  OneTenantService service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(RpcMetricsTest, TimesEveryCallByShortMethodAndCode) {
  EXPECT_TRUE(GetTenant("acme").ok());
  EXPECT_TRUE(GetTenant("acme").ok());
  EXPECT_EQ(GetTenant("other").error_code(), grpc::StatusCode::NOT_FOUND);
  {
    auto stub = v1::Broker::NewStub(channel_);
    grpc::ClientContext ctx;
    v1::Tenant out;
    EXPECT_EQ(stub->CreateTenant(&ctx, v1::CreateTenantRequest(), &out).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  const std::string text = metrics_.ScrapeText();
  EXPECT_THAT(text, HasSubstr("iommu_broker_rpc_duration_seconds_count{code=\"OK\",method="
                              "\"GetTenant\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_rpc_duration_seconds_count{code=\"NOT_FOUND\","
                              "method=\"GetTenant\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_rpc_duration_seconds_count{code=\"UNIMPLEMENTED\","
                              "method=\"CreateTenant\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("iommu_broker_rpc_duration_seconds_bucket{code=\"OK\",method="
                              "\"GetTenant\",le=\"+Inf\"} 2\n"));
}

TEST_F(RpcMetricsTest, MadeUpMethodNamesShareOneLabel) {
  grpc::GenericStub generic(channel_);
  grpc::CompletionQueue cq;
  for (const char* method : {"/iommu.v1.Broker/NoSuchMethod", "/evil.Service/x1"}) {
    grpc::ClientContext ctx;
    grpc::ByteBuffer request, response;
    grpc::Status status;
    auto call = generic.PrepareUnaryCall(&ctx, method, request, &cq);
    call->StartCall();
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << method;
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  const std::string text = metrics_.ScrapeText();
  EXPECT_THAT(text, Not(HasSubstr("NoSuchMethod")));
  EXPECT_THAT(text, Not(HasSubstr("x1")));
  EXPECT_THAT(text, HasSubstr("iommu_broker_rpc_duration_seconds_count{code=\"UNIMPLEMENTED\","
                              "method=\"unknown\"} 2\n"));
}

TEST(RpcMetricsHelpersTest, NamesMethodsAndCodes) {
  EXPECT_EQ(ShortMethodName("/iommu.v1.Broker/CreateTenant"), "CreateTenant");
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(GrpcCodeName(99), "UNKNOWN");
  const std::set<std::string> methods = ServiceMethods({"iommu.v1.Broker", "no.such.Service"});
  EXPECT_TRUE(methods.count("/iommu.v1.Broker/CreateTenant"));
  EXPECT_TRUE(methods.count("/iommu.v1.Broker/GetUsage"));
}

}  // namespace
}  // namespace iommu
