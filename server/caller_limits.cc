#include "server/caller_limits.h"

#include "absl/strings/str_cat.h"

namespace iommu {

absl::Status CallerLimits::Admit(const std::string& caller) {
  absl::MutexLock l(&mu_);
  size_t& n = inflight_[caller];
  if (options_.max_inflight_per_caller != 0 && n >= options_.max_inflight_per_caller) {
    if (n == 0) inflight_.erase(caller);
    return absl::ResourceExhaustedError(
        absl::StrCat("caller: ", caller, " already has ", n, " calls in flight (limit ",
                     options_.max_inflight_per_caller,
                     " per caller, --max-inflight-per-caller); retry "
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
  return refusal_logs_.Allow(caller, now, suppressed);
}

size_t CallerLimits::inflight(const std::string& caller) const {
  absl::MutexLock l(&mu_);
  auto it = inflight_.find(caller);
  return it == inflight_.end() ? 0 : it->second;
}

}  // namespace iommu
