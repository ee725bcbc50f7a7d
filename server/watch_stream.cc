#include "server/watch_stream.h"

#include <utility>

#include "absl/time/clock.h"

namespace iommu {

absl::Status StreamWatch(const WatchLog& log, Broker::WatchPlan plan,
                         const std::function<bool(const v1::WatchResponse&)>& send,
                         const std::function<bool()>& done, WatchStreamOptions options) {
  bool first = true;
  absl::Time last_sent = absl::Now();
  while (true) {
    absl::StatusOr<WatchLog::Batch> batch =
        log.Since(plan.version, plan.scope, plan.filter, options.max_batch);
    if (!batch.ok()) return batch.status();
    const bool full = batch->events.size() >= options.max_batch;
    plan.version = batch->resource_version;
    const absl::Time now = absl::Now();
    if (!batch->events.empty() || first || now - last_sent >= options.bookmark_every) {
      v1::WatchResponse response;
      for (v1::WatchEvent& e : batch->events) *response.add_events() = std::move(e);
      if (response.events().empty()) {
        v1::WatchEvent* bookmark = response.add_events();
        bookmark->set_type(v1::WatchEvent::BOOKMARK);
        bookmark->set_resource_version(plan.version);
      }
      if (!send(response)) return absl::OkStatus();
      first = false;
      last_sent = now;
    }
    if (done()) return absl::OkStatus();
    if (full) continue;  // More are waiting.
    log.WaitForChange(plan.version, options.poll);
  }
}

}  // namespace iommu
