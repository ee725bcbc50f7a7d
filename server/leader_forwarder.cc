#include "server/leader_forwarder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace iommu {

void LeaderForwarder::SetLeader(const LeaderInfo& leader) {
  absl::MutexLock l(&mu_);
  if (leader == leader_) return;
  leader_ = leader;
  route_ = nullptr;
  if (leader.name.empty() || leader.address.empty() || leader.name == self_) return;
  auto route = std::make_shared<Route>();
  route->leader = leader;
  grpc::ChannelArguments args;
  // A new leader is usually up within seconds of the old one's lease running
  // out: reconnect at that pace, not gRPC's default of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  route->channel = grpc::CreateCustomChannel(
      leader.address, MakeChannelCredentials(transport_, Identity{Role::kBroker, ""}), args);
  route->broker = v1::Broker::NewStub(route->channel);
  route->registry = v1::NodeRegistry::NewStub(route->channel);
  route_ = std::move(route);
}

absl::StatusOr<std::shared_ptr<const LeaderForwarder::Route>> LeaderForwarder::RouteFor(
    const Caller& caller) const {
  if (!caller.forwarded_by.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "broker replica ", self_, " does not lead (the call came from replica ",
        caller.forwarded_by, ", which took it for the leader); retry"));
  }
  absl::MutexLock l(&mu_);
  if (route_ != nullptr) return route_;
  if (leader_.name.empty()) {
    return absl::UnavailableError(absl::StrCat("broker replica ", self_,
                                               " does not lead and knows no leader yet; retry"));
  }
  if (leader_.name == self_) {
    return absl::UnavailableError(
        absl::StrCat("broker replica ", self_, " is taking the lead and not serving yet; retry"));
  }
  return absl::UnavailableError(absl::StrCat("broker replica ", self_, " does not lead, and ",
                                             leader_.name,
                                             ", which does, published no address; call it "
                                             "directly (it needs --advertise-address)"));
}

std::unique_ptr<grpc::ClientContext> LeaderForwarder::ContextFor(const grpc::ServerContext& ctx,
                                                                 const Caller& caller) const {
  std::unique_ptr<grpc::ClientContext> client = grpc::ClientContext::FromServerContext(ctx);
  MarkForwarded(caller, self_, transport_, client.get());
  return client;
}

absl::Status LeaderForwarder::Answer(absl::Status leader, const grpc::ServerContext& ctx) {
  if (leader.code() != absl::StatusCode::kCancelled || ctx.IsCancelled()) return leader;
  return absl::UnavailableError(
      "broker: the leader dropped the call as it stopped (it may or may not have been applied); "
      "retry with the same request_id");
}

}  // namespace iommu
