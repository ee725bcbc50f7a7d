// Fans committed changes out to watchers. Each watch gets a thread of its
// own that first replays history (read through a HistoryReader, e.g. from
// SQLite) and then delivers live batches from a bounded queue, so a slow
// callback delays only its own watch, and a watch that falls more than
// `max_pending_events` behind is ended with RESOURCE_EXHAUSTED instead of
// growing memory without bound.
//
// Ordering: Publish is called in revision order (the store's commit path
// serializes it) and Add registers under the same mutex, so a new watch's
// replay ends exactly where its live queue begins: no gap, no duplicate.
//
// Thread-safe. Destroying the hub ends every watch (joining its thread);
// handles that outlive it then do nothing.
#ifndef SERVER_KV_WATCH_HUB_H_
#define SERVER_KV_WATCH_HUB_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

struct WatchHubOptions {
  // Changes of (key, range_end) with revision in [from, to], grouped by
  // revision, stopping after about `max_events`.
  std::function<absl::StatusOr<std::vector<WatchBatch>>(const std::string& key,
                                                        const std::string& range_end, int64_t from,
                                                        int64_t to, int64_t max_events)>
      read_history;
  // The store's compaction point: history below it is gone.
  std::function<int64_t()> compacted;
  int64_t max_pending_events = 100000;
  int64_t replay_chunk_events = 1000;
};

class WatchHub final {
 public:
  // `published` is the revision everything up to which is already durable.
  WatchHub(WatchHubOptions options, int64_t published);
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // Starts a watch; the request is valid and not below the compaction
  // point (the caller checked). Replays [start, published] first.
  std::unique_ptr<WatchHandle> Add(const WatchRequest& request, WatchCallback callback);

  // Queues the batches of one commit (ascending revisions); `revision` is
  // the store's revision after it.
  void Publish(const std::vector<WatchBatch>& txns, int64_t revision);

  class Watcher;

 private:
  struct Registry {
    absl::Mutex mu;
    int64_t published ABSL_GUARDED_BY(mu) = 0;
    int64_t next_id ABSL_GUARDED_BY(mu) = 1;
    absl::flat_hash_map<int64_t, std::shared_ptr<Watcher>> watchers ABSL_GUARDED_BY(mu);
  };
  class Handle;

  const WatchHubOptions options_;
  const std::shared_ptr<Registry> registry_;
};

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_WATCH_HUB_H_
