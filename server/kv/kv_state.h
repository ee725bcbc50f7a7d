// The latest state of a key-value store in memory, and the planner that
// turns a batch of requests into one change against it. Pure: no I/O, no
// locks, no clock reads (times are passed in).
//
// The write path (LevelDB's, etcd's apply loop): a BatchPlanner reads a
// committed KvState and plans each request of a batch in order, every one
// seeing the effects of those before it (an overlay over the state), into a
// ChangeSet; the caller makes the ChangeSet durable and only then applies it
// with KvState::Apply. A batch that fails to commit is dropped: the state
// never held it.
//
// Invariants of KvState: every live key's lease (when non-zero) is a live
// lease and lists the key; revision() >= every mod_revision.
//
// Thread-compatible: callers lock (const methods may run concurrently).
#ifndef SERVER_KV_KV_STATE_H_
#define SERVER_KV_KV_STATE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

struct LeaseRecord {
  int64_t id = 0;
  int64_t ttl_seconds = 0;
};

// What one batch changes, in the order it must be applied and logged.
struct ChangeSet {
  std::vector<WatchBatch> txns;      // Writes, one entry per new revision.
  std::vector<LeaseRecord> granted;  // Leases created.
  std::vector<int64_t> revoked;      // Leases removed (after their keys).
  int64_t revision = 0;              // The store revision after the batch.
  int64_t next_lease_id = 1;         // The id the next grant will take.
  bool empty() const { return txns.empty() && granted.empty() && revoked.empty(); }
};

class KvState final {
 public:
  struct Lease {
    int64_t ttl_seconds = 0;
    absl::Time expiry;
    absl::btree_set<std::string> keys;
  };

  KvState() = default;
  KvState(const KvState&) = delete;
  KvState& operator=(const KvState&) = delete;

  int64_t revision() const { return revision_; }
  int64_t next_lease_id() const { return next_lease_id_; }
  const KeyValue* Find(absl::string_view key) const;
  const Lease* FindLease(int64_t id) const;
  const absl::flat_hash_map<int64_t, Lease>& leases() const { return leases_; }

  // Calls `fn` for each live key in the range, in key order, until it
  // returns false.
  void ForEach(absl::string_view key, absl::string_view range_end,
               const std::function<bool(const KeyValue&)>& fn) const;

  // Applies a committed batch; `now` starts the new leases' TTLs.
  void Apply(const ChangeSet& changes, absl::Time now);

  // Loading at open: the latest row of each live key, the leases, and the
  // store's counters. Leases restart their full TTL (etcd does the same).
  void LoadKey(KeyValue kv);
  void LoadLease(const LeaseRecord& lease, absl::Time now);
  void SetCounters(int64_t revision, int64_t next_lease_id);

  // Renews a live lease until now + TTL; false when it does not exist.
  bool Renew(int64_t id, absl::Time now);
  // Leases whose expiry is at or before `now`.
  std::vector<int64_t> Expired(absl::Time now) const;

 private:
  void Attach(const KeyValue& kv);
  void Detach(const KeyValue& kv);

  absl::btree_map<std::string, KeyValue> kvs_;
  absl::flat_hash_map<int64_t, Lease> leases_;
  int64_t revision_ = 0;
  int64_t next_lease_id_ = 1;
};

// Plans a batch of requests, in order, against a committed KvState.
class BatchPlanner final {
 public:
  // `state` must not change while the planner lives.
  BatchPlanner(const KvState& state, const KvLimits& limits);
  BatchPlanner(const BatchPlanner&) = delete;
  BatchPlanner& operator=(const BatchPlanner&) = delete;

  // Plans a txn against the state plus everything planned so far. The txn
  // must have passed ValidateTxn. NOT_FOUND when the running branch puts
  // with a lease that does not exist; then nothing of it is planned.
  absl::StatusOr<TxnResponse> PlanTxn(const TxnRequest& txn);
  // Plans a new lease; returns its id.
  int64_t PlanGrant(int64_t ttl_seconds);
  // Plans a revoke: its keys deleted at one new revision. Returns the
  // revision after it. NOT_FOUND when the lease does not exist.
  absl::StatusOr<int64_t> PlanRevoke(int64_t id);

  // Whether the lease exists as planned so far.
  bool LeaseExists(int64_t id) const;
  const ChangeSet& changes() const { return changes_; }
  // Moves the planned change out; the planner must not be used afterwards.
  ChangeSet TakeChanges() { return std::move(changes_); }

 private:
  const KeyValue* Get(absl::string_view key) const;
  void ForEach(absl::string_view key, absl::string_view range_end,
               const std::function<bool(const KeyValue&)>& fn) const;
  RangeResponse DoRange(const RangeOp& op) const;
  PutResponse DoPut(const PutOp& op, WatchBatch* batch);
  DeleteRangeResponse DoDelete(const DeleteRangeOp& op, WatchBatch* batch);
  // The revision a write of the current request gets.
  int64_t WriteRevision() const { return changes_.revision + 1; }
  void Finish(WatchBatch batch);

  const KvState& state_;
  const KvLimits limits_;
  // Keys planned so far: a value, or nullopt for deleted.
  absl::btree_map<std::string, std::optional<KeyValue>> overlay_;
  absl::flat_hash_map<int64_t, bool> lease_overlay_;  // id -> exists.
  ChangeSet changes_;
};

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_KV_STATE_H_
