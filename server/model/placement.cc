#include "server/model/placement.h"

#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace iommu {
namespace model {

absl::StatusOr<Placement> PlaceBySelector(const FleetState& state,
                                          const v1::DeviceSelector& selector, const BusyFn& busy) {
  const uint32_t count = selector.count() == 0 ? 1 : selector.count();
  if (count > kMaxDevicesPerContainer) {
    return absl::InvalidArgumentError(absl::StrCat("selector.count: at most ",
                                                   kMaxDevicesPerContainer,
                                                   " devices per container, got ", count));
  }
  const SelectorKey key{selector.vendor_id(), selector.device_id()};
  std::optional<Placement> found;
  // Most free first: the first node that can supply exactly `count` (its
  // groups may not add up to it, or some devices may be promised to a change
  // in flight) is the answer.
  state.placement().VisitBest(key, count, [&](const std::string& node, int64_t) {
    std::optional<std::vector<std::string>> picked = state.PickDevices(
        node, key, count, [&](const std::string& address) { return busy(node, address); });
    if (!picked.has_value()) return true;
    found = Placement{node, *std::move(picked)};
    return false;
  });
  if (!found.has_value()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "selector: no ready, uncordoned node has %u free assignable device(s) matching "
        "vendor_id=0x%04x device_id=0x%04x",
        count, selector.vendor_id(), selector.device_id()));
  }
  return *std::move(found);
}

}  // namespace model
}  // namespace iommu
