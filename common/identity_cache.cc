#include "common/identity_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace iommu {

std::string IdentityCache::Key(absl::string_view trust_domain, absl::string_view pem) {
  // A trust domain holds no NUL, so the split is unambiguous.
  return absl::StrCat(trust_domain, absl::string_view("\0", 1), pem);
}

std::optional<Identity> IdentityCache::Find(absl::string_view trust_domain,
                                            absl::string_view pem) const {
  const std::string key = Key(trust_domain, pem);
  absl::ReaderMutexLock l(&mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

void IdentityCache::Insert(absl::string_view trust_domain, absl::string_view pem,
                           const Identity& identity) {
  if (capacity_ == 0) return;
  std::string key = Key(trust_domain, pem);
  absl::MutexLock l(&mu_);
  if (by_key_.size() >= capacity_ && !by_key_.contains(key)) by_key_.clear();
  by_key_.insert_or_assign(std::move(key), identity);
}

size_t IdentityCache::size() const {
  absl::ReaderMutexLock l(&mu_);
  return by_key_.size();
}

}  // namespace iommu
