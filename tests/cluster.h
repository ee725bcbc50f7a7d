// Test helper: a broker and any number of simulated agents as real processes
// on loopback, with short heartbeat and liveness timeouts so that tests of
// node failure run quickly. Everything is killed when the Cluster goes away.
//
// Thread-compatible.
#ifndef TESTS_CLUSTER_H_
#define TESTS_CLUSTER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "proto/agent.grpc.pb.h"
#include "proto/broker.grpc.pb.h"
#include "common/tls.h"
#include "tests/daemon.h"

namespace iommu::testing {

struct ClusterOptions {
  // mTLS everywhere with certificates from deploy/make-dev-certs.sh (a CA,
  // the broker, operator-admin, tenant-<id> for `tenants`, agent-<node> as
  // agents start). Otherwise every daemon runs with --insecure.
  bool tls = false;
  std::vector<std::string> tenants;
  // Extra flags, last on the broker's command line (e.g. --metrics-address).
  std::vector<std::string> broker_args;
};

class Cluster final {
 public:
  explicit Cluster(ClusterOptions options = {});
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Starts (or restarts, on the same database and port) the broker.
  absl::Status StartBroker();
  Daemon& broker() { return broker_; }

  // Starts (or restarts) agent `node` with --backend=sim and `sim_devices`,
  // and waits until the broker lists the node READY. `extra_args` go last on
  // its command line (e.g. launcher socket limits).
  absl::Status StartAgent(const std::string& node, const std::string& sim_devices,
                          const std::vector<std::string>& extra_args = {});
  Daemon& agent(const std::string& node) { return *agents_[node]; }

  // Polls GetNode until the node reaches `state` (up to 20 s).
  absl::Status WaitForNodeState(const std::string& node, v1::NodeState state);

  // Stubs as the operator (operator-admin's certificate with tls).
  std::unique_ptr<v1::Broker::Stub> BrokerStub() const;
  std::unique_ptr<v1::Agent::Stub> AgentStub(const std::string& node);

  // With tls: stubs that present the certificate `stem` from certs_dir()
  // ("tenant-acme", "agent-node-1", "broker", ...; "" = no certificate). The
  // server is verified against the cluster's CA unless `ca_file` says
  // otherwise.
  std::unique_ptr<v1::Broker::Stub> BrokerStubAs(const std::string& stem) const;
  std::unique_ptr<v1::NodeRegistry::Stub> RegistryStubAs(const std::string& stem) const;
  std::unique_ptr<v1::Agent::Stub> AgentStubAs(const std::string& node, const std::string& stem);
  // A stub with an explicit client configuration (e.g. a foreign CA's cert).
  std::unique_ptr<v1::Broker::Stub> BrokerStubWith(const TransportConfig& config) const;
  // A channel of its own (no shared subchannels) to `address`, whose server
  // must prove `server`.
  std::shared_ptr<grpc::Channel> ChannelAs(const std::string& address,
                                           const TransportConfig& config,
                                           const Identity& server) const;

  // Issues more certificates with the cluster's CA (make-dev-certs.sh flags,
  // e.g. {"--tenant", "x"}).
  absl::Status IssueCertificates(const std::vector<std::string>& args);
  std::string certs_dir() const { return dir_ + "/certs"; }
  // The daemon flags for the certificate `stem` (or --insecure without tls).
  std::vector<std::string> TransportFlags(const std::string& stem) const;
  TransportConfig ClientConfig(const std::string& stem) const;
  const std::string& dir() const { return dir_; }
  std::string broker_address() const { return "127.0.0.1:" + std::to_string(broker_port_); }

 private:
  const ClusterOptions options_;
  std::string dir_;
  int broker_port_;
  Daemon broker_;
  std::map<std::string, std::unique_ptr<Daemon>> agents_;
};

}  // namespace iommu::testing

#endif  // TESTS_CLUSTER_H_
