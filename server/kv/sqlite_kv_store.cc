#include "server/kv/sqlite_kv_store.h"

#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/kv/kv_rules.h"
#include "server/kv/kv_sqlite_file.h"
#include "server/kv/kv_state.h"
#include "server/kv/watch_hub.h"

namespace iommu {
namespace kv {
namespace {

// etcd's MaxLeaseTTL.
constexpr int64_t kMaxLeaseTtlSeconds = 9000000000;

bool IsReadOnly(const TxnRequest& txn) {
  for (const auto* ops : {&txn.then_ops, &txn.else_ops}) {
    for (const Op& op : *ops) {
      if (!std::holds_alternative<RangeOp>(op)) return false;
    }
  }
  return true;
}

absl::Status CheckLeaseId(int64_t id) {
  if (id > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("lease id: ", id, " is not positive"));
}

// One request waiting in the commit queue; lives on its caller's stack.
struct Pending {
  enum class Kind { kTxn, kGrant, kRevoke, kExpire };
  Kind kind = Kind::kTxn;
  const TxnRequest* txn = nullptr;
  int64_t arg = 0;  // TTL for a grant, lease id for a revoke.
  absl::StatusOr<TxnResponse> txn_result;
  absl::StatusOr<int64_t> int_result = 0;
  bool done = false;  // Guarded by the store's queue_mu_.
};

class SqliteKvStore final : public KvStore {
 public:
  SqliteKvStore(SqliteKvOptions options, std::unique_ptr<KvSqliteFile> file)
      : options_(std::move(options)),
        clock_(options_.clock != nullptr ? options_.clock : Clock::Real()),
        file_(std::move(file)) {}

  ~SqliteKvStore() override {
    {
      absl::MutexLock l(&sweep_mu_);
      stop_sweeper_ = true;
    }
    if (sweeper_.joinable()) sweeper_.join();
    hub_.reset();  // Ends every watch before the file goes.
  }

  // Loads the file into memory and starts the watch hub and the sweeper.
  absl::Status Start() {
    int64_t published = 0;
    {
      absl::WriterMutexLock l(&state_mu_);
      RETURN_IF_ERROR(file_->Load(&state_, &compacted_, clock_->Now()));
      published = state_.revision();
    }
    WatchHubOptions hub;
    hub.read_history = [file = file_.get()](const std::string& key, const std::string& end,
                                            int64_t from, int64_t to, int64_t max) {
      return file->ReadEvents(key, end, from, to, max);
    };
    hub.compacted = [this] { return CompactedRevision(); };
    hub.max_pending_events = options_.watch_max_pending_events;
    hub_ = std::make_unique<WatchHub>(std::move(hub), published);
    sweeper_ = std::thread([this] { SweepLoop(); });
    return absl::OkStatus();
  }

  absl::StatusOr<TxnResponse> Txn(const TxnRequest& txn) override {
    RETURN_IF_ERROR(ValidateTxn(txn, options_.limits));
    if (IsReadOnly(txn)) {
      // Served from memory: a read never waits for a commit it did not see.
      absl::ReaderMutexLock l(&state_mu_);
      BatchPlanner planner(state_, options_.limits);
      return planner.PlanTxn(txn);
    }
    Pending p;
    p.kind = Pending::Kind::kTxn;
    p.txn = &txn;
    Submit(&p);
    return std::move(p.txn_result);
  }

  absl::StatusOr<RangeResponse> Range(const RangeRequest& request) override {
    RETURN_IF_ERROR(ValidateRangeRequest(request, options_.limits));
    {
      absl::ReaderMutexLock l(&state_mu_);
      const int64_t current = state_.revision();
      if (request.revision > current) {
        return absl::OutOfRangeError(absl::StrCat("range.revision: ", request.revision,
                                                  " is a future revision (current ", current, ")"));
      }
      if (request.revision == 0 || request.revision == current) return RangeLocked(request);
      if (request.revision < compacted_) return CompactedError(request.revision, compacted_);
    }
    ASSIGN_OR_RETURN(RangeResponse r, file_->ReadRange(request));
    // A compaction that started during the read may have removed rows it
    // needed: the compaction point moves before any row is deleted.
    const int64_t compacted = CompactedRevision();
    if (request.revision < compacted) return CompactedError(request.revision, compacted);
    return r;
  }

  absl::StatusOr<std::unique_ptr<WatchHandle>> Watch(const WatchRequest& request,
                                                     WatchCallback callback) override {
    RETURN_IF_ERROR(ValidateWatchRequest(request, options_.limits));
    const int64_t compacted = CompactedRevision();
    if (request.start_revision != 0 && request.start_revision < compacted) {
      return CompactedError(request.start_revision, compacted);
    }
    return hub_->Add(request, std::move(callback));
  }

