// The "Key: value" views of single objects of client/format.h (FormatTenant
// ... FormatGrant), and the container lines describe shows too.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/format.h"
#include "client/format_internal.h"
#include "common/labels.h"
#include "common/validation.h"
#include "google/protobuf/repeated_ptr_field.h"

namespace iommu {
namespace client {
namespace {

using ::iommu::v1::Container;
using ::iommu::v1::Node;
using ::iommu::v1::Tenant;
using ::iommu::v1::Window;

// "8.0GiB (8589934592 bytes)".
std::string BytesExact(uint64_t bytes) {
  return absl::StrCat(FormatBytes(bytes), " (", bytes, " bytes)");
}

std::string IdList(const google::protobuf::RepeatedPtrField<std::string>& ids) {
  return ids.empty() ? "none" : absl::StrJoin(ids, ", ");
}

}  // namespace

void AddContainerDetails(const Container& c, Details& d) {
  d.Add("ID", c.id());
  d.Add("Name", OrDash(c.name()));
  d.Add("Labels", OrDash(LabelsText(c.labels())));
  d.Add("Tenant", c.tenant_id());
  d.Add("Node", c.node());
  d.Add("State", ContainerStateName(c.state()));
  if (!c.status_message().empty()) d.Add("Status", c.status_message());
  d.Add("Devices", c.devices().empty() ? "-" : absl::StrJoin(c.devices(), ", "));
  d.Add("Page sizes", FormatPageSizes(c.geometry().page_size_bitmap()));
  d.Add("Max mappings",
        c.geometry().max_mappings() == 0 ? "unlimited" : absl::StrCat(c.geometry().max_mappings()));
  std::vector<std::string> ranges;
  for (const iommu::v1::IovaRange& r : c.geometry().usable_ranges()) {
    ranges.push_back(absl::StrCat(Hex(r.start()), "-", Hex(r.last())));
  }
  d.Add("Usable IOVA", ranges.empty() ? "-" : absl::StrJoin(ranges, ", "));
  d.Add("Windows", absl::StrCat(c.window_count(), " (", FormatBytes(c.window_bytes()), ")"));
  d.Add("Pin budget", BytesExact(c.pin_budget_bytes()));
  d.Add("Created", FormatTimeMs(c.create_time_ms()));
}

std::string FormatTenant(const Tenant& tenant) {
  Details d;
  d.Add("ID", tenant.id());
  d.Add("Labels", OrDash(LabelsText(tenant.labels())));
  d.Add("Pinned quota", BytesExact(tenant.quota().pinned_bytes()));
  d.Add("Max containers", OrUnlimited(tenant.quota().max_containers(), false));
  d.Add("Window quota", OrUnlimited(tenant.quota().window_bytes(), true));
  d.Add("Created", FormatTimeMs(tenant.create_time_ms()));
  return d.Render();
}

std::string FormatNode(const Node& node) {
  Details d;
  d.Add("Name", node.name());
  d.Add("State", NodeStateName(node.state()));
  d.Add("Cordoned", YesNo(node.cordoned()));
  d.Add("Backend", absl::StrCat(OrDash(node.backend()), node.simulated() ? " (simulated)" : ""));
  d.Add("Devices", absl::StrCat(node.device_count(), " (", node.free_device_count(), " free)"));
  d.Add("Containers", absl::StrCat(node.container_count()));
  d.Add("Agent address", OrDash(node.agent_address()));
  d.Add("Launcher socket", OrDash(node.launcher_socket()));
  d.Add("Agent version", OrDash(node.agent_version()));
  d.Add("Last heartbeat", FormatTimeMs(node.last_heartbeat_ms()));
  return d.Render();
}

std::string FormatContainer(const Container& c) {
  Details d;
  AddContainerDetails(c, d);
  return d.Render();
}

std::string FormatWindow(const Window& w) {
  Details d;
  d.Add("ID", w.id());
  d.Add("Container", w.container_id());
  d.Add("Tenant", w.tenant_id());
  d.Add("Base", Hex(w.base()));
  d.Add("Last", w.size() == 0 ? "-" : Hex(w.base() + w.size() - 1));
  d.Add("Size", absl::StrCat(FormatBytes(w.size()), " (", Hex(w.size()), ")"));
  d.Add("Alignment", absl::StrCat(FormatBytes(w.alignment()), " (", Hex(w.alignment()), ")"));
  d.Add("Created", FormatTimeMs(w.create_time_ms()));
  return d.Render();
}

std::string FormatDrain(const iommu::v1::DrainNodeResponse& response) {
  Details d;
  d.Add("Node", response.node().name());
  d.Add("State", NodeStateCell(response.node()));
  d.Add("Deleted containers", IdList(response.deleted_container_ids()));
  d.Add("Remaining containers", IdList(response.remaining_container_ids()));
  return d.Render();
}

std::string FormatGrant(const iommu::v1::GrantLauncherResponse& grant) {
  Details d;
  d.Add("Token", grant.token());
  d.Add("Node", grant.node());
  d.Add("Launcher socket", OrDash(grant.launcher_socket()));
  d.Add("Container", grant.container_id());
  d.Add("Tenant", grant.tenant_id());
  d.Add("Expires", FormatTimeMs(grant.expires_ms()));
  if (grant.windows().empty()) d.Add("Windows", "none");
  for (int i = 0; i < grant.windows_size(); ++i) {
    const Window& w = grant.windows(i);
    const std::string last = w.size() == 0 ? "-" : Hex(w.base() + w.size() - 1);
    d.Add(i == 0 ? "Windows" : "",
          absl::StrCat(w.id(), "  ", Hex(w.base()), "-", last, "  (", FormatBytes(w.size()), ")"));
  }
  return d.Render();
}

}  // namespace client
}  // namespace iommu
