// The process_* metrics Prometheus's client libraries export (CPU time,
// memory, file descriptors, start time, threads), read from /proc/self, so
// dashboards and alerts written for other daemons work on ours.
//
// Thread-safe: no shared state.
#ifndef COMMON_PROCESS_METRICS_H_
#define COMMON_PROCESS_METRICS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/metric_family.h"

namespace iommu {
namespace metrics {

// The fields of /proc/<pid>/stat that the metrics use (proc(5)).
struct ProcStat {
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  int64_t threads = 0;
  uint64_t start_ticks = 0;  // After boot.
  uint64_t vsize_bytes = 0;
  int64_t rss_pages = 0;
};

// Parses a /proc/<pid>/stat line. The command name may hold spaces and
// parentheses; it ends at the last ')'. DATA_LOSS for anything malformed.
absl::StatusOr<ProcStat> ParseProcStat(absl::string_view line);

// Boot time (seconds since the epoch) from /proc/stat's "btime" line.
absl::StatusOr<int64_t> ParseBootTime(absl::string_view proc_stat);

// This process's families, as of now. A /proc file that cannot be read
// leaves its metrics out rather than failing the scrape.
std::vector<prometheus::MetricFamily> ProcessFamilies();

}  // namespace metrics
}  // namespace iommu

#endif  // COMMON_PROCESS_METRICS_H_
