// A small pool of workers for the broker's best-effort pushes to agents
// (windows and pin budgets after a change), so that a reply never waits on
// work whose result it ignores: a stalled agent delays only its own pushes.
//
// Work is keyed by (shard, key). A shard (one node) runs one item at a time,
// so a stalled agent holds at most one worker; shards take turns. An item
// queued again under the same key before it starts replaces the queued one
// (the newer push carries the newer state), so a shard holds at most one item
// per key however often it is changed.
//
// Thread-safe.
#ifndef SERVER_PUSH_QUEUE_H_
#define SERVER_PUSH_QUEUE_H_

#include <deque>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace iommu {

class PushQueue final {
 public:
  // Starts `workers` threads (at least one).
  explicit PushQueue(int workers);
  // Lets running items finish, drops queued ones, joins the workers.
  ~PushQueue();

  PushQueue(const PushQueue&) = delete;
  PushQueue& operator=(const PushQueue&) = delete;

  // Runs `work` on a worker, after the items queued before it in `shard`.
  void Enqueue(const std::string& shard, const std::string& key, std::function<void()> work)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until nothing is queued or running (tests; a clean stop).
  void WaitIdle() ABSL_LOCKS_EXCLUDED(mu_);

  // Items queued or running now.
  size_t pending() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Shard {
    std::deque<std::string> order;  // Keys in arrival order.
    std::map<std::string, std::function<void()>> items;
    bool busy = false;  // A worker runs one of its items.
  };

  void Run() ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Shard> shards_ ABSL_GUARDED_BY(mu_);
  // Shards with queued items and no running one, in turn order.
  std::deque<std::string> ready_ ABSL_GUARDED_BY(mu_);
  size_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // Written only by the constructor.
};

}  // namespace iommu

#endif  // SERVER_PUSH_QUEUE_H_
