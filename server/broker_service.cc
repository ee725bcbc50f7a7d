#include "server/broker_service.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "common/grpc_status.h"
#include "common/log.h"
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

// Identify, bound the caller's calls in flight, authorize (on a copy the
// policy may narrow), then call the broker with the caller (request ids are
// scoped by it).
template <typename Req, typename Resp, typename Call>
grpc::Status Serve(const char* method, const grpc::ServerContext* ctx, const ServiceDeps& deps,
                   const Req& req, Resp* resp, Call call, LogLevel level = LogLevel::kWarning) {
  absl::StatusOr<Identity> caller = PeerIdentity(*ctx, *deps.transport);
  if (!caller.ok()) {
    deps.authz->CountDenial(method, Identity{}, caller.status());
    return Finish(method, ctx, Identity{}, deps.limits, req, caller.status());
  }
  std::optional<CallerAdmission> admission;
  if (deps.bound_inflight) {
    admission.emplace(deps.limits, caller->ToString());
    if (!admission->status().ok()) {
      return Finish(method, ctx, *caller, deps.limits, req, admission->status());
    }
  }
  Req scoped = req;
  if (absl::Status s = deps.authz->Authorize(*caller, &scoped); !s.ok()) {
    return Finish(method, ctx, *caller, deps.limits, req, s);
  }
  return Finish(method, ctx, *caller, deps.limits, scoped, call(scoped, resp, *caller), level);
}

}  // namespace

#define IOMMU_BROKER_RPC(Method, Req, Resp)                                        \
  grpc::Status BrokerService::Method(grpc::ServerContext* ctx, const v1::Req* req, \
                                     v1::Resp* resp) {                             \
    return Serve(#Method, ctx, deps_, *req, resp,                                  \
                 [this](const v1::Req& r, v1::Resp* out, const Identity& caller) { \
                   return deps_.broker->Method(r, out, caller);                    \
                 });                                                               \
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
  absl::StatusOr<Identity> caller = PeerIdentity(*ctx, *deps_.transport);
  if (!caller.ok()) {
    deps_.authz->CountDenial(kMethod, Identity{}, caller.status());
    return Finish(kMethod, ctx, Identity{}, deps_.limits, *req, caller.status());
  }
  v1::WatchRequest scoped = *req;
  if (absl::Status s = deps_.authz->Authorize(*caller, &scoped); !s.ok()) {
    return Finish(kMethod, ctx, *caller, deps_.limits, *req, s);
  }
  absl::StatusOr<Broker::WatchPlan> plan = deps_.broker->PrepareWatch(scoped);
  if (!plan.ok()) return Finish(kMethod, ctx, *caller, deps_.limits, *req, plan.status());
  const std::string who = caller->ToString();
  if (absl::Status s = watches_.Take(who); !s.ok()) {
    return Finish(kMethod, ctx, *caller, deps_.limits, *req, s);
  }
  absl::Status s = StreamWatch(
      deps_.broker->watch_log(), *std::move(plan),
      [writer](const v1::WatchResponse& r) { return writer->Write(r); },
      [ctx] { return ctx->IsCancelled(); });
  watches_.Give(who);
  return Finish(kMethod, ctx, *caller, deps_.limits, *req, s, LogLevel::kInfo);
}

grpc::Status NodeRegistryService::Register(grpc::ServerContext* ctx,
                                           const v1::RegisterRequest* req,
                                           v1::RegisterResponse* resp) {
  return Serve("Register", ctx, deps_, *req, resp,
               [this](const v1::RegisterRequest& r, v1::RegisterResponse* out, const Identity&) {
                 return deps_.broker->Register(r, out);
               });
}

grpc::Status NodeRegistryService::Heartbeat(grpc::ServerContext* ctx,
                                            const v1::HeartbeatRequest* req,
                                            v1::HeartbeatResponse* resp) {
  // A stale session is routine after a broker restart (the agent registers
  // again), so the broker's own refusals are logged at debug level only.
  return Serve(
      "Heartbeat", ctx, deps_, *req, resp,
      [this](const v1::HeartbeatRequest& r, v1::HeartbeatResponse* out, const Identity&) {
        return deps_.broker->Heartbeat(r, out);
      },
      LogLevel::kDebug);
}

grpc::Status NodeRegistryService::Reconciled(grpc::ServerContext* ctx,
                                             const v1::ReconciledRequest* req,
                                             v1::ReconciledResponse* resp) {
  return Serve("Reconciled", ctx, deps_, *req, resp,
               [this](const v1::ReconciledRequest& r, v1::ReconciledResponse* out,
                      const Identity&) { return deps_.broker->Reconciled(r, out); });
}

}  // namespace iommu
