// The daemons' operational HTTP endpoints, through the real binaries:
// /healthz and /readyz answer on the metrics port (what the Kubernetes
// manifests probe), and /metrics carries the usual process_* families and
// the expiry of the certificates each daemon uses.
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "tests/http_get.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"
#include "tests/daemon.h"
#include "tests/metrics_testing.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

constexpr char kOneEdu[] = "0000:00:04.0=1234:11e8@5";

testing::ClusterOptions Options() {
  testing::ClusterOptions o;
  o.broker_args = {"--metrics-address=127.0.0.1:0"};
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

// The value of the sample `series` (name and labels exactly as exposed) in
// a /metrics text, if it has one.
std::optional<double> SampleValue(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, series + " ")) continue;
    double v = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(line), &v)) return v;
  }
  return std::nullopt;
}

// notAfter of the first certificate in `file`, by the openssl command (not
// the daemons' code), in seconds since the epoch.
absl::StatusOr<int64_t> OpenSslNotAfter(const std::string& file) {
  testing::CommandResult r = testing::RunCommand(
      {"/usr/bin/openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", file});
  absl::string_view out = absl::StripAsciiWhitespace(r.out);
  if (r.exit_code != 0 || !absl::ConsumePrefix(&out, "notAfter=")) {
    return absl::InternalError(absl::StrCat("openssl x509 ", file, ": ", r.out, r.err));
  }
  absl::Time t;
  std::string err;
  if (!absl::ParseTime("%Y-%m-%d %H:%M:%SZ", out, absl::UTCTimeZone(), &t, &err)) {
    return absl::InternalError(absl::StrCat("openssl x509 ", file, ": \"", out, "\": ", err));
  }
  return absl::ToUnixSeconds(t);
}

TEST(HealthEndpointsTest, BrokerAndAgentAnswerProbesAndExportProcessMetrics) {
  testing::Cluster cluster(Options());
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  absl::Status s = cluster.StartAgent("n1", kOneEdu, {"--metrics-address=127.0.0.1:0"});
  ASSERT_TRUE(s.ok()) << s << "\n" << cluster.agent("n1").Log();
  absl::StatusOr<int> broker_port = testing::MetricsPortFromLog(cluster.broker().Log());
  ASSERT_TRUE(broker_port.ok()) << broker_port.status();
  absl::StatusOr<int> agent_port = testing::MetricsPortFromLog(cluster.agent("n1").Log());
  ASSERT_TRUE(agent_port.ok()) << agent_port.status();
  ExpectHealthy("broker", *broker_port);
  ExpectHealthy("agent", *agent_port);
}

// Without TLS there is no certificate: the family is listed, with no sample.
TEST(HealthEndpointsTest, InsecureDaemonsListTheCertificateExpiryFamilyWithoutSamples) {
  testing::Cluster cluster(Options());
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  absl::StatusOr<int> port = testing::MetricsPortFromLog(cluster.broker().Log());
  ASSERT_TRUE(port.ok()) << port.status();
  absl::StatusOr<std::string> text = testing::ScrapeMetrics(*port);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_TRUE(
      testing::ExposedSeriesNames(*text).count("iommu_broker_tls_cert_expiry_timestamp_seconds"));
  EXPECT_FALSE(absl::StrContains(*text, "iommu_broker_tls_cert_expiry_timestamp_seconds{"));
}

