#include "agent/kernel_pin_account.h"

#include "absl/strings/str_cat.h"

namespace iommu {
namespace agent {

void KernelPinAccount::SetLimits(uint64_t per_tenant_bytes, uint64_t node_bytes) {
  per_tenant_limit_ = per_tenant_bytes;
  node_limit_ = node_bytes;
}

absl::Status KernelPinAccount::CheckMap(absl::string_view tenant, uint64_t size,
                                        absl::string_view node) const {
  const uint64_t have = tenant_bytes(tenant);
  if (per_tenant_limit_ != kUnlimited && (have > per_tenant_limit_ || size > per_tenant_limit_ - have)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "length: mapping ", size, " bytes would make the kernel count ",
        // Saturating: past UINT64_MAX is past any bound anyway.
        have > UINT64_MAX - size ? UINT64_MAX : have + size, " bytes of pins for tenant \"",
        tenant, "\" on node ", node, ", past its share of ", per_tenant_limit_,
        " bytes (--kernel-pin-bytes-per-tenant; the kernel charges every mapping in full, "
        "however many mappings pin the same page); unmap some first"));
  }
  if (node_limit_ != kUnlimited && (total_ > node_limit_ || size > node_limit_ - total_)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "length: mapping ", size, " bytes for tenant \"", tenant,
        "\" would make the kernel count ", total_ > UINT64_MAX - size ? UINT64_MAX : total_ + size,
        " bytes of pins on node ", node, ", past the agent's RLIMIT_MEMLOCK room of ",
        node_limit_, " bytes (the limit minus what it had locked at start)"));
  }
  return absl::OkStatus();
}

void KernelPinAccount::Add(const std::string& tenant, uint64_t size) {
  if (size == 0) return;
  per_tenant_[tenant] += size;
  total_ += size;
}

void KernelPinAccount::Remove(const std::string& tenant, uint64_t size) {
  auto it = per_tenant_.find(tenant);
  if (it == per_tenant_.end()) return;
  const uint64_t take = size < it->second ? size : it->second;
  it->second -= take;
  total_ -= take;
  if (it->second == 0) per_tenant_.erase(it);
}

uint64_t KernelPinAccount::tenant_bytes(absl::string_view tenant) const {
  auto it = per_tenant_.find(tenant);
  return it == per_tenant_.end() ? 0 : it->second;
}

std::vector<std::string> KernelPinAccount::tenants() const {
  std::vector<std::string> out;
  out.reserve(per_tenant_.size());
  for (const auto& [t, n] : per_tenant_) out.push_back(t);
  return out;
}

}  // namespace agent
}  // namespace iommu
