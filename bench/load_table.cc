#include "bench/load_table.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace iommu::bench {
namespace {

double Percentile(const std::vector<uint32_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(q * (sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

std::string CpuPerOp(const LoadRow& r) {
  return r.server_cpu_us_per_op ? absl::StrFormat("%.0f", *r.server_cpu_us_per_op) : "";
}

}  // namespace

LoadRow SummarizeLoad(const std::string& mix, const std::string& op, int concurrency,
                      double seconds, std::vector<uint32_t> us, int64_t errors) {
  std::sort(us.begin(), us.end());
  LoadRow r;
  r.mix = mix;
  r.op = op;
  r.concurrency = concurrency;
  r.ops = us.size();
  r.seconds = seconds;
  r.qps = us.size() / seconds;
  r.p50 = Percentile(us, 0.50);
  r.p99 = Percentile(us, 0.99);
  r.p999 = Percentile(us, 0.999);
  r.errors = errors;
  return r;
}

std::string LoadRatio(double x, double floor) {
  return floor > 0 ? absl::StrFormat("%.2f", x / floor) : "";
}

void PrintLoadHeader(std::FILE* out) {
  std::fprintf(out, "%-7s %-24s %5s %9s %9s %9s %9s %6s %8s %8s %8s %10s\n", "mix", "op", "conc",
               "qps", "p50_us", "p99_us", "p999_us", "errors", "qps/noop", "p50/noop", "p99/noop",
               "srv_cpu_us");
}

void PrintLoadRow(std::FILE* out, const LoadRow& r, const LoadRow& floor) {
  std::fprintf(out, "%-7s %-24s %5d %9.0f %9.0f %9.0f %9.0f %6lld %8s %8s %8s %10s\n",
               r.mix.c_str(), r.op.c_str(), r.concurrency, r.qps, r.p50, r.p99, r.p999,
               static_cast<long long>(r.errors), LoadRatio(r.qps, floor.qps).c_str(),
               LoadRatio(r.p50, floor.p50).c_str(), LoadRatio(r.p99, floor.p99).c_str(),
               CpuPerOp(r).c_str());
}

bool LoadCsv::Open(const std::string& path) {
  bool empty = true;
  {
    std::ifstream in(path);
    empty = !in.good() || in.peek() == std::ifstream::traits_type::eof();
  }
  out_.open(path, std::ios::app);
  if (!out_.is_open()) {
    std::fprintf(stderr, "cannot append to %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  if (empty) {
    out_ << "label,mix,op,concurrency,ops,seconds,qps,p50_us,p99_us,p999_us,errors,"
            "qps_vs_noop,p50_vs_noop,p99_vs_noop,server_cpu_us_per_op\n";
  }
  return true;
}

void LoadCsv::Append(const std::string& label, const LoadRow& r, const LoadRow& floor) {
  out_ << absl::StrFormat("%s,%s,%s,%d,%lld,%.1f,%.1f,%.0f,%.0f,%.0f,%lld,%s,%s,%s,%s\n", label,
                          r.mix, r.op, r.concurrency, static_cast<long long>(r.ops), r.seconds,
                          r.qps, r.p50, r.p99, r.p999, static_cast<long long>(r.errors),
                          LoadRatio(r.qps, floor.qps), LoadRatio(r.p50, floor.p50),
                          LoadRatio(r.p99, floor.p99), CpuPerOp(r));
  out_.flush();
}

}  // namespace iommu::bench
