#include "bench/server_cpu.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace iommu::bench {

absl::StatusOr<int64_t> ParseStatCpuTicks(absl::string_view stat) {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields are counted from the last ')'. utime and stime are fields 14
  // and 15 of the line, the 12th and 13th after comm.
  const size_t close = stat.rfind(')');
  if (close == absl::string_view::npos) return absl::DataLossError("stat: no (comm)");
  std::vector<absl::string_view> fields =
      absl::StrSplit(stat.substr(close + 1), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  int64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return absl::DataLossError("stat: no utime and stime after (comm)");
  }
  return utime + stime;
}

absl::StatusOr<double> ProcessCpuSeconds(int pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good()) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  absl::StatusOr<int64_t> ticks = ParseStatCpuTicks(text.str());
  if (!ticks.ok()) return absl::DataLossError(absl::StrCat(path, ": ", ticks.status().message()));
  return static_cast<double>(*ticks) / sysconf(_SC_CLK_TCK);
}

ServerCpuWindow::ServerCpuWindow(int pid, Clock::time_point from, Clock::time_point to) {
  if (pid <= 0) return;
  thread_ = std::thread([this, pid, from, to] {
    std::this_thread::sleep_until(from);
    absl::StatusOr<double> start = ProcessCpuSeconds(pid);
    std::this_thread::sleep_until(to);
    absl::StatusOr<double> end = ProcessCpuSeconds(pid);
    if (!start.ok() || !end.ok()) {
      const absl::Status& s = start.ok() ? end.status() : start.status();
      std::fprintf(stderr, "server CPU of pid %d: %s\n", pid, s.ToString().c_str());
      return;
    }
    seconds_ = *end - *start;
  });
}

namespace {

ServerCpuWindow::Clock::time_point In(double seconds) {
  return ServerCpuWindow::Clock::now() +
         std::chrono::duration_cast<ServerCpuWindow::Clock::duration>(
             std::chrono::duration<double>(seconds));
}

}  // namespace

ServerCpuWindow::ServerCpuWindow(int pid, double warmup_s, double duration_s)
    : ServerCpuWindow(pid, In(warmup_s), In(warmup_s + duration_s)) {}

ServerCpuWindow::~ServerCpuWindow() {
  if (thread_.joinable()) thread_.join();
}

std::optional<double> ServerCpuWindow::Seconds() {
  if (thread_.joinable()) thread_.join();
  return seconds_;
}

}  // namespace iommu::bench
