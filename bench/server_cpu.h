// The CPU time a server process spends during a load tool's measured window,
// read from /proc/PID/stat (utime + stime, all of its threads), so that a
// row can say what each completed call cost the server, not just how fast
// it came back. Issue 13 sets a budget on it (broker CPU per mutation).
//
// Resolution is the kernel's clock tick (usually 10 ms): over a window of
// seconds at a busy server that is well under 1%.
#ifndef BENCH_SERVER_CPU_H_
#define BENCH_SERVER_CPU_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu::bench {

// CPU microseconds per op; empty without a measurement or without ops.
inline std::optional<double> MicrosPerOp(std::optional<double> cpu_seconds, int64_t ops) {
  if (!cpu_seconds || ops <= 0) return std::nullopt;
  return *cpu_seconds * 1e6 / ops;
}

// utime + stime in clock ticks from the text of a /proc/PID/stat file.
// DATA_LOSS when it does not parse.
absl::StatusOr<int64_t> ParseStatCpuTicks(absl::string_view stat);

// utime + stime of process `pid` so far, in seconds. NOT_FOUND when it is
// gone, DATA_LOSS when its stat line does not parse.
absl::StatusOr<double> ProcessCpuSeconds(int pid);

// Reads ProcessCpuSeconds(pid) at `from` and at `to` on a thread of its own,
// so the caller's completion loop stays as it is. Seconds() waits for `to`.
class ServerCpuWindow final {
 public:
  using Clock = std::chrono::steady_clock;
  // pid <= 0: measures nothing (Seconds() is empty).
  ServerCpuWindow(int pid, Clock::time_point from, Clock::time_point to);
  // The measured window of a load tool's run starting now: after
  // `warmup_s`, for `duration_s`.
  ServerCpuWindow(int pid, double warmup_s, double duration_s);
  ~ServerCpuWindow();
  ServerCpuWindow(const ServerCpuWindow&) = delete;
  ServerCpuWindow& operator=(const ServerCpuWindow&) = delete;

  // The server's CPU seconds inside [from, to]; empty when there is no pid or
  // a read failed (the reason went to stderr).
  std::optional<double> Seconds();

 private:
  std::thread thread_;
  std::optional<double> seconds_;  // Written by thread_ only, read after join.
};

}  // namespace iommu::bench

#endif  // BENCH_SERVER_CPU_H_
