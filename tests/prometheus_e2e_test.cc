// The daemons' metrics as a real Prometheus sees them: a broker and a
// simulated agent with --metrics-address, Debian's /usr/bin/prometheus
// scraping both every second, a scenario through the broker API and the
// launcher socket (one tenant, two containers with a window each, the same
// guest memory mapped into both), then the values read back through
// Prometheus's HTTP query API (docs/METRICS.md names).
#include <fcntl.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "launcher/client.h"
#include "proto/broker.grpc.pb.h"
#include "tests/cluster.h"
#include "tests/metrics_testing.h"

namespace iommu {
namespace {

using launcher::LauncherClient;
using testing::Cluster;
using testing::PrometheusProcess;
using testing::PromSample;

constexpr char kTwoEdus[] = "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6";
constexpr uint64_t kMiB = 1024 * 1024;

template <typename Req, typename Resp, typename Method>
grpc::Status Call(v1::Broker::Stub* stub, Method method, const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return (stub->*method)(&ctx, req, resp);
}

std::string Describe(const absl::StatusOr<std::vector<PromSample>>& got) {
  if (!got.ok()) return got.status().ToString();
  std::vector<std::string> parts;
  for (const PromSample& s : *got) {
    std::vector<std::string> labels;
    for (const auto& [k, v] : s.labels) labels.push_back(absl::StrCat(k, "=\"", v, "\""));
    parts.push_back(absl::StrCat("{", absl::StrJoin(labels, ","), "} ", s.value));
  }
  return parts.empty() ? "(no samples)" : absl::StrJoin(parts, "; ");
}

class PrometheusE2eTest : public ::testing::Test {
 protected:
  // Both daemons pick a free metrics port (port 0) and log it.
  PrometheusE2eTest() : cluster_(Options()) {}

  static testing::ClusterOptions Options() {
    testing::ClusterOptions o;
    o.broker_args = {"--metrics-address=127.0.0.1:0"};
    return o;
  }

  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    absl::Status s = cluster_.StartAgent("n1", kTwoEdus, {"--metrics-address=127.0.0.1:0"});
    ASSERT_TRUE(s.ok()) << s << "\n" << cluster_.agent("n1").Log();
    absl::StatusOr<int> port = testing::MetricsPortFromLog(cluster_.broker().Log());
    ASSERT_TRUE(port.ok()) << port.status();
    broker_metrics_port_ = *port;
    port = testing::MetricsPortFromLog(cluster_.agent("n1").Log());
    ASSERT_TRUE(port.ok()) << port.status();
    agent_metrics_port_ = *port;
    broker_ = cluster_.BrokerStub();
    s = prometheus_.Start(
        testing::NewTempDir("prometheus"),
        {{"iommu-broker", {absl::StrCat("127.0.0.1:", broker_metrics_port_)}, {}},
         {"iommu-agent", {absl::StrCat("127.0.0.1:", agent_metrics_port_)}, {{"node", "n1"}}}});
    ASSERT_TRUE(s.ok()) << s;
  }

  // A container on n1 holding `device` with one 1 MiB window.
  std::string CreateContainer(const std::string& device) {
    v1::CreateContainerRequest req;
    req.set_tenant_id("acme");
    req.set_node("n1");
    req.add_devices(device);
    req.set_pin_budget_bytes(32 * kMiB);
    v1::Container c;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::CreateContainer, req, &c);
    EXPECT_TRUE(s.ok()) << "CreateContainer: " << s.error_message();
    v1::AllocateWindowRequest ar;
    ar.set_container_id(c.id());
    ar.set_size(kMiB);
    ar.set_alignment(kMiB);
    v1::Window w;
    s = Call(broker_.get(), &v1::Broker::Stub::AllocateWindow, ar, &w);
    EXPECT_TRUE(s.ok()) << "AllocateWindow: " << s.error_message();
    return c.id();
  }

