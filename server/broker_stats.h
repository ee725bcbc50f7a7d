// BrokerStats: a point-in-time summary of the broker's state, for metrics.
// Broker::Stats() fills it under the broker's lock; broker_metrics.h turns it
// into Prometheus gauges at scrape time. A plain struct: no dependencies.
#ifndef SERVER_BROKER_STATS_H_
#define SERVER_BROKER_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace iommu {

struct BrokerStats {
  struct Tenant {
    std::string id;
    uint64_t quota_pinned_bytes = 0;
    uint64_t quota_window_bytes = 0;  // 0: unlimited.
    uint64_t reserved_bytes = 0;      // IOVA bytes of the tenant's windows.
    uint64_t pinned_bytes = 0;        // Billed on the nodes (each page once), from heartbeats.
    uint64_t mapped_bytes = 0;        // Every mapping counted, from heartbeats.
  };
  struct Node {
    std::string name;
    bool up = false;  // Registered and heartbeating.
  };

  std::vector<Tenant> tenants;  // Every tenant defined, by id.

  // Containers by state, as GetContainer reports it.
  int64_t containers_ready = 0;
  int64_t containers_node_unavailable = 0;
  int64_t containers_failed = 0;
  int64_t containers_deleting = 0;  // A delete to repeat (CONTAINER_STATE_DELETING).

  int64_t windows = 0;

  // Nodes by state: ready (heartbeating, open to placement), cordoned
  // (heartbeating, cordoned), unavailable (not heartbeating, cordoned or not).
  int64_t nodes_ready = 0;
  int64_t nodes_cordoned = 0;
  int64_t nodes_unavailable = 0;
  int64_t nodes_reconciling = 0;  // Registered, not yet reported back.
  // Registrations waiting for their turn (BrokerOptions::
  // max_concurrent_registrations): a queue here is a registration storm.
  int64_t registrations_waiting = 0;
  std::vector<Node> nodes;  // By name.
};

}  // namespace iommu

#endif  // SERVER_BROKER_STATS_H_
