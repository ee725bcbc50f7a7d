#include "common/metrics.h"

#include <exception>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace iommu {
namespace metrics {

prometheus::MetricFamily NewFamily(std::string name, std::string help,
                                   prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void AddGauge(prometheus::MetricFamily* family, const LabelPairs& labels, double value) {
  prometheus::ClientMetric m;
  for (const auto& [name, v] : labels) m.label.push_back({name, v});
  m.gauge.value = value;
  family->metric.push_back(std::move(m));
}

void AppendMissingFamilies(const std::vector<prometheus::MetricFamily>& declared,
                           std::vector<prometheus::MetricFamily>* out) {
  std::set<std::string> present;
  for (const prometheus::MetricFamily& f : *out) present.insert(f.name);
  for (const prometheus::MetricFamily& f : declared) {
    if (present.count(f.name)) continue;
    out->push_back(NewFamily(f.name, f.help, f.type));
  }
}

std::string TextFormat(const std::vector<prometheus::MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

absl::Status ValidateMetricsAddress(absl::string_view field, absl::string_view address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  const bool ok = colon != absl::string_view::npos && colon > 0 &&
                  absl::SimpleAtoi(address.substr(colon + 1), &port) && port >= 0 &&
                  port <= 65535 &&
                  // SimpleAtoi accepts "+80" and " 80"; a port is digits only.
                  absl::ascii_isdigit(address[colon + 1]);
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be host:port with a port in 0-65535 (e.g. 0.0.0.0:9400, ",
                     "127.0.0.1:0 or [::1]:9400), got \"", address, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<MetricsServer> StartMetricsServer(
    absl::string_view field, const std::string& address,
    const std::shared_ptr<prometheus::Collectable>& collectable) {
  if (absl::Status s = ValidateMetricsAddress(field, address); !s.ok()) return s;
  MetricsServer server;
  // prometheus-cpp reports a failed bind by throwing from the constructor;
  // the exception stops here and becomes a status.
  try {
    server.exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat(field, ": cannot serve /metrics on ", address,
                     " (address in use, not local, or not permitted): ", e.what()));
  }
  server.exposer->RegisterCollectable(collectable);
  const std::vector<int> ports = server.exposer->GetListeningPorts();
  server.port = ports.empty() ? 0 : ports.front();
  return server;
}

}  // namespace metrics
}  // namespace iommu
