// PLACEHOLDER until the fd store lands (replaced at merge).
#include "agent/fd_store.h"
namespace iommu {
namespace agent {
namespace {
class NoFdStore final : public FdStore {
 public:
  std::string Describe() const override { return "none"; }
  absl::Status Put(absl::string_view, int) override { return absl::OkStatus(); }
  absl::Status Remove(absl::string_view) override { return absl::OkStatus(); }
  absl::StatusOr<std::map<std::string, UniqueFd>> Retrieve() override {
    return std::map<std::string, UniqueFd>();
  }
};
}  // namespace
absl::Status ValidateFdName(absl::string_view) { return absl::OkStatus(); }
absl::StatusOr<std::unique_ptr<FdStore>> OpenFdStore(absl::string_view spec) {
  if (spec == "none") return std::make_unique<NoFdStore>();
  return absl::UnimplementedError("placeholder");
}
}  // namespace agent
}  // namespace iommu
