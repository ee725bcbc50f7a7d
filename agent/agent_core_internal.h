// Small helpers the parts of AgentCore (agent_core*.cc) share: window
// containment and the wording of their refusals.
#ifndef AGENT_AGENT_CORE_INTERNAL_H_
#define AGENT_AGENT_CORE_INTERNAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "agent/agent_core.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace core_internal {

// True when [iova, iova + length) lies wholly inside one of `windows`.
inline bool InsideOneWindow(const std::vector<IovaRange>& windows, uint64_t iova, uint64_t length) {
  const uint64_t last = iova + (length - 1);  // Callers checked for overflow.
  for (const IovaRange& w : windows) {
    if (iova >= w.start && last <= w.last) return true;
  }
  return false;
}

inline std::string WindowList(const std::vector<IovaRange>& windows) {
  std::vector<std::string> out;
  for (const IovaRange& w : windows) out.push_back(absl::StrCat(Hex(w.start), "-", Hex(w.last)));
  return absl::StrCat("[", absl::StrJoin(out, ", "), "]");
}

inline std::string ContainerIdField(absl::string_view id) {
  return absl::StrCat("container_id: ", id);
}

}  // namespace core_internal
}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_CORE_INTERNAL_H_
