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
#include "tests/daemon.h"

namespace iommu::testing {

class Cluster final {
 public:
  Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Starts (or restarts, on the same database and port) the broker.
  absl::Status StartBroker();
  Daemon& broker() { return broker_; }

  // Starts (or restarts) agent `node` with --backend=sim and `sim_devices`,
  // and waits until the broker lists the node READY.
  absl::Status StartAgent(const std::string& node, const std::string& sim_devices);
  Daemon& agent(const std::string& node) { return *agents_[node]; }

  // Polls GetNode until the node reaches `state` (up to 20 s).
  absl::Status WaitForNodeState(const std::string& node, v1::NodeState state);

  std::unique_ptr<v1::Broker::Stub> BrokerStub() const;
  std::unique_ptr<v1::Agent::Stub> AgentStub(const std::string& node);

  const std::string& dir() const { return dir_; }
  std::string broker_address() const { return "127.0.0.1:" + std::to_string(broker_port_); }

 private:
  std::string dir_;
  int broker_port_;
  Daemon broker_;
  std::map<std::string, std::unique_ptr<Daemon>> agents_;
};

}  // namespace iommu::testing

#endif  // TESTS_CLUSTER_H_
