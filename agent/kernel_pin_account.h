// KernelPinAccount: the bytes of DMA pins the kernel counts for the agent's
// mappings, per tenant (the tenant of the session that mapped) and in
// total, and the bounds the agent keeps them under (memlock_policy.h).
//
// The kernel charges each mapping its full size, however many other
// mappings pin the same pages (VFIO type1 mm->locked_vm, iommufd
// mm->pinned_vm / the uid's locked_vm), so what it counts is the sum of the
// mappings' sizes, not the ledger's distinct pages (agent/ledger.h).
//
// Pure logic, no I/O. Not thread-safe: its owner (AgentCore) serialises it.
#ifndef AGENT_KERNEL_PIN_ACCOUNT_H_
#define AGENT_KERNEL_PIN_ACCOUNT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

class KernelPinAccount final {
 public:
  // No bound on a tenant or on the node.
  static constexpr uint64_t kUnlimited = UINT64_MAX;

  KernelPinAccount() = default;

  // The bounds checked by CheckMap (kUnlimited: none). Lowering a bound
  // below what is counted takes nothing away; it only refuses new maps.
  void SetLimits(uint64_t per_tenant_bytes, uint64_t node_bytes);
  uint64_t per_tenant_limit() const { return per_tenant_limit_; }
  uint64_t node_limit() const { return node_limit_; }

  // OK when `tenant` may map `size` more bytes: its count plus `size` stays
  // within the per-tenant bound, and the node's total plus `size` within the
  // node bound. Otherwise RESOURCE_EXHAUSTED "length: ..." naming the
  // tenant, `node`, the bytes the kernel would count and the bound passed
  // (the tenant's bound is checked first). Changes nothing.
  absl::Status CheckMap(absl::string_view tenant, uint64_t size, absl::string_view node) const;

  // A mapping of `size` bytes by `tenant` was made / removed. Removing more
  // than was added for the tenant is a bug in the caller and clamps at 0.
  void Add(const std::string& tenant, uint64_t size);
  void Remove(const std::string& tenant, uint64_t size);

  // What the kernel counts for `tenant` (0 if none), and for the node.
  uint64_t tenant_bytes(absl::string_view tenant) const;
  uint64_t total_bytes() const { return total_; }
  // Tenants with a non-zero count, sorted.
  std::vector<std::string> tenants() const;

 private:
  uint64_t per_tenant_limit_ = kUnlimited;
  uint64_t node_limit_ = kUnlimited;
  std::map<std::string, uint64_t, std::less<>> per_tenant_;  // Only non-zero.
  uint64_t total_ = 0;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_KERNEL_PIN_ACCOUNT_H_
