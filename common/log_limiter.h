// LogLimiter: rate-limits warning lines per peer, so that one uid, tenant or
// caller sending refused requests as fast as it can cannot flood a daemon's
// log and bury everyone else's lines (DESIGN.md invariant 10, "log
// volume"). A token bucket per key: `burst` lines at once, then `per_second`;
// lines over the rate are counted, and the next line that passes carries
// "suppressed=N" so the volume is still visible.
//
// LogLimiter is pure logic, no I/O, time injected; LogIfAllowed writes the
// line through common/log.h. Thread-compatible: each owner calls them from
// one thread or under its own mutex.
#ifndef COMMON_LOG_LIMITER_H_
#define COMMON_LOG_LIMITER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/log.h"

namespace iommu {

class LogLimiter final {
 public:
  // At most `max_keys` keys are tracked; past that, keys whose bucket is
  // full again are forgotten, and if none is, new keys share one bucket (so
  // memory stays bounded however many keys appear).
  LogLimiter(double per_second = 1.0, double burst = 10.0, size_t max_keys = 1024);

  LogLimiter(const LogLimiter&) = delete;
  LogLimiter& operator=(const LogLimiter&) = delete;

  // True when a line for `key` may be logged at `now`; then `*suppressed`
  // is how many lines for `key` were refused since the last one allowed
  // (log it as a field). False: the line is counted and must be dropped.
  bool Allow(const std::string& key, absl::Time now, uint64_t* suppressed);

  size_t keys() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time last;
    uint64_t suppressed = 0;
  };
  void Refill(Bucket& b, absl::Time now) const;

  const double per_second_;
  const double burst_;
  const size_t max_keys_;
  std::map<std::string, Bucket> buckets_;
};

// Logs `event` with `fields` when `limiter` allows a line for `key` now,
// adding suppressed=N when lines of `key` were dropped since the last one;
// drops it otherwise. True when it was logged.
bool LogIfAllowed(LogLimiter& limiter, const std::string& key, LogLevel level,
                  absl::string_view event, std::vector<LogField> fields);

}  // namespace iommu

#endif  // COMMON_LOG_LIMITER_H_
