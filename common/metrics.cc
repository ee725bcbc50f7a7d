#include "common/metrics.h"

#include <map>
#include <memory>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/process_metrics.h"
#include "common/version.h"
#include "common/status_macros.h"
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

prometheus::MetricFamily BuildInfoFamily(const std::string& name) {
  prometheus::MetricFamily f =
      NewFamily(name, "The version and commit this binary was built from (always 1).",
                prometheus::MetricType::Gauge);
  AddGauge(&f, {{"version", kVersion}, {"commit", BuildCommit()}}, 1);
  return f;
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

namespace {

HttpReply HealthReply(const std::function<absl::Status()>& check) {
  absl::Status s = check ? check() : absl::OkStatus();
  if (s.ok()) return HttpReply{200, "text/plain; charset=utf-8", "ok\n"};
  return HttpReply{503, "text/plain; charset=utf-8", absl::StrCat(s.message(), "\n")};
}

}  // namespace

absl::StatusOr<MetricsServer> StartMetricsServer(
    absl::string_view field, const std::string& address,
    const std::shared_ptr<prometheus::Collectable>& collectable, Health health) {
  if (absl::Status s = ValidateMetricsAddress(field, address); !s.ok()) return s;
  std::weak_ptr<prometheus::Collectable> weak = collectable;
  std::map<std::string, HttpHandler> handlers;
  handlers["/metrics"] = [weak] {
    std::shared_ptr<prometheus::Collectable> c = weak.lock();
    if (c == nullptr) return HttpReply{503, "text/plain; charset=utf-8", "shutting down\n"};
    std::vector<prometheus::MetricFamily> families = c->Collect();
    for (prometheus::MetricFamily& f : ProcessFamilies()) families.push_back(std::move(f));
    return HttpReply{200, "text/plain; version=0.0.4; charset=utf-8", TextFormat(families)};
  };
  handlers["/healthz"] = [live = health.live] { return HealthReply(live); };
  handlers["/readyz"] = [ready = health.ready] { return HealthReply(ready); };
  ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> http,
                   HttpServer::Start(field, address, std::move(handlers)));
  MetricsServer server;
  server.port = http->port();
  server.http = std::move(http);
  return server;
}

}  // namespace metrics
}  // namespace iommu
