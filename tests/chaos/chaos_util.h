// Helpers shared by the fault-injection (chaos) tests: broker stubs that
// reconnect quickly after a kill, a snapshot of everything the broker lists,
// and the structural checks every scenario runs on that snapshot.
// (iommu-launcher as a child process is tests/launcher_process.h.)
//
// Thread-compatible, except BrokerStubFor (thread-safe: each call makes its
// own channel).
#ifndef TESTS_CHAOS_CHAOS_UTIL_H_
#define TESTS_CHAOS_CHAOS_UTIL_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/broker.grpc.pb.h"

namespace iommu::chaos {

// Prints one "chaos: ..." line on stdout (the test log), so that a passing
// run still says what it checked.
void Note(const std::string& line);

// A plaintext stub (the daemons run --insecure) on a channel of its own whose
// reconnect backoff is capped at 200 ms, so a client notices a restarted
// broker at once instead of after gRPC's default backoff of up to 2 minutes.
std::unique_ptr<v1::Broker::Stub> BrokerStubFor(const std::string& address);

// A failure after which the request may or may not have been applied (the
// broker died or could not be reached). Any other code is a refusal, which
// the API promises changed nothing.
bool IsUncertain(grpc::StatusCode code);

// Everything the broker lists, read page by page.
struct Fleet {
  std::map<std::string, v1::Tenant> tenants;
  std::map<std::string, v1::Node> nodes;
  std::map<std::string, v1::Container> containers;
  std::map<std::string, v1::Window> windows;
  v1::GetUsageResponse usage;  // All pages merged.
};
absl::StatusOr<Fleet> ReadFleet(v1::Broker::Stub* stub);

// ReadFleet, repeated (up to `timeout`) until every node and every container
// is READY: on a loaded machine (sanitizers, parallel tests) an agent may
// miss the node timeout and re-register, which briefly shows its node
// RECONCILING. Returns the last snapshot either way; callers check it.
absl::StatusOr<Fleet> ReadSettledFleet(v1::Broker::Stub* stub,
                                       absl::Duration timeout = absl::Seconds(20));

// The invariants a snapshot must satisfy whatever happened before it, as
// human-readable violations (empty: all hold):
//  * no half state: every container's tenant exists; every window's
//    container exists and belongs to the window's tenant;
//  * windows of a container never overlap, lie inside its usable ranges and
//    honour their alignment (DESIGN.md invariant 1);
//  * the counters the broker reports equal a recount of the listed objects:
//    Container.window_count/window_bytes, Node.container_count, and per
//    tenant (and per tenant and node) containers, windows and window bytes
//    in GetUsage.
std::vector<std::string> CheckFleet(const Fleet& fleet);

}  // namespace iommu::chaos

#endif  // TESTS_CHAOS_CHAOS_UTIL_H_
