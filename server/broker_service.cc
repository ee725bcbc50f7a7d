#include "server/broker_service.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "server/caller_identity.h"
#include "server/watch_stream.h"

namespace iommu {
namespace {

// The fields that identify what a request is about, when it has them, so a
// refusal's log line can be joined with the events of the same request,
// tenant, node or container. Ids only: nothing else of a request is logged.
void AddRequestFields(const google::protobuf::Message& req, std::vector<LogField>* fields) {
  const google::protobuf::Descriptor* d = req.GetDescriptor();
  const google::protobuf::Reflection* r = req.GetReflection();
  for (const char* name : {"request_id", "tenant_id", "node", "container_id", "window_id"}) {
    const google::protobuf::FieldDescriptor* f = d->FindFieldByName(name);
    if (f == nullptr || f->is_repeated() ||
        f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_STRING) {
      continue;
    }
    std::string v = r->GetString(req, f);
    if (v.empty()) continue;
    if (v.size() > 128) v.resize(128);  // Whatever a caller sent, keep lines bounded.
    // Keys are string literals (LogField keeps a view of the key).
    const char* key = std::string(name) == "tenant_id" ? "tenant" : name;
    fields->push_back({key, v});
  }
}

// Logs every refusal as one key=value line so that an operator can see who
// was turned away and why.
// At most a few lines a second per caller (CallerLimits), so one caller
// cannot flood the log; a line after a quiet spell says how many it dropped.
grpc::Status Finish(const char* method, const grpc::ServerContext* ctx, const Identity& caller,
                    CallerLimits* limits, const google::protobuf::Message& req,
                    const absl::Status& s, LogLevel level = LogLevel::kWarning) {
  uint64_t suppressed = 0;
  if (!s.ok() && limits->ShouldLogRefusal(caller.ToString(), absl::Now(), &suppressed)) {
    std::vector<LogField> fields = {{"method", method},
                                    {"caller", caller.ToString()},
                                    {"peer", ctx->peer()}};
    if (suppressed > 0) fields.push_back({"suppressed_before", std::to_string(suppressed)});
    AddRequestFields(req, &fields);
    fields.push_back({"code", absl::StatusCodeToString(s.code())});
    fields.push_back({"error", std::string(s.message())});
    LogEvent(level, "rpc_error", fields);
  }
  return ToGrpcStatus(s);
}

// Identify and bound the caller's calls in flight; then either forward the
// call to the leader (a replica that does not lead) or authorize it (on a
// copy the policy may narrow) and call the broker with the caller (request
// ids are scoped by it). `forward(route, client_context)` makes the same
// call on the leader's stub.
template <typename Req, typename Resp, typename Call, typename Forward>
grpc::Status Serve(const char* method, const grpc::ServerContext* ctx, const ServiceDeps& deps,
                   const Req& req, Resp* resp, Call call, Forward forward,
                   LogLevel level = LogLevel::kWarning) {
  const ServingState::Local* local = deps.serving->local();
  absl::StatusOr<Caller> caller = IdentifyCaller(*ctx, *deps.transport);
  if (!caller.ok()) {
    if (local != nullptr) local->authz->CountDenial(method, Identity{}, caller.status());
    return Finish(method, ctx, Identity{}, deps.limits, req, caller.status());
  }
  const Identity& who = caller->identity;
  // A stopping replica refuses the call before anything of it starts; the
  // caller retries elsewhere, so the refusal is not worth a warning.
  absl::StatusOr<CallGate::Pass> pass = deps.serving->gate().Enter();
  if (!pass.ok()) {
    return Finish(method, ctx, who, deps.limits, req, pass.status(), LogLevel::kDebug);
  }
  std::optional<CallerAdmission> admission;
  if (deps.bound_inflight) {
    admission.emplace(deps.limits, who.ToString());
    if (!admission->status().ok()) {
      return Finish(method, ctx, who, deps.limits, req, admission->status());
    }
  }
  if (local == nullptr) {
    // The leader logs its refusals; here they are only worth a debug line.
    absl::StatusOr<std::shared_ptr<const LeaderForwarder::Route>> route =
        deps.serving->RouteFor(*caller);
    if (!route.ok()) return Finish(method, ctx, who, deps.limits, req, route.status());
    std::unique_ptr<grpc::ClientContext> client =
        deps.serving->forwarder()->ContextFor(*ctx, *caller);
    absl::Status answer =
        LeaderForwarder::Answer(FromGrpcStatus(forward(**route, client.get())), *ctx);
    return Finish(method, ctx, who, deps.limits, req, answer, LogLevel::kDebug);
  }
  Req scoped = req;
  if (absl::Status s = local->authz->Authorize(who, &scoped); !s.ok()) {
    return Finish(method, ctx, who, deps.limits, req, s);
  }
  return Finish(method, ctx, who, deps.limits, scoped, call(*local->broker, scoped, resp, who),
                level);
}

// How a watch ends when this replica stops: the watcher resumes, from the
// last version it saw, at another replica or this one's successor.
absl::Status StoppingWatchError() {
  return absl::UnavailableError(
      "Watch: this broker replica is stopping; resume from the last version seen");
}

}  // namespace

void ServingState::Lead(Broker* broker, const Authorizer* authz) {
  storage_ = Local{broker, authz};
  local_.store(&storage_, std::memory_order_release);
}

absl::StatusOr<std::shared_ptr<const LeaderForwarder::Route>> ServingState::RouteFor(
    const Caller& caller) const {
  if (forwarder_ == nullptr) {
    return absl::UnavailableError("broker: starting (opening its store); retry");
  }
  return forwarder_->RouteFor(caller);
}

#define IOMMU_BROKER_RPC(Method, Req, Resp)                                             \
  grpc::Status BrokerService::Method(grpc::ServerContext* ctx, const v1::Req* req,      \
                                     v1::Resp* resp) {                                  \
    return Serve(                                                                       \
        #Method, ctx, deps_, *req, resp,                                                \
        [](Broker& b, const v1::Req& r, v1::Resp* out, const Identity& caller) {        \
          return b.Method(r, out, caller);                                              \
        },                                                                              \
        [req, resp](const LeaderForwarder::Route& route, grpc::ClientContext* client) { \
          return route.broker->Method(client, *req, resp);                              \
        });                                                                             \
  }
#include "server/broker_rpcs.inc"
#undef IOMMU_BROKER_RPC

absl::Status WatchSlots::Take(const std::string& caller) {
  absl::MutexLock l(&mu_);
  auto it = by_caller_.try_emplace(caller, 0).first;
  if (it->second >= kPerCaller) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Watch: ", caller, " has ", it->second, " watches open, the most one caller may hold (",
        kPerCaller, "); close one"));
  }
  if (total_ >= kTotal) {
    if (it->second == 0) by_caller_.erase(it);
    return absl::ResourceExhaustedError(absl::StrCat(
        "Watch: the broker has ", total_, " watches open, its limit (", kTotal, "); retry later"));
  }
  ++it->second;
  ++total_;
  return absl::OkStatus();
}

