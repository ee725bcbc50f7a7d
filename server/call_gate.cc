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
  for (auto& [id, on_close] : listeners_) on_close();
  listeners_.clear();
}

std::unique_ptr<CallGate::Listener> CallGate::OnClose(std::function<void()> on_close) {
  absl::MutexLock l(&mu_);
  if (closed_) {
    on_close();
  } else {
    listeners_.emplace(next_listener_, std::move(on_close));
  }
  return std::unique_ptr<Listener>(new Listener(this, next_listener_++));
}

CallGate::Listener::~Listener() { gate_->Forget(id_); }

void CallGate::Forget(uint64_t listener) {
  absl::MutexLock l(&mu_);
  listeners_.erase(listener);
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
