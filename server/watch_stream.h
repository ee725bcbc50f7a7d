// The loop behind the Watch RPC, free of gRPC: sends a WatchPlan's changes
// from a WatchLog through a callback, in batches, as they are appended. The
// first message goes out at once (a BOOKMARK when there is nothing to send),
// so a caller knows the stream is open; then a message per batch of changes,
// and a BOOKMARK after `bookmark_every` without one, carrying the version to
// resume from (changes filtered out still move it) and showing the stream is
// alive.
//
// Thread-safety: one call per stream; any number of streams may run at once
// on the same (thread-safe) WatchLog.
#ifndef SERVER_WATCH_STREAM_H_
#define SERVER_WATCH_STREAM_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/broker.pb.h"
#include "server/broker.h"
#include "server/watch_log.h"

namespace iommu {

struct WatchStreamOptions {
  absl::Duration bookmark_every = absl::Seconds(10);
  // How often `done` is asked while nothing changes.
  absl::Duration poll = absl::Seconds(1);
  size_t max_batch = 500;
};

// Runs until `send` returns false (the caller went away: OK), `done` returns
// true (OK), or the plan's version becomes unusable: OUT_OF_RANGE when the
// changes after it were compacted away while the caller was too slow.
absl::Status StreamWatch(const WatchLog& log, Broker::WatchPlan plan,
                         const std::function<bool(const v1::WatchResponse&)>& send,
                         const std::function<bool()>& done, WatchStreamOptions options = {});

}  // namespace iommu

#endif  // SERVER_WATCH_STREAM_H_