void WatchSlots::Give(const std::string& caller) {
  absl::MutexLock l(&mu_);
  auto it = by_caller_.find(caller);
  if (it == by_caller_.end()) return;
  if (--it->second == 0) by_caller_.erase(it);
  --total_;
}

grpc::Status BrokerService::Watch(grpc::ServerContext* ctx, const v1::WatchRequest* req,
                                  grpc::ServerWriter<v1::WatchResponse>* writer) {
  constexpr char kMethod[] = "Watch";
  const ServingState::Local* local = deps_.serving->local();
  absl::StatusOr<Caller> caller = IdentifyCaller(*ctx, *deps_.transport);
  if (!caller.ok()) {
    if (local != nullptr) local->authz->CountDenial(kMethod, Identity{}, caller.status());
    return Finish(kMethod, ctx, Identity{}, deps_.limits, *req, caller.status());
  }
  absl::StatusOr<CallGate::Pass> pass = deps_.serving->gate().Enter();
  if (!pass.ok()) {
    return Finish(kMethod, ctx, caller->identity, deps_.limits, *req, pass.status(),
                  LogLevel::kDebug);
  }
  absl::Status s = local != nullptr ? WatchHere(*local, ctx, *caller, *req, writer)
                                    : RelayWatch(ctx, *caller, *req, writer);
  return Finish(kMethod, ctx, caller->identity, deps_.limits, *req, s, LogLevel::kInfo);
}

