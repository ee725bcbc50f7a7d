// A versioned, transactional key-value store modelled on etcd v3 (its
// server/mvcc/kv.go and the KV/Watch/Lease services of rpc.proto), so that
// the broker's logic is written once for the embedded SQLite store
// (sqlite_kv_store.h) and for etcd. kv_conformance.h is the behavioural
// contract every implementation passes.
//
// The model:
// - Keys and values are byte strings. Each live key has a create_revision
//   (the revision that created it since it last did not exist), a
//   mod_revision (the revision of its last write), a version (number of
//   writes since creation, 1 after the first) and a lease (0 = none).
// - One store-wide revision. A write txn that changes anything increases it
//   by exactly 1; every change of that txn carries the new revision. A txn
//   that changes nothing (only reads, failed compares with a read-only else
//   branch, a delete that matched nothing) leaves it unchanged.
// - Ranges: [key, range_end). An empty range_end means the single key `key`;
//   range_end "\0" (one zero byte) means every key >= key.
// - History: a read at an older revision sees the store as it was, until
//   Compact(rev) drops what only revisions below `rev` can see; reads and
//   watches below the compaction point then fail with OUT_OF_RANGE
//   ("compacted").
// - Leases: keys attached to a lease vanish (a DELETE at a new revision) when
//   it is revoked or expires. Expiry follows the store's injected Clock.
//
// Contract of every write: on OK the change is durable and visible to every
// read that starts afterwards; on error nothing was applied (a failed fsync
// may leave the outcome unknown, reported as UNAVAILABLE or DATA_LOSS). Bad
// input is INVALID_ARGUMENT (or NOT_FOUND for an unknown lease) with a
// message naming the field and the rule; it never aborts.
//
// Thread-safety: implementations are thread-safe.
#ifndef SERVER_KV_KV_STORE_H_
#define SERVER_KV_KV_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace iommu {
namespace kv {

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
  friend bool operator==(const KeyValue& a, const KeyValue& b) {
    return a.key == b.key && a.value == b.value && a.create_revision == b.create_revision &&
           a.mod_revision == b.mod_revision && a.version == b.version && a.lease == b.lease;
  }
};

// What a compare looks at, and how. A key that does not exist has version,
// create and mod revision 0 and lease 0; a VALUE compare on it is false
// whatever the operator (etcd: a missing value cannot be represented).
enum class CompareTarget { kValue, kVersion, kCreate, kMod, kLease };
enum class CompareOp { kEqual, kNotEqual, kLess, kGreater };

struct Compare {
  std::string key;
  CompareTarget target = CompareTarget::kMod;
  CompareOp op = CompareOp::kEqual;
  std::string value;   // For kValue.
  int64_t number = 0;  // For the other targets.

  static Compare Value(std::string key, CompareOp op, std::string value) {
    return {std::move(key), CompareTarget::kValue, op, std::move(value), 0};
  }
  static Compare Version(std::string key, CompareOp op, int64_t n) {
    return {std::move(key), CompareTarget::kVersion, op, "", n};
  }
  static Compare CreateRevision(std::string key, CompareOp op, int64_t n) {
    return {std::move(key), CompareTarget::kCreate, op, "", n};
  }
  static Compare ModRevision(std::string key, CompareOp op, int64_t n) {
    return {std::move(key), CompareTarget::kMod, op, "", n};
  }
  static Compare Lease(std::string key, CompareOp op, int64_t n) {
    return {std::move(key), CompareTarget::kLease, op, "", n};
  }
};

struct PutOp {
  std::string key;
  std::string value;
  int64_t lease = 0;     // 0: none. Must name a live lease.
  bool prev_kv = false;  // Return the key's previous value.
};
struct DeleteRangeOp {
  std::string key;
  std::string range_end;
  bool prev_kv = false;  // Return the deleted key-values.
};
// Inside a txn a range reads the state as the txn's earlier ops left it.
struct RangeOp {
  std::string key;
  std::string range_end;
  int64_t limit = 0;  // 0: no limit.
};
using Op = std::variant<PutOp, DeleteRangeOp, RangeOp>;

struct TxnRequest {
  std::vector<Compare> compares;  // All true: then_ops run; else else_ops.
  std::vector<Op> then_ops;
  std::vector<Op> else_ops;
};

struct RangeResponse {
  std::vector<KeyValue> kvs;  // Sorted by key, at most `limit`.
  bool more = false;          // More keys matched than were returned.
  int64_t count = 0;          // How many keys matched in all.
  int64_t revision = 0;       // The revision the range was read at.
};
struct PutResponse {
  std::optional<KeyValue> prev_kv;
};
struct DeleteRangeResponse {
  int64_t deleted = 0;
  std::vector<KeyValue> prev_kvs;  // Only when asked for.
};
using OpResponse = std::variant<PutResponse, DeleteRangeResponse, RangeResponse>;

struct TxnResponse {
  bool succeeded = false;             // The compares held (then_ops ran).
  int64_t revision = 0;               // The store's revision after the txn.
  std::vector<OpResponse> responses;  // One per op of the branch that ran.
};

