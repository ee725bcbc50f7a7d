#include "common/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/metrics.h"

namespace iommu {
namespace metrics {
namespace {

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t CountOpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int64_t n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // The directory stream's own fd.
}

prometheus::MetricFamily Gauge(const char* name, const char* help, double value) {
  prometheus::MetricFamily f = NewFamily(name, help, prometheus::MetricType::Gauge);
  AddGauge(&f, {}, value);
  return f;
}

}  // namespace

absl::StatusOr<ProcStat> ParseProcStat(absl::string_view line) {
  const size_t close = line.rfind(')');
  if (close == absl::string_view::npos || line.find('(') == absl::string_view::npos) {
    return absl::DataLossError("/proc/self/stat: no command name in parentheses");
  }
  // Fields after the name, starting at field 3 (state).
  std::vector<absl::string_view> f =
      absl::StrSplit(line.substr(close + 1), ' ', absl::SkipEmpty());
  constexpr size_t kFirst = 3;
  auto field = [&](size_t n) { return f[n - kFirst]; };
  if (f.size() < 24 - kFirst + 1) {
    return absl::DataLossError(absl::StrCat("/proc/self/stat: ", f.size() + 2,
                                            " fields, expected at least 24"));
  }
  ProcStat s;
  const bool ok = absl::SimpleAtoi(field(14), &s.utime_ticks) &&
                  absl::SimpleAtoi(field(15), &s.stime_ticks) &&
                  absl::SimpleAtoi(field(20), &s.threads) &&
                  absl::SimpleAtoi(field(22), &s.start_ticks) &&
                  absl::SimpleAtoi(field(23), &s.vsize_bytes) &&
                  absl::SimpleAtoi(absl::StripTrailingAsciiWhitespace(field(24)), &s.rss_pages);
  if (!ok) return absl::DataLossError("/proc/self/stat: a numeric field does not parse");
  return s;
}

absl::StatusOr<int64_t> ParseBootTime(absl::string_view proc_stat) {
  for (absl::string_view line : absl::StrSplit(proc_stat, '\n')) {
    if (!absl::ConsumePrefix(&line, "btime ")) continue;
    int64_t t = 0;
    if (absl::SimpleAtoi(line, &t)) return t;
  }
  return absl::DataLossError("/proc/stat: no btime line");
}

std::vector<prometheus::MetricFamily> ProcessFamilies() {
  std::vector<prometheus::MetricFamily> out;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  absl::StatusOr<ProcStat> stat = ParseProcStat(ReadFile("/proc/self/stat"));
  if (stat.ok() && ticks > 0) {
    prometheus::MetricFamily cpu = NewFamily(
        "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
        prometheus::MetricType::Counter);
    prometheus::ClientMetric m;
    m.counter.value = static_cast<double>(stat->utime_ticks + stat->stime_ticks) / ticks;
    cpu.metric.push_back(m);
    out.push_back(std::move(cpu));
    out.push_back(Gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                        static_cast<double>(stat->rss_pages) * sysconf(_SC_PAGESIZE)));
    out.push_back(Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                        static_cast<double>(stat->vsize_bytes)));
    out.push_back(Gauge("process_threads", "Number of OS threads in the process.",
                        static_cast<double>(stat->threads)));
    absl::StatusOr<int64_t> boot = ParseBootTime(ReadFile("/proc/stat"));
    if (boot.ok()) {
      out.push_back(Gauge("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.",
                          static_cast<double>(*boot) + static_cast<double>(stat->start_ticks) / ticks));
    }
  }
  const int64_t fds = CountOpenFds();
  if (fds >= 0) out.push_back(Gauge("process_open_fds", "Number of open file descriptors.", fds));
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.push_back(Gauge("process_max_fds", "Maximum number of open file descriptors.",
                        static_cast<double>(lim.rlim_cur)));
  }
  return out;
}

}  // namespace metrics
}  // namespace iommu
