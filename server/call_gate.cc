#include "server/call_gate.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace iommu {

CallGate::Pass::~Pass() {
  if (gate_ != nullptr) gate_->Leave();
}

absl::StatusOr<CallGate::Pass> CallGate::Enter() {
  absl::MutexLock l(&mu_);
  if (closed_) return absl::UnavailableError(absl::StrCat(reason_, "; retry"));
  ++running_;
  return Pass(this);
}

void CallGate::Leave() {
  absl::MutexLock l(&mu_);
  --running_;
}

void CallGate::Close(std::string reason) {
  absl::MutexLock l(&mu_);
  if (closed_) return;
  closed_ = true;
  reason_ = std::move(reason);
}

bool CallGate::closed() const {
  absl::MutexLock l(&mu_);
  return closed_;
}

int CallGate::AwaitIdle(absl::Time deadline) {
  absl::MutexLock l(&mu_);
  auto idle = [this]() {
    mu_.AssertHeld();  // Conditions are evaluated under mu_.
    return running_ == 0;
  };
  mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  return running_;
}

}  // namespace iommu
