// The fleet state model kept in step with a versioned KvStore: the broker's
// records live at "<prefix>/<kind>/<id>" (model::RecordKey under a prefix),
// a change is committed as one txn, and the model follows the store through
// its watch. A committed change reaches the model the same way in the
// process that made it and in one that only watches (a follower replica),
// so there is no second, hand-written path that applies a mutation.
//
// Thread-safe: reads run under a reader lock; the watch callback applies
// each committed txn under the writer lock, in revision order.
#ifndef SERVER_MODEL_MODEL_FOLLOWER_H_
#define SERVER_MODEL_MODEL_FOLLOWER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/kv/kv_store.h"
#include "server/model/fleet_state.h"
#include "server/store.h"

namespace iommu {
namespace model {

// The txn that commits `change`'s puts and deletes under `prefix` when every
// compare of `guards` holds. The change's request record (idempotency) is not
// part of the model and is left to the caller.
kv::TxnRequest ChangeToTxn(const WriteBatch& change, const std::string& prefix,
                           std::vector<kv::Compare> guards = {});

// The records change one committed txn made under `prefix` (keys outside it
// are someone else's and ignored). DATA_LOSS for a key under the prefix that
// is not "<prefix>/<kind>/<id>".
absl::StatusOr<WriteBatch> ChangeFromEvents(const kv::WatchBatch& batch, const std::string& prefix);

class ModelFollower {
 public:
  // Reads every record under `prefix` at the store's latest revision into a
  // model, then follows every later txn. DATA_LOSS when the records do not
  // form a valid model.
  static absl::StatusOr<std::unique_ptr<ModelFollower>> Start(kv::KvStore* store,
                                                              std::string prefix);
  ~ModelFollower();
  ModelFollower(const ModelFollower&) = delete;
  ModelFollower& operator=(const ModelFollower&) = delete;

  // The store revision the model reflects.
  int64_t revision() const ABSL_LOCKS_EXCLUDED(mu_);
  // OK while following; the error that stopped it otherwise (a change the
  // model refused, a compacted watch): the model is then stale and a new
  // follower must relist.
  absl::Status health() const ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until the model reflects `revision` (e.g. the one a commit
  // returned, for read-your-writes). DEADLINE_EXCEEDED after `timeout`;
  // the follower's error if it stopped.
  absl::Status WaitFor(int64_t revision, absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs `read` on the model under the reader lock.
  void Read(const std::function<void(const FleetState&, int64_t revision)>& read) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  ModelFollower(std::string prefix) : prefix_(std::move(prefix)) {}
  void OnBatch(const absl::StatusOr<kv::WatchBatch>& batch) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string prefix_;
  mutable absl::Mutex mu_;
  FleetState state_ ABSL_GUARDED_BY(mu_);
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status health_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<kv::WatchHandle> watch_;  // Last: cancelled first on destruction.
};

}  // namespace model
}  // namespace iommu

#endif  // SERVER_MODEL_MODEL_FOLLOWER_H_
