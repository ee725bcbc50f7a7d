#include "agent/registration.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "common/grpc_status.h"
#include "common/reconnect.h"
#include "common/status_macros.h"

namespace iommu {
namespace agent {
namespace {

constexpr absl::string_view kSimWarning =
    "SIMULATED BACKEND: no real IOMMU, no real DMA, no pinned memory";

}  // namespace

absl::string_view StateName(Registration::State state) {
  switch (state) {
    case Registration::State::kIdle:
      return "idle";
    case Registration::State::kRegistering:
      return "registering";
    case Registration::State::kRegistered:
      return "registered";
    case Registration::State::kBrokerUnreachable:
      return "broker_unreachable";
    case Registration::State::kStopped:
      return "stopped";
  }
  return "unknown";
}

Registration::Registration(RegistrationOptions options, AgentCore* core,
                           std::unique_ptr<v1::NodeRegistry::StubInterface> stub)
    : options_(std::move(options)),
      core_(core),
      stub_(std::move(stub)),
      heartbeat_interval_(options_.default_heartbeat_interval) {}

Registration::~Registration() { Stop(); }

void Registration::Start() {
  SetState(State::kRegistering);
  thread_ = std::thread([this] { Run(); });
}

void Registration::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      stopping_ = true;
      if (active_context_ != nullptr) active_context_->TryCancel();
    }
  }
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) {
    thread_.join();
    Log(LogLevel::kInfo, "registration_stopped", {});
  }
  SetState(State::kStopped);
}

Registration::State Registration::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

std::string Registration::session_id() const {
  absl::MutexLock lock(&mu_);
  return session_id_;
}

void Registration::SetState(State state) {
  absl::MutexLock lock(&mu_);
  state_ = state;
}

void Registration::Log(LogLevel level, absl::string_view event,
                       std::vector<LogField> fields) {
  fields.insert(fields.begin(), {{"node", core_->node()},
                                 {"broker", options_.broker_address}});
  if (core_->backend().simulated()) {
    fields.push_back({"simulated", true});
    fields.push_back({"sim_warning", kSimWarning});
  }
  LogEvent(level, event, fields);
}

bool Registration::Wait(absl::Duration d) {
  if (d > absl::ZeroDuration()) stop_.WaitForNotificationWithTimeout(d);
  return !stop_.HasBeenNotified();
}

absl::Duration RetryDelay(int attempt, absl::Duration initial, absl::Duration cap,
                          double unit_random) {
  if (initial <= absl::ZeroDuration() || cap <= absl::ZeroDuration()) {
    return absl::ZeroDuration();
  }
  absl::Duration ceiling = initial;
  // Doubling stops at the cap, so neither the loop nor the Duration
  // overflows however many attempts failed.
  for (int i = 0; i < attempt && ceiling < cap; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, cap);
  unit_random = std::clamp(unit_random, 0.0, 1.0);
  return ceiling * unit_random;
}

absl::Duration Registration::NextBackoff() {
  const absl::Duration cap = std::min(options_.max_backoff, heartbeat_interval_);
  const absl::Duration d = RetryDelay(backoff_attempt_, options_.initial_backoff, cap,
                                      absl::Uniform(rng_, 0.0, 1.0));
  if (backoff_attempt_ < 64) ++backoff_attempt_;
  return d;
}

void Registration::ResetBackoff() { backoff_attempt_ = 0; }

template <typename Request, typename Response, typename Method>
absl::Status Registration::Call(Method method, const Request& request,
                                Response* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("registration stopping");
    active_context_ = &context;
  }
  grpc::Status status = ((*stub_).*method)(&context, request, response);
  {
    absl::MutexLock lock(&mu_);
    active_context_ = nullptr;
  }
  return FromGrpcStatus(status);
}

absl::Status Registration::RegisterOnce() {
  ASSIGN_OR_RETURN(v1::GetInventoryResponse inventory, core_->Inventory());
  v1::RegisterRequest request;
  request.set_node(core_->node());
  request.set_agent_address(options_.agent_address);
  request.set_backend(inventory.backend());
  request.set_simulated(inventory.simulated());
  request.set_agent_version(options_.agent_version);
  request.set_launcher_socket(options_.launcher_socket);
  // The broker binds the grants it signs to this run; see
  // AgentCore::incarnation().
  request.set_agent_incarnation(core_->incarnation());
  *request.mutable_devices() = std::move(*inventory.mutable_devices());
  *request.mutable_containers() = std::move(*inventory.mutable_containers());

  v1::RegisterResponse response;
  RETURN_IF_ERROR(Call(&v1::NodeRegistry::StubInterface::Register, request, &response));
  if (response.session_id().empty()) {
    return absl::InternalError("Register: broker answered without a session_id");
  }

  // Tokens are checked with this key; it is stable across broker restarts.
  if (!response.grant_key().empty()) core_->SetGrantKey(response.grant_key());
  const std::vector<v1::AgentContainer> desired(
      response.desired_containers().begin(), response.desired_containers().end());
  ReconcileResult result = core_->Reconcile(desired);

  v1::ReconciledRequest reconciled;
  reconciled.set_node(core_->node());
  reconciled.set_session_id(response.session_id());
  for (v1::AgentContainer& c : result.held) *reconciled.add_containers() = std::move(c);
  for (std::string& id : result.failed_ids) reconciled.add_failed_container_ids(std::move(id));
  for (std::string& why : result.failure_reasons) {
    reconciled.add_failure_reasons(std::move(why));
  }
  v1::ReconciledResponse reconciled_response;
  // If this fails the session is dropped and the whole exchange repeats:
  // registering again returns the desired list afresh and Reconcile is
  // idempotent, so nothing is applied twice.
  RETURN_IF_ERROR(Call(&v1::NodeRegistry::StubInterface::Reconciled, reconciled,
                       &reconciled_response));

  session_ = response.session_id();
  reconcile_retry_at_ = reconciled.failed_container_ids_size() == 0
                            ? absl::InfiniteFuture()
                            : absl::Now() + options_.reconcile_retry_interval;
  heartbeat_interval_ = response.heartbeat_interval_ms() > 0
                            ? absl::Milliseconds(response.heartbeat_interval_ms())
                            : options_.default_heartbeat_interval;
  {
    absl::MutexLock lock(&mu_);
    session_id_ = session_;
  }
  Log(LogLevel::kInfo, "registered",
      {{"session", session_},
       {"heartbeat_interval_ms", absl::ToInt64Milliseconds(heartbeat_interval_)},
       {"desired", desired.size()},
       {"held", reconciled.containers_size()},
       {"failed", reconciled.failed_container_ids_size()},
       {"failed_attempts_before", failed_attempts_}});
  return absl::OkStatus();
}

