// AgentMetrics: the node agent's Prometheus metrics (docs/METRICS.md,
// iommu_agent_*). Two kinds:
//   * gauges that mirror state (billed, mapped and kernel-counted bytes per
//     tenant,
//     containers, mappings and their limit, launcher sessions, the backend)
//     are computed at scrape time from an AgentStats snapshot
//     (AgentCore::Stats()), so the map path updates no gauge; the kernel's
//     own pin counters are read from procfs at scrape time too;
//   * histograms and counters are updated where the event happens: map and
//     unmap latency (AgentMetrics is the AgentCoreObserver AgentCore calls),
//     kernel call errors (from CountingKernelOps at the KernelOps seam).
// It is a prometheus::Collectable: serve it with StartMetricsServer
// (common/metrics.h), which holds it by weak_ptr.
//
// Thread-safe: Collect() runs on the HTTP server's threads concurrently with the
// Observe/Count calls.
#ifndef AGENT_AGENT_METRICS_H_
#define AGENT_AGENT_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/agent_stats.h"
#include "agent/kernel_pins.h"
#include "common/cert_expiry_gauge.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace iommu {
namespace agent {

class AgentMetrics final : public prometheus::Collectable, public AgentCoreObserver {
 public:
  AgentMetrics();

  AgentMetrics(const AgentMetrics&) = delete;
  AgentMetrics& operator=(const AgentMetrics&) = delete;

  // The backend in use, once it exists: `kind` is Backend::kind() ("sim",
  // "vfio-type1" or "iommufd"; iommu_agent_backend_info{backend}).
  // `default_mappings_limit` is iommu_agent_mappings_limit while no container
  // is held (a container's geometry reports the real value once one exists):
  // sim's --sim-max-mappings, type1's dma_entry_limit module parameter
  // (ReadType1DmaEntryLimit), 0 for iommufd (no per-IOAS count limit).
  void SetBackend(absl::string_view kind, uint64_t default_mappings_limit);

  // Where the state gauges come from (typically [&] { return core.Stats(); }).
  // Until set, a scrape has the event metrics and the backend only.
  void SetStatsSource(std::function<AgentStats()> source);

  // Where the kernel's own pin counters are read at each scrape (cheap
  // procfs reads): `status_path` (/proc/self/status: VmLck, VmPin ->
  // iommu_agent_kernel_locked_bytes, iommu_agent_kernel_pinned_bytes) and
  // `vmstat_path` (/proc/vmstat -> iommu_agent_foll_pin_outstanding_pages,
  // system-wide). Until set, and for a file that cannot be read or parsed,
  // its gauges are left out of the scrape.
  void SetKernelPinFiles(std::string status_path, std::string vmstat_path);

  // The certificate files this agent uses (none with --insecure):
  // iommu_agent_tls_cert_expiry_timestamp_seconds{cert}, read now and again
  // at each scrape (common/cert_expiry_gauge.h).
  void WatchCertificates(std::vector<WatchedCertFile> files);

  // AgentCoreObserver: iommu_agent_map_duration_seconds,
  // iommu_agent_unmap_duration_seconds.
  void ObserveMap(absl::Duration elapsed) override;
  void ObserveUnmap(absl::Duration elapsed) override;

  // One failed kernel call: iommu_agent_kernel_errors_total{call, errno}.
  void CountKernelError(absl::string_view call, absl::string_view errno_name);

  std::vector<prometheus::MetricFamily> Collect() const override;
  std::string ScrapeText() const;

  // The state gauges for `stats` (pure; what Collect() adds per scrape).
  static std::vector<prometheus::MetricFamily> StateFamilies(const AgentStats& stats,
                                                             uint64_t default_mappings_limit);

  // The kernel's counters as gauges (pure): each argument that is not OK is
  // left out.
  static std::vector<prometheus::MetricFamily> KernelPinFamilies(
      const absl::StatusOr<ProcessPins>& process,
      const absl::StatusOr<uint64_t>& foll_pin_outstanding_pages);

 private:
  // Constant after construction (prometheus-cpp's families are thread-safe).
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram& map_duration_;
  prometheus::Histogram& unmap_duration_;
  prometheus::Family<prometheus::Counter>& kernel_errors_;
  const std::unique_ptr<CertExpiryGauge> cert_expiry_;  // Thread-safe itself.
  const std::vector<prometheus::MetricFamily> declared_;

  mutable absl::Mutex mu_;
  std::function<AgentStats()> stats_source_ ABSL_GUARDED_BY(mu_);
  std::string backend_ ABSL_GUARDED_BY(mu_);  // Empty until SetBackend.
  uint64_t default_mappings_limit_ ABSL_GUARDED_BY(mu_) = 0;
  std::string status_path_ ABSL_GUARDED_BY(mu_);  // Empty until SetKernelPinFiles.
  std::string vmstat_path_ ABSL_GUARDED_BY(mu_);
};

// The vfio_iommu_type1 module's dma_entry_limit (the per-container mapping
// limit), read from `path` (default: the module parameter in sysfs).
// NOT_FOUND when the module is not loaded; INVALID_ARGUMENT when the file
// does not hold a number.
absl::StatusOr<uint64_t> ReadType1DmaEntryLimit(
    const std::string& path = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit");

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_METRICS_H_
