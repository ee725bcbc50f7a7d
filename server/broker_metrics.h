// BrokerMetrics: the broker's Prometheus metrics (docs/METRICS.md,
// iommu_broker_*). Two kinds:
//   * gauges that mirror state (tenants, per-tenant bytes, containers and
//     nodes by state, windows) are computed at scrape time from a BrokerStats
//     snapshot (Broker::Stats()), so no mutation path has to update them;
//   * histograms and counters (RPC latency, store commit latency,
//     authorization denials) are updated where the event happens, through
//     ObserveRpc (fed by common/rpc_metrics.h's interceptor),
//     ObserveStoreCommit (fed by server/timed_store.h) and CountDenial (called
//     by the authorization layer).
// It is a prometheus::Collectable: serve it with StartMetricsServer
// (common/metrics.h), which holds it by weak_ptr.
//
// Thread-safe: every method may be called from any thread, Collect() from
// the HTTP server's threads concurrently with the Observe/Count calls.
#ifndef SERVER_BROKER_METRICS_H_
#define SERVER_BROKER_METRICS_H_

#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/cert_expiry_gauge.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "server/broker_stats.h"

namespace iommu {

class BrokerMetrics final : public prometheus::Collectable {
 public:
  BrokerMetrics();

  BrokerMetrics(const BrokerMetrics&) = delete;
  BrokerMetrics& operator=(const BrokerMetrics&) = delete;

  // Where the state gauges come from (typically [&] { return broker->Stats(); }).
  // Until it is set, a scrape has the event metrics only. `source` must stay
  // callable while this object is served by StartMetricsServer.
  void SetStatsSource(std::function<BrokerStats()> source);

  // Whether this broker leads (the only one on its own store; on etcd,
  // elected among the replicas): iommu_broker_leader{replica, store} 1, or 0
  // on a standby, and, once leading, when it began
  // (iommu_broker_leader_since_timestamp_seconds). `store` is the kind only
  // ("sqlite", "sqlite-kv", "etcd"), never paths or endpoints.
  void SetLeadership(std::string replica, std::string store, bool leading, absl::Time since);

  // A change of leader this replica saw: as a standby, the leader key's
  // holder changed between two polls; or this replica won the key.
  // iommu_broker_leader_changes_total and
  // iommu_broker_last_leader_change_timestamp_seconds.
  void CountLeaderChange(absl::Time when);

  // One call to etcd: iommu_broker_etcd_round_trip_seconds{op}. `op` is the
  // call's short name ("txn", "range", "lease_keep_alive", ...).
  void ObserveEtcdCall(absl::string_view op, absl::Duration round_trip);

  // A commit the leadership fence refused (this replica no longer leads):
  // iommu_broker_fenced_writes_total.
  void CountFencedWrite();

  // The certificate files this broker uses (none with --insecure):
  // iommu_broker_tls_cert_expiry_timestamp_seconds{cert}, read now and, for
  // the files it re-reads while running, again at each scrape
  // (common/cert_expiry_gauge.h).
  void WatchCertificates(std::vector<WatchedCertFile> files);

  // One finished RPC: iommu_broker_rpc_duration_seconds{method, code}.
  void ObserveRpc(absl::string_view method, absl::string_view code, absl::Duration elapsed);

  // One durable store commit: iommu_broker_store_commit_duration_seconds.
  void ObserveStoreCommit(absl::Duration elapsed);

  // A call refused by authorization: iommu_broker_authz_denials_total{method,
  // role}. `method` is the short RPC name ("CreateTenant"); `role` the
  // caller's role as the authorization layer names it (e.g. "tenant",
  // "agent", "anonymous"): keep both to small fixed sets.
  void CountDenial(absl::string_view method, absl::string_view role);

  // Every iommu_broker_* family: the event metrics (also those without a
  // sample yet, as HELP/TYPE only) and the state gauges.
  std::vector<prometheus::MetricFamily> Collect() const override;

  // Collect() in the text exposition format.
  std::string ScrapeText() const;

  // The state gauges for `stats` (pure; what Collect() adds per scrape).
  static std::vector<prometheus::MetricFamily> StateFamilies(const BrokerStats& stats);

 private:
  // Constant after construction (prometheus-cpp's families are thread-safe).
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>& rpc_duration_;
  prometheus::Histogram& store_commit_duration_;
  prometheus::Family<prometheus::Counter>& authz_denials_;
  prometheus::Family<prometheus::Histogram>& etcd_round_trip_;
  prometheus::Counter& fenced_writes_;
  prometheus::Counter& leader_changes_;
  prometheus::Gauge& last_leader_change_;
  const std::unique_ptr<CertExpiryGauge> cert_expiry_;  // Thread-safe itself.
  // The event families as declared, for listing them before their first sample.
  const std::vector<prometheus::MetricFamily> declared_;

  mutable absl::Mutex mu_;
  std::function<BrokerStats()> stats_source_ ABSL_GUARDED_BY(mu_);
  std::optional<prometheus::MetricFamily> leader_ ABSL_GUARDED_BY(mu_);
  std::optional<prometheus::MetricFamily> leader_since_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iommu

#endif  // SERVER_BROKER_METRICS_H_
