#include "server/broker_metrics.h"

#include <utility>

#include "common/metrics.h"

namespace iommu {
namespace {

using prometheus::MetricType;

constexpr char kRpcDuration[] = "iommu_broker_rpc_duration_seconds";
constexpr char kRpcDurationHelp[] =
    "Server-side latency of broker RPCs, by short method name and gRPC status code.";
constexpr char kStoreCommit[] = "iommu_broker_store_commit_duration_seconds";
constexpr char kStoreCommitHelp[] =
    "Latency of one durable store commit (SQLite: WAL append and fsync).";
constexpr char kAuthzDenials[] = "iommu_broker_authz_denials_total";
constexpr char kAuthzDenialsHelp[] = "Calls refused by authorization, by method and caller role.";
constexpr char kEtcdRoundTrip[] = "iommu_broker_etcd_round_trip_seconds";
constexpr char kEtcdRoundTripHelp[] =
    "Round trip of one call to etcd (--store=etcd://...), by call: txn, range, lease_grant, "
    "lease_keep_alive, lease_revoke, lease_time_to_live, compact.";
constexpr char kFencedWrites[] = "iommu_broker_fenced_writes_total";
constexpr char kFencedWritesHelp[] =
    "Commits refused by the leadership fence: this replica wrote after another took the lead.";
constexpr char kLeaderChanges[] = "iommu_broker_leader_changes_total";
constexpr char kLeaderChangesHelp[] =
    "Changes of leader this replica saw (as a standby polling the leader key, or by winning it).";
constexpr char kLastLeaderChange[] = "iommu_broker_last_leader_change_timestamp_seconds";
constexpr char kLastLeaderChangeHelp[] =
    "When this replica last saw the leader change (Unix time); 0 if it has not seen one.";
constexpr char kCertExpiry[] = "iommu_broker_tls_cert_expiry_timestamp_seconds";
constexpr char kCertExpiryHelp[] =
    "When the earliest certificate in the file named by `cert` expires (notAfter, Unix time): "
    "as on disk at this scrape (the broker re-reads tls_cert, tls_ca, etcd_cert and etcd_ca "
    "every --tls-reload-seconds, 60 s by default).";

// RPCs range from a map lookup (tens of microseconds) to a create that waits
// for an agent (up to --agent-timeout-ms).
const prometheus::Histogram::BucketBoundaries& RpcBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return *b;
}

// etcd answers from memory in well under a millisecond on loopback; a
// txn waits for raft (one round among the members plus an fsync); a slow or
// partitioned cluster runs into the 10 s call deadline.
const prometheus::Histogram::BucketBoundaries& EtcdBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return *b;
}

// A commit is one fsync or two: sub-millisecond on tmpfs, milliseconds on
// SSDs, tens of milliseconds on slow disks.
const prometheus::Histogram::BucketBoundaries& CommitBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
      0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1};
  return *b;
}

}  // namespace

BrokerMetrics::BrokerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      rpc_duration_(prometheus::BuildHistogram()
                        .Name(kRpcDuration)
                        .Help(kRpcDurationHelp)
                        .Register(*registry_)),
      store_commit_duration_(prometheus::BuildHistogram()
                                 .Name(kStoreCommit)
                                 .Help(kStoreCommitHelp)
                                 .Register(*registry_)
                                 .Add({}, CommitBuckets())),
      authz_denials_(prometheus::BuildCounter()
                         .Name(kAuthzDenials)
                         .Help(kAuthzDenialsHelp)
                         .Register(*registry_)),
      etcd_round_trip_(prometheus::BuildHistogram()
                           .Name(kEtcdRoundTrip)
                           .Help(kEtcdRoundTripHelp)
                           .Register(*registry_)),
      fenced_writes_(prometheus::BuildCounter()
                         .Name(kFencedWrites)
                         .Help(kFencedWritesHelp)
                         .Register(*registry_)
                         .Add({})),
      leader_changes_(prometheus::BuildCounter()
                          .Name(kLeaderChanges)
                          .Help(kLeaderChangesHelp)
                          .Register(*registry_)
                          .Add({})),
      last_leader_change_(prometheus::BuildGauge()
                              .Name(kLastLeaderChange)
                              .Help(kLastLeaderChangeHelp)
                              .Register(*registry_)
                              .Add({})),
      cert_expiry_(std::make_unique<CertExpiryGauge>(kCertExpiry, kCertExpiryHelp)),
      declared_{metrics::NewFamily(kRpcDuration, kRpcDurationHelp, MetricType::Histogram),
                metrics::NewFamily(kStoreCommit, kStoreCommitHelp, MetricType::Histogram),
                metrics::NewFamily(kAuthzDenials, kAuthzDenialsHelp, MetricType::Counter),
                metrics::NewFamily(kEtcdRoundTrip, kEtcdRoundTripHelp, MetricType::Histogram)} {}

