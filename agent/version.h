// The node agent's version, reported to the broker at registration.
// Constants only; thread-safe.
#ifndef AGENT_VERSION_H_
#define AGENT_VERSION_H_

namespace iommu {
namespace agent {

inline constexpr char kAgentVersion[] = "0.1.0-dev";

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_VERSION_H_
