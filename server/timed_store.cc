#include "server/timed_store.h"

#include <utility>

#include "absl/time/clock.h"

namespace iommu {

TimedStore::TimedStore(Store* inner, std::function<void(absl::Duration)> on_commit)
    : inner_(inner), on_commit_(std::move(on_commit)) {}

absl::StatusOr<std::vector<StoreRecord>> TimedStore::LoadAll() { return inner_->LoadAll(); }

absl::Status TimedStore::Commit(const WriteBatch& batch) {
  const absl::Time start = absl::Now();
  absl::Status s = inner_->Commit(batch);
  if (on_commit_) on_commit_(absl::Now() - start);
  return s;
}

absl::Status TimedStore::CommitGroup(absl::Span<const WriteBatch> batches) {
  const absl::Time start = absl::Now();
  absl::Status s = inner_->CommitGroup(batches);
  if (on_commit_) on_commit_(absl::Now() - start);
  return s;
}

absl::StatusOr<std::optional<RequestRecord>> TimedStore::FindRequest(
    absl::string_view request_id) {
  return inner_->FindRequest(request_id);
}

absl::StatusOr<int64_t> TimedStore::ExpireRequests(int64_t before_ms) {
  return inner_->ExpireRequests(before_ms);
}

absl::StatusOr<std::vector<RequestSummary>> TimedStore::ListRequests() {
  return inner_->ListRequests();
}

}  // namespace iommu
