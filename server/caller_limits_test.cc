#include "server/caller_limits.h"

#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(CallerLimitsTest, OneCallerAtItsLimitDoesNotBlockAnother) {
  CallerLimits limits(CallerLimitsOptions{/*max_inflight_per_caller=*/2});
  ASSERT_TRUE(limits.Admit("tenant/hostile").ok());
  ASSERT_TRUE(limits.Admit("tenant/hostile").ok());
  absl::Status s = limits.Admit("tenant/hostile");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(),
            "caller: tenant/hostile already has 2 calls in flight (limit 2 per caller, "
            "--max-inflight-per-caller); retry when some finish");
  EXPECT_TRUE(limits.Admit("tenant/acme").ok());
  limits.Release("tenant/hostile");
  EXPECT_TRUE(limits.Admit("tenant/hostile").ok());
  EXPECT_EQ(limits.inflight("tenant/hostile"), 2u);
}

TEST(CallerLimitsTest, AdmissionReleasesOnlyWhatItTook) {
  CallerLimits limits(CallerLimitsOptions{/*max_inflight_per_caller=*/1});
  {
    CallerAdmission first(&limits, "tenant/acme");
    ASSERT_TRUE(first.status().ok());
    CallerAdmission second(&limits, "tenant/acme");
    EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  }
  EXPECT_EQ(limits.inflight("tenant/acme"), 0u);
}

TEST(CallerLimitsTest, RefusalLogsAreRateLimitedPerCallerAndCountWhatWasDropped) {
  CallerLimits limits(CallerLimitsOptions{0, /*refusal_logs_per_second=*/1,
                                          /*refusal_log_burst=*/3});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  uint64_t suppressed = 0;
  int logged = 0;
  for (int i = 0; i < 100; ++i) logged += limits.ShouldLogRefusal("tenant/hostile", t0, &suppressed);
  EXPECT_EQ(logged, 3);
  // Another caller still gets its lines.
  EXPECT_TRUE(limits.ShouldLogRefusal("tenant/acme", t0, &suppressed));
  EXPECT_EQ(suppressed, 0u);
  // A second later one more line, saying how many were dropped.
  EXPECT_TRUE(limits.ShouldLogRefusal("tenant/hostile", t0 + absl::Seconds(1), &suppressed));
  EXPECT_EQ(suppressed, 97u);
  EXPECT_FALSE(limits.ShouldLogRefusal("tenant/hostile", t0 + absl::Seconds(1), &suppressed));
}

}  // namespace
}  // namespace iommu
