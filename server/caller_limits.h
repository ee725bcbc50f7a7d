// Per-caller bounds at the broker's gRPC boundary (DESIGN.md invariant 10):
// how many of one caller's calls run at once, and how many of its refusals
// are logged, so that one tenant can neither hold every handler thread nor
// flood the log while the others are served. Callers are identities
// (Identity::ToString()); every caller without a certificate is one caller.
// Pure: no gRPC, no I/O; the clock is passed in.
//
// Thread-safe.
#ifndef SERVER_CALLER_LIMITS_H_
#define SERVER_CALLER_LIMITS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log_limiter.h"

namespace iommu {

struct CallerLimitsOptions {
  // Calls of one caller in flight at once; 0: no limit.
  size_t max_inflight_per_caller = 64;
  // Refusals logged per caller: a burst, then this many per second.
  double refusal_logs_per_second = 5;
  double refusal_log_burst = 20;
};

class CallerLimits final {
 public:
  // Callers whose refusal logs are limited apart; past that, quiet ones are
  // forgotten and new ones share one limit (LogLimiter).
  static constexpr size_t kMaxLoggedCallers = 4096;

  explicit CallerLimits(CallerLimitsOptions options = {})
      : options_(options),
        refusal_logs_(options.refusal_logs_per_second, options.refusal_log_burst,
                      kMaxLoggedCallers) {}
  CallerLimits(const CallerLimits&) = delete;
  CallerLimits& operator=(const CallerLimits&) = delete;

  // Admits one call of `caller`: OK (pair it with one Release), or
  // RESOURCE_EXHAUSTED naming the caller and the limit.
  absl::Status Admit(const std::string& caller) ABSL_LOCKS_EXCLUDED(mu_);
  void Release(const std::string& caller) ABSL_LOCKS_EXCLUDED(mu_);

  // Whether to log a refusal of `caller` at `now`. When it says yes after
  // having said no, *suppressed is how many refusals went unlogged since
  // (else 0), for the line to say so.
  bool ShouldLogRefusal(const std::string& caller, absl::Time now, uint64_t* suppressed)
      ABSL_LOCKS_EXCLUDED(mu_);

  size_t inflight(const std::string& caller) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Constant after construction.
  const CallerLimitsOptions options_;

  mutable absl::Mutex mu_;
  std::map<std::string, size_t> inflight_ ABSL_GUARDED_BY(mu_);  // No entry: 0.
  LogLimiter refusal_logs_ ABSL_GUARDED_BY(mu_);
};

// Admit/Release as a scope.
class CallerAdmission final {
 public:
  CallerAdmission(CallerLimits* limits, std::string caller)
      : limits_(limits), caller_(std::move(caller)), status_(limits_->Admit(caller_)) {}
  ~CallerAdmission() {
    if (status_.ok()) limits_->Release(caller_);
  }
  CallerAdmission(const CallerAdmission&) = delete;
  CallerAdmission& operator=(const CallerAdmission&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  CallerLimits* const limits_;
  const std::string caller_;
  const absl::Status status_;
};

}  // namespace iommu

#endif  // SERVER_CALLER_LIMITS_H_