absl::Status BrokerService::WatchHere(const ServingState::Local& local, grpc::ServerContext* ctx,
                                      const Caller& caller, const v1::WatchRequest& req,
                                      grpc::ServerWriter<v1::WatchResponse>* writer) {
  v1::WatchRequest scoped = req;
  if (absl::Status s = local.authz->Authorize(caller.identity, &scoped); !s.ok()) return s;
  absl::StatusOr<Broker::WatchPlan> plan = local.broker->PrepareWatch(scoped);
  if (!plan.ok()) return plan.status();
  const std::string who = caller.identity.ToString();
  RETURN_IF_ERROR(watches_.Take(who));
  // A stop ends the stream within StreamWatch's poll.
  const CallGate& gate = deps_.serving->gate();
  absl::Status s = StreamWatch(
      local.broker->watch_log(), *std::move(plan),
      [writer](const v1::WatchResponse& r) { return writer->Write(r); },
      [ctx, &gate] { return ctx->IsCancelled() || gate.closed(); });
  watches_.Give(who);
  if (s.ok() && !ctx->IsCancelled() && gate.closed()) {
    return StoppingWatchError();
  }
  return s;
}

absl::Status BrokerService::RelayWatch(grpc::ServerContext* ctx, const Caller& caller,
                                       const v1::WatchRequest& req,
                                       grpc::ServerWriter<v1::WatchResponse>* writer) {
  absl::StatusOr<std::shared_ptr<const LeaderForwarder::Route>> route =
      deps_.serving->RouteFor(caller);
  if (!route.ok()) return route.status();
  // A relayed watch holds one of this replica's threads as a served one
  // does: the same bounds apply.
  const std::string who = caller.identity.ToString();
  RETURN_IF_ERROR(watches_.Take(who));
  std::unique_ptr<grpc::ClientContext> client =
      deps_.serving->forwarder()->ContextFor(*ctx, caller);
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> stream =
      (*route)->broker->Watch(client.get(), req);
  // A stop of this replica ends the relay at once rather than after the
  // leader's next message; the watcher resumes elsewhere.
  CallGate& gate = deps_.serving->gate();
  std::unique_ptr<CallGate::Listener> on_stop = gate.OnClose([&client] { client->TryCancel(); });
  v1::WatchResponse r;
  while (stream->Read(&r)) {
    if (!writer->Write(r)) {
      client->TryCancel();  // The caller went away: so does the leader's stream.
      break;
    }
  }
  on_stop.reset();
  absl::Status s = LeaderForwarder::Answer(FromGrpcStatus(stream->Finish()), *ctx);
  watches_.Give(who);
  if (!s.ok() && !ctx->IsCancelled() && gate.closed()) {
    return StoppingWatchError();
  }
  return s;
}

grpc::Status NodeRegistryService::Register(grpc::ServerContext* ctx,
                                           const v1::RegisterRequest* req,
                                           v1::RegisterResponse* resp) {
  return Serve(
      "Register", ctx, deps_, *req, resp,
      [](Broker& b, const v1::RegisterRequest& r, v1::RegisterResponse* out, const Identity&) {
        return b.Register(r, out);
      },
      [req, resp](const LeaderForwarder::Route& route, grpc::ClientContext* client) {
        return route.registry->Register(client, *req, resp);
      });
}

grpc::Status NodeRegistryService::Heartbeat(grpc::ServerContext* ctx,
                                            const v1::HeartbeatRequest* req,
                                            v1::HeartbeatResponse* resp) {
  // A stale session is routine after a broker restart (the agent registers
  // again), so the broker's own refusals are logged at debug level only.
  return Serve(
      "Heartbeat", ctx, deps_, *req, resp,
      [](Broker& b, const v1::HeartbeatRequest& r, v1::HeartbeatResponse* out, const Identity&) {
        return b.Heartbeat(r, out);
      },
      [req, resp](const LeaderForwarder::Route& route, grpc::ClientContext* client) {
        return route.registry->Heartbeat(client, *req, resp);
      },
      LogLevel::kDebug);
}

grpc::Status NodeRegistryService::Reconciled(grpc::ServerContext* ctx,
                                             const v1::ReconciledRequest* req,
                                             v1::ReconciledResponse* resp) {
  return Serve(
      "Reconciled", ctx, deps_, *req, resp,
      [](Broker& b, const v1::ReconciledRequest& r, v1::ReconciledResponse* out, const Identity&) {
        return b.Reconciled(r, out);
      },
      [req, resp](const LeaderForwarder::Route& route, grpc::ClientContext* client) {
        return route.registry->Reconciled(client, *req, resp);
      });
}

}  // namespace iommu