absl::Status Registration::HeartbeatOnce() {
  v1::HeartbeatRequest request;
  request.set_node(core_->node());
  request.set_session_id(session_);
  for (v1::PinUsage& u : core_->Usage()) *request.add_usage() = std::move(u);
  request.set_container_count(static_cast<uint32_t>(core_->container_count()));
  v1::HeartbeatResponse response;
  RETURN_IF_ERROR(Call(&v1::NodeRegistry::StubInterface::Heartbeat, request, &response));
  // Budgets the broker changed reach us here even if its push was lost.
  core_->SetBudgets({response.budgets().begin(), response.budgets().end()});
  for (const v1::ContainerWindows& cw : response.windows()) {
    std::vector<IovaRange> windows;
    for (const v1::IovaRange& w : cw.windows()) windows.push_back({w.start(), w.last()});
    // A container the broker knows but we do not yet hold is not an error
    // here; the next registration reconciles it.
    core_->SetWindows(cw.container_id(), std::move(windows)).IgnoreError();
  }
  return absl::OkStatus();
}

void Registration::NoteFailure(absl::string_view what, const absl::Status& status,
                               State new_state) {
  ++failed_attempts_;
  SetState(new_state);
  if (new_state == last_logged_state_ && status.code() == last_logged_code_) return;
  last_logged_state_ = new_state;
  last_logged_code_ = status.code();
  Log(LogLevel::kWarning, absl::StrCat(what, "_failed"),
      {{"state", StateName(new_state)},
       {"code", absl::StatusCodeToString(status.code())},
       {"error", status.message()},
       {"retry", "backoff; logged again only when the state or code changes"}});
}

void Registration::Run() {
  Log(LogLevel::kInfo, "registration_started",
      {{"agent_address", options_.agent_address},
       {"backend", core_->backend().kind()}});
  absl::Duration wait = absl::ZeroDuration();
  while (Wait(wait)) {
    if (session_.empty()) {
      absl::Status s = RegisterOnce();
      if (!s.ok()) {
        if (s.code() == absl::StatusCode::kCancelled && stop_.HasBeenNotified()) break;
        NoteFailure("register", s, State::kRegistering);
        wait = NextBackoff();
        continue;
      }
      failed_attempts_ = 0;
      last_logged_state_ = State::kRegistered;
      last_logged_code_ = absl::StatusCode::kOk;
      SetState(State::kRegistered);
      ResetBackoff();
      wait = heartbeat_interval_;
      continue;
    }

    absl::Status s = HeartbeatOnce();
    if (s.ok()) {
      if (last_logged_state_ != State::kRegistered) {
        Log(LogLevel::kInfo, "heartbeat_recovered",
            {{"session", session_}, {"failed_attempts", failed_attempts_}});
        last_logged_state_ = State::kRegistered;
        last_logged_code_ = absl::StatusCode::kOk;
      }
      failed_attempts_ = 0;
      SetState(State::kRegistered);
      ResetBackoff();
      wait = heartbeat_interval_;
      if (absl::Now() >= reconcile_retry_at_) {
        // Some desired containers could not be created; registering again
        // hands us the desired list afresh and Reconcile retries them.
        Log(LogLevel::kInfo, "reconcile_retry", {{"session", session_}});
        session_.clear();
        {
          absl::MutexLock lock(&mu_);
          session_id_.clear();
        }
        wait = absl::ZeroDuration();
      }
      continue;
    }
    if (s.code() == absl::StatusCode::kCancelled && stop_.HasBeenNotified()) break;
    if (s.code() == absl::StatusCode::kFailedPrecondition) {
      // The broker no longer knows this session: it restarted or declared
      // the node unavailable. Register again now; containers are kept and
      // reconciled against what the broker says.
      Log(LogLevel::kWarning, "session_lost",
          {{"session", session_}, {"error", s.message()}});
      session_.clear();
      {
        absl::MutexLock lock(&mu_);
        session_id_.clear();
      }
      last_logged_state_ = State::kRegistering;
      last_logged_code_ = s.code();
      SetState(State::kRegistering);
      ResetBackoff();
      wait = absl::ZeroDuration();
      continue;
    }
    NoteFailure("heartbeat", s, State::kBrokerUnreachable);
    wait = NextBackoff();
  }
}

std::unique_ptr<v1::NodeRegistry::StubInterface> NewNodeRegistryStub(
    const std::string& broker, const TransportConfig& transport, absl::Duration max_backoff) {
  grpc::ChannelArguments channel_args;
  SetReconnectBackoff(max_backoff, max_backoff, &channel_args);
  return v1::NodeRegistry::NewStub(grpc::CreateCustomChannel(
      broker, MakeChannelCredentials(transport, Identity{Role::kBroker, ""}), channel_args));
}

}  // namespace agent
}  // namespace iommu
