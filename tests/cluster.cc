#include "tests/cluster.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"

namespace iommu::testing {
namespace {

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  // Own subchannels, so a dropped stub closes its connection and a daemon's
  // graceful stop is not held up by it.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

Cluster::Cluster() : dir_(NewTempDir("cluster")), broker_port_(PickFreePort()) {}

absl::Status Cluster::StartBroker() {
  broker_.Kill();
  return broker_.Start(RunfilePath("server/iommu-broker"),
                       {absl::StrCat("--listen=127.0.0.1:", broker_port_),
                        absl::StrCat("--db=", dir_, "/broker.db"), "--heartbeat_interval_ms=100",
                        "--node_timeout_ms=1500", "--shutdown_grace_ms=500",
                        "--agent_timeout_ms=5000"},
                       dir_, "broker");
}

absl::Status Cluster::StartAgent(const std::string& node, const std::string& sim_devices) {
  auto& agent = agents_[node];
  if (agent == nullptr) agent = std::make_unique<Daemon>();
  agent->Kill();
  absl::Status s = agent->Start(
      RunfilePath("agent/iommu-agent"),
      {absl::StrCat("--node=", node), absl::StrCat("--broker=", broker_address()),
       "--listen=127.0.0.1:0", "--backend=sim", absl::StrCat("--sim_devices=", sim_devices),
       absl::StrCat("--launcher_socket=", dir_, "/", node, ".sock")},
      dir_, "agent-" + node);
  if (!s.ok()) return s;
  return WaitForNodeState(node, v1::NODE_STATE_READY);
}

absl::Status Cluster::WaitForNodeState(const std::string& node, v1::NodeState state) {
  auto stub = BrokerStub();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  std::string last;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::GetNodeRequest req;
    req.set_node(node);
    v1::Node out;
    grpc::Status s = stub->GetNode(&ctx, req, &out);
    // The agent must also be the one now registered (its current address).
    auto it = agents_.find(node);
    const bool current = it == agents_.end() || state != v1::NODE_STATE_READY ||
                         out.agent_address() == it->second->address();
    if (s.ok() && out.state() == state && current) return absl::OkStatus();
    last = s.ok() ? out.ShortDebugString() : s.error_message();
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("node ", node, " did not reach state ", v1::NodeState_Name(state),
                   "; last: ", last));
}

std::unique_ptr<v1::Broker::Stub> Cluster::BrokerStub() const {
  return v1::Broker::NewStub(Channel(broker_address()));
}

std::unique_ptr<v1::Agent::Stub> Cluster::AgentStub(const std::string& node) {
  return v1::Agent::NewStub(Channel(agents_[node]->address()));
}

}  // namespace iommu::testing
