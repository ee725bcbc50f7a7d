// The broker's options: what it tells agents, how long it remembers, how
// much work it admits at once, and who it says it is. Pure: plain values and
// their range check.
#ifndef SERVER_BROKER_OPTIONS_H_
#define SERVER_BROKER_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace iommu {

struct BrokerOptions {
  // What the broker tells agents; they heartbeat this often.
  int64_t heartbeat_interval_ms = 1000;
  // A node silent for longer than this is UNAVAILABLE. Silence is counted
  // only while the broker could take heartbeats (see below).
  int64_t node_timeout_ms = 5000;
  // How often the daemon calls CheckLiveness. When set, a call much later
  // than that (the process was stopped or starved) takes the time since the
  // previous call out of every node's silence, so a broker pause does not
  // turn every live node UNAVAILABLE at once. 0: calls come irregularly
  // (tests driving an injected clock), so gaps say nothing.
  int64_t liveness_check_interval_ms = 0;
  // How long the answer to a mutation is remembered for retries.
  int64_t request_ttl_ms = 24 * 3600 * 1000;
  // Answers one caller may have remembered at once (each mutation with a
  // request_id stores one for request_ttl_ms), so no tenant can grow the
  // store without bound; past it, its mutations with a request_id are
  // refused (RESOURCE_EXHAUSTED). Calls in flight may pass it by their
  // number. 0: no limit. Each remembered answer also costs the broker 47-94
  // bytes of memory (server/request_index.h), whatever its size in the
  // store: 1,000,000 answers, about 50-90 MB.
  int64_t max_remembered_answers_per_caller = 1000000;
  // The same bound in bytes of the store (RequestBytes: id, fingerprint and
  // response of each): answers range from about a hundred bytes to tens of
  // KiB (a container with 32 long labels), so the count alone let one
  // caller add gigabytes. 0: no limit.
  int64_t max_remembered_answer_bytes_per_caller = int64_t{256} << 20;
  // Registrations worked on at once; the others wait their turn before
  // they touch the broker's state. A registration holds the broker's lock
  // for O(the node's containers), and after a broker restart every node
  // registers at once: unbounded, they queued for the lock ahead of the
  // heartbeats, which came seconds late and timed nodes out. 0: no bound.
  int64_t max_concurrent_registrations = 8;
  // Milliseconds since the epoch; injectable so tests control time.
  std::function<int64_t()> now_ms;
  // Who answers, for operators' GetVersion: this replica's name, its store
  // (--store, as named) and since when it leads.
  std::string replica;
  std::string store;
  int64_t leader_since_ms = 0;
};

// INVALID_ARGUMENT naming the first option out of its range and the rule, in
// the form "<option>: must be at least <min>, got <value>"; the daemon's
// flags carry the options' names (heartbeat_interval_ms is
// --heartbeat-interval-ms). Broker::Create refuses such options. Pure.
absl::Status ValidateBrokerOptions(const BrokerOptions& options);

}  // namespace iommu

#endif  // SERVER_BROKER_OPTIONS_H_
