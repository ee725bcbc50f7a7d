#include "server/broker_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"

namespace iommu {
namespace {

// Logs every refusal as one key=value line so that an operator can see who
// was turned away and why.
grpc::Status Finish(const char* method, const grpc::ServerContext* ctx, const Identity& caller,
                    const absl::Status& s, LogLevel level = LogLevel::kWarning) {
  if (!s.ok()) {
    LogEvent(level, "rpc_error",
             {{"method", method},
              {"caller", caller.ToString()},
              {"peer", ctx->peer()},
              {"code", absl::StatusCodeToString(s.code())},
              {"error", s.message()}});
  }
  return ToGrpcStatus(s);
}

// Identify, authorize (on a copy the policy may narrow), then call the broker.
template <typename Req, typename Resp, typename Call>
grpc::Status Serve(const char* method, const grpc::ServerContext* ctx,
                   const TransportConfig& transport, const Authorizer& authz, const Req& req,
                   Resp* resp, Call call, LogLevel level = LogLevel::kWarning) {
  absl::StatusOr<Identity> caller = PeerIdentity(*ctx, transport);
  if (!caller.ok()) {
    authz.CountDenial(method, Identity{}, caller.status());
    return Finish(method, ctx, Identity{}, caller.status());
  }
  Req scoped = req;
  if (absl::Status s = authz.Authorize(*caller, &scoped); !s.ok()) {
    return Finish(method, ctx, *caller, s);
  }
  return Finish(method, ctx, *caller, call(scoped, resp), level);
}

}  // namespace

#define IOMMU_BROKER_RPC(Method, Req, Resp)                                                   \
  grpc::Status BrokerService::Method(grpc::ServerContext* ctx, const v1::Req* req,            \
                                     v1::Resp* resp) {                                        \
    return Serve(#Method, ctx, *transport_, *authz_, *req, resp,                             \
                 [this](const v1::Req& r, v1::Resp* out) { return broker_->Method(r, out); }); \
  }
#include "server/broker_rpcs.inc"
#undef IOMMU_BROKER_RPC

grpc::Status NodeRegistryService::Register(grpc::ServerContext* ctx,
                                           const v1::RegisterRequest* req,
                                           v1::RegisterResponse* resp) {
  return Serve("Register", ctx, *transport_, *authz_, *req, resp,
               [this](const v1::RegisterRequest& r, v1::RegisterResponse* out) {
                 return broker_->Register(r, out);
               });
}

grpc::Status NodeRegistryService::Heartbeat(grpc::ServerContext* ctx,
                                            const v1::HeartbeatRequest* req,
                                            v1::HeartbeatResponse* resp) {
  // A stale session is routine after a broker restart (the agent registers
  // again), so the broker's own refusals are logged at debug level only.
  return Serve(
      "Heartbeat", ctx, *transport_, *authz_, *req, resp,
      [this](const v1::HeartbeatRequest& r, v1::HeartbeatResponse* out) {
        return broker_->Heartbeat(r, out);
      },
      LogLevel::kDebug);
}

grpc::Status NodeRegistryService::Reconciled(grpc::ServerContext* ctx,
                                             const v1::ReconciledRequest* req,
                                             v1::ReconciledResponse* resp) {
  return Serve("Reconciled", ctx, *transport_, *authz_, *req, resp,
               [this](const v1::ReconciledRequest& r, v1::ReconciledResponse* out) {
                 return broker_->Reconciled(r, out);
               });
}

}  // namespace iommu
