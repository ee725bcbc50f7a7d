// Test-only: a node as a well-behaved agent brings it up. It registers (at
// "<name>:1", sim backend) and reports reconciled holding exactly the
// containers the broker says it must, after which the node is READY and takes
// placements. Tests whose subject is the registration itself (a reconcile
// that fails, or one that has not happened yet) call Register themselves.
#ifndef SERVER_TEST_NODES_H_
#define SERVER_TEST_NODES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/broker.pb.h"
#include "server/broker.h"

namespace iommu {

// Registers node `name` with `devices` and reconciles it. Returns Register's
// answer (session id, desired containers, grant key), or the first error of
// the two calls.
absl::StatusOr<v1::RegisterResponse> RegisterReadyNode(Broker* broker, const std::string& name,
                                                       const std::vector<v1::Device>& devices);

}  // namespace iommu

#endif  // SERVER_TEST_NODES_H_
