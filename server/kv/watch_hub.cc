#include "server/kv/watch_hub.h"

#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/kv/kv_rules.h"

namespace iommu {
namespace kv {

class WatchHub::Watcher final : public std::enable_shared_from_this<Watcher> {
 public:
  Watcher(const WatchHubOptions& options, const WatchRequest& request, WatchCallback callback,
          int64_t published)
      : options_(options),
        key_(request.key),
        range_end_(request.range_end),
        callback_(std::move(callback)),
        // start 0: only what commits after now. Otherwise history from
        // start up to what is already published, live after.
        replay_from_(request.start_revision == 0 ? published + 1 : request.start_revision),
        replay_to_(published) {}

  ~Watcher() {
    if (thread_.joinable()) thread_.detach();  // Only when Stop never ran (Start failed).
  }

  void Start() {
    thread_ = std::thread([self = shared_from_this()] { self->Run(); });
  }

  // Queues the part of `txn` this watch covers. Called in revision order.
  void Offer(const WatchBatch& txn) {
    if (txn.revision < replay_from_) return;  // A watch of a future start.
    WatchBatch mine{txn.revision, {}};
    for (const Event& e : txn.events) {
      if (InRange(e.kv.key, key_, range_end_)) mine.events.push_back(e);
    }
    if (mine.events.empty()) return;
    absl::MutexLock l(&mu_);
    if (cancelled_ || !error_.ok()) return;
    pending_events_ += mine.events.size();
    if (pending_events_ > options_.max_pending_events) {
      // Dropping the queue keeps memory bounded; the error tells the client
      // where to resume from.
      error_ = absl::ResourceExhaustedError(
          absl::StrCat("watch fell behind by more than ", options_.max_pending_events,
                       " events (watch.max_pending_events); resume from revision ",
                       queue_.empty() ? txn.revision : queue_.front().revision));
      queue_.clear();
      return;
    }
    queue_.push_back(std::move(mine));
  }

  // Cancels and waits for the thread, once. From the watch's own callback
  // the thread cannot be joined: it is detached and ends after the callback.
  void Stop() {
    {
      absl::MutexLock l(&mu_);
      cancelled_ = true;
    }
    std::call_once(stop_once_, [this] {
      if (!thread_.joinable()) return;
      if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();
      } else {
        thread_.join();
      }
    });
  }

 private:
  bool Cancelled() {
    absl::MutexLock l(&mu_);
    return cancelled_;
  }

  void Run() {
    if (!Replay()) return;
    Live();
  }

  // Delivers history [replay_from_, replay_to_] in chunks. False when the
  // watch ended (cancelled or failed).
  bool Replay() {
    int64_t next = replay_from_;
    while (next <= replay_to_) {
      if (Cancelled()) return false;
      auto batches =
          options_.read_history(key_, range_end_, next, replay_to_, options_.replay_chunk_events);
      // Checked after the read: a compaction that ran meanwhile may have
      // removed rows the read needed.
      const int64_t compacted = options_.compacted();
      if (batches.ok() && next < compacted) batches = CompactedError(next, compacted);
      if (!batches.ok()) {
        Fail(batches.status());
        return false;
      }
      if (batches->empty()) break;
      for (const WatchBatch& b : *batches) {
        if (Cancelled()) return false;
        callback_(b);
      }
      next = batches->back().revision + 1;
    }
    return true;
  }

  void Live() {
    for (;;) {
      WatchBatch batch;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(
            +[](Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) {
              return w->cancelled_ || !w->error_.ok() || !w->queue_.empty();
            },
            this));
        if (cancelled_) return;
        if (!error_.ok()) break;
        batch = std::move(queue_.front());
        queue_.pop_front();
        pending_events_ -= batch.events.size();
      }
      callback_(batch);
    }
    absl::Status error;
    {
      absl::MutexLock l(&mu_);
      error = error_;
    }
    Fail(error);
  }

  void Fail(const absl::Status& status) {
    if (Cancelled()) return;
    {
      absl::MutexLock l(&mu_);
      if (error_.ok()) error_ = status;
    }
    callback_(status);
  }

  // Constant after construction.
  const WatchHubOptions options_;
  const std::string key_;
  const std::string range_end_;
  const WatchCallback callback_;  // Called from thread_ only.
  const int64_t replay_from_;
  const int64_t replay_to_;

  absl::Mutex mu_;
  std::deque<WatchBatch> queue_ ABSL_GUARDED_BY(mu_);
  int64_t pending_events_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;

  std::once_flag stop_once_;
  std::thread thread_;
};

class WatchHub::Handle final : public WatchHandle {
 public:
  Handle(std::weak_ptr<Registry> registry, int64_t id, std::shared_ptr<Watcher> watcher)
      : registry_(std::move(registry)), id_(id), watcher_(std::move(watcher)) {}
  ~Handle() override {
    if (std::shared_ptr<Registry> r = registry_.lock()) {
      absl::MutexLock l(&r->mu);
      r->watchers.erase(id_);
    }
    watcher_->Stop();
  }

 private:
  const std::weak_ptr<Registry> registry_;
  const int64_t id_;
  const std::shared_ptr<Watcher> watcher_;
};

WatchHub::WatchHub(WatchHubOptions options, int64_t published)
    : options_(std::move(options)), registry_(std::make_shared<Registry>()) {
  absl::MutexLock l(&registry_->mu);
  registry_->published = published;
}

WatchHub::~WatchHub() {
  absl::flat_hash_map<int64_t, std::shared_ptr<Watcher>> watchers;
  {
    absl::MutexLock l(&registry_->mu);
    watchers.swap(registry_->watchers);
  }
  for (auto& [id, w] : watchers) w->Stop();
}

std::unique_ptr<WatchHandle> WatchHub::Add(const WatchRequest& request, WatchCallback callback) {
  std::shared_ptr<Watcher> w;
  int64_t id;
  {
    absl::MutexLock l(&registry_->mu);
    w = std::make_shared<Watcher>(options_, request, std::move(callback), registry_->published);
    id = registry_->next_id++;
    registry_->watchers.emplace(id, w);
  }
  w->Start();
  return std::make_unique<Handle>(registry_, id, std::move(w));
}

void WatchHub::Publish(const std::vector<WatchBatch>& txns, int64_t revision) {
  absl::MutexLock l(&registry_->mu);
  for (auto& [id, w] : registry_->watchers) {
    for (const WatchBatch& txn : txns) w->Offer(txn);
  }
  registry_->published = revision;
}

}  // namespace kv
}  // namespace iommu
