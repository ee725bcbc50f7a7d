#include "common/grant_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace iommu {
namespace {

constexpr absl::string_view kVersionPrefix = "v1";
constexpr size_t kMacBytes = 32;  // SHA-256.

// Only for failures no input can cause: OpenSSL's CSPRNG or HMAC failing
// (there is no safe fallback to a weaker key or an unchecked token).
[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "grant_token: %s\n", what);
  std::abort();
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()),
                 static_cast<int>(n)) != 1) {
    Die("RAND_bytes failed");
  }
  return out;
}

// HMAC-SHA256(key, data). The callers have checked the key size (and
// tokens are capped at 4 KiB before this), so a failure here is OpenSSL
// itself failing, not anything a peer sent.
std::string Mac(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(),
           out, &out_len) == nullptr ||
      out_len != kMacBytes) {
    Die("HMAC-SHA256 failed");
  }
  return std::string(reinterpret_cast<char*>(out), out_len);
}

absl::Status Malformed(absl::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat("token: malformed (", why, ")"));
}

// Decodes unpadded base64url, accepting only the canonical spelling: absl's
// decoder also takes padding and ignores stray low bits, and a token with two
// spellings would defeat the replay check for anything keyed on its text.
bool DecodeCanonical(absl::string_view in, std::string* out) {
  if (in.empty()) return false;
  for (char c : in) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  if (!absl::WebSafeBase64Unescape(in, out)) return false;
  return absl::WebSafeBase64Escape(*out) == in;
}

// `at_least`: the size is a lower bound (the payload alone), not exact.
absl::Status TooLarge(size_t bytes, bool at_least) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "grant: token would be ", at_least ? "more than " : "", bytes,
      " bytes, over the limit of ", kMaxGrantTokenBytes,
      " bytes (name fewer windows, or shorter ids)"));
}

absl::Status ShortKey(size_t got) {
  return absl::FailedPreconditionError(absl::StrCat(
      "grant key: must be at least ", kMinGrantKeyBytes, " bytes, got ", got));
}

}  // namespace

absl::StatusOr<std::string> SignGrant(const v1::LauncherGrant& grant, absl::string_view key) {
  if (key.size() < kMinGrantKeyBytes) return ShortKey(key.size());
  // Checked before serializing so a grant with megabytes of windows is not
  // encoded and MACed only to be refused: a token is about 4/3 of the
  // payload plus 48 bytes.
  const size_t payload_bytes = grant.ByteSizeLong();
  if (payload_bytes > kMaxGrantTokenBytes) {
    return TooLarge(payload_bytes, /*at_least=*/true);
  }
  std::string payload;
  if (!grant.SerializeToString(&payload)) {
    return absl::InvalidArgumentError(
        "grant: does not serialize (a string field that is not UTF-8?)");
  }
  std::string token = absl::StrCat(kVersionPrefix, ".",
                                   absl::WebSafeBase64Escape(payload), ".",
                                   absl::WebSafeBase64Escape(Mac(key, payload)));
  if (token.size() > kMaxGrantTokenBytes) return TooLarge(token.size(), /*at_least=*/false);
  return token;
}

absl::StatusOr<v1::LauncherGrant> VerifyGrant(absl::string_view token,
                                              absl::string_view key,
                                              int64_t now_ms) {
  if (key.size() < kMinGrantKeyBytes) return ShortKey(key.size());
  if (token.empty()) return Malformed("empty");
  if (token.size() > kMaxGrantTokenBytes) {
    return Malformed(absl::StrCat("longer than ", kMaxGrantTokenBytes, " bytes"));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) return Malformed("want v1.<payload>.<signature>");
  if (parts[0] != kVersionPrefix) return Malformed("unknown version, want v1");
  std::string payload;
  if (!DecodeCanonical(parts[1], &payload)) {
    return Malformed("payload is not unpadded base64url");
  }
  std::string mac;
  if (!DecodeCanonical(parts[2], &mac)) {
    return Malformed("signature is not unpadded base64url");
  }
  if (mac.size() != kMacBytes) return Malformed("signature is not 32 bytes");
  const std::string want = Mac(key, payload);
  if (CRYPTO_memcmp(want.data(), mac.data(), kMacBytes) != 0) {
    return absl::UnauthenticatedError("token: bad signature");
  }
  v1::LauncherGrant grant;
  if (!grant.ParseFromString(payload)) {
    return Malformed("signed payload does not parse");
  }
  if (now_ms >= grant.expires_ms()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "token: expired at ", grant.expires_ms(), " (now ", now_ms, ")"));
  }
  return grant;
}

