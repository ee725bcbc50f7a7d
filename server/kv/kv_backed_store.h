// The broker's Store (server/store.h) on a versioned, transactional KvStore:
// the embedded SQLite one (sqlite_kv_store.h) or etcd (etcd_kv_store.h).
//
// Layout, under the KvStore's own key space:
//   /state/<kind>/<id>     one record (model::RecordKey under "/state"), so a
//                          ModelFollower on prefix "/state" sees exactly the
//                          broker's records
//   /requests/<request id> a remembered answer: "<time_ms>:<fingerprint
//                          bytes>:<fingerprint><response>"
//
// A commit group is one txn, with its batches folded in order (a later batch
// may overwrite or delete what an earlier one wrote; a txn may write a key
// once). A group with more ops than the store's max_txn_ops is split into
// several txns at batch boundaries, so no single mutation is ever
// half-visible; if a later one of them fails the earlier ones stay
// committed, and the broker's reload after a failed commit picks them up
// (their callers were told the commit failed, and a retry finds the
// remembered answer). A single batch with more ops than max_txn_ops is
// refused with FAILED_PRECONDITION naming the limit.
//
// Fencing: with a fence (a leader key's create_revision, leader_lease.h)
// every write also compares it, so a broker that is no longer the leader
// cannot land anything; such a commit is UNAVAILABLE "fenced" (a retry
// reaches the replica that leads now).
//
// Remembered answers expire by lease when `answer_ttl` is set: each is
// written under a lease granted for at least answer_ttl + answer_lease_span
// and used for answers written within answer_lease_span of its grant, so
// every answer outlives its promised answer_ttl by at most the span, and the
// store (etcd, or the SQLite KvStore's sweeper) deletes it by itself.
// ExpireRequests then reads nothing once it has removed the answers written
// without a lease (by an older broker, or a tool without the option).
//
// History: after each commit, history older than `keep_revisions` behind
// the latest revision is compacted (0: never; etcd clusters usually compact
// themselves, --auto-compaction-*).
#ifndef SERVER_KV_KV_BACKED_STORE_H_
#define SERVER_KV_KV_BACKED_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/kv/kv_store.h"
#include "server/store.h"

namespace iommu {
namespace kv {

inline constexpr char kStatePrefix[] = "/state";
inline constexpr char kRequestsPrefix[] = "/requests/";

struct KvBackedStoreOptions {
  int64_t keep_revisions = 10000;  // 0: never compact.
  int64_t max_txn_ops = 128;       // The store's KvLimits::max_txn_ops.
  int64_t page_size = 1000;        // Keys per Range while loading.
  // Writes land only while `fence_key` has this create_revision ("": none).
  std::string fence_key;
  int64_t fence_revision = 0;
  // Called each time the fence refuses a commit (this broker no longer
  // leads); metrics only.
  std::function<void()> on_fenced;
  // How long a remembered answer must be kept (zero: answers carry no lease
  // and only ExpireRequests removes them), and how long one lease takes new
  // answers. See above.
  absl::Duration answer_ttl = absl::ZeroDuration();
  absl::Duration answer_lease_span = absl::Hours(1);
  // The time that decides when a lease stops taking answers (tests fake it).
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class KvBackedStore final : public Store {
 public:
  // `kv` must outlive the store.
  KvBackedStore(KvStore* kv, KvBackedStoreOptions options) : kv_(kv), options_(options) {}
  // The lease answers are written under now (0: none yet, or answer_ttl is
  // zero); for tests and metrics.
  int64_t answer_lease() const ABSL_LOCKS_EXCLUDED(lease_mu_);

  absl::StatusOr<std::vector<StoreRecord>> LoadAll() override;
  absl::Status Commit(const WriteBatch& batch) override;
  absl::Status CommitGroup(absl::Span<const WriteBatch> batches) override;
  absl::StatusOr<std::optional<RequestRecord>> FindRequest(absl::string_view request_id) override;
  absl::StatusOr<int64_t> ExpireRequests(int64_t before_ms) override;
  absl::StatusOr<std::vector<RequestSummary>> ListRequests() override;

 private:
  // Every key-value with `prefix` at one revision, page by page.
  absl::StatusOr<std::vector<KeyValue>> RangePrefix(const std::string& prefix);
  absl::Status CommitOps(absl::Span<const WriteBatch> batches);
  // The txn of `batches`, with answers under `answer_lease` (0: none).
  TxnRequest BuildTxn(absl::Span<const WriteBatch> batches, int64_t answer_lease) const;
  // The lease for answers written now: the current one while it takes
  // answers, else a new grant. `stale` (a lease the store no longer knows)
  // forces a new grant.
  absl::StatusOr<int64_t> AnswerLease(int64_t stale = 0) ABSL_LOCKS_EXCLUDED(lease_mu_);
  void MaybeCompact(int64_t revision);
  // The fence compare, if any, added to `txn`.
  void Fence(TxnRequest* txn) const;
  absl::Status Fenced() const;
  // Ops a txn may carry besides the fence.
  int64_t OpBudget() const;

  KvStore* const kv_;
  const KvBackedStoreOptions options_;
  std::atomic<int64_t> compacted_{0};
  mutable absl::Mutex lease_mu_;
  int64_t lease_id_ ABSL_GUARDED_BY(lease_mu_) = 0;
  absl::Time lease_granted_ ABSL_GUARDED_BY(lease_mu_);
  // Set once ExpireRequests found no answer without a lease left: later
  // sweeps read nothing (every answer since carries a lease).
  std::atomic<bool> unleased_swept_{false};
};

// The key of a record and of a remembered answer, and the answer's encoding.
std::string StateKey(absl::string_view kind, absl::string_view id);
std::string RequestKey(absl::string_view request_id);
std::string EncodeRequest(const RequestRecord& r);
// DATA_LOSS for bytes that are not an encoded answer.
absl::StatusOr<RequestRecord> DecodeRequest(absl::string_view request_id, absl::string_view bytes);

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_KV_BACKED_STORE_H_
