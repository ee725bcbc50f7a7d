#include "client/call_retry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace iommu {
namespace client {

bool RetryableCallError(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsAborted(status) || absl::IsCancelled(status);
}

absl::Status CallWithRetries(const CallRetryOptions& options, const CallAttempt& attempt,
                             const std::function<absl::Time()>& now,
                             const std::function<void(absl::Duration)>& sleep) {
  const absl::Time start = now();
  const absl::Time deadline = start + options.timeout;
  absl::Duration pause = options.first_pause;
  absl::Status first;
  int attempts = 0;
  // The budget counts what the pauses took even when `sleep` took less
  // (a fake one in tests, an early wake-up).
  absl::Duration slept;
  auto spent = [&] { return std::max(now() - start, slept); };
  for (;;) {
    absl::Status s = attempt(deadline, /*wait_for_ready=*/attempts > 0);
    ++attempts;
    if (s.ok()) return s;
    // A waiting attempt that found no broker ends at the deadline; what the
    // caller needs to know is why the first one failed.
    if (attempts > 1 && absl::IsDeadlineExceeded(s)) break;
    if (!RetryableCallError(s)) return s;
    if (first.ok()) first = s;
    if (spent() + pause >= options.timeout) break;
    sleep(pause);
    slept += pause;
    pause = std::min(pause * 2, options.max_pause);
  }
  if (attempts == 1) return first;
  return absl::Status(
      first.code(),
      absl::StrCat(first.message(), " (tried ", attempts, " times over ",
                   absl::FormatDuration(absl::Trunc(spent(), absl::Milliseconds(1))),
                   "; --timeout sets how long)"));
}

}  // namespace client
}  // namespace iommu