void BrokerMetrics::CountLeaderChange(absl::Time when) {
  leader_changes_.Increment();
  last_leader_change_.Set(absl::ToDoubleSeconds(when - absl::UnixEpoch()));
}

void BrokerMetrics::ObserveEtcdCall(absl::string_view op, absl::Duration round_trip) {
  etcd_round_trip_.Add({{"op", std::string(op)}}, EtcdBuckets())
      .Observe(absl::ToDoubleSeconds(round_trip));
}

void BrokerMetrics::CountFencedWrite() { fenced_writes_.Increment(); }

void BrokerMetrics::WatchCertificates(std::vector<WatchedCertFile> files) {
  cert_expiry_->Watch(std::move(files));
}

void BrokerMetrics::SetStatsSource(std::function<BrokerStats()> source) {
  absl::MutexLock l(&mu_);
  stats_source_ = std::move(source);
}

void BrokerMetrics::ObserveRpc(absl::string_view method, absl::string_view code,
                               absl::Duration elapsed) {
  rpc_duration_.Add({{"method", std::string(method)}, {"code", std::string(code)}}, RpcBuckets())
      .Observe(absl::ToDoubleSeconds(elapsed));
}

void BrokerMetrics::ObserveStoreCommit(absl::Duration elapsed) {
  store_commit_duration_.Observe(absl::ToDoubleSeconds(elapsed));
}

void BrokerMetrics::CountDenial(absl::string_view method, absl::string_view role) {
  authz_denials_.Add({{"method", std::string(method)}, {"role", std::string(role)}}).Increment();
}