// With mTLS each daemon exports, per certificate file it uses, the notAfter
// of the certificate in it: the same instant openssl reads from the file.
TEST(HealthEndpointsTest, TlsDaemonsExportTheirCertificatesExpiry) {
  testing::ClusterOptions o = Options();
  o.tls = true;
  testing::Cluster cluster(o);
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  absl::Status s = cluster.StartAgent("n1", kOneEdu, {"--metrics-address=127.0.0.1:0"});
  ASSERT_TRUE(s.ok()) << s << "\n" << cluster.agent("n1").Log();
  struct Expected {
    std::string who, log, series, file;
  };
  const std::string dir = cluster.certs_dir();
  const std::string broker = "iommu_broker_tls_cert_expiry_timestamp_seconds";
  const std::string agent = "iommu_agent_tls_cert_expiry_timestamp_seconds";
  const std::vector<Expected> expected = {
      {"broker", cluster.broker().Log(), broker + "{cert=\"tls_cert\"}", dir + "/broker.crt"},
      {"broker", cluster.broker().Log(), broker + "{cert=\"tls_ca\"}", dir + "/ca.crt"},
      {"agent", cluster.agent("n1").Log(), agent + "{cert=\"tls_cert\"}", dir + "/agent-n1.crt"},
      {"agent", cluster.agent("n1").Log(), agent + "{cert=\"tls_ca\"}", dir + "/ca.crt"},
  };
  for (const Expected& e : expected) {
    absl::StatusOr<int> port = testing::MetricsPortFromLog(e.log);
    ASSERT_TRUE(port.ok()) << e.who << ": " << port.status();
    absl::StatusOr<std::string> text = testing::ScrapeMetrics(*port);
    ASSERT_TRUE(text.ok()) << e.who << ": " << text.status();
    absl::StatusOr<int64_t> not_after = OpenSslNotAfter(e.file);
    ASSERT_TRUE(not_after.ok()) << not_after.status();
    const std::optional<double> got = SampleValue(*text, e.series);
    ASSERT_TRUE(got.has_value()) << e.who << " has no sample " << e.series << " in:\n" << *text;
    EXPECT_EQ(static_cast<int64_t>(*got), *not_after) << e.series;
    // And the start-up log says when each expires.
    EXPECT_TRUE(absl::StrContains(e.log, "event=tls_cert_expiry")) << e.log;
  }

  // A rotation is a new file on disk; the next scrape shows it, without a
  // restart (the daemon itself loads it within a minute).
  const std::string series = broker + "{cert=\"tls_cert\"}";
  absl::StatusOr<int64_t> before = OpenSslNotAfter(dir + "/broker.crt");
  ASSERT_TRUE(before.ok()) << before.status();
  testing::CommandResult reissue = testing::RunCommand(
      {testing::RunfilePath("deploy/make-dev-certs.sh"), "--out", dir, "--days", "5"});
  ASSERT_EQ(reissue.exit_code, 0) << reissue.err;
  absl::StatusOr<int64_t> after = OpenSslNotAfter(dir + "/broker.crt");
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_LT(*after, *before);
  absl::StatusOr<int> port = testing::MetricsPortFromLog(cluster.broker().Log());
  ASSERT_TRUE(port.ok()) << port.status();
  absl::StatusOr<std::string> text = testing::ScrapeMetrics(*port);
  ASSERT_TRUE(text.ok()) << text.status();
  const std::optional<double> got = SampleValue(*text, series);
  ASSERT_TRUE(got.has_value()) << *text;
  EXPECT_EQ(static_cast<int64_t>(*got), *after);
  // Five days left: the log warns as well.
  EXPECT_TRUE(absl::StrContains(cluster.broker().Log(),
                                "level=warning src=broker event=tls_cert_expiry cert=tls_cert"))
      << cluster.broker().Log();

  // A certificate beside a key it does not match: the daemon refuses the pair
  // and keeps serving its last good one (tls_rotation_test), but the files on
  // disk are unusable (a restart would fail), so the gauge reads expired (0)
  // and the alert pages; the log says why.
  testing::CommandResult swap =
      testing::RunCommand({"/bin/cp", dir + "/operator-admin.key", dir + "/broker.key"});
  ASSERT_EQ(swap.exit_code, 0) << swap.err;
  text = testing::ScrapeMetrics(*port);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(SampleValue(*text, series), 0.0) << *text;
  EXPECT_TRUE(absl::StrContains(cluster.broker().Log(), "event=tls_cert_unreadable cert=tls_cert"))
      << cluster.broker().Log();
}

}  // namespace
}  // namespace iommu
