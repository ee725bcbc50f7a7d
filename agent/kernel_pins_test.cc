#include "agent/kernel_pins.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

// Trimmed from a 6.12 kernel's /proc/self/status.
constexpr char kStatus[] =
    "Name:\tiommu-agent\n"
    "Umask:\t0022\n"
    "VmPeak:\t  123456 kB\n"
    "VmLck:\t  262144 kB\n"
    "VmPin:\t       8 kB\n"
    "VmHWM:\t    9876 kB\n"
    "CapEff:\t000001ffffffffff\n";

TEST(ParseProcStatusPinsTest, ConvertsVmLckAndVmPinFromKilobytesToBytes) {
  absl::StatusOr<ProcessPins> p = ParseProcStatusPins(kStatus);
  ASSERT_OK(p);
  EXPECT_EQ(p->locked_bytes, uint64_t{256} << 20);
  EXPECT_EQ(p->pinned_bytes, 8192u);
}

TEST(ParseProcStatusPinsTest, ZeroIsZero) {
  absl::StatusOr<ProcessPins> p = ParseProcStatusPins("VmLck:\t0 kB\nVmPin:\t0 kB\n");
  ASSERT_OK(p);
  EXPECT_EQ(p->locked_bytes, 0u);
  EXPECT_EQ(p->pinned_bytes, 0u);
}

TEST(ParseProcStatusPinsTest, RefusesMissingVmPinNamingFileAndField) {
  EXPECT_THAT(ParseProcStatusPins("VmLck:\t0 kB\n", "/proc/7/status"),
              StatusIs(absl::StatusCode::kInvalidArgument, "/proc/7/status: VmPin is missing"));
}

TEST(ParseProcStatusPinsTest, RefusesValueWithoutKilobyteUnit) {
  EXPECT_THAT(ParseProcStatusPins("VmLck:\t12 MB\nVmPin:\t0 kB\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "/proc/self/status: VmLck must be \"<number> kB\""));
}

TEST(ParseProcStatusPinsTest, RefusesValueOverflowingBytes) {
  EXPECT_THAT(ParseProcStatusPins("VmLck:\t18446744073709551615 kB\nVmPin:\t0 kB\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "VmLck overflows 64 bits"));
}

constexpr char kVmstat[] =
    "nr_free_pages 12345\n"
    "nr_foll_pin_acquired 70000\n"
    "nr_foll_pin_released 4465\n"
    "pgfault 1\n";

TEST(ParseVmstatFollPinOutstandingTest, IsAcquiredMinusReleased) {
  absl::StatusOr<uint64_t> n = ParseVmstatFollPinOutstanding(kVmstat);
  ASSERT_OK(n);
  EXPECT_EQ(*n, 65535u);
}

TEST(ParseVmstatFollPinOutstandingTest, RefusesMissingCounterNamingIt) {
  EXPECT_THAT(ParseVmstatFollPinOutstanding("nr_foll_pin_acquired 3\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "/proc/vmstat: nr_foll_pin_released is missing"));
}

TEST(ParseVmstatFollPinOutstandingTest, RefusesReleasedAboveAcquired) {
  EXPECT_THAT(
      ParseVmstatFollPinOutstanding("nr_foll_pin_acquired 3\nnr_foll_pin_released 4\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "nr_foll_pin_released 4 is more than nr_foll_pin_acquired 3"));
}

TEST(ParseVmstatFollPinOutstandingTest, RefusesNonNumber) {
  EXPECT_THAT(
      ParseVmstatFollPinOutstanding("nr_foll_pin_acquired x\nnr_foll_pin_released 4\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "nr_foll_pin_acquired must be a number, got \"x\""));
}

TEST(ReadProcessPinsTest, ReadsAFileAndNamesItInErrors) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string path = dir + "/status";
  std::ofstream(path) << kStatus;
  absl::StatusOr<ProcessPins> p = ReadProcessPins(path);
  ASSERT_OK(p);
  EXPECT_EQ(p->pinned_bytes, 8192u);
  EXPECT_THAT(ReadProcessPins(dir + "/absent"),
              StatusIs(absl::StatusCode::kNotFound, "open " + dir + "/absent"));
  std::ofstream(path) << "Name:\tx\n";
  EXPECT_THAT(ReadProcessPins(path),
              StatusIs(absl::StatusCode::kInvalidArgument, path + ": VmLck is missing"));
}

TEST(ReadFollPinOutstandingTest, ReadsAFile) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/vmstat";
  std::ofstream(path) << kVmstat;
  absl::StatusOr<uint64_t> n = ReadFollPinOutstanding(path);
  ASSERT_OK(n);
  EXPECT_EQ(*n, 65535u);
}

TEST(ReadProcessPinsTest, ReadsThisProcess) {
  // Present on every kernel this agent supports (VmPin since 3.2).
  EXPECT_OK(ReadProcessPins());
}

}  // namespace
}  // namespace agent
}  // namespace iommu
