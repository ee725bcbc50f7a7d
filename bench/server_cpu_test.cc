#include "bench/server_cpu.h"

#include <unistd.h>

#include <chrono>
#include <cstdint>

#include "gtest/gtest.h"

namespace iommu::bench {
namespace {

TEST(ParseStatCpuTicksTest, AddsUtimeAndStimeCountingFromTheLastParenthesis) {
  // A comm with a space and a ')' of its own must not shift the fields.
  const char* stat =
      "4242 (a b) c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 17 0 0 20 0 9 0 100 "
      "1000000 500 18446744073709551615\n";
  absl::StatusOr<int64_t> ticks = ParseStatCpuTicks(stat);
  ASSERT_TRUE(ticks.ok()) << ticks.status();
  EXPECT_EQ(*ticks, 250 + 17);
}

TEST(ParseStatCpuTicksTest, RefusesWhatIsNotAStatLine) {
  EXPECT_EQ(ParseStatCpuTicks("").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseStatCpuTicks("1 (x) S 1 2 3").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseStatCpuTicks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s 0").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ProcessCpuSecondsTest, GrowsWhileThisProcessWorks) {
  absl::StatusOr<double> before = ProcessCpuSeconds(getpid());
  ASSERT_TRUE(before.ok()) << before.status();
  // Spin until the kernel has charged at least two ticks more.
  absl::StatusOr<double> after = before;
  volatile uint64_t sink = 0;
  while (after.ok() && *after < *before + 2.0 / sysconf(_SC_CLK_TCK)) {
    for (int i = 0; i < 1000000; ++i) sink = sink + i;
    after = ProcessCpuSeconds(getpid());
  }
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GT(*after, *before);
}

TEST(ProcessCpuSecondsTest, NotFoundForAProcessThatIsGone) {
  // Beyond the largest pid Linux hands out (pid_max is at most 2^22).
  EXPECT_EQ(ProcessCpuSeconds((1 << 22) + 1).status().code(), absl::StatusCode::kNotFound);
}

TEST(ServerCpuWindowTest, MeasuresNothingWithoutAPid) {
  const auto now = std::chrono::steady_clock::now();
  ServerCpuWindow window(0, now, now);
  EXPECT_FALSE(window.Seconds().has_value());
  EXPECT_FALSE(MicrosPerOp(std::nullopt, 10).has_value());
  EXPECT_FALSE(MicrosPerOp(1.0, 0).has_value());
  EXPECT_DOUBLE_EQ(*MicrosPerOp(0.5, 1000), 500.0);
}

TEST(ServerCpuWindowTest, MeasuresThisProcessBetweenTheTwoTimes) {
  const auto from = std::chrono::steady_clock::now();
  const auto to = from + std::chrono::milliseconds(100);
  ServerCpuWindow window(getpid(), from, to);
  volatile uint64_t sink = 0;
  while (std::chrono::steady_clock::now() < to) sink = sink + 1;
  std::optional<double> s = window.Seconds();
  ASSERT_TRUE(s.has_value());
  EXPECT_GE(*s, 0.0);
}

}  // namespace
}  // namespace iommu::bench
