// The client side of the Watch RPC, as an informer runs it: list, watch from
// the list's version, and on a disconnect watch again from the last version
// seen; when the broker says the version is too old (OUT_OF_RANGE: compacted,
// or a new leader after a failover), list again. iommuctl's
// `container list --watch` is built on it.
//
// Thread-safety: one call per thread; `stub` must be thread-safe (gRPC stubs
// are).
#ifndef CLIENT_WATCH_LOOP_H_
#define CLIENT_WATCH_LOOP_H_

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

struct WatchLoop {
  // Lists (and shows the list), returning the version to watch from.
  std::function<absl::StatusOr<std::string>()> relist;
  // Each change (never a BOOKMARK); an error ends the loop with it.
  std::function<absl::Status(const v1::WatchEvent&)> on_event;
  // Waits before opening the stream again; false: stop (OK).
  std::function<bool(absl::Duration)> wait;
  // A note for people about a reconnect or relist (stderr).
  std::function<void(const std::string&)> note;
};

// The objects a watcher shows when it narrows the broker's changes itself
// (`container list --watch --node --state`: Watch filters by tenant and
// labels only), by Kubernetes' rule for a filtered watch: a change that
// matches is shown (and the object remembered), a change of a shown object
// that no longer matches becomes its DELETE (left_selection set; the object
// is forgotten), and anything else of an object not shown is dropped, a
// DELETE included. The list before the watch says what is shown at first.
class ShownObjects {
 public:
  // Whether the object of a PUT belongs in the view.
  using Matches = std::function<bool(const v1::WatchEvent&)>;
  explicit ShownObjects(Matches matches) : matches_(std::move(matches)) {}

  // What a list showed, by object id (as ObjectId gives it); forgets the
  // objects shown before (a relist replaces the view).
  void Reset(std::set<std::string> ids) { shown_ = std::move(ids); }
  // What to show of `e`: nothing, `e`, or the DELETE of an object leaving.
  std::optional<v1::WatchEvent> Next(const v1::WatchEvent& e);

 private:
  Matches matches_;
  std::set<std::string> shown_;
};

// The id (for nodes the name) of the object of `e`; "" for a BOOKMARK.
std::string ObjectId(const v1::WatchEvent& e);

// Runs until `loop.wait` says stop or an error that a retry cannot fix
// (PERMISSION_DENIED, INVALID_ARGUMENT, ...), which it returns.
absl::Status RunWatch(v1::Broker::StubInterface* stub, v1::WatchRequest request,
                      const WatchLoop& loop);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_WATCH_LOOP_H_