struct RangeRequest {
  std::string key;
  std::string range_end;
  int64_t revision = 0;  // 0: the latest.
  int64_t limit = 0;     // 0: no limit.
};

enum class EventType { kPut, kDelete };

// A DELETE's kv carries the key and, as mod_revision, the revision of the
// delete; everything else is zero.
struct Event {
  EventType type = EventType::kPut;
  KeyValue kv;
  std::optional<KeyValue> prev_kv;  // Absent when the key did not exist (or
                                    // its previous version was compacted).
};

// The events of one write txn, in the order its ops made them.
struct WatchBatch {
  int64_t revision = 0;
  std::vector<Event> events;
};

struct WatchRequest {
  std::string key;
  std::string range_end;
  int64_t start_revision = 0;  // 0: changes after the current revision.
};

// Called with each batch that touches the watched range, in revision order,
// from a thread of the store's; never concurrently for one watch. After an
// error (the watch fell too far behind: RESOURCE_EXHAUSTED; its history was
// compacted away: OUT_OF_RANGE; the store failed) it is not called again.
// It may block, which delays only its own watch (up to the backlog limit).
using WatchCallback = std::function<void(const absl::StatusOr<WatchBatch>&)>;

// Owns a watch. Destroying it cancels the watch and waits for a running
// callback to return; it must not be destroyed from inside its own callback.
class WatchHandle {
 public:
  virtual ~WatchHandle() = default;
};

struct LeaseStatus {
  int64_t id = 0;
  int64_t granted_ttl_seconds = 0;
  absl::Duration remaining;       // Never negative.
  std::vector<std::string> keys;  // Attached keys, sorted.
};

// Time as seen by lease expiry. Tests inject a FakeClock (kv_conformance.h).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
  static Clock* Real();  // The wall clock; never deleted.
};

// The limits that make a request INVALID_ARGUMENT rather than a burden.
struct KvLimits {
  int64_t max_key_bytes = 4096;
  int64_t max_value_bytes = 1 << 20;  // etcd's default request limit is 1.5 MiB.
  int64_t max_txn_ops = 128;          // etcd's --max-txn-ops default.
};

class KvStore {
 public:
  virtual ~KvStore() = default;

  // Evaluates the compares against the latest state and runs one branch,
  // atomically. OK with succeeded false when a compare failed (not an
  // error). Errors: INVALID_ARGUMENT for a malformed request (empty key,
  // range_end < key, too many ops, a value over the limit, two writes of
  // one key); NOT_FOUND when a put names a lease that does not exist; then
  // nothing is applied.
  virtual absl::StatusOr<TxnResponse> Txn(const TxnRequest& txn) = 0;

  // Reads a range at `revision` (0: latest). OUT_OF_RANGE "compacted" below
  // the compaction point, OUT_OF_RANGE "future revision" above the current.
  virtual absl::StatusOr<RangeResponse> Range(const RangeRequest& request) = 0;

  // Starts delivering every change of the range with revision >=
  // start_revision, history first. OUT_OF_RANGE "compacted" when
  // start_revision is below the compaction point.
  virtual absl::StatusOr<std::unique_ptr<WatchHandle>> Watch(const WatchRequest& request,
                                                             WatchCallback callback) = 0;

  // Drops history only revisions below `revision` can see. INVALID_ARGUMENT
  // when revision <= 0; OUT_OF_RANGE when it is above the current revision
  // or not above the compaction point already reached.
  virtual absl::Status Compact(int64_t revision) = 0;
  // The compaction point (1 when never compacted: everything readable).
  virtual int64_t CompactedRevision() = 0;

  // Grants a lease of `ttl_seconds` (> 0) and returns its id (> 0).
  virtual absl::StatusOr<int64_t> LeaseGrant(int64_t ttl_seconds) = 0;
  // Renews the lease for its whole TTL; returns the TTL. NOT_FOUND when it
  // does not exist or has expired.
  virtual absl::StatusOr<int64_t> LeaseKeepAlive(int64_t id) = 0;
  // Revokes the lease, deleting its keys at one new revision (no revision
  // when it had none); returns the store revision afterwards. NOT_FOUND when
  // it does not exist.
  virtual absl::StatusOr<int64_t> LeaseRevoke(int64_t id) = 0;
  virtual absl::StatusOr<LeaseStatus> LeaseTimeToLive(int64_t id) = 0;

  // Conveniences over Txn and Range.
  absl::StatusOr<TxnResponse> Put(std::string key, std::string value, int64_t lease = 0);
  absl::StatusOr<TxnResponse> DeleteRange(std::string key, std::string range_end = "");
  // The key at the latest revision, or nullopt when missing.
  absl::StatusOr<std::optional<KeyValue>> Get(std::string key);
};

// The smallest key greater than every key starting with `prefix` (etcd's
// clientv3.GetPrefixRangeEnd); "\0" (every key) for an empty or all-0xff
// prefix.
std::string PrefixRangeEnd(const std::string& prefix);

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_KV_STORE_H_