  absl::Status Compact(int64_t revision) override {
    if (revision <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("compact.revision: ", revision, " is not positive"));
    }
    absl::MutexLock c(&commit_mu_);
    if (!broken_.ok()) return broken_;
    {
      absl::WriterMutexLock l(&state_mu_);
      if (revision > state_.revision()) {
        return absl::OutOfRangeError(absl::StrCat("compact.revision: ", revision,
                                                  " is a future revision (current ",
                                                  state_.revision(), ")"));
      }
      if (revision <= compacted_) {
        return absl::OutOfRangeError(absl::StrCat("compact.revision: ", revision,
                                                  " has been compacted (compaction point ",
                                                  compacted_, ")"));
      }
      // Raised before rows go, so that a history read racing with the
      // deletion notices (Range checks again after reading). Should the file
      // write fail, memory is merely stricter than the file until reopen.
      compacted_ = revision;
    }
    return file_->Compact(revision);
  }

  int64_t CompactedRevision() override {
    absl::ReaderMutexLock l(&state_mu_);
    return compacted_;
  }

  absl::StatusOr<int64_t> LeaseGrant(int64_t ttl_seconds) override {
    if (ttl_seconds <= 0 || ttl_seconds > kMaxLeaseTtlSeconds) {
      return absl::InvalidArgumentError(absl::StrCat("lease.ttl_seconds: ", ttl_seconds,
                                                     " is outside [1, ", kMaxLeaseTtlSeconds, "]"));
    }
    Pending p;
    p.kind = Pending::Kind::kGrant;
    p.arg = ttl_seconds;
    Submit(&p);
    return p.int_result;
  }

  absl::StatusOr<int64_t> LeaseKeepAlive(int64_t id) override {
    RETURN_IF_ERROR(CheckLeaseId(id));
    const absl::Time now = clock_->Now();
    absl::WriterMutexLock l(&state_mu_);
    if (!state_.Renew(id, now)) {
      return absl::NotFoundError(absl::StrCat("lease ", id, " not found (expired or revoked)"));
    }
    return state_.FindLease(id)->ttl_seconds;
  }

  absl::StatusOr<int64_t> LeaseRevoke(int64_t id) override {
    RETURN_IF_ERROR(CheckLeaseId(id));
    Pending p;
    p.kind = Pending::Kind::kRevoke;
    p.arg = id;
    Submit(&p);
    return p.int_result;
  }

  absl::StatusOr<LeaseStatus> LeaseTimeToLive(int64_t id) override {
    RETURN_IF_ERROR(CheckLeaseId(id));
    const absl::Time now = clock_->Now();
    absl::ReaderMutexLock l(&state_mu_);
    const KvState::Lease* lease = state_.FindLease(id);
    if (lease == nullptr || lease->expiry <= now) {
      return absl::NotFoundError(absl::StrCat("lease ", id, " not found (expired or revoked)"));
    }
    LeaseStatus s;
    s.id = id;
    s.granted_ttl_seconds = lease->ttl_seconds;
    s.remaining = lease->expiry - now;
    s.keys.assign(lease->keys.begin(), lease->keys.end());
    return s;
  }

 private:
  RangeResponse RangeLocked(const RangeRequest& request) ABSL_SHARED_LOCKS_REQUIRED(state_mu_) {
    RangeResponse r;
    r.revision = state_.revision();
    state_.ForEach(request.key, request.range_end, [&](const KeyValue& kv) {
      ++r.count;
      if (request.limit == 0 || static_cast<int64_t>(r.kvs.size()) < request.limit) {
        r.kvs.push_back(kv);
      }
      return true;
    });
    r.more = r.count > static_cast<int64_t>(r.kvs.size());
    return r;
  }

  // Queues `p` and returns when its batch is committed (or failed). The
  // caller at the head of the queue leads: it commits everything queued
  // behind it in one batch while the next callers queue for the next one.
  void Submit(Pending* p) ABSL_LOCKS_EXCLUDED(queue_mu_) {
    queue_mu_.Lock();
    queue_.push_back(p);
    while (!p->done && queue_.front() != p) queue_cv_.Wait(&queue_mu_);
    if (p->done) {
      queue_mu_.Unlock();
      return;
    }
    const size_t n = std::min<size_t>(queue_.size(), options_.max_batch);
    std::vector<Pending*> batch(queue_.begin(), queue_.begin() + n);
    queue_mu_.Unlock();

    CommitBatch(batch);

    queue_mu_.Lock();
    for (size_t i = 0; i < n; ++i) {
      queue_.front()->done = true;
      queue_.pop_front();
    }
    queue_cv_.SignalAll();
    queue_mu_.Unlock();
  }

  // Plans `batch` in order, makes it durable, then applies and publishes it.
  void CommitBatch(const std::vector<Pending*>& batch) ABSL_LOCKS_EXCLUDED(commit_mu_) {
    absl::MutexLock c(&commit_mu_);
    const absl::Time now = clock_->Now();
    ChangeSet changes;
    {
      // Only this thread changes state_ (it holds commit_mu_); the reader
      // lock lets Range and read-only txns go on while it plans.
      absl::ReaderMutexLock l(&state_mu_);
      BatchPlanner planner(state_, options_.limits);
      for (Pending* p : batch) PlanOneLocked(&planner, p, now);
      changes = planner.TakeChanges();
    }
    if (changes.empty()) return;
    const absl::Status written = WriteLocked(changes);
    if (!written.ok()) {
      for (Pending* p : batch) {
        if (p->txn_result.ok()) p->txn_result = written;
        if (p->int_result.ok()) p->int_result = written;
      }
      return;
    }
    {
      absl::WriterMutexLock l(&state_mu_);
      state_.Apply(changes, now);
    }
    hub_->Publish(changes.txns, changes.revision);
  }

