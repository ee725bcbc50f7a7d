#include "agent/agent_metrics.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/metrics.h"

namespace iommu {
namespace agent {
namespace {

using prometheus::MetricType;

constexpr char kMapDuration[] = "iommu_agent_map_duration_seconds";
constexpr char kMapDurationHelp[] =
    "Latency of one map: validation, ledger and the kernel's pinning and mapping.";
constexpr char kUnmapDuration[] = "iommu_agent_unmap_duration_seconds";
constexpr char kUnmapDurationHelp[] = "Latency of one unmap.";
constexpr char kKernelErrors[] = "iommu_agent_kernel_errors_total";
constexpr char kKernelErrorsHelp[] =
    "Failed kernel calls, by ioctl or syscall name and errno name.";
constexpr char kCertExpiry[] = "iommu_agent_tls_cert_expiry_timestamp_seconds";
constexpr char kCertExpiryHelp[] =
    "When the earliest certificate in the file named by `cert` (tls_cert, tls_ca) expires "
    "(notAfter, Unix time), as on disk at this scrape (the agent re-reads them every "
    "--tls-reload-seconds, 60 s by default).";

// A map pins its pages: microseconds for a page, up to seconds for
// gigabytes of guest memory.
const prometheus::Histogram::BucketBoundaries& MapBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
      0.01,    0.025,    0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  return *b;
}

}  // namespace

AgentMetrics::AgentMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      map_duration_(prometheus::BuildHistogram()
                        .Name(kMapDuration)
                        .Help(kMapDurationHelp)
                        .Register(*registry_)
                        .Add({}, MapBuckets())),
      unmap_duration_(prometheus::BuildHistogram()
                          .Name(kUnmapDuration)
                          .Help(kUnmapDurationHelp)
                          .Register(*registry_)
                          .Add({}, MapBuckets())),
      kernel_errors_(prometheus::BuildCounter()
                         .Name(kKernelErrors)
                         .Help(kKernelErrorsHelp)
                         .Register(*registry_)),
      cert_expiry_(std::make_unique<CertExpiryGauge>(kCertExpiry, kCertExpiryHelp)),
      declared_{metrics::NewFamily(kMapDuration, kMapDurationHelp, MetricType::Histogram),
                metrics::NewFamily(kUnmapDuration, kUnmapDurationHelp, MetricType::Histogram),
                metrics::NewFamily(kKernelErrors, kKernelErrorsHelp, MetricType::Counter)} {}

void AgentMetrics::SetBackend(absl::string_view kind, uint64_t default_mappings_limit) {
  absl::MutexLock l(&mu_);
  backend_ = std::string(kind);
  default_mappings_limit_ = default_mappings_limit;
}

void AgentMetrics::SetKernelPinFiles(std::string status_path, std::string vmstat_path) {
  absl::MutexLock l(&mu_);
  status_path_ = std::move(status_path);
  vmstat_path_ = std::move(vmstat_path);
}

void AgentMetrics::SetStatsSource(std::function<AgentStats()> source) {
  absl::MutexLock l(&mu_);
  stats_source_ = std::move(source);
}

void AgentMetrics::WatchCertificates(std::vector<WatchedCertFile> files) {
  cert_expiry_->Watch(std::move(files));
}

void AgentMetrics::ObserveMap(absl::Duration elapsed) {
  map_duration_.Observe(absl::ToDoubleSeconds(elapsed));
}

void AgentMetrics::ObserveUnmap(absl::Duration elapsed) {
  unmap_duration_.Observe(absl::ToDoubleSeconds(elapsed));
}

void AgentMetrics::CountKernelError(absl::string_view call, absl::string_view errno_name) {
  kernel_errors_.Add({{"call", std::string(call)}, {"errno", std::string(errno_name)}})
      .Increment();
}

std::vector<prometheus::MetricFamily> AgentMetrics::StateFamilies(
    const AgentStats& s, uint64_t default_mappings_limit) {
  using metrics::AddGauge;
  using metrics::NewFamily;
  std::vector<prometheus::MetricFamily> out;

  prometheus::MetricFamily billed = NewFamily(
      "iommu_agent_billed_bytes",
      "Host bytes pinned and billed to the tenant on this node (each page once).",
      MetricType::Gauge);
  prometheus::MetricFamily mapped = NewFamily(
      "iommu_agent_mapped_bytes",
      "Bytes mapped for the tenant on this node (every mapping counted); minus billed bytes, "
      "what deduplication saves.",
      MetricType::Gauge);
  prometheus::MetricFamily counted = NewFamily(
      "iommu_agent_kernel_counted_bytes",
      "Bytes of pins the kernel should be charging the agent for the mappings the tenant's "
      "sessions made on this node: every mapping in full, however many mappings pin the same "
      "page (VFIO type1 and iommufd count per mapping, the ledger bills per page).",
      MetricType::Gauge);
  for (const AgentStats::Tenant& t : s.tenants) {
    AddGauge(&billed, {{"tenant", t.id}}, static_cast<double>(t.billed_bytes));
    AddGauge(&mapped, {{"tenant", t.id}}, static_cast<double>(t.mapped_bytes));
    AddGauge(&counted, {{"tenant", t.id}}, static_cast<double>(t.kernel_counted_bytes));
  }
  out.push_back(std::move(billed));
  out.push_back(std::move(mapped));
  out.push_back(std::move(counted));

  struct Plain {
    const char* name;
    const char* help;
    double value;
  };
  const uint64_t limit = s.containers > 0 ? s.mappings_limit : default_mappings_limit;
  for (const Plain& p : {
           Plain{"iommu_agent_mappings", "DMA mappings in use on the node.",
                 static_cast<double>(s.mappings)},
           Plain{"iommu_agent_container_mappings_max",
                 "The most DMA mappings any one container holds (the limit applies per "
                 "container).",
                 static_cast<double>(s.max_container_mappings)},
           Plain{"iommu_agent_mappings_limit",
                 "The backend's mapping limit per container (type1: dma_entry_limit); 0 = none.",
                 static_cast<double>(limit)},
           Plain{"iommu_agent_containers", "Containers (IOMMU address spaces) the agent holds.",
                 static_cast<double>(s.containers)},
           Plain{"iommu_agent_launcher_sessions", "Open launcher sessions.",
                 static_cast<double>(s.launcher_sessions)},
       }) {
    prometheus::MetricFamily f = NewFamily(p.name, p.help, MetricType::Gauge);
    AddGauge(&f, {}, p.value);
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<prometheus::MetricFamily> AgentMetrics::KernelPinFamilies(
    const absl::StatusOr<ProcessPins>& process,
    const absl::StatusOr<uint64_t>& foll_pin_outstanding_pages) {
  std::vector<prometheus::MetricFamily> out;
  auto gauge = [&out](const char* name, const char* help, uint64_t value) {
    prometheus::MetricFamily f = metrics::NewFamily(name, help, MetricType::Gauge);
    metrics::AddGauge(&f, {}, static_cast<double>(value));
    out.push_back(std::move(f));
  };
  if (process.ok()) {
    gauge("iommu_agent_kernel_locked_bytes",
          "The agent's VmLck (mm->locked_vm): VFIO type1 pins, charged per mapping.",
          process->locked_bytes);
    gauge("iommu_agent_kernel_pinned_bytes",
          "The agent's VmPin (mm->pinned_vm): iommufd pins, charged per mapping.",
          process->pinned_bytes);
  }
  if (foll_pin_outstanding_pages.ok()) {
    gauge("iommu_agent_foll_pin_outstanding_pages",
          "FOLL_PIN pages held now by every process on the node (system-wide, not only the "
          "agent): nr_foll_pin_acquired - nr_foll_pin_released from /proc/vmstat.",
          *foll_pin_outstanding_pages);
  }
  return out;
}

std::vector<prometheus::MetricFamily> AgentMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out = registry_->Collect();
  metrics::AppendMissingFamilies(declared_, &out);
  out.push_back(metrics::BuildInfoFamily("iommu_agent_build_info"));
  out.push_back(cert_expiry_->Collect());
  std::function<AgentStats()> source;
  std::string backend;
  uint64_t default_limit = 0;
  std::string status_path, vmstat_path;
  {
    absl::MutexLock l(&mu_);
    source = stats_source_;
    backend = backend_;
    default_limit = default_mappings_limit_;
    status_path = status_path_;
    vmstat_path = vmstat_path_;
  }
  if (!status_path.empty()) {
    for (prometheus::MetricFamily& f :
         KernelPinFamilies(ReadProcessPins(status_path), ReadFollPinOutstanding(vmstat_path))) {
      out.push_back(std::move(f));
    }
  }
  if (!backend.empty()) {
    prometheus::MetricFamily info = metrics::NewFamily(
        "iommu_agent_backend_info", "The backend in use (always 1): sim, vfio-type1 or iommufd.",
        MetricType::Gauge);
    metrics::AddGauge(&info, {{"backend", backend}}, 1);
    out.push_back(std::move(info));
  }
  if (source) {
    for (prometheus::MetricFamily& f : StateFamilies(source(), default_limit)) {
      out.push_back(std::move(f));
    }
  }
  return out;
}

std::string AgentMetrics::ScrapeText() const { return metrics::TextFormat(Collect()); }

absl::StatusOr<uint64_t> ReadType1DmaEntryLimit(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot read (is the vfio_iommu_type1 module loaded?)"));
  }
  std::stringstream text;
  text << in.rdbuf();
  uint64_t limit = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text.str()), &limit)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a number, got \"", text.str(), "\""));
  }
  return limit;
}

}  // namespace agent
}  // namespace iommu
