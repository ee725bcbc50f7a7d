// How the broker reaches node agents: an interface, so the broker's logic can
// be tested against in-process agents or fakes, and a gRPC implementation.
//
// Thread-safety: implementations are safe to call from several threads.
#ifndef SERVER_AGENT_CLIENT_H_
#define SERVER_AGENT_CLIENT_H_

#include <memory>
#include <string>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"
#include "proto/agent.pb.h"
#include "proto/broker.pb.h"

namespace iommu {

// Where an agent is, and who it must prove to be: the node's name (the
// agent's certificate must carry spiffe://<td>/agent/<node>) and the address
// it registered.
struct AgentEndpoint {
  std::string node;
  std::string address;
  friend bool operator<(const AgentEndpoint& a, const AgentEndpoint& b) {
    return std::tie(a.node, a.address) < std::tie(b.node, b.address);
  }
};

class AgentClient {
 public:
  virtual ~AgentClient() = default;

  // Asks `agent` to create (or confirm) a container.
  // Returns what the agent holds, with the geometry its backend reported.
  virtual absl::StatusOr<v1::AgentContainer> CreateContainer(
      const AgentEndpoint& agent, const v1::AgentCreateContainerRequest& request) = 0;

  // Asks the agent to destroy a container. NOT_FOUND when it holds none.
  virtual absl::Status DestroyContainer(const AgentEndpoint& agent,
                                        const std::string& container_id) = 0;

  // Tells the agent new pin budgets of some of its containers.
  virtual absl::Status SetPinBudgets(const AgentEndpoint& agent,
                                     const v1::SetPinBudgetsRequest& request) = 0;

  // Tells the agent a container's current windows.
  virtual absl::Status SetWindows(const AgentEndpoint& agent,
                                  const v1::SetWindowsRequest& request) = 0;
};

// Calls agents over gRPC with `transport` (mTLS: each agent must prove the
// identity of its node), one cached channel per endpoint, with `deadline` on
// every call.
std::unique_ptr<AgentClient> NewGrpcAgentClient(absl::Duration deadline,
                                                TransportConfig transport);

}  // namespace iommu

#endif  // SERVER_AGENT_CLIENT_H_
