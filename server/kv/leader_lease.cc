#include "server/kv/leader_lease.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace iommu {
namespace kv {
namespace {

// The leader key's deletes, from one watch kept for the whole campaign (a
// standby may wait for days: one watch, not one per poll). A standby thereby
// takes over as soon as a dead leader's lease expires instead of at its next
// poll. The watch starts right after the revision the key was first read
// at, so a delete in between is in its history; a watch that cannot start or
// fails is waited out (the caller polls) and started again at the next wait.
class ReleaseWatch {
 public:
  ReleaseWatch(KvStore* kv, std::string key) : kv_(kv), key_(std::move(key)) {}
  ReleaseWatch(const ReleaseWatch&) = delete;
  ReleaseWatch& operator=(const ReleaseWatch&) = delete;
  // Destroying handle_ cancels the watch and waits for a running callback,
  // so the members it touches outlive every call (handle_ is declared last).

  // Returns once the key was deleted at a revision after `revision` (the one
  // it was last read at), or after `timeout`.
  void Wait(int64_t revision, absl::Duration timeout) {
    bool restart = handle_ == nullptr;
    {
      absl::MutexLock l(&mu_);
      restart = restart || failed_;
    }
    if (restart) Start(revision);
    absl::MutexLock l(&mu_);
    auto released = [this, revision] {
      mu_.AssertHeld();  // Await evaluates it under mu_.
      return deleted_at_ > revision;
    };
    mu_.AwaitWithTimeout(absl::Condition(&released), timeout);
  }

 private:
  void Start(int64_t revision) {
    handle_.reset();  // The failed one, if any: its callback is done.
    {
      absl::MutexLock l(&mu_);
      failed_ = false;
    }
    WatchRequest request;
    request.key = key_;
    request.start_revision = revision + 1;
    absl::StatusOr<std::unique_ptr<WatchHandle>> watch =
        kv_->Watch(request, [this](const absl::StatusOr<WatchBatch>& batch) {
          absl::MutexLock l(&mu_);
          if (!batch.ok()) {
            failed_ = true;
            return;
          }
          for (const Event& e : batch->events) {
            if (e.type == EventType::kDelete) deleted_at_ = std::max(deleted_at_, batch->revision);
          }
        });
    if (watch.ok()) {
      handle_ = *std::move(watch);
      return;
    }
    absl::MutexLock l(&mu_);
    failed_ = true;
  }

  KvStore* const kv_;
  const std::string key_;
  absl::Mutex mu_;
  int64_t deleted_at_ ABSL_GUARDED_BY(mu_) = 0;  // Revision of the last delete seen.
  bool failed_ ABSL_GUARDED_BY(mu_) = false;     // The watch ended with an error.
  std::unique_ptr<WatchHandle> handle_;          // Null: not started.
};

}  // namespace

absl::StatusOr<std::unique_ptr<LeaderLease>> LeaderLease::Campaign(KvStore* kv,
                                                                   LeaderLeaseOptions options,
                                                                   const Waiting& waiting,
                                                                   OnLost on_lost) {
  if (options.key.empty()) return absl::InvalidArgumentError("leader key: must not be empty");
  if (options.ttl_seconds < 2) {
    return absl::InvalidArgumentError("leader lease ttl: must be at least 2 s");
  }
  ASSIGN_OR_RETURN(int64_t lease, kv->LeaseGrant(options.ttl_seconds));
  ReleaseWatch release(kv, options.key);
  while (true) {
    // Create the key only if nobody holds it; otherwise read who does.
    TxnRequest txn;
    txn.compares.push_back(Compare::CreateRevision(options.key, CompareOp::kEqual, 0));
    txn.then_ops.push_back(PutOp{options.key, options.holder, lease});
    txn.else_ops.push_back(RangeOp{options.key});
    absl::StatusOr<TxnResponse> resp = kv->Txn(txn);
    if (!resp.ok()) {
      // The store unreachable (an etcd without quorum): wait for it like for
      // a leader, as long as the caller waits.
      const bool transient = absl::IsUnavailable(resp.status()) ||
                             absl::IsDeadlineExceeded(resp.status());
      if (!transient || !waiting || !waiting("")) {
        (void)kv->LeaseRevoke(lease);
        return resp.status();
      }
      absl::SleepFor(options.poll);
      if (!kv->LeaseKeepAlive(lease).ok()) {
        absl::StatusOr<int64_t> fresh = kv->LeaseGrant(options.ttl_seconds);
        if (fresh.ok()) lease = *fresh;
      }
      continue;
    }
    if (resp->succeeded) {
      return std::unique_ptr<LeaderLease>(
          new LeaderLease(kv, std::move(options), lease, resp->revision, std::move(on_lost)));
    }
    std::string leader = "?";
    if (const auto* range = std::get_if<RangeResponse>(&resp->responses[0]);
        range != nullptr && !range->kvs.empty()) {
      leader = range->kvs[0].value;
    }
    if (!waiting) {
      (void)kv->LeaseRevoke(lease);
      return absl::FailedPreconditionError(
          absl::StrCat("leader campaign: ", options.key, " is held by \"", leader, "\""));
    }
    if (!waiting(leader)) {
      (void)kv->LeaseRevoke(lease);
      return absl::CancelledError("leader campaign: given up while waiting");
    }
    release.Wait(resp->revision, options.poll);
    // The lease must outlive the wait: renew it, or take a new one if it
    // expired meanwhile (a long pause).
    if (!kv->LeaseKeepAlive(lease).ok()) {
      ASSIGN_OR_RETURN(lease, kv->LeaseGrant(options.ttl_seconds));
    }
  }
}

LeaderLease::LeaderLease(KvStore* kv, LeaderLeaseOptions options, int64_t lease_id,
                         int64_t fence_revision, OnLost on_lost)
    : kv_(kv),
      options_(std::move(options)),
      lease_id_(lease_id),
      fence_revision_(fence_revision),
      on_lost_(std::move(on_lost)),
      keeper_([this] { KeepAlive(); }) {}

LeaderLease::~LeaderLease() {
  stop_.Notify();
  keeper_.join();
  (void)kv_->LeaseRevoke(lease_id_);
}

absl::Status LeaderLease::lost() const {
  absl::MutexLock l(&mu_);
  return lost_;
}

void LeaderLease::KeepAlive() {
  const absl::Duration ttl = absl::Seconds(options_.ttl_seconds);
  absl::Time renewed = absl::Now();
  while (!stop_.WaitForNotificationWithTimeout(ttl / 3)) {
    absl::StatusOr<int64_t> kept = kv_->LeaseKeepAlive(lease_id_);
    if (kept.ok()) {
      renewed = absl::Now();
      continue;
    }
    // NOT_FOUND: the lease is gone, and the key with it. Anything else (the
    // store unreachable) is lost only once the TTL has surely run out.
    if (kept.status().code() != absl::StatusCode::kNotFound && absl::Now() - renewed < ttl) {
      continue;
    }
    absl::Status why = absl::UnavailableError(absl::StrCat(
        "leadership lost: the lease of ", options_.key, " could not be renewed (",
        kept.status().message(), ")"));
    {
      absl::MutexLock l(&mu_);
      lost_ = why;
    }
    if (on_lost_) on_lost_(why);
    return;
  }
}

}  // namespace kv
}  // namespace iommu
