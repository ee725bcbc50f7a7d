// Registration: the node agent's side of the broker's NodeRegistry. A
// background thread registers the node (address, backend, full inventory,
// held containers), makes the held containers equal to the broker's desired
// list (AgentCore::Reconcile), reports the result (Reconciled), then
// heartbeats at the interval the broker asked for.
//
//  * Heartbeat refused with FAILED_PRECONDITION (the broker restarted or
//    declared the node unavailable): register again at once.
//  * Broker unreachable (UNAVAILABLE, DEADLINE_EXCEEDED, or any other error):
//    keep every container, retry with exponential backoff and full jitter,
//    capped at max_backoff and at the heartbeat interval (RetryDelay), and
//    log once per change of state, not once per attempt.
//  * Every RPC carries a deadline; Stop() cancels the one in flight.
//
// Thread-safety: Start() and Stop() are called by the owner, not concurrently
// with each other; state accessors are thread-safe. The destructor stops and
// joins the thread.
#ifndef AGENT_REGISTRATION_H_
#define AGENT_REGISTRATION_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/agent_core.h"
#include "agent/log.h"
#include "common/tls.h"
#include "grpcpp/client_context.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace agent {

struct RegistrationOptions {
  // host:port where the broker reaches this agent's gRPC API.
  std::string agent_address;
  // The launcher unix socket path, reported to the broker.
  std::string launcher_socket;
  std::string agent_version;
  // The broker's address, for log lines only (the stub already knows it).
  std::string broker_address;
  // Deadline of each RPC.
  absl::Duration rpc_timeout = absl::Seconds(5);
  // Retry delays after a failure: RetryDelay. The cap is also never above
  // the heartbeat interval, so that a fleet whose broker comes back is
  // registered again within about two intervals (issue 11: with a 30 s cap,
  // ten agents took 15.5 s to come back after an 8 s outage).
  absl::Duration initial_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(1);
  // Used when RegisterResponse.heartbeat_interval_ms is 0.
  absl::Duration default_heartbeat_interval = absl::Seconds(10);
  // When a reconcile could not create some desired containers (e.g. a
  // launcher from before a restart still holds a device open), register and
  // reconcile again this long after.
  absl::Duration reconcile_retry_interval = absl::Seconds(5);
};

class Registration final {
 public:
  enum class State {
    kIdle,         // Not started.
    kRegistering,  // No session: registering (or retrying after a failure).
    kRegistered,   // Session held; heartbeats succeed.
    kBrokerUnreachable,  // Session held, but heartbeats fail.
    kStopped,
  };

  // `core` must outlive this object and is not owned. `stub` talks to the
  // broker (a NodeRegistry::Stub in production, any StubInterface in tests).
  Registration(RegistrationOptions options, AgentCore* core,
               std::unique_ptr<v1::NodeRegistry::StubInterface> stub);

  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

  // Stops and joins the loop.
  ~Registration();

  // Starts the background loop. Call at most once.
  void Start();

  // Stops the loop promptly (cancels the RPC in flight, interrupts waits)
  // and joins the thread. Idempotent.
  void Stop();

  State state() const;
  // The broker's session id, empty while not registered.
  std::string session_id() const;

 private:
  void Run();

  // Register, Reconcile locally, Reconciled. On success sets the session and
  // the heartbeat interval. On failure the session stays empty.
  absl::Status RegisterOnce();
  absl::Status HeartbeatOnce();

  // Runs one RPC with a deadline, registering its context so that Stop() can
  // cancel it. CANCELLED without calling when stopping.
  template <typename Request, typename Response, typename Method>
  absl::Status Call(Method method, const Request& request, Response* response);

  // Waits up to `d`; false when stopping.
  bool Wait(absl::Duration d);

  // The next retry delay (RetryDelay with the next attempt number, capped by
  // max_backoff and the heartbeat interval); ResetBackoff() after a success.
  absl::Duration NextBackoff();
  void ResetBackoff();

  // Records a failure of `what` and logs it if the state or the error code
  // changed since the last log line.
  void NoteFailure(absl::string_view what, const absl::Status& status,
                   State new_state);
  void SetState(State state);

  // Logs with the fields every registration line carries (node, broker,
  // and on a simulated backend the warning that nothing here is real).
  void Log(LogLevel level, absl::string_view event, std::vector<LogField> fields);

  // Constant after construction.
  const RegistrationOptions options_;
  AgentCore* const core_;
  const std::unique_ptr<v1::NodeRegistry::StubInterface> stub_;

  // Used only by the loop thread.
  std::string session_;  // Mirrored into session_id_ for readers.
  absl::Duration heartbeat_interval_;
  // Set when the last reconcile left desired containers uncreated.
  absl::Time reconcile_retry_at_ = absl::InfiniteFuture();
  int backoff_attempt_ = 0;
  absl::BitGen rng_;
  int failed_attempts_ = 0;
  absl::StatusCode last_logged_code_ = absl::StatusCode::kOk;
  State last_logged_state_ = State::kIdle;

  std::thread thread_;
  absl::Notification stop_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* active_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  std::string session_id_ ABSL_GUARDED_BY(mu_);
};

// The delay before retry number `attempt` (0 for the first retry after a
// failure): "full jitter", `unit_random` (in [0, 1), injected so tests can
// pin it) times min(cap, initial * 2^attempt). Full rather than partial
// jitter because agents that lost the broker together otherwise retry in
// waves; a fleet retries on average every cap/2 once the cap is reached.
// Non-positive `initial` or `cap` give zero.
absl::Duration RetryDelay(int attempt, absl::Duration initial, absl::Duration cap,
                          double unit_random);

// "idle", "registering", ... for logs.
absl::string_view StateName(Registration::State state);

// A NodeRegistry stub for the broker at `broker` (host:port), with
// `transport`'s credentials for the broker's identity. gRPC's own reconnect
// backoff grows to minutes (1 s x 1.6 per attempt): after an outage of a few
// seconds the channel itself would wait longer than the registration loop,
// so it is held at `max_backoff` (RegistrationOptions::max_backoff).
std::unique_ptr<v1::NodeRegistry::StubInterface> NewNodeRegistryStub(
    const std::string& broker, const TransportConfig& transport, absl::Duration max_backoff);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_REGISTRATION_H_
