// The broker's durable state behind one interface. The embedded implementation
// is SQLite (sqlite_store.h); a replicated one (etcd) can sit behind the same
// interface later. The store knows nothing of tenants or containers: it keeps
// opaque records (a kind, an id, serialized protobuf bytes) and remembers the
// answers to mutations for idempotent retries.
//
// Thread-safety: implementations are safe to call from several threads; each
// call is atomic with respect to the others.
//
// Read errors: a record the store cannot vouch for (damaged on disk, a
// checksum that does not match, a lookup that found another key) is
// DATA_LOSS; I/O trouble is UNAVAILABLE. A read never returns a damaged
// record as if it were the state, so a caller's answer built on it (e.g.
// "this request id was used for a different request") cannot be wrong.
#ifndef SERVER_STORE_H_
#define SERVER_STORE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/request_digest.h"

namespace iommu {

// One persisted object.
struct StoreRecord {
  std::string kind;   // e.g. "tenant", "node", "container", "window".
  std::string id;     // Unique within its kind.
  std::string value;  // Serialized protobuf message.
};

// The answer to one acknowledged mutation, kept so that a retry with the same
// request id returns it instead of changing anything again.
struct RequestRecord {
  std::string request_id;
  // Identifies the request's method and content; a retry whose fingerprint
  // differs is a client bug, refused by the broker.
  std::string fingerprint;
  std::string response;  // Serialized protobuf response.
  int64_t time_ms = 0;   // When it was acknowledged.
};

// A remembered answer as Store::ListRequests reports it: what the broker keeps
// in memory about it, without the fingerprint or the response.
struct RequestSummary {
  std::string request_id;
  uint64_t fingerprint_digest = 0;  // FingerprintDigest(fingerprint), request_digest.h.
  int64_t time_ms = 0;              // When it was acknowledged.
  uint64_t bytes = 0;               // RequestBytes of the record.
};

// What a remembered answer costs the store, about: its id, fingerprint and
// response (the per-caller bound on remembered bytes counts this).
inline uint64_t RequestBytes(const RequestRecord& r) {
  return r.request_id.size() + r.fingerprint.size() + r.response.size();
}

// What Store::ListRequests reports of `r`.
inline RequestSummary SummarizeRequest(RequestRecord r) {
  const uint64_t bytes = RequestBytes(r);
  const uint64_t digest = FingerprintDigest(r.fingerprint);
  return {std::move(r.request_id), digest, r.time_ms, bytes};
}

// One atomic change: all of it is applied or none of it.
struct WriteBatch {
  std::vector<StoreRecord> puts;                            // Insert or replace.
  std::vector<std::pair<std::string, std::string>> deletes; // (kind, id); absent is fine.
  std::optional<RequestRecord> request;

  bool empty() const { return puts.empty() && deletes.empty() && !request.has_value(); }
};

class Store {
 public:
  virtual ~Store() = default;

  // Every record, ordered by (kind, id). Called once at start.
  virtual absl::StatusOr<std::vector<StoreRecord>> LoadAll() = 0;

  // Applies `batch` atomically. On OK the change is durable: it survives
  // kill -9 of the process and a power cut. On error nothing was applied.
  virtual absl::Status Commit(const WriteBatch& batch) = 0;

  // Applies every batch of `batches`, in order (a later batch may put or
  // delete what an earlier one wrote), as one atomic change with one durable
  // sync: on OK all of them survive kill -9 and a power cut, on error none
  // was applied. This is how the broker lets concurrent mutations share one
  // fsync (group commit).
  virtual absl::Status CommitGroup(absl::Span<const WriteBatch> batches) = 0;

  // The remembered answer for `request_id`, or nullopt.
  virtual absl::StatusOr<std::optional<RequestRecord>> FindRequest(
      absl::string_view request_id) = 0;

  // Forgets answers acknowledged before `before_ms`. Returns how many.
  virtual absl::StatusOr<int64_t> ExpireRequests(int64_t before_ms) = 0;

  // Every remembered answer without its response, in no particular order:
  // what the broker indexes in memory (server/request_index.h) so that a
  // fresh request id costs no FindRequest. Linear in the answers remembered
  // (and, where responses cannot be left out of the read, in their bytes);
  // the broker calls it at start and after a failed commit. A damaged
  // answer is DATA_LOSS, as for FindRequest.
  virtual absl::StatusOr<std::vector<RequestSummary>> ListRequests() = 0;
};

// The scope of a remembered request id: the part before its first '|' (the
// caller, see Broker), "" for ids without one. The broker bounds the answers
// remembered per scope.
inline std::string RequestScope(absl::string_view request_id) {
  const size_t bar = request_id.find('|');
  return bar == absl::string_view::npos ? "" : std::string(request_id.substr(0, bar));
}

}  // namespace iommu

#endif  // SERVER_STORE_H_
