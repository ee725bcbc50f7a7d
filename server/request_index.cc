#include "server/request_index.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/random/random.h"
#include "server/store.h"

namespace iommu {

RequestIndex::RequestIndex() {
  absl::BitGen gen;  // Seeded from the OS: another key in every process.
  key_.lo = absl::Uniform<uint64_t>(gen);
  key_.hi = absl::Uniform<uint64_t>(gen);
}

RequestIndex::Match RequestIndex::Find(absl::string_view key, uint64_t digest) const {
  auto it = entries_.find(SipHash128(key_, key));
  if (it == entries_.end()) return Match::kAbsent;
  return it->second.digest == digest ? Match::kSameDigest : Match::kOtherDigest;
}

void RequestIndex::Insert(absl::string_view key, uint64_t digest, int64_t time_ms, uint64_t bytes) {
  const uint32_t scope = ScopeNumber(RequestScope(key));
  auto [it, inserted] = entries_.try_emplace(SipHash128(key_, key));
  if (!inserted) {
    --scope_counts_[it->second.scope];
    scope_bytes_[it->second.scope] -= it->second.bytes;
  }
  const uint32_t kept = static_cast<uint32_t>(std::min<uint64_t>(bytes, UINT32_MAX));
  it->second = Entry{digest, time_ms, scope, kept};
  ++scope_counts_[scope];
  scope_bytes_[scope] += kept;
}

int64_t RequestIndex::Expire(int64_t before_ms) {
  int64_t n = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.time_ms < before_ms) {
      --scope_counts_[it->second.scope];
      scope_bytes_[it->second.scope] -= it->second.bytes;
      entries_.erase(it++);  // Erasing leaves the other iterators valid.
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

int64_t RequestIndex::CountInScope(absl::string_view scope) const {
  auto it = scope_numbers_.find(scope);
  return it == scope_numbers_.end() ? 0 : scope_counts_[it->second];
}

uint64_t RequestIndex::BytesInScope(absl::string_view scope) const {
  auto it = scope_numbers_.find(scope);
  return it == scope_numbers_.end() ? 0 : scope_bytes_[it->second];
}

uint32_t RequestIndex::ScopeNumber(absl::string_view name) {
  auto it = scope_numbers_.find(name);
  if (it != scope_numbers_.end()) return it->second;
  const uint32_t n = static_cast<uint32_t>(scope_counts_.size());
  scope_counts_.push_back(0);
  scope_bytes_.push_back(0);
  scope_numbers_.emplace(std::string(name), n);
  return n;
}

}  // namespace iommu