  // Writes a planned batch to the file. On error, finds out whether the
  // file still holds what memory does; if not (or if that cannot be told),
  // the store is broken: memory and file disagree and only a reopen, which
  // rebuilds memory from the file, can reconcile them.
  absl::Status WriteLocked(const ChangeSet& changes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    if (!broken_.ok()) return broken_;
    absl::Status s = Fault(false);
    if (s.ok()) s = file_->Write(changes);
    if (s.ok()) s = Fault(true);
    if (s.ok()) return s;
    const absl::StatusOr<int64_t> durable = file_->DurableRevision();
    const int64_t memory = CurrentRevision();
    if (!durable.ok() || *durable != memory) {
      broken_ = absl::UnavailableError(absl::StrCat(
          "kv store: a commit failed (", s.message(), ") and the file's revision (",
          durable.ok() ? absl::StrCat(*durable) : std::string(durable.status().message()),
          ") is not memory's (", memory,
          "); refusing writes until the store is reopened from the file"));
      LogEvent(LogLevel::kError, "kv_store_broken", {{"error", broken_.message()}});
      return broken_;
    }
    LogEvent(LogLevel::kWarning, "kv_commit_failed",
             {{"error", s.message()}, {"revision", memory}});
    return s;
  }

  absl::Status Fault(bool written) {
    return options_.write_fault_for_testing ? options_.write_fault_for_testing(written)
                                            : absl::OkStatus();
  }

  int64_t CurrentRevision() {
    absl::ReaderMutexLock l(&state_mu_);
    return state_.revision();
  }

  void PlanOneLocked(BatchPlanner* planner, Pending* p, absl::Time now)
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_) {
    switch (p->kind) {
      case Pending::Kind::kTxn:
        p->txn_result = planner->PlanTxn(*p->txn);
        break;
      case Pending::Kind::kGrant:
        p->int_result = planner->PlanGrant(p->arg);
        break;
      case Pending::Kind::kRevoke:
        p->int_result = planner->PlanRevoke(p->arg);
        break;
      case Pending::Kind::kExpire: {
        // Only if still expired: a keep-alive may have come in meanwhile.
        const KvState::Lease* lease = state_.FindLease(p->arg);
        if (lease != nullptr && lease->expiry <= now && planner->LeaseExists(p->arg)) {
          p->int_result = planner->PlanRevoke(p->arg);
        } else {
          p->int_result = absl::NotFoundError("lease renewed or already gone");
        }
        break;
      }
    }
  }

  void SweepLoop() {
    for (;;) {
      {
        absl::MutexLock l(&sweep_mu_);
        sweep_mu_.AwaitWithTimeout(absl::Condition(&stop_sweeper_), options_.lease_sweep_period);
        if (stop_sweeper_) return;
      }
      std::vector<int64_t> expired;
      {
        const absl::Time now = clock_->Now();
        absl::ReaderMutexLock l(&state_mu_);
        expired = state_.Expired(now);
      }
      for (int64_t id : expired) {
        Pending p;
        p.kind = Pending::Kind::kExpire;
        p.arg = id;
        Submit(&p);  // A failure is retried at the next sweep.
      }
    }
  }

  // Constant after construction.
  const SqliteKvOptions options_;
  Clock* const clock_;
  const std::unique_ptr<KvSqliteFile> file_;

  // Lock order: commit_mu_, then state_mu_, then the hub's and the file's.
  absl::Mutex queue_mu_;
  absl::CondVar queue_cv_;
  std::deque<Pending*> queue_ ABSL_GUARDED_BY(queue_mu_);

  absl::Mutex commit_mu_;  // Held by the batch leader and by Compact.
  // Set when a failed commit left file and memory disagreeing (WriteLocked).
  absl::Status broken_ ABSL_GUARDED_BY(commit_mu_);

  absl::Mutex state_mu_;
  KvState state_ ABSL_GUARDED_BY(state_mu_);
  int64_t compacted_ ABSL_GUARDED_BY(state_mu_) = 1;

  std::unique_ptr<WatchHub> hub_;  // Set by Start, reset by the destructor.

  absl::Mutex sweep_mu_;
  bool stop_sweeper_ ABSL_GUARDED_BY(sweep_mu_) = false;
  std::thread sweeper_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvStore>> OpenSqliteKvStore(const std::string& path,
                                                           SqliteKvOptions options) {
  ASSIGN_OR_RETURN(std::unique_ptr<KvSqliteFile> file,
                   KvSqliteFile::Open(path, options.checkpoint));
  auto store = std::make_unique<SqliteKvStore>(std::move(options), std::move(file));
  RETURN_IF_ERROR(store->Start());
  return std::unique_ptr<KvStore>(std::move(store));
}

}  // namespace kv
}  // namespace iommu
