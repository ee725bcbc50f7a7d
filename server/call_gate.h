// The door the API's calls come in by, so that a replica can stop without
// cutting calls off. gRPC's own shutdown (grpc::Server::Shutdown) answers
// CANCELLED to calls that had reached the server but no handler yet
// (clients cannot tell that from their own cancellation and do not retry
// it), and cuts off the calls still running when its deadline passes
// ("Cancelling all calls"), whatever they were doing. A stop
// therefore first closes the gate: calls that come in from then on are
// refused with UNAVAILABLE (clients retry those, reaching another replica
// or this one's successor), the calls taken before run to their answer, and
// only when they are done (or the grace is spent) does gRPC shut down.
//
// Thread-safe.
#ifndef SERVER_CALL_GATE_H_
#define SERVER_CALL_GATE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iommu {

class CallGate {
 public:
  // A call let in; it counts as running until destroyed.
  class Pass {
   public:
    Pass() = default;
    Pass(Pass&& other) noexcept : gate_(other.gate_) { other.gate_ = nullptr; }
    Pass& operator=(Pass&&) = delete;
    Pass(const Pass&) = delete;
    ~Pass();

   private:
    friend class CallGate;
    explicit Pass(CallGate* gate) : gate_(gate) {}
    CallGate* gate_ = nullptr;
  };

  CallGate() = default;
  CallGate(const CallGate&) = delete;
  CallGate& operator=(const CallGate&) = delete;

  // A pass for one call, or UNAVAILABLE (with the reason Close() was given)
  // once the gate is closed.
  absl::StatusOr<Pass> Enter() ABSL_LOCKS_EXCLUDED(mu_);

  // Lets no call in from now on; `reason` completes "<reason>; retry".
  // Calls already in go on.
  void Close(std::string reason) ABSL_LOCKS_EXCLUDED(mu_);
  bool closed() const ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until no call let in is still running, or until `deadline`;
  // the number still running (0: all done).
  int AwaitIdle(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // What a call that waits on something else (a relayed stream) does when
  // the gate closes, e.g. cancel what it waits on: `on_close` runs once, on
  // the closing thread, or at once if the gate is closed already. It must
  // not call back into the gate. Never runs after the listener is gone.
  class Listener {
   public:
    Listener(Listener&&) = delete;
    Listener(const Listener&) = delete;
    ~Listener();

   private:
    friend class CallGate;
    Listener(CallGate* gate, uint64_t id) : gate_(gate), id_(id) {}
    CallGate* const gate_;
    const uint64_t id_;
  };
  std::unique_ptr<Listener> OnClose(std::function<void()> on_close) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Leave() ABSL_LOCKS_EXCLUDED(mu_);
  void Forget(uint64_t listener) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  // Run under mu_ by Close(), so a listener's destructor waits out a run.
  std::map<uint64_t, std::function<void()>> listeners_ ABSL_GUARDED_BY(mu_);
  uint64_t next_listener_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iommu

#endif  // SERVER_CALL_GATE_H_
