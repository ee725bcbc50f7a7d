// Leadership of one writer over a KvStore shared by several processes (broker
// replicas on one etcd): the leader holds a key created under a lease of its
// own and kept alive; the key's create_revision is the fence every write of
// the leader compares (kv_backed_store.h), so a deposed leader (paused,
// partitioned, slow) can never land a write, even before it notices.
//
// Campaign blocks until the key is free and this process created it; a
// leader that stops (its lease revoked on destruction) hands over at once,
// one that dies hands over when its lease's TTL runs out. A waiting replica
// watches the key, so it takes over as soon as the key is deleted; it still
// retries every `poll` in case the watch misses it (a store that expires
// leases lazily, a watch that fails).
#ifndef SERVER_KV_LEADER_LEASE_H_
#define SERVER_KV_LEADER_LEASE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

struct LeaderLeaseOptions {
  std::string key = "/leader";
  std::string holder;            // Who leads, as the key's value (a replica name).
  int64_t ttl_seconds = 2;       // How long a dead leader blocks the others.
  // How often a waiting replica retries, and tells `Waiting`, without a
  // change of the key.
  absl::Duration poll = absl::Seconds(1);
};

class LeaderLease {
 public:
  // Called while waiting, once per poll, with the current leader's name ("":
  // the store is unreachable, e.g. etcd without quorum); returning false
  // gives up (Campaign returns CANCELLED, or the store's error). Without one,
  // Campaign does not wait: FAILED_PRECONDITION naming the leader.
  using Waiting = std::function<bool(absl::string_view leader)>;
  // Called once, from the keep-alive thread, when leadership is lost (the
  // lease expired or could not be renewed within its TTL).
  using OnLost = std::function<void(const absl::Status& why)>;

  // `kv` must outlive the lease. An unreachable store is waited out like
  // another leader; other errors (bad options, a refused request) end the
  // campaign.
  static absl::StatusOr<std::unique_ptr<LeaderLease>> Campaign(KvStore* kv,
                                                               LeaderLeaseOptions options,
                                                               const Waiting& waiting,
                                                               OnLost on_lost);
  // Stops renewing and revokes the lease: the key vanishes and a waiting
  // replica takes over without waiting for the TTL.
  ~LeaderLease();
  LeaderLease(const LeaderLease&) = delete;
  LeaderLease& operator=(const LeaderLease&) = delete;

  const std::string& key() const { return options_.key; }
  // The key's create_revision: the fence of this leadership.
  int64_t fence_revision() const { return fence_revision_; }
  int64_t lease_id() const { return lease_id_; }
  // OK while leading; why it was lost otherwise.
  absl::Status lost() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  LeaderLease(KvStore* kv, LeaderLeaseOptions options, int64_t lease_id, int64_t fence_revision,
              OnLost on_lost);
  void KeepAlive();

  KvStore* const kv_;
  const LeaderLeaseOptions options_;
  const int64_t lease_id_;
  const int64_t fence_revision_;
  const OnLost on_lost_;
  mutable absl::Mutex mu_;
  absl::Status lost_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread keeper_;  // Last: started once everything above is set.
};

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_LEADER_LEASE_H_
