#include "common/log_limiter.h"

#include <string>

#include "gtest/gtest.h"

namespace iommu {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// Regression (issue 11, B): every refusal of one uid was one warning line,
// so one peer could fill the agent's log. Now each key gets a burst, then a
// steady rate, and the count of what was dropped rides on the next line.
TEST(LogLimiterTest, OneKeyGetsItsBurstThenItsRateAndTheDroppedCount) {
  LogLimiter limiter(/*per_second=*/1.0, /*burst=*/3.0);
  uint64_t suppressed = 99;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.Allow("uid=666", kT0, &suppressed));
    EXPECT_EQ(suppressed, 0u);
  }
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(limiter.Allow("uid=666", kT0, &suppressed));
  // Another peer is not affected by the first one's flood.
  EXPECT_TRUE(limiter.Allow("uid=1000", kT0, &suppressed));
  EXPECT_EQ(suppressed, 0u);
  // One second later one more line, carrying what was dropped.
  ASSERT_TRUE(limiter.Allow("uid=666", kT0 + absl::Seconds(1), &suppressed));
  EXPECT_EQ(suppressed, 1000u);
  EXPECT_FALSE(limiter.Allow("uid=666", kT0 + absl::Seconds(1), &suppressed));
}

TEST(LogLimiterTest, KeysAreBoundedAndQuietOnesForgotten) {
  LogLimiter limiter(1.0, 1.0, /*max_keys=*/2);
  uint64_t suppressed = 0;
  EXPECT_TRUE(limiter.Allow("a", kT0, &suppressed));
  EXPECT_TRUE(limiter.Allow("b", kT0, &suppressed));
  // Full of busy keys: a third shares the overflow bucket.
  EXPECT_TRUE(limiter.Allow("c", kT0, &suppressed));
  EXPECT_FALSE(limiter.Allow("d", kT0, &suppressed));
  EXPECT_LE(limiter.keys(), 3u);
  // Later, the quiet keys are forgotten and new ones fit.
  EXPECT_TRUE(limiter.Allow("e", kT0 + absl::Seconds(10), &suppressed));
  EXPECT_LE(limiter.keys(), 3u);
}

}  // namespace
}  // namespace iommu
