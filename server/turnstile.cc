#include "server/turnstile.h"

namespace iommu {

Turnstile::Turn::Turn(Turnstile* gate) : gate_(gate) {
  absl::MutexLock l(&gate_->mu_);
  if (gate_->limit_ > 0 && gate_->inside_ >= gate_->limit_) {
    ++gate_->waiting_;
    auto free = [gate = gate_]() {
      gate->mu_.AssertHeld();  // Await evaluates conditions under mu_.
      return gate->inside_ < gate->limit_;
    };
    gate_->mu_.Await(absl::Condition(&free));
    --gate_->waiting_;
  }
  ++gate_->inside_;
}

Turnstile::Turn::~Turn() {
  absl::MutexLock l(&gate_->mu_);
  --gate_->inside_;
}

int64_t Turnstile::waiting() const {
  absl::MutexLock l(&mu_);
  return waiting_;
}

int64_t Turnstile::inside() const {
  absl::MutexLock l(&mu_);
  return inside_;
}

}  // namespace iommu