std::string NewGrantKey() { return RandomBytes(32); }

std::string NewGrantTokenId() { return absl::BytesToHexString(RandomBytes(16)); }

absl::Status ValidateReplayCacheLimits(const ReplayCacheLimits& limits) {
  if (limits.per_tenant == 0) {
    return absl::InvalidArgumentError("replay_cache_per_tenant: must be at least 1");
  }
  if (limits.total < limits.per_tenant) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replay_cache_max: must be at least replay_cache_per_tenant (", limits.per_tenant,
        "), got ", limits.total));
  }
  return absl::OkStatus();
}

namespace {

ReplayCacheLimits AtLeastOne(ReplayCacheLimits limits) {
  limits.per_tenant = std::max<size_t>(limits.per_tenant, 1);
  limits.total = std::max<size_t>(limits.total, 1);
  return limits;
}

}  // namespace

ReplayCache::ReplayCache(ReplayCacheLimits limits) : limits_(AtLeastOne(limits)) {}

void ReplayCache::PruneLocked(int64_t now_ms) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now_ms) {
    auto it = by_id_.find(by_expiry_.begin()->second);
    auto t = per_tenant_.find(it->second.tenant);
    if (--t->second == 0) per_tenant_.erase(t);
    by_id_.erase(it);
    by_expiry_.erase(by_expiry_.begin());
  }
}

absl::Status ReplayCache::Consume(const std::string& token_id, const std::string& tenant,
                                  int64_t expires_ms, int64_t now_ms) {
  if (token_id.empty()) {
    return absl::InvalidArgumentError("token_id: must not be empty");
  }
  absl::MutexLock lock(&mu_);
  PruneLocked(now_ms);
  // An expired token is refused here too, so that an id is never dropped by
  // pruning while the token it names could still be accepted.
  if (expires_ms <= now_ms) {
    return absl::UnauthenticatedError(absl::StrCat(
        "token: expired at ", expires_ms, " (now ", now_ms, ")"));
  }
  if (by_id_.contains(token_id)) {
    return absl::UnauthenticatedError("token: already used");
  }
  // The tenant's share first: a tenant at its limit is told so, whatever
  // the total, and cannot push the total to its limit alone.
  auto t = per_tenant_.find(tenant);
  const size_t held = t == per_tenant_.end() ? 0 : t->second;
  if (held >= limits_.per_tenant) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "token: tenant \"", tenant, "\" has used ", held,
        " unexpired tokens on this node (limit ", limits_.per_tenant,
        " per tenant, --replay-cache-per-tenant); retry after its oldest expires"));
  }
  if (by_id_.size() >= limits_.total) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "token: replay cache full (", limits_.total,
        " unexpired tokens used, --replay-cache-max); retry after the oldest expires"));
  }
  by_id_.emplace(token_id, Entry{expires_ms, tenant});
  by_expiry_.emplace(expires_ms, token_id);
  ++per_tenant_[tenant];
  return absl::OkStatus();
}

size_t ReplayCache::size() {
  absl::MutexLock lock(&mu_);
  return by_id_.size();
}

size_t ReplayCache::tenant_size(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto t = per_tenant_.find(tenant);
  return t == per_tenant_.end() ? 0 : t->second;
}

}  // namespace iommu
