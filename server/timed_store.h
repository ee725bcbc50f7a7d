// TimedStore: a Store decorator that times every Commit and reports the
// latency to an observer (the broker feeds
// iommu_broker_store_commit_duration_seconds with it), so neither the broker
// nor the store implementations carry metrics code. Every call, and its
// result, passes through unchanged.
//
// Thread-safe if the wrapped store is and the observer is.
#ifndef SERVER_TIMED_STORE_H_
#define SERVER_TIMED_STORE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "server/store.h"

namespace iommu {

class TimedStore final : public Store {
 public:
  // `inner` is not owned and must outlive this object. `on_commit` is called
  // after every Commit, successful or not, with how long it took.
  TimedStore(Store* inner, std::function<void(absl::Duration)> on_commit);

  TimedStore(const TimedStore&) = delete;
  TimedStore& operator=(const TimedStore&) = delete;

  absl::StatusOr<std::vector<StoreRecord>> LoadAll() override;
  absl::Status Commit(const WriteBatch& batch) override;
  // Timed like Commit: one observation per group.
  absl::Status CommitGroup(absl::Span<const WriteBatch> batches) override;
  absl::StatusOr<std::optional<RequestRecord>> FindRequest(absl::string_view request_id) override;
  absl::StatusOr<int64_t> ExpireRequests(int64_t before_ms) override;
  absl::StatusOr<std::vector<RequestSummary>> ListRequests() override;

 private:
  Store* const inner_;
  const std::function<void(absl::Duration)> on_commit_;
};

}  // namespace iommu

#endif  // SERVER_TIMED_STORE_H_
