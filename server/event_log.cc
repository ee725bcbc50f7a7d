#include "server/event_log.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace iommu {

EventLog::EventLog(EventLogOptions options)
    : options_{std::max<size_t>(options.max_events, 1),
               std::max<size_t>(options.max_per_object, 1),
               std::max<size_t>(options.max_per_tenant, 1)} {}

namespace {

bool SameRef(const v1::ObjectRef& a, const v1::ObjectRef& b) {
  return a.kind() == b.kind() && a.id() == b.id();
}

}  // namespace

bool EventLog::SameEvent(const v1::Event& a, const v1::Event& b) {
  // Cheapest and most telling first: this runs under the broker's lock.
  if (a.reason() != b.reason() || a.type() != b.type() || !SameRef(a.object(), b.object()) ||
      a.message() != b.message() || a.tenant_id() != b.tenant_id() ||
      a.request_id() != b.request_id() || a.related_size() != b.related_size()) {
    return false;
  }
  for (int i = 0; i < a.related_size(); ++i) {
    if (!SameRef(a.related(i), b.related(i))) return false;
  }
  return true;
}

void EventLog::RemoveLocked(uint64_t seq) {
  auto it = events_.find(seq);
  if (it == events_.end()) return;
  for (const Key& k : it->second.rings) {
    auto ring = rings_.find(k);
    if (ring == rings_.end()) continue;
    ring->second.erase(seq);
    if (ring->second.empty()) rings_.erase(ring);
  }
  if (const std::string& tenant = it->second.event.tenant_id(); !tenant.empty()) {
    auto mine = by_tenant_.find(tenant);
    if (mine != by_tenant_.end()) {
      mine->second.erase(seq);
      if (mine->second.empty()) by_tenant_.erase(mine);
    }
  }
  events_.erase(it);
}

void EventLog::Record(v1::Event event) {
  if (event.object().kind() == v1::OBJECT_KIND_UNSPECIFIED) return;
  absl::MutexLock l(&mu_);
  const Key primary = KeyOf(event.object());
  event.set_count(1);
  event.set_first_time_ms(event.last_time_ms());
  if (auto ring = rings_.find(primary); ring != rings_.end()) {
    for (uint64_t seq : ring->second) {
      const v1::Event& held = events_.at(seq).event;
      if (!SameEvent(held, event)) continue;
      const uint32_t count = held.count();
      event.set_count(count == std::numeric_limits<uint32_t>::max() ? count : count + 1);
      event.set_first_time_ms(held.first_time_ms());
      RemoveLocked(seq);  // Invalidates `ring`: leave the loop now.
      break;
    }
  }
  const uint64_t seq = ++last_sequence_;
  event.set_sequence(seq);
  Entry entry;
  entry.rings.push_back(primary);
  for (const v1::ObjectRef& r : event.related()) {
    const Key k = KeyOf(r);
    if (r.kind() == v1::OBJECT_KIND_UNSPECIFIED ||
        std::find(entry.rings.begin(), entry.rings.end(), k) != entry.rings.end()) {
      continue;
    }
    entry.rings.push_back(k);
  }
  for (const Key& k : entry.rings) {
    std::set<uint64_t>& ring = rings_[k];
    ring.insert(seq);
    // The oldest of this object goes; the log keeps it while the global cap
    // allows (every-event lists still show it).
    if (ring.size() > options_.max_per_object) ring.erase(ring.begin());
  }
  const std::string tenant = event.tenant_id();
  entry.event = std::move(event);
  events_.emplace(seq, std::move(entry));
  if (!tenant.empty()) {
    std::set<uint64_t>& mine = by_tenant_[tenant];
    mine.insert(seq);
    if (mine.size() > options_.max_per_tenant) RemoveLocked(*mine.begin());
  }
  while (events_.size() > options_.max_events) RemoveLocked(events_.begin()->first);
}

EventLog::Page EventLog::List(const v1::ObjectRef& object, absl::string_view tenant,
                              uint64_t after, size_t limit) const {
  absl::MutexLock l(&mu_);
  Page page;
  // Returns false once the page is full and one more event would follow.
  auto add = [&](const v1::Event& e) {
    if (!tenant.empty() && e.tenant_id() != tenant) return true;
    if (limit != 0 && page.events.size() == limit) {
      page.next_after = page.events.back().sequence();
      return false;
    }
    page.events.push_back(e);
    return true;
  };
  if (object.kind() == v1::OBJECT_KIND_UNSPECIFIED) {
    for (auto it = events_.upper_bound(after); it != events_.end(); ++it) {
      if (!add(it->second.event)) break;
    }
    return page;
  }
  auto ring = rings_.find(KeyOf(object));
  if (ring == rings_.end()) return page;
  for (auto it = ring->second.upper_bound(after); it != ring->second.end(); ++it) {
    if (!add(events_.at(*it).event)) break;
  }
  return page;
}

bool EventLog::Holds(const v1::ObjectRef& object, absl::string_view tenant) const {
  absl::MutexLock l(&mu_);
  auto ring = rings_.find(KeyOf(object));
  if (ring == rings_.end()) return false;
  if (tenant.empty()) return true;
  for (uint64_t seq : ring->second) {
    if (events_.at(seq).event.tenant_id() == tenant) return true;
  }
  return false;
}

size_t EventLog::size() const {
  absl::MutexLock l(&mu_);
  return events_.size();
}

std::string EventBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes == 0) return "0B";
  for (int i = 5; i >= 0; --i) {
    const int shift = 10 * (i + 1);
    if (bytes % (uint64_t{1} << shift) == 0) return absl::StrCat(bytes >> shift, kUnits[i]);
  }
  return absl::StrCat(bytes, "B");
}

}  // namespace iommu
