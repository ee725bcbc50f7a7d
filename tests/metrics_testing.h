// Test helpers for the daemons' Prometheus metrics: reading a /metrics
// exposition, the metric names a PromQL expression uses, and a real
// Prometheus server (Debian's /usr/bin/prometheus) run as a child process and
// queried over its HTTP API.
//
// Thread-compatible.
#ifndef TESTS_METRICS_TESTING_H_
#define TESTS_METRICS_TESTING_H_

#include <sys/types.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iommu::testing {

// GETs http://127.0.0.1:<port>/metrics; errors for a non-200 answer.
absl::StatusOr<std::string> ScrapeMetrics(int port);

// The port a daemon started with --metrics-address=127.0.0.1:0 serves
// /metrics on, from its "event=metrics_serving ... port=N" log line.
absl::StatusOr<int> MetricsPortFromLog(const std::string& log);

// Every series name a text exposition offers: each family from its # TYPE
// line (also one without samples), a histogram or summary as <name>_bucket /
// _sum / _count (and <name> itself for summaries' quantiles), and the name of
// every sample line.
std::set<std::string> ExposedSeriesNames(const std::string& exposition);

// The metric names a PromQL expression selects: identifiers that are not
// functions, aggregations, keywords, label names (in {...}, by/without/on/
// ignoring/group_left/group_right (...)), strings, durations or Grafana
// variables ($node, ${node}, $__rate_interval). Grafana's
// label_values(metric, label) yields its metric only.
std::set<std::string> PromQlMetricNames(const std::string& expr);

// One sample of an instant-query answer.
struct PromSample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

// /usr/bin/prometheus with a generated configuration (1 s scrapes of the
// given targets, its TSDB and log under `dir`), killed when this object goes
// away.
class PrometheusProcess final {
 public:
  // A scrape job: its name, its targets ("127.0.0.1:9400") and labels every
  // target gets (e.g. node="n1" for an agent, as deploy/prometheus does).
  struct Job {
    std::string name;
    std::vector<std::string> targets;
    std::map<std::string, std::string> labels;
  };

  PrometheusProcess() = default;
  ~PrometheusProcess();
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;

  // Writes the configuration, starts Prometheus on a free loopback port and
  // waits until /-/ready answers 200. FAILED_PRECONDITION when
  // /usr/bin/prometheus is missing (scripts/setup.sh installs the Debian
  // package `prometheus`).
  absl::Status Start(const std::string& dir, const std::vector<Job>& jobs,
                     absl::Duration timeout = absl::Seconds(60));

  // An instant query (/api/v1/query) evaluated now. Errors: Prometheus's
  // own (bad expression) as INVALID_ARGUMENT, transport errors.
  absl::StatusOr<std::vector<PromSample>> Query(const std::string& promql);

  int port() const { return port_; }
  std::string Log() const;  // Prometheus's stderr so far.

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_;
};

}  // namespace iommu::testing

#endif  // TESTS_METRICS_TESTING_H_
