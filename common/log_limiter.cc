#include "common/log_limiter.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

namespace iommu {
namespace {

// Where keys past max_keys share a bucket; not a valid uid or tenant.
constexpr char kOverflowKey[] = "<other>";

}  // namespace

LogLimiter::LogLimiter(double per_second, double burst, size_t max_keys)
    : per_second_(std::max(per_second, 0.0)),
      burst_(std::max(burst, 1.0)),
      max_keys_(std::max<size_t>(max_keys, 1)) {}

void LogLimiter::Refill(Bucket& b, absl::Time now) const {
  const double elapsed = absl::ToDoubleSeconds(std::max(now - b.last, absl::ZeroDuration()));
  b.tokens = std::min(burst_, b.tokens + elapsed * per_second_);
  b.last = now;
}

bool LogLimiter::Allow(const std::string& key, absl::Time now, uint64_t* suppressed) {
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      // Forget keys that are quiet again (full bucket, nothing suppressed):
      // they would start from a full bucket anyway.
      for (auto b = buckets_.begin(); b != buckets_.end();) {
        Refill(b->second, now);
        const bool idle = b->second.tokens >= burst_ && b->second.suppressed == 0;
        b = idle ? buckets_.erase(b) : std::next(b);
      }
    }
    const std::string& k = buckets_.size() >= max_keys_ ? kOverflowKey : key;
    it = buckets_.find(k);
    if (it == buckets_.end()) it = buckets_.emplace(k, Bucket{burst_, now, 0}).first;
  }
  Bucket& b = it->second;
  Refill(b, now);
  if (b.tokens < 1.0) {
    ++b.suppressed;
    return false;
  }
  b.tokens -= 1.0;
  *suppressed = b.suppressed;
  b.suppressed = 0;
  return true;
}

bool LogIfAllowed(LogLimiter& limiter, const std::string& key, LogLevel level,
                  absl::string_view event, std::vector<LogField> fields) {
  uint64_t suppressed = 0;
  if (!limiter.Allow(key, absl::Now(), &suppressed)) return false;
  if (suppressed > 0) fields.push_back({"suppressed", suppressed});
  LogEvent(level, event, fields);
  return true;
}

}  // namespace iommu
