#include "agent/startup.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using Code = absl::StatusCode;

TEST(SplitHostPortTest, ParsesIpv4AndBracketedIpv6) {
  absl::StatusOr<HostPort> hp = SplitHostPort("listen", "127.0.0.1:0");
  ASSERT_OK(hp);
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 0);
  hp = SplitHostPort("listen", "[::1]:7001");
  ASSERT_OK(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 7001);
  EXPECT_EQ(JoinHostPort("::1", 7001), "[::1]:7001");
  EXPECT_EQ(JoinHostPort("broker.local", 443), "broker.local:443");
}

TEST(SplitHostPortTest, RejectsBadValuesNamingTheField) {
  EXPECT_THAT(SplitHostPort("broker", "localhost"),
              StatusIs(Code::kInvalidArgument, "broker: must be host:port"));
  EXPECT_THAT(SplitHostPort("broker", ":80"), StatusIs(Code::kInvalidArgument, "host is empty"));
  EXPECT_THAT(SplitHostPort("broker", "h:65536"), StatusIs(Code::kInvalidArgument, "0-65535"));
  EXPECT_THAT(SplitHostPort("broker", "h:8x"), StatusIs(Code::kInvalidArgument, "0-65535"));
  EXPECT_THAT(SplitHostPort("broker", "::1:80"), StatusIs(Code::kInvalidArgument, "bracketed"));
}

TEST(ChooseBackendTest, SimIsTakenOnlyWhenAskedFor) {
  absl::StatusOr<std::string> kind = ChooseBackend("sim", HostIommu{});
  ASSERT_OK(kind);
  EXPECT_EQ(*kind, "sim");
  EXPECT_THAT(ChooseBackend("auto", HostIommu{}),
              StatusIs(Code::kFailedPrecondition, "Pass --backend=sim explicitly"));
}

TEST(ChooseBackendTest, AutoPrefersIommufdThenType1) {
  HostIommu both{true, true, true};
  EXPECT_EQ(*ChooseBackend("auto", both), "iommufd");
  HostIommu iommufd{true, true, false};
  EXPECT_EQ(*ChooseBackend("auto", iommufd), "iommufd");
  HostIommu type1{false, false, true};
  EXPECT_EQ(*ChooseBackend("auto", type1), "vfio-type1");
  // /dev/iommu alone (no VFIO cdevs) is not enough for iommufd.
  EXPECT_EQ(*ChooseBackend("auto", HostIommu{true, false, true}), "vfio-type1");
  EXPECT_THAT(ChooseBackend("auto", HostIommu{true, false, false}),
              StatusIs(Code::kFailedPrecondition, "found no IOMMU"));
}

TEST(ChooseBackendTest, ExplicitChoicesAreTakenAsGiven) {
  EXPECT_EQ(*ChooseBackend("iommufd", HostIommu{}), "iommufd");
  EXPECT_EQ(*ChooseBackend("vfio", HostIommu{}), "vfio-type1");
  EXPECT_THAT(ChooseBackend("kvm", HostIommu{}),
              StatusIs(Code::kInvalidArgument, "backend: must be auto, iommufd, vfio or sim"));
}

TEST(SimBannerTest, SaysNothingIsReal) {
  EXPECT_NE(SimBanner().find("SIMULATED BACKEND: no real IOMMU, no real DMA,"),
            std::string::npos);
  EXPECT_NE(SimBanner().find("no pinned memory"), std::string::npos);
}

TEST(WriteFileAtomicallyTest, WritesContents) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/port");
  ASSERT_OK(WriteFileAtomically(path, "7001\n"));
  FILE* f = std::fopen(path.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[16] = {};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  EXPECT_EQ(std::string(buf, n), "7001\n");
}

TEST(WriteFileAtomicallyTest, ReportsMissingDirectory) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/no/such/dir/port");
  EXPECT_THAT(WriteFileAtomically(path, "1"), StatusIs(Code::kNotFound, "ENOENT"));
}

TEST(LauncherFdBudgetTest, CountsSocketMemoryAndDeviceFdsPerConnection) {
  EXPECT_EQ(LauncherFdBudget(64, 64, 32), 64u * 97u);
  EXPECT_EQ(LauncherFdBudget(1, 1, 0), 2u);
}

TEST(PlanFdLimitTest, LeavesASufficientLimitAlone) {
  FdLimitPlan plan = PlanFdLimit(20000, 20000, 7232);
  EXPECT_OK(plan.status);
  EXPECT_EQ(plan.soft, 20000u);
}

TEST(PlanFdLimitTest, RaisesTheSoftLimitToWhatIsNeeded) {
  FdLimitPlan plan = PlanFdLimit(1024, 524288, 7232);
  EXPECT_OK(plan.status);
  EXPECT_EQ(plan.soft, 7232u);
}

TEST(PlanFdLimitTest, ShortHardLimitIsRaisedToAndExplained) {
  FdLimitPlan plan = PlanFdLimit(1024, 4096, 7232);
  EXPECT_EQ(plan.soft, 4096u);
  EXPECT_THAT(plan.status,
              StatusIs(Code::kFailedPrecondition,
                       "nofile: the agent may need 7232 fds at its launcher limits but "
                       "RLIMIT_NOFILE allows 4096 (hard)"));
}

TEST(EnsureFdLimitTest, SmallNeedIsCoveredWithoutChange) {
  absl::StatusOr<std::string> s = EnsureFdLimit(16);
  ASSERT_OK(s);
  EXPECT_THAT(*s, ::testing::HasSubstr("covers the 16 needed"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
