// Helpers shared by the broker's and the agent's Prometheus metrics
// (prometheus-cpp; names and meanings in docs/METRICS.md):
//   * building gauge families at scrape time from a snapshot of a daemon's
//     state (a prometheus::Collectable does this in Collect());
//   * keeping declared families visible before their first sample, so that
//     /metrics always lists every metric a daemon exports;
//   * the text exposition format, for tests and debugging;
//   * the HTTP endpoint serving /metrics, /healthz and /readyz.
//
// Thread-safe: free functions without shared state. The HTTP server calls
// the Collectable and the health functions from its own threads.
#ifndef COMMON_METRICS_H_
#define COMMON_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/http_server.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace iommu {
namespace metrics {

using LabelPairs = std::vector<std::pair<std::string, std::string>>;

// An empty family (it serializes as its HELP and TYPE lines only).
prometheus::MetricFamily NewFamily(std::string name, std::string help,
                                   prometheus::MetricType type);

// Appends one gauge sample with `labels` to `family`.
void AddGauge(prometheus::MetricFamily* family, const LabelPairs& labels, double value);

// `name`{version, commit} 1: the version and commit this binary was built
// from (common/version.h), so a fleet's mix of versions is one query.
prometheus::MetricFamily BuildInfoFamily(const std::string& name);

// Appends to `out` every family of `declared` whose name `out` lacks, without
// samples. prometheus-cpp leaves a labelled counter or histogram out of the
// scrape until its first sample; this keeps it listed (HELP and TYPE), so a
// dashboard or alert can be checked against what the daemon exports.
void AppendMissingFamilies(const std::vector<prometheus::MetricFamily>& declared,
                           std::vector<prometheus::MetricFamily>* out);

// The Prometheus text exposition (version 0.0.4) of `families`.
std::string TextFormat(const std::vector<prometheus::MetricFamily>& families);

// Checks a --metrics-address value: host:port with a port in 0-65535 (port 0
// picks a free port). Errors name `field` and the rule.
absl::Status ValidateMetricsAddress(absl::string_view field, absl::string_view address);

// Health answers for orchestrators. A null function means "yes".
struct Health {
  // /healthz: the process works (a failing answer makes Kubernetes restart it).
  std::function<absl::Status()> live;
  // /readyz: the daemon can do its job now (e.g. its store is open, or it is
  // registered with the broker); failing takes it out of service only.
  std::function<absl::Status()> ready;
};

// A running operational endpoint: /metrics, /healthz, /readyz.
struct MetricsServer {
  std::unique_ptr<HttpServer> http;
  int port = 0;  // The bound port (useful with port 0).
};

// Serves `collectable` and this process's process_* families
// (process_metrics.h) as text at http://<address>/metrics, and `health` at
// /healthz and /readyz (200 "ok", or 503 with the status message), on
// threads of its own. The server keeps only a weak reference: the caller
// keeps `collectable` alive while serving. Errors: INVALID_ARGUMENT for a
// malformed address (naming `field`); UNAVAILABLE when the address cannot be
// bound (in use, not local, no permission).
absl::StatusOr<MetricsServer> StartMetricsServer(
    absl::string_view field, const std::string& address,
    const std::shared_ptr<prometheus::Collectable>& collectable, Health health = {});

}  // namespace metrics
}  // namespace iommu

#endif  // COMMON_METRICS_H_
