// WatchLog: the broker's recent changes, in order, for the Watch RPC (a
// Kubernetes informer's list+watch). Each change carries the object as it was
// when the change became durable; a watcher resumes from the resource
// version of the last change it saw. A container's change also carries its
// labels before the change (only the labels, not the previous object), so a
// label-selector watcher can tell a container entering its selection from
// one leaving it, as Kubernetes' watch cache does with its prevObject.
//
// Resource versions are "<run>.<revision>": `run` is random per WatchLog
// (per broker run and per leadership term), so a version from another run or
// replica is recognised and answered "too old, relist" (OUT_OF_RANGE) instead
// of being misread as a position in this run's history.
//
// Memory is bounded like the event log's, so one tenant's churn cannot push
// another tenant's changes out: at most `max_per_scope` changes per scope (a
// tenant, or "" for nodes, which belong to no tenant) and `max_changes` in
// all, dropping the oldest. A watcher's position is too old when a change it
// would have been sent was dropped: for a watcher of one tenant, a change of
// that tenant; for a watcher of everything, any change.
//
// Pure logic plus a condition variable: no I/O, no gRPC, no clock.
// Thread-safety: all methods may be called concurrently; the log has its own
// mutex and calls nothing while holding it.
#ifndef SERVER_WATCH_LOG_H_
#define SERVER_WATCH_LOG_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/broker.pb.h"

namespace iommu {

struct WatchLogOptions {
  size_t max_changes = 10000;   // At least 1.
  size_t max_per_scope = 2000;  // At least 1.
};

class WatchLog final {
 public:
  // One change to append: the event (type and object; the log sets its
  // resource_version) and the tenant it belongs to ("" for nodes).
  struct Change {
    v1::WatchEvent event;
    std::string tenant;
    // Containers only: the labels as of the container's previous change
    // (what watchers last saw), or nullopt when there was none (a create).
    std::optional<google::protobuf::Map<std::string, std::string>> prev_labels;
  };
  // What a watcher is sent of one change: nothing, the event, or the event
  // as a DELETE with left_selection set (the object left the watcher's
  // selection but still exists).
  enum class Verdict { kSkip, kSend, kSendAsLeave };
  // Which changes a watcher wants; null members select everything.
  using Filter = std::function<Verdict(const Change&)>;
  // What Since returns.
  struct Batch {
    std::vector<v1::WatchEvent> events;
    std::string resource_version;  // Resume from here (covers skipped changes).
  };

  explicit WatchLog(std::string run, WatchLogOptions options = {});
  WatchLog(const WatchLog&) = delete;
  WatchLog& operator=(const WatchLog&) = delete;

  // Appends `changes` in order, each with the next revision, and wakes the
  // waiters.
  void Append(std::vector<Change> changes) ABSL_LOCKS_EXCLUDED(mu_);

  // The version of the latest change (the starting point of "from now").
  std::string CurrentVersion() const ABSL_LOCKS_EXCLUDED(mu_);

  // The changes after `version` ("" means now: none) as `filter` decides,
  // at most `max` of them. `scope` is the one tenant the watcher is limited
  // to, or empty for a watcher of every scope: it decides which dropped
  // changes make `version` too old. INVALID_ARGUMENT for a malformed
  // version, OUT_OF_RANGE when it is from another run or too old.
  absl::StatusOr<Batch> Since(const std::string& version, const std::string& scope,
                              const Filter& filter, size_t max) const ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until a change after `version` exists or `timeout` passes; true
  // when there is one. A malformed or foreign version returns true at once
  // (Since then says why).
  bool WaitForChange(const std::string& version, absl::Duration timeout) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  std::string Version(uint64_t revision) const;
  // The revision in `version`, or the error Since documents.
  absl::StatusOr<uint64_t> Parse(const std::string& version) const;

  const std::string run_;
  const WatchLogOptions options_;
  mutable absl::Mutex mu_;
  uint64_t last_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, Change> changes_ ABSL_GUARDED_BY(mu_);
  // Revisions held per scope, oldest first.
  std::map<std::string, std::deque<uint64_t>> by_scope_ ABSL_GUARDED_BY(mu_);
  // The newest revision dropped, per scope and over all scopes.
  std::map<std::string, uint64_t> dropped_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_any_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iommu

#endif  // SERVER_WATCH_LOG_H_
