#include "server/watch_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace iommu {

namespace {

WatchLogOptions AtLeastOne(WatchLogOptions o) {
  o.max_changes = std::max<size_t>(o.max_changes, 1);
  o.max_per_scope = std::max<size_t>(o.max_per_scope, 1);
  return o;
}

}  // namespace

WatchLog::WatchLog(std::string run, WatchLogOptions options)
    : run_(std::move(run)), options_(AtLeastOne(options)) {}

std::string WatchLog::Version(uint64_t revision) const {
  return absl::StrCat(run_, ".", revision);
}

void WatchLog::Append(std::vector<Change> changes) {
  if (changes.empty()) return;
  absl::MutexLock l(&mu_);
  auto drop = [this](uint64_t revision) {
    mu_.AssertHeld();
    auto it = changes_.find(revision);
    if (it == changes_.end()) return;
    const std::string scope = it->second.tenant;
    dropped_[scope] = std::max(dropped_[scope], revision);
    dropped_any_ = std::max(dropped_any_, revision);
    std::deque<uint64_t>& held = by_scope_[scope];
    held.erase(std::find(held.begin(), held.end(), revision));
    if (held.empty()) by_scope_.erase(scope);
    changes_.erase(it);
  };
  for (Change& c : changes) {
    const uint64_t revision = ++last_;
    c.event.set_resource_version(Version(revision));
    std::deque<uint64_t>& held = by_scope_[c.tenant];
    held.push_back(revision);
    changes_.emplace(revision, std::move(c));
    if (held.size() > options_.max_per_scope) drop(held.front());
    while (changes_.size() > options_.max_changes) drop(changes_.begin()->first);
  }
}

std::string WatchLog::CurrentVersion() const {
  absl::MutexLock l(&mu_);
  return Version(last_);
}

absl::StatusOr<uint64_t> WatchLog::Parse(const std::string& version) const {
  const size_t dot = version.rfind('.');
  uint64_t revision = 0;
  if (dot == std::string::npos || dot == 0 ||
      !absl::SimpleAtoi(absl::string_view(version).substr(dot + 1), &revision)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resource_version: not a resource version of this API (pass one from a list or a watch "
        "event unchanged), got \"",
        version.substr(0, 64), "\""));
  }
  if (version.compare(0, dot, run_) != 0 || dot != run_.size()) {
    return absl::OutOfRangeError(
        "resource_version: from another broker run or replica (changes are held in memory); "
        "too old, list again and watch from the list's resource_version");
  }
  return revision;
}

absl::StatusOr<WatchLog::Batch> WatchLog::Since(const std::string& version,
                                                const std::string& scope, const Filter& filter,
                                                size_t max) const {
  absl::MutexLock l(&mu_);
  uint64_t after = last_;
  if (!version.empty()) {
    absl::StatusOr<uint64_t> parsed = Parse(version);
    if (!parsed.ok()) return parsed.status();
    after = *parsed;
  }
  if (after > last_) {
    return absl::OutOfRangeError(
        "resource_version: newer than this broker's history; list again and watch from the "
        "list's resource_version");
  }
  uint64_t dropped = dropped_any_;
  if (!scope.empty()) {
    auto d = dropped_.find(scope);
    dropped = d == dropped_.end() ? 0 : d->second;
  }
  if (after < dropped) {
    return absl::OutOfRangeError(absl::StrCat(
        "resource_version: too old, the changes after it were compacted away (the broker keeps "
        "the last ",
        options_.max_changes, " changes, ", options_.max_per_scope,
        " per tenant); list again and watch from the list's resource_version"));
  }
  Batch batch;
  uint64_t through = after;
  for (auto it = changes_.upper_bound(after); it != changes_.end(); ++it) {
    if (batch.events.size() >= max) break;
    through = it->first;
    const Verdict verdict = filter ? filter(it->second) : Verdict::kSend;
    if (verdict == Verdict::kSkip) continue;
    batch.events.push_back(it->second.event);
    if (verdict == Verdict::kSendAsLeave) {
      batch.events.back().set_type(v1::WatchEvent::DELETE);
      batch.events.back().set_left_selection(true);
    }
  }
  if (batch.events.size() < max) through = last_;
  batch.resource_version = Version(through);
  return batch;
}

bool WatchLog::WaitForChange(const std::string& version, absl::Duration timeout) const {
  uint64_t after = 0;
  {
    absl::StatusOr<uint64_t> parsed = Parse(version);
    if (!parsed.ok()) return true;
    after = *parsed;
  }
  absl::MutexLock l(&mu_);
  auto newer = [this, after] {
    mu_.AssertHeld();
    return last_ > after;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&newer), timeout);
}

}  // namespace iommu
