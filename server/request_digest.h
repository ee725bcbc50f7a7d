// Hashes of remembered requests for the broker's in-memory index of them
// (request_index.h): SipHash-2-4 (Aumasson and Bernstein), a keyed hash whose
// outputs cannot be steered into collisions by whoever chooses the input
// without knowing the key.
//
//  - FingerprintDigest: a fixed-key 64-bit digest of a request's fingerprint
//    (RequestRecord::fingerprint), the same in every process; stores report
//    it (Store::ListRequests) so that nobody keeps fingerprints in memory.
//    Equal fingerprints always have equal digests; unequal ones may collide
//    (the index's users then compare the whole fingerprints).
//  - SipHash128: the 128-bit variant under a caller's key, for the index's
//    request keys (it picks a random key per index).
//
// Bytes are read in little-endian order as the reference does, so results
// match the published test vectors on every machine.
//
// Thread-safe: pure functions.
#ifndef SERVER_REQUEST_DIGEST_H_
#define SERVER_REQUEST_DIGEST_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace iommu {

// 128 bits: a SipHash key, or a SipHash-2-4-128 output.
struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;
  bool operator==(const Hash128& o) const { return lo == o.lo && hi == o.hi; }
  bool operator!=(const Hash128& o) const { return !(*this == o); }
};

// SipHash-2-4 with a 64-bit output of `bytes` under `key` (key bytes 0-7 are
// key.lo in little-endian order, 8-15 key.hi).
uint64_t SipHash64(const Hash128& key, absl::string_view bytes);

// SipHash-2-4-128 of `bytes` under `key`.
Hash128 SipHash128(const Hash128& key, absl::string_view bytes);

// The digest of a request's fingerprint that the index compares and that
// Store::ListRequests reports: SipHash64 under a fixed key.
uint64_t FingerprintDigest(absl::string_view fingerprint);

}  // namespace iommu

#endif  // SERVER_REQUEST_DIGEST_H_
