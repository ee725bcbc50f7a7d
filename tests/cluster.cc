#include "tests/cluster.h"

#include <algorithm>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"

namespace iommu::testing {
namespace {

}  // namespace

Cluster::Cluster(ClusterOptions options)
    : options_(std::move(options)), dir_(NewTempDir("cluster")), broker_port_(PickFreePort()) {
  if (options_.tls) {
    std::vector<std::string> args;
    for (const std::string& t : options_.tenants) {
      args.push_back("--tenant");
      args.push_back(t);
    }
    absl::Status s = IssueCertificates(args);
    if (!s.ok()) {
      std::fprintf(stderr, "cluster: %s\n", s.ToString().c_str());
      std::abort();
    }
  }
}

absl::Status Cluster::IssueCertificates(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {RunfilePath("deploy/make-dev-certs.sh"), "--out", certs_dir()};
  // Only the first call makes the CA, the broker's and the operator's.
  if (std::ifstream(certs_dir() + "/ca.crt").good()) argv.push_back("--no-defaults");
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv);
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("make-dev-certs.sh failed: ", r.err, r.out));
  }
  return absl::OkStatus();
}

std::vector<std::string> Cluster::TransportFlags(const std::string& stem) const {
  if (!options_.tls) return {"--insecure"};
  return {absl::StrCat("--tls-cert=", certs_dir(), "/", stem, ".crt"),
          absl::StrCat("--tls-key=", certs_dir(), "/", stem, ".key"),
          absl::StrCat("--tls-ca=", certs_dir(), "/ca.crt")};
}

TransportConfig Cluster::ClientConfig(const std::string& stem) const {
  TransportConfig c;
  if (!options_.tls) {
    c.insecure = true;
    return c;
  }
  c.ca_file = certs_dir() + "/ca.crt";
  if (!stem.empty()) {
    c.cert_file = absl::StrCat(certs_dir(), "/", stem, ".crt");
    c.key_file = absl::StrCat(certs_dir(), "/", stem, ".key");
  }
  return c;
}

std::shared_ptr<grpc::Channel> Cluster::ChannelAs(const std::string& address,
                                                  const TransportConfig& config,
                                                  const Identity& server) const {
  // Own subchannels, so a dropped stub closes its connection and a daemon's
  // graceful stop is not held up by it (and so stubs with different
  // certificates never share a connection).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, MakeChannelCredentials(config, server), args);
}

absl::Status Cluster::StartBroker() {
  broker_.Kill();
  std::vector<std::string> args = {
      absl::StrCat("--listen=127.0.0.1:", broker_port_), absl::StrCat("--db=", dir_, "/broker.db"),
      "--heartbeat-interval-ms=100", "--node-timeout-ms=1500", "--shutdown-grace-ms=500",
      "--agent-timeout-ms=5000"};
  for (std::string& f : TransportFlags("broker")) args.push_back(std::move(f));
  args.insert(args.end(), options_.broker_args.begin(), options_.broker_args.end());
  return broker_.Start(RunfilePath("server/iommu-broker"), args, dir_, "broker");
}

absl::Status Cluster::StartAgent(const std::string& node, const std::string& sim_devices,
                                 const std::vector<std::string>& extra_args) {
  auto& agent = agents_[node];
  if (agent == nullptr) agent = std::make_unique<Daemon>();
  agent->Kill();
  if (options_.tls && !std::ifstream(absl::StrCat(certs_dir(), "/agent-", node, ".crt")).good()) {
    if (absl::Status s = IssueCertificates({"--agent", node}); !s.ok()) return s;
  }
  std::vector<std::string> args = {
      absl::StrCat("--node=", node), absl::StrCat("--broker=", broker_address()),
      "--listen=127.0.0.1:0", "--backend=sim", absl::StrCat("--sim-devices=", sim_devices),
      absl::StrCat("--launcher-socket=", dir_, "/", node, ".sock")};
  for (std::string& f : TransportFlags("agent-" + node)) args.push_back(std::move(f));
  // Each agent its own journal, kept across its restarts (kill -9 + start).
  if (std::none_of(extra_args.begin(), extra_args.end(), [](const std::string& a) {
        return absl::StartsWith(a, "--state-dir=");
      })) {
    args.push_back(absl::StrCat("--state-dir=", dir_, "/", node, ".state"));
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  absl::Status s = agent->Start(RunfilePath("agent/iommu-agent"), args, dir_, "agent-" + node);
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
  return BrokerStubAs("operator-admin");
}

std::unique_ptr<v1::Agent::Stub> Cluster::AgentStub(const std::string& node) {
  return AgentStubAs(node, "operator-admin");
}

std::unique_ptr<v1::Broker::Stub> Cluster::BrokerStubAs(const std::string& stem) const {
  return BrokerStubWith(ClientConfig(stem));
}

std::unique_ptr<v1::Broker::Stub> Cluster::BrokerStubWith(const TransportConfig& config) const {
  return v1::Broker::NewStub(ChannelAs(broker_address(), config, Identity{Role::kBroker, ""}));
}

std::unique_ptr<v1::NodeRegistry::Stub> Cluster::RegistryStubAs(const std::string& stem) const {
  return v1::NodeRegistry::NewStub(
      ChannelAs(broker_address(), ClientConfig(stem), Identity{Role::kBroker, ""}));
}

std::unique_ptr<v1::Agent::Stub> Cluster::AgentStubAs(const std::string& node,
                                                      const std::string& stem) {
  return v1::Agent::NewStub(
      ChannelAs(agents_[node]->address(), ClientConfig(stem), Identity{Role::kAgent, node}));
}

}  // namespace iommu::testing
