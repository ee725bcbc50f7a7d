// The result rows of the closed-loop load tools (bench/loadgen against the
// broker, bench/etcd_load against etcd): one summary per (mix, op,
// concurrency), printed as the same human table and the same CSV columns so
// that bench/broker_load.sh can set a broker row next to an etcd row.
//
//   CSV: label,mix,op,concurrency,ops,seconds,qps,p50_us,p99_us,p999_us,errors,
//        qps_vs_noop,p50_vs_noop,p99_vs_noop,server_cpu_us_per_op
//
// server_cpu_us_per_op is the server process's CPU time (all threads, user +
// system, bench/server_cpu.h) over the measured window divided by the calls
// completed in it; empty when the tool was not told the server's pid. Only a
// whole mix's row ("all") has it: the server's CPU is not split by RPC.
//
// The *_vs_noop columns are ratios to a floor row measured in the same run
// (loadgen's health check); empty when there is no floor.
//
// Not thread-safe: one thread reports.
#ifndef BENCH_LOAD_TABLE_H_
#define BENCH_LOAD_TABLE_H_

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace iommu::bench {

struct LoadRow {
  std::string mix, op;
  int concurrency = 0;
  int64_t ops = 0;
  double seconds = 0, qps = 0, p50 = 0, p99 = 0, p999 = 0;  // Latencies in us.
  int64_t errors = 0;
  std::optional<double> server_cpu_us_per_op;
};

// Exact percentiles of `us` (latencies in microseconds of the calls that
// completed inside the measured `seconds`).
LoadRow SummarizeLoad(const std::string& mix, const std::string& op, int concurrency,
                      double seconds, std::vector<uint32_t> us, int64_t errors);

// "x / floor" with two decimals; empty when there is no floor (floor <= 0).
std::string LoadRatio(double x, double floor);

// The human table: a header, then one line per row with its ratios to `floor`
// (a default LoadRow when there is none).
void PrintLoadHeader(std::FILE* out);
void PrintLoadRow(std::FILE* out, const LoadRow& row, const LoadRow& floor);

// Appends rows to a CSV file, writing the header first when the file is
// empty or new. Open() returns false (and says why on stderr) when the file
// cannot be opened for appending.
class LoadCsv final {
 public:
  bool Open(const std::string& path);
  bool is_open() const { return out_.is_open(); }
  void Append(const std::string& label, const LoadRow& row, const LoadRow& floor);

 private:
  std::ofstream out_;
};

}  // namespace iommu::bench

#endif  // BENCH_LOAD_TABLE_H_
