// A bound on how many callers work on something at once: the others wait
// their turn, in no promised order, before they start. The broker bounds
// registrations with one, so that a fleet registering at once after a
// broker restart cannot queue for the broker's lock ahead of heartbeats.
//
// Thread-safe. A Turn must not outlive its Turnstile.
#ifndef SERVER_TURNSTILE_H_
#define SERVER_TURNSTILE_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace iommu {

class Turnstile final {
 public:
  // At most `limit` Turns at once; 0 or less: no bound.
  explicit Turnstile(int64_t limit) : limit_(limit) {}
  Turnstile(const Turnstile&) = delete;
  Turnstile& operator=(const Turnstile&) = delete;

  // Waits for a turn (returns at once when one is free) and holds it until
  // destroyed.
  class Turn final {
   public:
    explicit Turn(Turnstile* gate);
    ~Turn();
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    Turnstile* const gate_;
  };

  // Callers waiting for a turn now.
  int64_t waiting() const;
  // Turns held now.
  int64_t inside() const;

 private:
  const int64_t limit_;
  mutable absl::Mutex mu_;
  int64_t inside_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iommu

#endif  // SERVER_TURNSTILE_H_
