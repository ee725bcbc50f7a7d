#include "common/process_metrics.h"

#include <string>

#include "common/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace metrics {
namespace {

using ::testing::HasSubstr;

TEST(ProcessMetricsTest, ParsesStatWithAHostileCommandName) {
  // proc(5) fields 1..24; the command holds spaces and a ')'.
  const std::string line =
      "4242 (evil) name (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
      "250 50 0 0 20 0 7 0 123456 987654321 321\n";
  absl::StatusOr<ProcStat> s = ParseProcStat(line);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->utime_ticks, 250u);
  EXPECT_EQ(s->stime_ticks, 50u);
  EXPECT_EQ(s->threads, 7);
  EXPECT_EQ(s->start_ticks, 123456u);
  EXPECT_EQ(s->vsize_bytes, 987654321u);
  EXPECT_EQ(s->rss_pages, 321);
}

TEST(ProcessMetricsTest, MalformedStatIsDataLoss) {
  for (const char* bad : {"", "4242 noparens S 1", "4242 (x) S 1 2 3", 
                          "4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 u 50 0 0 20 0 7 0 1 2 3"}) {
    EXPECT_EQ(ParseProcStat(bad).status().code(), absl::StatusCode::kDataLoss) << bad;
  }
  EXPECT_EQ(*ParseBootTime("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"), 1700000000);
  EXPECT_EQ(ParseBootTime("cpu 1\n").status().code(), absl::StatusCode::kDataLoss);
}

TEST(ProcessMetricsTest, ThisProcessExportsTheUsualFamilies) {
  const std::string text = TextFormat(ProcessFamilies());
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds", "process_threads"}) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + name)) << name;
  }
}

}  // namespace
}  // namespace metrics
}  // namespace iommu