  // A session on `container_id` over n1's launcher socket.
  std::unique_ptr<LauncherClient> Open(const std::string& container_id, uint64_t* window_base) {
    v1::GrantLauncherRequest req;
    req.set_container_id(container_id);
    req.set_ttl_seconds(300);
    v1::GrantLauncherResponse grant;
    grpc::Status gs = Call(broker_.get(), &v1::Broker::Stub::GrantLauncher, req, &grant);
    EXPECT_TRUE(gs.ok()) << gs.error_message();
    absl::StatusOr<std::unique_ptr<LauncherClient>> client =
        LauncherClient::Connect(absl::StrCat(cluster_.dir(), "/n1.sock"));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    absl::StatusOr<v1::LauncherResponse::SessionOpened> opened =
        (*client)->OpenSession(grant.token());
    EXPECT_TRUE(opened.ok()) << opened.status();
    if (!opened.ok() || opened->windows_size() == 0) return nullptr;
    *window_base = opened->windows(0).base();
    return *std::move(client);
  }

  // Polls Prometheus until every query in `want` answers exactly one sample
  // with the wanted value (new scrapes arrive every second), then reports
  // what each query last answered for those that never did.
  void ExpectEventually(const std::map<std::string, double>& want,
                        absl::Duration timeout = absl::Seconds(60)) {
    std::map<std::string, std::string> last;
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      last.clear();
      for (const auto& [query, value] : want) {
        absl::StatusOr<std::vector<PromSample>> got = prometheus_.Query(query);
        if (!got.ok() || got->size() != 1 || (*got)[0].value != value) {
          last[query] = Describe(got);
        }
      }
      if (last.empty() || absl::Now() > deadline) break;
      absl::SleepFor(absl::Milliseconds(500));
    }
    for (const auto& [query, seen] : last) {
      ADD_FAILURE() << query << ": want " << want.at(query) << ", Prometheus answers " << seen;
    }
    if (!last.empty()) {
      ADD_FAILURE() << "Prometheus log:\n" << prometheus_.Log() << "\nbroker log:\n"
                    << cluster_.broker().Log();
    }
  }

  Cluster cluster_;
  int broker_metrics_port_ = 0;
  int agent_metrics_port_ = 0;
  std::unique_ptr<v1::Broker::Stub> broker_;
  PrometheusProcess prometheus_;
};

