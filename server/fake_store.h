// An in-memory Store for tests, with failure switches: set_next_commit_error()
// makes the next Commit or CommitGroup fail (and apply nothing), as a full
// disk would; set_next_load_error() fails the next LoadAll and
// set_next_list_requests_error() the next ListRequests; PauseCommits() holds
// every commit until ResumeCommits(), as a slow fsync would, so tests can line
// up concurrent mutations behind one; find_requests() counts FindRequest calls.
// Thread-safe.
#ifndef SERVER_FAKE_STORE_H_
#define SERVER_FAKE_STORE_H_

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "server/request_digest.h"
#include "server/store.h"

namespace iommu {

class FakeStore final : public Store {
 public:
  FakeStore() = default;
  FakeStore(const FakeStore&) = delete;
  FakeStore& operator=(const FakeStore&) = delete;

  absl::StatusOr<std::vector<StoreRecord>> LoadAll() override {
    absl::MutexLock l(&mu_);
    if (!next_load_error_.ok()) return std::exchange(next_load_error_, absl::OkStatus());
    std::vector<StoreRecord> out;
    for (const auto& [key, value] : objects_) out.push_back({key.first, key.second, value});
    return out;
  }

  absl::Status Commit(const WriteBatch& batch) override {
    return CommitGroup(absl::MakeConstSpan(&batch, 1));
  }

  absl::Status CommitGroup(absl::Span<const WriteBatch> batches) override {
    absl::MutexLock l(&mu_);
    ++waiting_;
    auto resumed = [this]() {
      mu_.AssertHeld();  // Await evaluates conditions under mu_.
      return !paused_;
    };
    mu_.Await(absl::Condition(&resumed));
    --waiting_;
    if (!next_commit_error_.ok() && commits_to_pass_-- <= 0) {
      absl::Status s = next_commit_error_;
      next_commit_error_ = absl::OkStatus();
      commits_to_pass_ = 0;
      return s;
    }
    for (const WriteBatch& batch : batches) {
      for (const StoreRecord& r : batch.puts) objects_[{r.kind, r.id}] = r.value;
      for (const auto& key : batch.deletes) objects_.erase(key);
      if (batch.request) requests_[batch.request->request_id] = *batch.request;
      ++batches_;
    }
    ++commits_;
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<RequestRecord>> FindRequest(absl::string_view id) override {
    absl::MutexLock l(&mu_);
    ++find_requests_;
    auto it = requests_.find(std::string(id));
    if (it == requests_.end()) return std::optional<RequestRecord>();
    return std::optional<RequestRecord>(it->second);
  }

  absl::StatusOr<std::vector<RequestSummary>> ListRequests() override {
    absl::MutexLock l(&mu_);
    if (!next_list_requests_error_.ok()) {
      return std::exchange(next_list_requests_error_, absl::OkStatus());
    }
    std::vector<RequestSummary> out;
    for (const auto& [id, r] : requests_) {
      out.push_back(SummarizeRequest(r));
    }
    return out;
  }

  absl::StatusOr<int64_t> ExpireRequests(int64_t before_ms) override {
    absl::MutexLock l(&mu_);
    int64_t n = 0;
    for (auto it = requests_.begin(); it != requests_.end();) {
      if (it->second.time_ms < before_ms) {
        it = requests_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    return n;
  }

  // Makes the next LoadAll fail with `s`, as an unreadable file would.
  void set_next_load_error(absl::Status s) {
    absl::MutexLock l(&mu_);
    next_load_error_ = std::move(s);
  }
  // Makes the next ListRequests fail with `s`.
  void set_next_list_requests_error(absl::Status s) {
    absl::MutexLock l(&mu_);
    next_list_requests_error_ = std::move(s);
  }
  void set_next_commit_error(absl::Status s) { set_commit_error_after(0, std::move(s)); }
  // Lets `pass` commits succeed, then fails the one after them with `s`.
  void set_commit_error_after(int pass, absl::Status s) {
    absl::MutexLock l(&mu_);
    next_commit_error_ = std::move(s);
    commits_to_pass_ = pass;
  }
  // Commits (one per Commit or CommitGroup that succeeded) and the batches
  // they held.
  int commits() const {
    absl::MutexLock l(&mu_);
    return commits_;
  }
  int batches() const {
    absl::MutexLock l(&mu_);
    return batches_;
  }
  // FindRequest calls so far (each a store read on the broker's mutation
  // path).
  int find_requests() const {
    absl::MutexLock l(&mu_);
    return find_requests_;
  }
  // Remembers an answer as an older broker would have left it (e.g. under a
  // bare, unscoped request id), without a commit.
  void PutRequest(RequestRecord r) {
    absl::MutexLock l(&mu_);
    requests_[r.request_id] = std::move(r);
  }
  void PauseCommits() {
    absl::MutexLock l(&mu_);
    paused_ = true;
  }
  void ResumeCommits() {
    absl::MutexLock l(&mu_);
    paused_ = false;
  }
  // Blocks until `n` commits are held by PauseCommits().
  void AwaitPausedCommits(int n) const {
    absl::MutexLock l(&mu_);
    auto enough = [this, n]() {
      mu_.AssertHeld();  // Await evaluates conditions under mu_.
      return waiting_ >= n;
    };
    mu_.Await(absl::Condition(&enough));
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::string> objects_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, RequestRecord> requests_ ABSL_GUARDED_BY(mu_);
  absl::Status next_commit_error_ ABSL_GUARDED_BY(mu_);
  absl::Status next_load_error_ ABSL_GUARDED_BY(mu_);
  absl::Status next_list_requests_error_ ABSL_GUARDED_BY(mu_);
  int find_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int commits_to_pass_ ABSL_GUARDED_BY(mu_) = 0;
  int commits_ ABSL_GUARDED_BY(mu_) = 0;
  int batches_ ABSL_GUARDED_BY(mu_) = 0;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;  // Commits held by paused_.
};

}  // namespace iommu

#endif  // SERVER_FAKE_STORE_H_
