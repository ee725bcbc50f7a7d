// The node agent's version, reported to the broker at registration.
// Constants only; thread-safe.
#ifndef AGENT_VERSION_H_
#define AGENT_VERSION_H_

#include "common/version.h"

namespace iommu {
namespace agent {

inline constexpr const char* kAgentVersion = kVersion;

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_VERSION_H_
