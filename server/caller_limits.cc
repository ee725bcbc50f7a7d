#include "server/caller_limits.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace iommu {
namespace {

// Past this many buckets, idle ones (full, nothing suppressed) are dropped.
constexpr size_t kBucketsBeforePruning = 4096;

}  // namespace

absl::Status CallerLimits::Admit(const std::string& caller) {
  absl::MutexLock l(&mu_);
  size_t& n = inflight_[caller];
  if (options_.max_inflight_per_caller != 0 && n >= options_.max_inflight_per_caller) {
    if (n == 0) inflight_.erase(caller);
    return absl::ResourceExhaustedError(
        absl::StrCat("caller: ", caller, " already has ", n, " calls in flight (limit ",
                     options_.max_inflight_per_caller,
                     " per caller, --max_inflight_per_caller); retry "
                     "when some finish"));
  }
  ++n;
  return absl::OkStatus();
}

void CallerLimits::Release(const std::string& caller) {
  absl::MutexLock l(&mu_);
  auto it = inflight_.find(caller);
  if (it == inflight_.end()) return;  // Unpaired; nothing to give back.
  if (--it->second == 0) inflight_.erase(it);
}

bool CallerLimits::ShouldLogRefusal(const std::string& caller, absl::Time now,
                                    uint64_t* suppressed) {
  absl::MutexLock l(&mu_);
  *suppressed = 0;
  if (buckets_.size() >= kBucketsBeforePruning) {
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      const double refill =
          absl::ToDoubleSeconds(now - it->second.last) * options_.refusal_logs_per_second;
      const bool idle =
          it->second.suppressed == 0 && it->second.tokens + refill >= options_.refusal_log_burst;
      it = idle ? buckets_.erase(it) : std::next(it);
    }
  }
  auto [it, inserted] = buckets_.try_emplace(caller);
  Bucket& b = it->second;
  if (inserted) {
    b.tokens = options_.refusal_log_burst;
  } else if (now > b.last) {
    b.tokens =
        std::min(options_.refusal_log_burst,
                 b.tokens + absl::ToDoubleSeconds(now - b.last) * options_.refusal_logs_per_second);
  }
  b.last = std::max(b.last, now);
  if (b.tokens < 1) {
    ++b.suppressed;
    return false;
  }
  b.tokens -= 1;
  *suppressed = b.suppressed;
  b.suppressed = 0;
  return true;
}

size_t CallerLimits::inflight(const std::string& caller) const {
  absl::MutexLock l(&mu_);
  auto it = inflight_.find(caller);
  return it == inflight_.end() ? 0 : it->second;
}

}  // namespace iommu
