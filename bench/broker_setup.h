// The synchronous calls a load generator makes to prepare a broker before it
// measures anything: list every node, wait for nodes to be READY, make sure a
// tenant exists, and find the free devices of READY nodes. None of them is
// measured; each returns the broker's status for the caller to report.
#ifndef BENCH_BROKER_SETUP_H_
#define BENCH_BROKER_SETUP_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/broker.grpc.pb.h"

namespace iommu::bench {

// Every node, page by page (a page holds at most 1,000).
grpc::Status ListAllNodes(v1::Broker::Stub* broker, std::vector<v1::Node>* out);

// Polls ListNodes until at least `n` nodes are READY. Returns how many were
// READY at the last look: `n` or more on success, fewer once `max_wait` has
// passed.
int WaitNodesReady(v1::Broker::Stub* broker, int n, absl::Duration max_wait);

// Creates tenant `id` with a quota no benchmark reaches; an existing tenant
// is fine.
grpc::Status EnsureTenant(v1::Broker::Stub* broker, const std::string& id,
                          const std::string& request_id);

// Every READY node's free assignable devices as (node, address), interleaved
// (node 0's first device, node 1's first device, ...), so explicit creates
// taken in order spread over the fleet.
grpc::Status FreeDevicesInterleaved(v1::Broker::Stub* broker,
                                    std::vector<std::pair<std::string, std::string>>* out);

}  // namespace iommu::bench

#endif  // BENCH_BROKER_SETUP_H_
