// How iommuctl carries on when no broker answers: a call that failed with
// UNAVAILABLE (nothing listens at an address, a connection broke, a broker
// between leaders or deposed), ABORTED (a retry met its own first attempt
// still in flight) or CANCELLED (iommuctl never cancels its own calls: gRPC
// answers this to calls that reached a broker as it shut down) is made
// again, with a growing pause, until --timeout has passed since the first
// attempt. The caller thus rides through a change of
// leader among the replicas it names (--broker=A,B,C) without retrying by
// hand.
//
// Every call iommuctl makes is safe to repeat: reads change nothing, and a
// mutation carries one request id for all its attempts, so the broker
// applies it at most once and answers a repeat with the first answer.
//
// Pure logic: the attempt and the pause are the caller's.
#ifndef CLIENT_CALL_RETRY_H_
#define CLIENT_CALL_RETRY_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace iommu {
namespace client {

struct CallRetryOptions {
  absl::Duration timeout = absl::Seconds(5);  // Whole budget, from the first attempt.
  absl::Duration first_pause = absl::Milliseconds(100);
  absl::Duration max_pause = absl::Seconds(1);
};

// True for the codes worth another attempt (above).
bool RetryableCallError(const absl::Status& status);

// One attempt: must end by `deadline`. `wait_for_ready` is true for every
// attempt after the first: it then waits for a broker to accept the
// connection instead of failing at once, so it reaches a new leader as soon
// as that one listens.
using CallAttempt = std::function<absl::Status(absl::Time deadline, bool wait_for_ready)>;

// Runs `attempt` until it succeeds, fails with a code that is not
// retryable (returned as is), or the budget is spent: then the first
// retryable error, with how often and how long it was tried. `now` and
// `sleep` are the clock and the pause (tests fake both).
absl::Status CallWithRetries(const CallRetryOptions& options, const CallAttempt& attempt,
                             const std::function<absl::Time()>& now,
                             const std::function<void(absl::Duration)>& sleep);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_CALL_RETRY_H_
