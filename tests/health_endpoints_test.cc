// The daemons' operational HTTP endpoints, through the real binaries:
// /healthz and /readyz answer on the metrics port (what the Kubernetes
// manifests probe), and /metrics carries the usual process_* families.
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/http_get.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"
#include "tests/metrics_testing.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

constexpr char kOneEdu[] = "0000:00:04.0=1234:11e8@5";

testing::ClusterOptions Options() {
  testing::ClusterOptions o;
  o.broker_args = {"--metrics_address=127.0.0.1:0"};
  return o;
}

void ExpectHealthy(const std::string& who, int port) {
  for (const char* path : {"/healthz", "/readyz"}) {
    absl::StatusOr<testing::HttpResponse> got = testing::HttpGet("127.0.0.1", port, path);
    ASSERT_TRUE(got.ok()) << who << path << ": " << got.status();
    EXPECT_EQ(got->status, 200) << who << path << ": " << got->body;
    EXPECT_EQ(got->body, "ok\n") << who << path;
  }
  absl::StatusOr<testing::HttpResponse> other = testing::HttpGet("127.0.0.1", port, "/healthzz");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->status, 404) << who;
  absl::StatusOr<std::string> text = testing::ScrapeMetrics(port);
  ASSERT_TRUE(text.ok()) << who << ": " << text.status();
  const std::set<std::string> names = testing::ExposedSeriesNames(*text);
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_open_fds", "process_max_fds", "process_start_time_seconds"}) {
    EXPECT_TRUE(names.count(name)) << who << " does not export " << name;
  }
}

TEST(HealthEndpointsTest, BrokerAndAgentAnswerProbesAndExportProcessMetrics) {
  testing::Cluster cluster(Options());
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  absl::Status s = cluster.StartAgent("n1", kOneEdu, {"--metrics_address=127.0.0.1:0"});
  ASSERT_TRUE(s.ok()) << s << "\n" << cluster.agent("n1").Log();
  absl::StatusOr<int> broker_port = testing::MetricsPortFromLog(cluster.broker().Log());
  ASSERT_TRUE(broker_port.ok()) << broker_port.status();
  absl::StatusOr<int> agent_port = testing::MetricsPortFromLog(cluster.agent("n1").Log());
  ASSERT_TRUE(agent_port.ok()) << agent_port.status();
  ExpectHealthy("broker", *broker_port);
  ExpectHealthy("agent", *agent_port);
}

}  // namespace
}  // namespace iommu
