// RequestIndex: what the broker keeps in memory about every answer the store
// remembers for retries (Store::FindRequest), so that a mutation with a fresh
// request id, the common case, is admitted without reading the store. Per
// request key (RequestKey in broker.cc, or a bare legacy id) it keeps a hash
// of the key, the digest of the request's fingerprint (FingerprintDigest),
// when the answer was acknowledged and its caller scope (RequestScope), and
// it answers:
//   kAbsent       no answer is remembered under the key: a fresh request;
//   kOtherDigest  one is, for another request (equal fingerprints have equal
//                 digests): the id was reused;
//   kSameDigest   one is, probably for this very request (digests of unequal
//                 fingerprints may collide): read the answer and compare the
//                 whole fingerprint before replaying it.
// It also counts entries and their bytes in the store per scope (the
// per-caller bounds on remembered answers) and forgets entries older than a
// cutoff (expiry).
//
// Memory: each entry is 40 bytes (a 16-byte key hash, an 8-byte digest, an
// 8-byte time, a 4-byte scope number and a 4-byte size) in an open-addressing
// table with one control byte per slot, kept between 7/16 and 7/8 full: 47
// to 94 bytes per remembered answer, whatever the lengths of its id and
// request (1,000,000 answers: about 50-90 MB; twice that for a moment while
// the table grows). Plus each scope's name once.
//
// Key collisions: keys are kept as SipHash-2-4-128 hashes under a key drawn
// at random per index, so callers cannot make two of them collide on
// purpose; by chance it takes about 2^64 keys. A collision would make a
// fresh id look reused (FAILED_PRECONDITION), never replay another request's
// answer: a replay reads the store under the exact key and compares the
// whole fingerprint.
//
// Thread-safety: none; the broker guards it with its mutex.
#ifndef SERVER_REQUEST_INDEX_H_
#define SERVER_REQUEST_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "server/request_digest.h"

namespace iommu {

class RequestIndex final {
 public:
  enum class Match { kAbsent, kSameDigest, kOtherDigest };

  // An empty index hashing keys under a random key.
  RequestIndex();
  // An empty index hashing keys under `key` (tests).
  explicit RequestIndex(Hash128 key) : key_(key) {}

  RequestIndex(RequestIndex&&) = default;
  RequestIndex& operator=(RequestIndex&&) = default;
  RequestIndex(const RequestIndex&) = delete;
  RequestIndex& operator=(const RequestIndex&) = delete;

  // Whether an answer is remembered under `key`, and for a request of
  // fingerprint digest `digest` or another. O(1).
  Match Find(absl::string_view key, uint64_t digest) const;

  // Remembers that an answer under `key`, for a request of digest `digest`,
  // was acknowledged at `time_ms` and takes `bytes` in the store
  // (RequestBytes); replaces an entry of the same key. O(1) amortized.
  void Insert(absl::string_view key, uint64_t digest, int64_t time_ms, uint64_t bytes = 0);

  // Forgets the entries acknowledged before `before_ms` (the store's
  // ExpireRequests rule). Returns how many. Linear in the entries.
  int64_t Expire(int64_t before_ms);

  // Entries whose key has scope `scope` (RequestScope), and the bytes they
  // take in the store. O(1) expected.
  int64_t CountInScope(absl::string_view scope) const;
  uint64_t BytesInScope(absl::string_view scope) const;

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t digest = 0;
    int64_t time_ms = 0;
    uint32_t scope = 0;  // Index into scope_counts_.
    uint32_t bytes = 0;  // Saturated: an answer is far below 4 GiB (gRPC's message limit).
  };
  // Key hashes are already uniform: their low half is their table hash.
  struct KeyHasher {
    size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo); }
  };
  // The number of scope `name` (its index into scope_counts_), added if
  // new. Scopes are never removed: there is one per caller that ever sent a
  // request id.
  uint32_t ScopeNumber(absl::string_view name);

  Hash128 key_;
  absl::flat_hash_map<Hash128, Entry, KeyHasher> entries_;
  std::vector<int64_t> scope_counts_;
  std::vector<uint64_t> scope_bytes_;  // By scope number, like scope_counts_.
  absl::flat_hash_map<std::string, uint32_t> scope_numbers_;
};

}  // namespace iommu

#endif  // SERVER_REQUEST_INDEX_H_