std::vector<prometheus::MetricFamily> BrokerMetrics::StateFamilies(const BrokerStats& s) {
  using metrics::AddGauge;
  using metrics::NewFamily;
  std::vector<prometheus::MetricFamily> out;

  prometheus::MetricFamily tenants =
      NewFamily("iommu_broker_tenants", "Tenants defined.", MetricType::Gauge);
  AddGauge(&tenants, {}, static_cast<double>(s.tenants.size()));
  out.push_back(std::move(tenants));

  struct PerTenant {
    const char* name;
    const char* help;
    uint64_t BrokerStats::Tenant::*field;
  };
  const PerTenant per_tenant[] = {
      {"iommu_broker_tenant_quota_pinned_bytes", "The tenant's pinned-bytes quota.",
       &BrokerStats::Tenant::quota_pinned_bytes},
      {"iommu_broker_tenant_quota_window_bytes",
       "The tenant's IOVA window-bytes quota (0 = unlimited).",
       &BrokerStats::Tenant::quota_window_bytes},
      {"iommu_broker_tenant_reserved_bytes", "IOVA bytes reserved by the tenant's windows.",
       &BrokerStats::Tenant::reserved_bytes},
      {"iommu_broker_tenant_pinned_bytes",
       "Host bytes pinned for the tenant, each page billed once, from agents' heartbeats.",
       &BrokerStats::Tenant::pinned_bytes},
      {"iommu_broker_tenant_mapped_bytes",
       "Bytes mapped for the tenant, every mapping counted, from agents' heartbeats.",
       &BrokerStats::Tenant::mapped_bytes},
  };
  for (const PerTenant& p : per_tenant) {
    prometheus::MetricFamily f = NewFamily(p.name, p.help, MetricType::Gauge);
    for (const BrokerStats::Tenant& t : s.tenants) {
      AddGauge(&f, {{"tenant", t.id}}, static_cast<double>(t.*(p.field)));
    }
    out.push_back(std::move(f));
  }

  // Every state always has a sample (0 included), so that rates and alerts
  // on a state see it appear rather than a series start.
  prometheus::MetricFamily containers =
      NewFamily("iommu_broker_containers", "Containers by state.", MetricType::Gauge);
  AddGauge(&containers, {{"state", "ready"}}, static_cast<double>(s.containers_ready));
  AddGauge(&containers, {{"state", "node_unavailable"}},
           static_cast<double>(s.containers_node_unavailable));
  AddGauge(&containers, {{"state", "failed"}}, static_cast<double>(s.containers_failed));
  AddGauge(&containers, {{"state", "deleting"}}, static_cast<double>(s.containers_deleting));
  out.push_back(std::move(containers));

  prometheus::MetricFamily windows =
      NewFamily("iommu_broker_windows", "IOVA windows allocated.", MetricType::Gauge);
  AddGauge(&windows, {}, static_cast<double>(s.windows));
  out.push_back(std::move(windows));

  prometheus::MetricFamily nodes = NewFamily(
      "iommu_broker_nodes", "Nodes by state (ready, cordoned, unavailable).", MetricType::Gauge);
  AddGauge(&nodes, {{"state", "ready"}}, static_cast<double>(s.nodes_ready));
  AddGauge(&nodes, {{"state", "cordoned"}}, static_cast<double>(s.nodes_cordoned));
  AddGauge(&nodes, {{"state", "unavailable"}}, static_cast<double>(s.nodes_unavailable));
  AddGauge(&nodes, {{"state", "reconciling"}}, static_cast<double>(s.nodes_reconciling));
  out.push_back(std::move(nodes));

  prometheus::MetricFamily waiting =
      NewFamily("iommu_broker_registrations_waiting",
                "Node registrations waiting for their turn (--max_concurrent_registrations).",
                MetricType::Gauge);
  AddGauge(&waiting, {}, static_cast<double>(s.registrations_waiting));
  out.push_back(std::move(waiting));

  prometheus::MetricFamily up =
      NewFamily("iommu_broker_node_up",
                "1 while the node's agent heartbeats, 0 once the node is unavailable.",
                MetricType::Gauge);
  for (const BrokerStats::Node& n : s.nodes) AddGauge(&up, {{"node", n.name}}, n.up ? 1 : 0);
  out.push_back(std::move(up));
  return out;
}

void BrokerMetrics::SetLeadership(std::string replica, std::string store, bool leading,
                                  absl::Time since) {
  prometheus::MetricFamily leader = metrics::NewFamily(
      "iommu_broker_leader",
      "1 on the broker that leads (serves the API), 0 on a standby replica waiting to lead.",
      MetricType::Gauge);
  metrics::AddGauge(&leader, {{"replica", std::move(replica)}, {"store", std::move(store)}},
                    leading ? 1 : 0);
  prometheus::MetricFamily leader_since = metrics::NewFamily(
      "iommu_broker_leader_since_timestamp_seconds",
      "When this broker became the leader (Unix time); a recent value means a failover.",
      MetricType::Gauge);
  metrics::AddGauge(&leader_since, {}, absl::ToDoubleSeconds(since - absl::UnixEpoch()));
  absl::MutexLock l(&mu_);
  leader_ = std::move(leader);
  if (leading) {
    leader_since_ = std::move(leader_since);
  } else {
    leader_since_.reset();
  }
}

std::vector<prometheus::MetricFamily> BrokerMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out = registry_->Collect();
  metrics::AppendMissingFamilies(declared_, &out);
  out.push_back(metrics::BuildInfoFamily("iommu_broker_build_info"));
  out.push_back(cert_expiry_->Collect());
  std::function<BrokerStats()> source;
  {
    absl::MutexLock l(&mu_);
    source = stats_source_;
    if (leader_.has_value()) out.push_back(*leader_);
    if (leader_since_.has_value()) out.push_back(*leader_since_);
  }
  if (source) {
    for (prometheus::MetricFamily& f : StateFamilies(source())) out.push_back(std::move(f));
  }
  return out;
}

std::string BrokerMetrics::ScrapeText() const { return metrics::TextFormat(Collect()); }

}  // namespace iommu
