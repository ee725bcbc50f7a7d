// The list tables of client/format.h (FormatTenantTable ... FormatUsage).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/format.h"
#include "client/format_internal.h"
#include "common/labels.h"
#include "common/validation.h"

namespace iommu {
namespace client {
namespace {

using ::iommu::v1::Container;
using ::iommu::v1::Node;
using ::iommu::v1::Tenant;
using ::iommu::v1::Window;

std::string PciId(uint32_t id) { return absl::StrFormat("0x%04x", id); }

}  // namespace

std::string FormatTenantTable(const iommu::v1::ListTenantsResponse& response, bool headers,
                              bool wide) {
  std::vector<std::string> header = {"ID", "PINNED-QUOTA", "MAX-CONTAINERS", "WINDOW-QUOTA",
                                     "CREATED"};
  if (wide) header.push_back("LABELS");
  Table table(std::move(header));
  for (const Tenant& t : response.tenants()) {
    std::vector<std::string> row = {t.id(), FormatBytes(t.quota().pinned_bytes()),
                                    OrUnlimited(t.quota().max_containers(), false),
                                    OrUnlimited(t.quota().window_bytes(), true),
                                    FormatTimeMs(t.create_time_ms())};
    if (wide) row.push_back(OrDash(LabelsText(t.labels())));
    table.AddRow(std::move(row));
  }
  return table.Render(headers);
}

std::string FormatNodeTable(const iommu::v1::ListNodesResponse& response, bool headers, bool wide) {
  std::vector<std::string> header = {"NAME",       "STATE", "BACKEND",       "DEVICES(FREE/ALL)",
                                     "CONTAINERS", "AGENT", "LAST-HEARTBEAT"};
  if (wide) header.insert(header.end(), {"AGENT-VERSION", "LAUNCHER-SOCKET"});
  Table table(std::move(header));
  for (const Node& n : response.nodes()) {
    std::vector<std::string> row = {n.name(),
                                    NodeStateCell(n),
                                    OrDash(n.backend()),
                                    absl::StrCat(n.free_device_count(), "/", n.device_count()),
                                    absl::StrCat(n.container_count()),
                                    OrDash(n.agent_address()),
                                    FormatTimeMs(n.last_heartbeat_ms())};
    if (wide) row.insert(row.end(), {OrDash(n.agent_version()), OrDash(n.launcher_socket())});
    table.AddRow(std::move(row));
  }
  return table.Render(headers);
}

std::string FormatDeviceTable(const iommu::v1::ListDevicesResponse& response, bool headers) {
  Table table({"ADDRESS", "GROUP", "VENDOR", "DEVICE", "DRIVER", "ASSIGNABLE", "CONTAINER"});
  for (const iommu::v1::Device& d : response.devices()) {
    std::string assignable = YesNo(d.assignable());
    if (!d.assignable() && !d.unassignable_reason().empty()) {
      absl::StrAppend(&assignable, " (", d.unassignable_reason(), ")");
    }
    table.AddRow({d.address(), absl::StrCat(d.iommu_group()), PciId(d.vendor_id()),
                  PciId(d.device_id()), OrDash(d.driver()), assignable, OrDash(d.container_id())});
  }
  return table.Render(headers);
}

std::string FormatContainerTable(const iommu::v1::ListContainersResponse& response, bool headers,
                                 bool wide) {
  std::vector<std::string> header = {"ID",      "NAME",   "TENANT",  "NODE",         "STATE",
                                     "DEVICES", "BUDGET", "WINDOWS", "WINDOW-BYTES", "CREATED"};
  if (wide) header.insert(header.end(), {"PAGE-SIZES", "MAX-MAPPINGS", "LABELS", "MESSAGE"});
  Table table(std::move(header));
  for (const Container& c : response.containers()) {
    std::vector<std::string> row = {c.id(),
                                    OrDash(c.name()),
                                    c.tenant_id(),
                                    c.node(),
                                    ContainerStateName(c.state()),
                                    c.devices().empty() ? "-" : absl::StrJoin(c.devices(), ","),
                                    FormatBytes(c.pin_budget_bytes()),
                                    absl::StrCat(c.window_count()),
                                    FormatBytes(c.window_bytes()),
                                    FormatTimeMs(c.create_time_ms())};
    if (wide) {
      const uint32_t max = c.geometry().max_mappings();
      row.insert(row.end(), {FormatPageSizes(c.geometry().page_size_bitmap()),
                             max == 0 ? "unlimited" : absl::StrCat(max),
                             OrDash(LabelsText(c.labels())), OrDash(c.status_message())});
    }
    table.AddRow(std::move(row));
  }
  return table.Render(headers);
}

std::string FormatWindowTable(const iommu::v1::ListWindowsResponse& response, bool headers) {
  Table table({"ID", "CONTAINER", "TENANT", "BASE", "LAST", "SIZE", "ALIGN", "CREATED"});
  for (const Window& w : response.windows()) {
    table.AddRow({w.id(), w.container_id(), w.tenant_id(), Hex(w.base()),
                  w.size() == 0 ? "-" : Hex(w.base() + w.size() - 1), FormatBytes(w.size()),
                  FormatBytes(w.alignment()), FormatTimeMs(w.create_time_ms())});
  }
  return table.Render(headers);
}

std::string FormatUsage(const iommu::v1::GetUsageResponse& response, bool headers) {
  Table tenants({"TENANT", "PINNED(BILLED)", "PINNED-QUOTA", "USE", "MAPPED", "DEDUP-SAVED",
                 "WINDOW-BYTES", "WINDOW-QUOTA", "CONTAINERS", "MAX-CONTAINERS", "WINDOWS"});
  for (const iommu::v1::TenantUsage& u : response.tenants()) {
    tenants.AddRow(
        {u.tenant_id(), FormatBytes(u.pinned_bytes()), FormatBytes(u.quota().pinned_bytes()),
         Percent(u.pinned_bytes(), u.quota().pinned_bytes()), FormatBytes(u.mapped_bytes()),
         FormatBytes(u.dedup_saved_bytes()), FormatBytes(u.window_bytes()),
         OrUnlimited(u.quota().window_bytes(), true), absl::StrCat(u.containers()),
         OrUnlimited(u.quota().max_containers(), false), absl::StrCat(u.windows())});
  }
  Table nodes({"TENANT", "NODE", "PINNED(BILLED)", "MAPPED", "DEDUP-SAVED", "WINDOW-BYTES",
               "CONTAINERS", "WINDOWS"});
  for (const iommu::v1::NodeUsage& u : response.nodes()) {
    const uint64_t saved =
        u.mapped_bytes() > u.pinned_bytes() ? u.mapped_bytes() - u.pinned_bytes() : 0;
    nodes.AddRow({u.tenant_id(), u.node(), FormatBytes(u.pinned_bytes()),
                  FormatBytes(u.mapped_bytes()), FormatBytes(saved), FormatBytes(u.window_bytes()),
                  absl::StrCat(u.containers()), absl::StrCat(u.windows())});
  }
  return absl::StrCat(tenants.Render(headers), "\n", nodes.Render(headers));
}

}  // namespace client
}  // namespace iommu
