// PLACEHOLDER until the fd store lands (replaced at merge).
#ifndef AGENT_FD_STORE_H_
#define AGENT_FD_STORE_H_
#include <map>
#include <memory>
#include <string>
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/unique_fd.h"
namespace iommu {
namespace agent {
absl::Status ValidateFdName(absl::string_view name);
class FdStore {
 public:
  virtual ~FdStore() = default;
  virtual std::string Describe() const = 0;
  virtual absl::Status Put(absl::string_view name, int fd) = 0;
  virtual absl::Status Remove(absl::string_view name) = 0;
  virtual absl::StatusOr<std::map<std::string, UniqueFd>> Retrieve() = 0;
};
absl::StatusOr<std::unique_ptr<FdStore>> OpenFdStore(absl::string_view spec);
}  // namespace agent
}  // namespace iommu
#endif
