// EventLog: the broker's recent events per object (tenant, node, container,
// window), for people: what happened, when, and why (iommuctl describe shows
// them). Pure logic: no I/O, no gRPC, no clock (callers stamp the time).
//
// Memory is bounded three ways: each object keeps its most recent
// `max_per_object` events, each tenant its most recent `max_per_tenant`
// (so a tenant making many objects churns only its own events out, never
// another's), and the log holds at most `max_events` in all, dropping the
// oldest first. An event is filed under its object and under
// each of its related objects (a window's container, a container's tenant
// and node), so that one object's events include what happened under it;
// each filing counts against that object's ring. Objects whose events have
// all aged out take no memory.
//
// An event identical to one its object still holds (same type, reason,
// message, tenant, objects and request) is not stored twice: the held one is
// taken out, its count raised, and it is filed again as the newest, keeping
// its first time. So an agent that fails the same way every few seconds
// leaves one event with a count, not a ring full of copies.
//
// Events live in memory only: they do not survive a restart of the process.
//
// Thread-safety: all methods are safe to call concurrently. The log has its
// own mutex and calls nothing while holding it, so callers may hold their own
// locks when they call it.
#ifndef SERVER_EVENT_LOG_H_
#define SERVER_EVENT_LOG_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "proto/broker.pb.h"

namespace iommu {

struct EventLogOptions {
  // Events held in all; the oldest goes first. At least 1.
  size_t max_events = 10000;
  // Events held per object (its own and its related objects'). At least 1.
  size_t max_per_object = 20;
  // Events held per tenant (events with a tenant_id). At least 1.
  size_t max_per_tenant = 1000;
};

class EventLog final {
 public:
  explicit EventLog(EventLogOptions options = {});
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Records `event`. The caller fills type, reason, message, object, related,
  // tenant_id, request_id and last_time_ms (when it happened); the log sets
  // sequence, count and first_time_ms. An event without an object kind is
  // dropped (a caller bug, not worth failing the change it describes).
  void Record(v1::Event event) ABSL_LOCKS_EXCLUDED(mu_);

  struct Page {
    std::vector<v1::Event> events;  // Oldest first.
    // The sequence of the last event returned when more follow, else 0.
    uint64_t next_after = 0;
  };
  // At most `limit` events with a sequence above `after`, oldest first: those
  // filed under `object`, or every event when object.kind is UNSPECIFIED;
  // only those whose tenant_id equals `tenant` unless `tenant` is empty.
  Page List(const v1::ObjectRef& object, absl::string_view tenant, uint64_t after,
            size_t limit) const ABSL_LOCKS_EXCLUDED(mu_);

  // True when some event filed under `object` is held (with tenant_id equal
  // to `tenant` unless `tenant` is empty).
  bool Holds(const v1::ObjectRef& object, absl::string_view tenant) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Events held now.
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using Key = std::pair<int, std::string>;  // (ObjectKind, id).
  struct Entry {
    v1::Event event;
    std::vector<Key> rings;  // Where it was filed (it may have aged out of some).
  };

  static Key KeyOf(const v1::ObjectRef& ref) { return {ref.kind(), ref.id()}; }
  static bool SameEvent(const v1::Event& a, const v1::Event& b);
  // Takes the event with sequence `seq` out of every ring and the log.
  void RemoveLocked(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const EventLogOptions options_;

  mutable absl::Mutex mu_;
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, Entry> events_ ABSL_GUARDED_BY(mu_);  // By sequence.
  // Per object: the sequences of the events filed under it, at most
  // max_per_object; never empty (an emptied ring is erased).
  std::map<Key, std::set<uint64_t>> rings_ ABSL_GUARDED_BY(mu_);
  // Per tenant: the sequences of its events; never empty.
  std::map<std::string, std::set<uint64_t>> by_tenant_ ABSL_GUARDED_BY(mu_);
};

// Sizes in event messages: exact binary units when the size is a whole
// number of them ("4GiB", "1536MiB", "2MiB"), else bytes ("5000B").
std::string EventBytes(uint64_t bytes);

}  // namespace iommu

#endif  // SERVER_EVENT_LOG_H_
