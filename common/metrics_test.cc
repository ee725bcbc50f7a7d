#include "common/metrics.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tests/http_get.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace iommu {
namespace metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, GaugeFamilySerializesWithLabels) {
  prometheus::MetricFamily f = NewFamily("x_bytes", "Some bytes.", prometheus::MetricType::Gauge);
  AddGauge(&f, {{"tenant", "acme"}}, 4096);
  const std::string text = TextFormat({f});
  EXPECT_THAT(text, HasSubstr("# TYPE x_bytes gauge"));
  EXPECT_THAT(text, HasSubstr("x_bytes{tenant=\"acme\"} 4096"));
}

TEST(MetricsTest, MissingDeclaredFamiliesAreListedWithoutSamples) {
  std::vector<prometheus::MetricFamily> out = {
      NewFamily("present_total", "p", prometheus::MetricType::Counter)};
  AppendMissingFamilies({NewFamily("present_total", "p", prometheus::MetricType::Counter),
                         NewFamily("absent_total", "a", prometheus::MetricType::Counter)},
                        &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].name, "absent_total");
  EXPECT_TRUE(out[1].metric.empty());
  EXPECT_THAT(TextFormat(out), HasSubstr("# TYPE absent_total counter"));
}

TEST(MetricsTest, RefusesMalformedAddressNamingTheField) {
  for (const char* bad : {"", "9400", ":9400", "host:", "host:http", "host:65536", "host:-1",
                          "host:+80"}) {
    absl::Status s = ValidateMetricsAddress("metrics_address", bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("metrics_address: must be host:port"))
        << bad;
  }
  for (const char* good : {"127.0.0.1:0", "0.0.0.0:9400", "[::1]:9400", "localhost:80"}) {
    EXPECT_TRUE(ValidateMetricsAddress("metrics_address", good).ok()) << good;
  }
}

TEST(MetricsTest, ServesCollectableOnMetricsPath) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("served_total").Help("h").Register(*registry).Add({}).Increment(3);
  absl::StatusOr<MetricsServer> server = StartMetricsServer("metrics_address", "127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT(server->port, 0);
  absl::StatusOr<testing::HttpResponse> got = testing::HttpGet("127.0.0.1", server->port, "/metrics");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, 200);
  EXPECT_THAT(got->body, HasSubstr("served_total 3"));
}

TEST(MetricsTest, HealthEndpointsAnswerFromTheirChecks) {
  auto registry = std::make_shared<prometheus::Registry>();
  std::atomic<bool> ready{false};
  Health health;
  health.ready = [&ready] {
    return ready ? absl::OkStatus() : absl::UnavailableError("broker: not registered yet");
  };
  absl::StatusOr<MetricsServer> server =
      StartMetricsServer("metrics_address", "127.0.0.1:0", registry, health);
  ASSERT_TRUE(server.ok()) << server.status();
  auto live = testing::HttpGet("127.0.0.1", server->port, "/healthz");
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->status, 200) << "no live check: alive while it answers";
  auto not_ready = testing::HttpGet("127.0.0.1", server->port, "/readyz");
  ASSERT_TRUE(not_ready.ok()) << not_ready.status();
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->body, "broker: not registered yet\n");
  ready = true;
  auto now_ready = testing::HttpGet("127.0.0.1", server->port, "/readyz");
  ASSERT_TRUE(now_ready.ok()) << now_ready.status();
  EXPECT_EQ(now_ready->status, 200);
  EXPECT_EQ(now_ready->body, "ok\n");
}

TEST(MetricsTest, AddressInUseIsUnavailableNotAnException) {
  auto registry = std::make_shared<prometheus::Registry>();
  absl::StatusOr<MetricsServer> first = StartMetricsServer("metrics_address", "127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = "127.0.0.1:" + std::to_string(first->port);
  absl::StatusOr<MetricsServer> second = StartMetricsServer("metrics_address", taken, registry);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("metrics_address: cannot serve HTTP on " + taken));
}

TEST(MetricsTest, MalformedAddressIsRefusedBeforeBinding) {
  auto registry = std::make_shared<prometheus::Registry>();
  absl::StatusOr<MetricsServer> s = StartMetricsServer("metrics_address", "nonsense", registry);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), Not(HasSubstr("CivetServer")));
}

}  // namespace
}  // namespace metrics
}  // namespace iommu
