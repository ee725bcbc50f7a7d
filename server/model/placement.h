// Placement by device selector, read from the fleet state's placement index:
// the eligible node with the most free matching devices that can supply the
// whole request from free, whole IOMMU groups. Costs O(log nodes) plus the
// devices of the nodes it inspects (usually one), whatever the fleet size.
//
// Pure: reads a FleetState, returns an answer; the caller commits it.
#ifndef SERVER_MODEL_PLACEMENT_H_
#define SERVER_MODEL_PLACEMENT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/broker.pb.h"
#include "server/model/fleet_state.h"

namespace iommu {
namespace model {

inline constexpr uint32_t kMaxDevicesPerContainer = 64;

struct Placement {
  std::string node;
  std::vector<std::string> devices;  // Sorted PCI addresses.
};

// Is `address` on `node` promised to a change not yet committed?
using BusyFn = std::function<bool(const std::string& node, const std::string& address)>;

// INVALID_ARGUMENT for a count above kMaxDevicesPerContainer;
// RESOURCE_EXHAUSTED when no eligible node can supply it.
absl::StatusOr<Placement> PlaceBySelector(const FleetState& state,
                                          const v1::DeviceSelector& selector, const BusyFn& busy);

}  // namespace model
}  // namespace iommu

#endif  // SERVER_MODEL_PLACEMENT_H_
