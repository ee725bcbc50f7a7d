// The retry policy of iommuctl's calls, on a fake clock: which failures are
// tried again, with what pauses, within what budget, and what the caller is
// told when no broker ever answered.
#include "client/call_retry.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::testing::HasSubstr;

class CallRetryTest : public ::testing::Test {
 protected:
  // Runs CallWithRetries with each attempt answered by the next of
  // `answers` (the last one repeats), on a clock that only the pauses move.
  absl::Status Run(std::vector<absl::Status> answers) {
    CallRetryOptions options;
    options.timeout = absl::Seconds(5);
    size_t next = 0;
    return CallWithRetries(
        options,
        [&](absl::Time deadline, bool wait_for_ready) {
          deadlines_.push_back(deadline);
          waited_.push_back(wait_for_ready);
          const absl::Status s = answers[std::min(next, answers.size() - 1)];
          ++next;
          return s;
        },
        [this] { return now_; },
        [this](absl::Duration d) {
          pauses_.push_back(d);
          now_ += d;
        });
  }

  absl::Time now_ = absl::FromUnixSeconds(1000);
  std::vector<absl::Time> deadlines_;
  std::vector<bool> waited_;
  std::vector<absl::Duration> pauses_;
};

TEST_F(CallRetryTest, ASuccessAtFirstIsOneAttempt) {
  EXPECT_OK(Run({absl::OkStatus()}));
  EXPECT_EQ(waited_, std::vector<bool>{false});
  EXPECT_TRUE(pauses_.empty());
}

TEST_F(CallRetryTest, NoBrokerThenALeaderIsRiddenThrough) {
  EXPECT_OK(Run({absl::UnavailableError("connection refused"),
                 absl::UnavailableError("connection refused"), absl::OkStatus()}));
  // The first attempt fails fast; the later ones wait for a connection.
  EXPECT_EQ(waited_, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(pauses_, (std::vector<absl::Duration>{absl::Milliseconds(100),
                                                   absl::Milliseconds(200)}));
  // One budget for all: every attempt ends by the first one's deadline.
  for (absl::Time d : deadlines_) EXPECT_EQ(d, absl::FromUnixSeconds(1005));
}

TEST_F(CallRetryTest, AnAttemptOvertakenByItsOwnFirstIsRetried) {
  EXPECT_OK(Run({absl::AbortedError("request_id: a request with id \"x\" is in flight"),
                 absl::OkStatus()}));
  EXPECT_EQ(waited_.size(), 2u);
}

TEST_F(CallRetryTest, ACallABrokerDroppedAsItStoppedIsRetried) {
  EXPECT_OK(Run({absl::CancelledError(""), absl::OkStatus()}));
  EXPECT_EQ(waited_.size(), 2u);
}

TEST_F(CallRetryTest, RefusalsAreNotRetried) {
  for (const absl::Status& refusal :
       {absl::InvalidArgumentError("tenant_id: bad"), absl::NotFoundError("no tenant"),
        absl::PermissionDeniedError("no"), absl::FailedPreconditionError("used"),
        absl::ResourceExhaustedError("quota"), absl::DeadlineExceededError("slow")}) {
    waited_.clear();
    EXPECT_EQ(Run({refusal}), refusal);
    EXPECT_EQ(waited_.size(), 1u) << refusal;
  }
}

TEST_F(CallRetryTest, ARefusalAfterARetryIsReturnedAsIs) {
  const absl::Status refusal = absl::NotFoundError("container_id: no container \"c-1\"");
  EXPECT_EQ(Run({absl::UnavailableError("refused"), refusal}), refusal);
}

TEST_F(CallRetryTest, NoBrokerAtAllEndsWithinTheBudgetWithTheFirstError) {
  absl::Status s = Run({absl::UnavailableError("failed to connect to all addresses")});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("failed to connect to all addresses"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("--timeout"));
  // Pauses grow to the cap and stay within the budget.
  absl::Duration slept;
  for (absl::Duration d : pauses_) {
    EXPECT_LE(d, absl::Seconds(1));
    slept += d;
  }
  EXPECT_LT(slept, absl::Seconds(5));
  EXPECT_GE(pauses_.size(), 4u);
  EXPECT_EQ(pauses_.back(), absl::Seconds(1));
}

TEST_F(CallRetryTest, AWaitingAttemptThatTimesOutReportsWhyTheFirstFailed) {
  absl::Status s = Run({absl::UnavailableError("connection refused"),
                        absl::DeadlineExceededError("Deadline Exceeded")});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("connection refused"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("tried 2 times"));
}

}  // namespace
}  // namespace client
}  // namespace iommu
