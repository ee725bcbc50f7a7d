#include "server/agent_client.h"

#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "grpcpp/grpcpp.h"
#include "proto/agent.grpc.pb.h"

namespace iommu {
namespace {

class GrpcAgentClient final : public AgentClient {
 public:
  GrpcAgentClient(absl::Duration deadline, TransportConfig transport)
      : deadline_(deadline), transport_(std::move(transport)) {}

  absl::StatusOr<v1::AgentContainer> CreateContainer(
      const AgentEndpoint& agent, const v1::AgentCreateContainerRequest& request) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::AgentContainer out;
    grpc::Status s = Stub(agent)->CreateContainer(&ctx, request, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::Status DestroyContainer(const AgentEndpoint& agent,
                                const std::string& container_id) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::AgentDestroyContainerRequest req;
    req.set_container_id(container_id);
    v1::AgentDestroyContainerResponse out;
    return FromGrpcStatus(Stub(agent)->DestroyContainer(&ctx, req, &out));
  }

  absl::Status SetPinBudgets(const AgentEndpoint& agent,
                             const v1::SetPinBudgetsRequest& request) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::SetPinBudgetsResponse out;
    return FromGrpcStatus(Stub(agent)->SetPinBudgets(&ctx, request, &out));
  }

  absl::Status SetWindows(const AgentEndpoint& agent,
                          const v1::SetWindowsRequest& request) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::SetWindowsResponse out;
    return FromGrpcStatus(Stub(agent)->SetWindows(&ctx, request, &out));
  }

 private:
  v1::Agent::Stub* Stub(const AgentEndpoint& agent) {
    absl::MutexLock l(&mu_);
    auto& stub = stubs_[agent];
    if (stub == nullptr) {
      stub = v1::Agent::NewStub(grpc::CreateChannel(
          agent.address, MakeChannelCredentials(transport_, Identity{Role::kAgent, agent.node})));
    }
    return stub.get();
  }

  const absl::Duration deadline_;
  const TransportConfig transport_;
  absl::Mutex mu_;
  // Stubs are never removed, so the raw pointers handed out stay valid.
  std::map<AgentEndpoint, std::unique_ptr<v1::Agent::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<AgentClient> NewGrpcAgentClient(absl::Duration deadline,
                                                TransportConfig transport) {
  return std::make_unique<GrpcAgentClient>(deadline, std::move(transport));
}

}  // namespace iommu