TEST_F(PrometheusE2eTest, ScenarioValuesArriveThroughPrometheus) {
  // Both targets are scraped and healthy before anything happens.
  ExpectEventually({{"up{job=\"iommu-broker\"}", 1},
                    {"up{job=\"iommu-agent\",node=\"n1\"}", 1},
                    {"iommu_broker_tenants", 0},
                    {"iommu_agent_backend_info{backend=\"sim\",node=\"n1\"}", 1}});

  v1::CreateTenantRequest tr;
  tr.set_tenant_id("acme");
  tr.mutable_quota()->set_pinned_bytes(64 * kMiB);
  tr.mutable_quota()->set_window_bytes(16 * kMiB);
  v1::Tenant tenant;
  grpc::Status gs = Call(broker_.get(), &v1::Broker::Stub::CreateTenant, tr, &tenant);
  ASSERT_TRUE(gs.ok()) << gs.error_message();
  // One refused call, to see the code label.
  v1::GetTenantRequest missing;
  missing.set_tenant_id("nobody");
  EXPECT_EQ(Call(broker_.get(), &v1::Broker::Stub::GetTenant, missing, &tenant).error_code(),
            grpc::StatusCode::NOT_FOUND);

  const std::string c1 = CreateContainer("0000:00:04.0");
  const std::string c2 = CreateContainer("0000:00:05.0");
  ASSERT_FALSE(HasFailure());

  // The same guest memory mapped into both containers: billed once, mapped
  // twice (what the dashboard shows as bytes saved by deduplication).
  uint64_t base1 = 0, base2 = 0;
  std::unique_ptr<LauncherClient> s1 = Open(c1, &base1);
  std::unique_ptr<LauncherClient> s2 = Open(c2, &base2);
  ASSERT_TRUE(s1 && s2);
  absl::StatusOr<UniqueFd> memfd = LauncherClient::CreateMemfd(kMiB, "guest");
  ASSERT_TRUE(memfd.ok()) << memfd.status();
  absl::StatusOr<v1::LauncherResponse::MemoryRegistered> m1 =
      s1->RegisterMemory(memfd->get(), "guest");
  ASSERT_TRUE(m1.ok()) << m1.status();
  UniqueFd dup_fd(fcntl(memfd->get(), F_DUPFD_CLOEXEC, 0));
  absl::StatusOr<v1::LauncherResponse::MemoryRegistered> m2 =
      s2->RegisterMemory(dup_fd.get(), "guest");
  ASSERT_TRUE(m2.ok()) << m2.status();
  absl::Status ms = s1->Map(m1->memory_id(), 0, kMiB, base1, true, true);
  ASSERT_TRUE(ms.ok()) << ms;
  ms = s2->Map(m2->memory_id(), 0, kMiB, base2, true, false);
  ASSERT_TRUE(ms.ok()) << ms;

  ExpectEventually({
      // Broker: state gauges.
      {"iommu_broker_tenants", 1},
      {"iommu_broker_tenant_quota_pinned_bytes{tenant=\"acme\"}", 64 * kMiB},
      {"iommu_broker_tenant_quota_window_bytes{tenant=\"acme\"}", 16 * kMiB},
      {"iommu_broker_tenant_reserved_bytes{tenant=\"acme\"}", 2 * kMiB},
      {"iommu_broker_containers{state=\"ready\"}", 2},
      {"iommu_broker_containers{state=\"failed\"}", 0},
      {"iommu_broker_windows", 2},
      {"iommu_broker_nodes{state=\"ready\"}", 1},
      {"iommu_broker_nodes{state=\"unavailable\"}", 0},
      {"iommu_broker_node_up{node=\"n1\"}", 1},
      // Broker: the agent's ledger, through heartbeats.
      {"iommu_broker_tenant_pinned_bytes{tenant=\"acme\"}", kMiB},
      {"iommu_broker_tenant_mapped_bytes{tenant=\"acme\"}", 2 * kMiB},
      // Broker: RPC latency by method and code; every acknowledged change
      // was one timed commit.
      {"iommu_broker_rpc_duration_seconds_count{method=\"CreateContainer\",code=\"OK\"}", 2},
      {"iommu_broker_rpc_duration_seconds_count{method=\"GetTenant\",code=\"NOT_FOUND\"}", 1},
      {"iommu_broker_rpc_duration_seconds_bucket{method=\"CreateTenant\",code=\"OK\","
       "le=\"+Inf\"}",
       1},
      {"iommu_broker_store_commit_duration_seconds_count > bool 4", 1},
      // Agent: the ledger, billed once and mapped twice.
      {"iommu_agent_billed_bytes{tenant=\"acme\",node=\"n1\"}", kMiB},
      {"iommu_agent_mapped_bytes{tenant=\"acme\",node=\"n1\"}", 2 * kMiB},
      {"iommu_agent_mapped_bytes{tenant=\"acme\"} - iommu_agent_billed_bytes{tenant=\"acme\"}",
       kMiB},
      {"iommu_agent_mappings", 2},
      {"iommu_agent_container_mappings_max", 1},
      {"iommu_agent_mappings_limit", 65535},
      {"iommu_agent_containers", 2},
      {"iommu_agent_launcher_sessions", 2},
      {"iommu_agent_map_duration_seconds_count", 2},
  });

  // One mapping gone: its pages stay pinned by the other, nothing is saved.
  absl::StatusOr<uint64_t> unmapped = s1->Unmap(base1, kMiB);
  ASSERT_TRUE(unmapped.ok()) << unmapped.status();
  ExpectEventually({
      {"iommu_agent_billed_bytes{tenant=\"acme\"}", kMiB},
      {"iommu_agent_mapped_bytes{tenant=\"acme\"}", kMiB},
      {"iommu_agent_mappings", 1},
      {"iommu_agent_unmap_duration_seconds_count", 1},
      {"iommu_broker_tenant_mapped_bytes{tenant=\"acme\"}", kMiB},
  });
}

}  // namespace
}  // namespace iommu
