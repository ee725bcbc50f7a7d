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
  explicit GrpcAgentClient(absl::Duration deadline) : deadline_(deadline) {}

  absl::StatusOr<v1::AgentContainer> CreateContainer(
      const std::string& agent_address, const v1::AgentCreateContainerRequest& request) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::AgentContainer out;
    grpc::Status s = Stub(agent_address)->CreateContainer(&ctx, request, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::Status DestroyContainer(const std::string& agent_address,
                                const std::string& container_id) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::AgentDestroyContainerRequest req;
    req.set_container_id(container_id);
    v1::AgentDestroyContainerResponse out;
    return FromGrpcStatus(Stub(agent_address)->DestroyContainer(&ctx, req, &out));
  }

  absl::Status SetPinBudgets(const std::string& agent_address,
                             const v1::SetPinBudgetsRequest& request) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::SetPinBudgetsResponse out;
    return FromGrpcStatus(Stub(agent_address)->SetPinBudgets(&ctx, request, &out));
  }

  absl::Status SetWindows(const std::string& agent_address,
                          const v1::SetWindowsRequest& request) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::SetWindowsResponse out;
    return FromGrpcStatus(Stub(agent_address)->SetWindows(&ctx, request, &out));
  }

 private:
  v1::Agent::Stub* Stub(const std::string& address) {
    absl::MutexLock l(&mu_);
    auto& stub = stubs_[address];
    if (stub == nullptr) {
      stub = v1::Agent::NewStub(
          grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    }
    return stub.get();
  }

  const absl::Duration deadline_;
  absl::Mutex mu_;
  // Stubs are never removed, so the raw pointers handed out stay valid.
  std::map<std::string, std::unique_ptr<v1::Agent::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<AgentClient> NewGrpcAgentClient(absl::Duration deadline) {
  return std::make_unique<GrpcAgentClient>(deadline);
}

}  // namespace iommu
