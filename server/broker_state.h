// The records the Broker keeps per node, container and pending change, and
// its derived indexes: plain data, private to the broker's implementation
// (server/broker*.cc), in a header of their own so broker.h shows the
// broker's interface and state, not every field of every entry.
#ifndef SERVER_BROKER_STATE_H_
#define SERVER_BROKER_STATE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "proto/agent.pb.h"
#include "proto/broker.pb.h"
#include "server/store.h"
#include "server/window_allocator.h"

namespace iommu {
namespace broker_state {

struct NodeEntry {
  v1::Node node;  // Persisted fields only; state and counts are derived.
  std::vector<v1::Device> devices;
  std::string session_id;  // Empty: not registered (UNAVAILABLE).
  // The agent reported back after this session's registration (Reconciled);
  // until then the node is RECONCILING and nothing is placed on it.
  bool reconciled = false;
  int64_t last_heartbeat_ms = 0;
  int64_t deaf_ms_at_heartbeat = 0;  // deaf_ms_ when last_heartbeat_ms was set.
  // RegisterRequest.agent_incarnation of the live registration; bound into
  // every grant so that the agent's restart voids tokens used before it.
  std::string agent_incarnation;
  std::map<std::string, v1::PinUsage> usage;  // By tenant, from heartbeats.
  std::string grant_key;                      // Signs launcher tokens for this node; persisted.
  // Containers the agent could not re-create at its last reconcile, with
  // the reason; cleared at each registration.
  std::map<std::string, std::string> failed;
  // What a heartbeat answers (every container's budget and windows),
  // built by the first heartbeat after a change to one of the node's
  // containers (HeartbeatAnswerStaleLocked) and copied outside the lock by the
  // others: every node asks every interval, its answer rarely changes.
  std::shared_ptr<const v1::HeartbeatResponse> heartbeat_answer;
  // applied_seq_ when heartbeat_answer was built: all it shows is durable
  // once that is, so a heartbeat waits for that and not for every commit
  // in flight (a registration storm keeps one in flight all the time).
  uint64_t heartbeat_answer_seq = 0;
};

struct ContainerEntry {
  v1::Container container;  // As persisted.
  WindowAllocator allocator;
  std::set<std::string> window_ids;
  // Sequence number of the last mutation that changed the container or its
  // windows, so an answer about this container alone waits for that one
  // (AwaitDurableLocked(seq)) rather than for every mutation in flight.
  uint64_t changed_seq = 0;
};

// A change computed under the lock, without changing anything: applied to
// memory from its records (ApplyChangeLocked), then committed (group
// commit), then acknowledged; rolled back by reload if the commit fails.
// Its log lines and events are said only once it is durable (Mutate), so a
// change rolled back leaves none claiming it happened.
struct Plan {
  struct Line {
    LogLevel level;
    std::string event;
    std::vector<LogField> fields;  // Keys are string literals.
  };
  WriteBatch batch;
  std::vector<Line> lines;
  std::vector<v1::Event> events;

  void Log(LogLevel level, absl::string_view event, std::vector<LogField> fields) {
    lines.push_back({level, std::string(event), std::move(fields)});
  }
  void Record(v1::Event event) { events.push_back(std::move(event)); }
};

// Mutations applied in memory and waiting for one store commit.
struct PendingGroup {
  std::vector<WriteBatch> batches;
  uint64_t last_seq = 0;  // Sequence number of the last batch in it.
  bool done = false;      // Committed (status OK) or failed and rolled back.
  absl::Status status;
};

// Derived from containers_ and windows_, kept up to date by every change
// (Broker::Add/Erase/Set...Locked) so that quota checks and node views cost
// O(log n) instead of a scan of every container or window.
struct TenantTotals {
  uint64_t budget_bytes = 0;  // Sum of its containers' pin budgets.
  uint64_t window_bytes = 0;  // Sum of its windows' sizes.
  bool operator==(const TenantTotals& o) const {
    return budget_bytes == o.budget_bytes && window_bytes == o.window_bytes;
  }
};
struct Indexes {
  std::map<std::string, TenantTotals> tenants;                     // No entry: all zero.
  std::map<std::string, std::set<std::string>> tenant_containers;  // No entry: none.
  std::map<std::string, std::set<std::string>> node_containers;    // No entry: none.
  // Those of node_containers marked deleting, so that the scrape counts
  // container states per node without visiting each container.
  std::map<std::string, std::set<std::string>> node_deleting;  // No entry: none.
  // The nodes whose agents last reported usage for a tenant (NodeEntry's
  // usage), so that a tenant's usage costs its nodes, not the fleet's.
  std::map<std::string, std::set<std::string>> usage_nodes;  // No entry: none.
  bool operator==(const Indexes& o) const {
    return tenants == o.tenants && tenant_containers == o.tenant_containers &&
           node_containers == o.node_containers && node_deleting == o.node_deleting &&
           usage_nodes == o.usage_nodes;
  }
};

// Objects changed and not yet published to watch_: the sequence number
// that must be resolved first, the first mutation that changed it (so a
// rollback of only later ones drops the mark: the object is back as last
// published), and whether something outside the store changed it (never
// rolled back). And the DELETE events of the erased.
struct DirtyMark {
  uint64_t seq = 0;
  uint64_t first_applied = 0;  // 0: no mutation.
  bool observed = false;
  // Containers: the labels as last published (nullopt: never published),
  // taken when the mark is made, before the change. A mark lives until
  // the publish (or a rollback back to what was published), so they are
  // what watchers saw; WatchLog::Change::prev_labels.
  std::optional<google::protobuf::Map<std::string, std::string>> prev_labels;
};

// Per container: held across each windows push (taken without the broker's
// lock), so pushes of one container read and send in order, while
// containers push in parallel; `pushed_seq` is the changed_seq of the state
// last sent, so a waiter whose change an earlier push already carried sends
// nothing (PushWindows).
struct PushOrder {
  absl::Mutex mu;
  uint64_t pushed_seq ABSL_GUARDED_BY(mu) = 0;
};

}  // namespace broker_state
}  // namespace iommu

#endif  // SERVER_BROKER_STATE_H_
