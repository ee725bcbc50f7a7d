// IdentityCache: the identities of peer certificates already seen, by the
// certificate's PEM bytes and the trust domain they were read in.
//
// Every call on a connection presents the same certificate, and reading the
// identity from it (base64, DER, the SAN extension) costs more than the rest
// of a small call. Only a certificate the TLS handshake verified reaches the
// reader, and the identity depends on nothing but its bytes and the trust
// domain, so a cached answer is the one a fresh read would give; revocation
// and expiry stay the handshake's job. Only identities are cached, never a
// refusal.
//
// Bounded: when it holds `capacity` entries it is emptied before the next
// insert (a fleet presents far fewer live certificates, so this happens
// only when certificates churn, and costs a re-read each).
//
// Thread-safe.
#ifndef COMMON_IDENTITY_CACHE_H_
#define COMMON_IDENTITY_CACHE_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/identity.h"

namespace iommu {

class IdentityCache {
 public:
  explicit IdentityCache(size_t capacity) : capacity_(capacity) {}
  IdentityCache(const IdentityCache&) = delete;
  IdentityCache& operator=(const IdentityCache&) = delete;

  std::optional<Identity> Find(absl::string_view trust_domain, absl::string_view pem) const
      ABSL_LOCKS_EXCLUDED(mu_);
  void Insert(absl::string_view trust_domain, absl::string_view pem, const Identity& identity)
      ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  static std::string Key(absl::string_view trust_domain, absl::string_view pem);

  const size_t capacity_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Identity> by_key_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iommu

#endif  // COMMON_IDENTITY_CACHE_H_
