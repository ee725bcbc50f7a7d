// The describe and top views of client/format.h (FormatAge, FormatEventTable,
// Format*Description, FormatFleetSummary).
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/format.h"
#include "client/format_internal.h"
#include "common/validation.h"
#include "google/protobuf/map.h"
#include "google/protobuf/repeated_ptr_field.h"

namespace iommu {
namespace client {
namespace {

using ::iommu::v1::Container;
using ::iommu::v1::Tenant;
using ::iommu::v1::Window;

// `body` with every line indented by two spaces.
std::string Indent(const std::string& body) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(body, '\n', absl::SkipEmpty())) {
    absl::StrAppend(&out, "  ", line, "\n");
  }
  return out;
}

// "\nTitle:\n" and the body indented; "\nTitle:  <none>\n" when empty.
std::string Section(absl::string_view title, const std::string& body) {
  if (body.empty()) return absl::StrCat("\n", title, ":  <none>\n");
  return absl::StrCat("\n", title, ":\n", Indent(body));
}

// "... and 12 more (iommuctl container list --node=n1)".
std::string More(uint32_t more, absl::string_view command) {
  if (more == 0) return "";
  return absl::StrCat("... and ", more, " more (", command, ")\n");
}

std::string EventTypeName(iommu::v1::EventType type) {
  switch (type) {
    case iommu::v1::EVENT_TYPE_NORMAL:
      return "Normal";
    case iommu::v1::EVENT_TYPE_WARNING:
      return "Warning";
    default:
      return "Unknown";
  }
}

std::string Saved(uint64_t mapped, uint64_t pinned) {
  return FormatBytes(mapped > pinned ? mapped - pinned : 0);
}

std::string DeletedHeader(absl::string_view kind, absl::string_view id) {
  Details d;
  d.Add(std::string(kind), std::string(id));
  d.Add("State", "deleted (only its recent events are left)");
  return d.Render();
}

std::string ContainerRows(const google::protobuf::RepeatedPtrField<Container>& containers,
                          bool show_tenant, bool show_node) {
  if (containers.empty()) return "";
  std::vector<std::string> header = {"ID", "NAME"};
  if (show_tenant) header.push_back("TENANT");
  if (show_node) header.push_back("NODE");
  for (const char* h : {"STATE", "DEVICES", "BUDGET", "WINDOWS", "WINDOW-BYTES"}) {
    header.push_back(h);
  }
  Table table(header);
  for (const Container& c : containers) {
    std::vector<std::string> row = {c.id(), OrDash(c.name())};
    if (show_tenant) row.push_back(c.tenant_id());
    if (show_node) row.push_back(c.node());
    row.push_back(ContainerStateName(c.state()));
    row.push_back(c.devices().empty() ? "-" : absl::StrJoin(c.devices(), ","));
    row.push_back(FormatBytes(c.pin_budget_bytes()));
    row.push_back(absl::StrCat(c.window_count()));
    row.push_back(FormatBytes(c.window_bytes()));
    table.AddRow(std::move(row));
  }
  return table.Render();
}

// Names, at most `max` of them, then "+N more".
std::string FirstNames(const google::protobuf::RepeatedPtrField<std::string>& names, int max = 5) {
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(max, names.size()));
  std::string out = absl::StrJoin(shown, ", ");
  if (names.size() > max) absl::StrAppend(&out, ", +", names.size() - max, " more");
  return out;
}

// "2 ready, 1 unavailable" from a count per state name, in a fixed order for
// the names known and alphabetical after them.
std::string ByState(const google::protobuf::Map<std::string, uint32_t>& counts,
                    const std::vector<std::string>& order) {
  std::vector<std::string> parts;
  for (const std::string& name : order) {
    auto it = counts.find(name);
    if (it != counts.end() && it->second > 0) parts.push_back(absl::StrCat(it->second, " ", name));
  }
  std::map<std::string, uint32_t> rest;
  for (const auto& [name, n] : counts) {
    if (std::find(order.begin(), order.end(), name) == order.end() && n > 0) rest[name] = n;
  }
  for (const auto& [name, n] : rest) parts.push_back(absl::StrCat(n, " ", name));
  return parts.empty() ? "" : absl::StrJoin(parts, ", ");
}

// The "Events:" section of a describe.
std::string EventsSection(const google::protobuf::RepeatedPtrField<iommu::v1::Event>& events,
                          int64_t now_ms) {
  return Section("Events", events.empty() ? "" : FormatEventTable(events, now_ms));
}

}  // namespace

std::string FormatAge(int64_t ms) {
  const int64_t s = std::max<int64_t>(ms, 0) / 1000;
  if (s < 120) return absl::StrCat(s, "s");
  const int64_t m = s / 60;
  if (m < 120) return absl::StrCat(m, "m");
  const int64_t h = m / 60;
  if (h < 48) return absl::StrCat(h, "h");
  return absl::StrCat(h / 24, "d");
}

std::string FormatEventTable(const google::protobuf::RepeatedPtrField<iommu::v1::Event>& events,
                             int64_t now_ms) {
  if (events.empty()) return "<none>\n";
  Table table({"AGE", "TYPE", "REASON", "MESSAGE"});
  for (const iommu::v1::Event& e : events) {
    std::string age = FormatAge(now_ms - e.last_time_ms());
    if (e.count() > 1) {
      absl::StrAppend(&age, " (x", e.count(), " over ", FormatAge(now_ms - e.first_time_ms()), ")");
    }
    table.AddRow({age, EventTypeName(e.type()), e.reason(), e.message()});
  }
  return table.Render();
}

std::string FormatTenantDescription(const iommu::ctl::TenantDescription& d, int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("ID", d.tenant().id()), EventsSection(d.events(), now_ms));
  }
  const Tenant& t = d.tenant();
  const iommu::v1::TenantUsage& u = d.usage();
  Details details;
  details.Add("ID", t.id());
  details.Add("Created", FormatTimeMs(t.create_time_ms()));
  details.Add("Pinned", absl::StrCat(FormatBytes(u.pinned_bytes()), " of ",
                                     FormatBytes(t.quota().pinned_bytes()), " quota (",
                                     Percent(u.pinned_bytes(), t.quota().pinned_bytes()),
                                     "), billed once per host page"));
  details.Add("Mapped", absl::StrCat(FormatBytes(u.mapped_bytes()), " (dedup saved ",
                                     FormatBytes(u.dedup_saved_bytes()), ")"));
  details.Add("Containers",
              absl::StrCat(u.containers(), " of ", OrUnlimited(t.quota().max_containers(), false)));
  details.Add("Windows", absl::StrCat(u.windows(), ", ", FormatBytes(u.window_bytes()), " of ",
                                      OrUnlimited(t.quota().window_bytes(), true)));
  std::string by_node;
  if (!d.usage_by_node().empty()) {
    Table table({"NODE", "CONTAINERS", "WINDOWS", "WINDOW-BYTES", "PINNED(BILLED)", "MAPPED",
                 "DEDUP-SAVED"});
    for (const iommu::v1::NodeUsage& n : d.usage_by_node()) {
      table.AddRow({n.node(), absl::StrCat(n.containers()), absl::StrCat(n.windows()),
                    FormatBytes(n.window_bytes()), FormatBytes(n.pinned_bytes()),
                    FormatBytes(n.mapped_bytes()), Saved(n.mapped_bytes(), n.pinned_bytes())});
    }
    by_node = table.Render();
  }
  std::string containers = ContainerRows(d.containers(), false, true);
  absl::StrAppend(&containers, More(d.more_containers(),
                                    absl::StrCat("iommuctl container list --tenant=", t.id())));
  return absl::StrCat(details.Render(), Section("Usage by node", by_node),
                      Section("Containers", containers), EventsSection(d.events(), now_ms));
}

std::string FormatNodeDescription(const iommu::ctl::NodeDescription& d, int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("Name", d.node().name()), EventsSection(d.events(), now_ms));
  }
  std::string devices;
  if (!d.devices().empty()) {
    iommu::v1::ListDevicesResponse list;
    *list.mutable_devices() = d.devices();
    devices = FormatDeviceTable(list);
  }
  absl::StrAppend(&devices, More(d.more_devices(),
                                 absl::StrCat("iommuctl device list --node=", d.node().name())));
  std::string containers = ContainerRows(d.containers(), true, false);
  absl::StrAppend(
      &containers,
      More(d.more_containers(), absl::StrCat("iommuctl container list --node=", d.node().name())));
  std::string usage;
  if (!d.usage().empty()) {
    Table table({"TENANT", "CONTAINERS", "WINDOWS", "WINDOW-BYTES", "PINNED(BILLED)", "MAPPED",
                 "DEDUP-SAVED"});
    for (const iommu::v1::NodeUsage& n : d.usage()) {
      table.AddRow({n.tenant_id(), absl::StrCat(n.containers()), absl::StrCat(n.windows()),
                    FormatBytes(n.window_bytes()), FormatBytes(n.pinned_bytes()),
                    FormatBytes(n.mapped_bytes()), Saved(n.mapped_bytes(), n.pinned_bytes())});
    }
    usage = table.Render();
  }
  return absl::StrCat(FormatNode(d.node()), Section("Devices", devices),
                      Section("Containers", containers), Section("Usage by tenant", usage),
                      EventsSection(d.events(), now_ms));
}

std::string FormatContainerDescription(const iommu::ctl::ContainerDescription& d, int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("ID", d.container().id()), EventsSection(d.events(), now_ms));
  }
  const Container& c = d.container();
  const iommu::v1::NodeUsage& u = d.usage();
  Details fields;
  AddContainerDetails(c, fields);
  fields.Add("Usage", absl::StrCat("tenant ", c.tenant_id(), " on node ", c.node(), ": ",
                                   FormatBytes(u.pinned_bytes()), " pinned (billed), ",
                                   FormatBytes(u.mapped_bytes()), " mapped, dedup saved ",
                                   Saved(u.mapped_bytes(), u.pinned_bytes())));
  std::string windows;
  if (!d.windows().empty()) {
    Table table({"ID", "BASE", "LAST", "SIZE", "ALIGN", "CREATED"});
    for (const Window& w : d.windows()) {
      table.AddRow({w.id(), Hex(w.base()), w.size() == 0 ? "-" : Hex(w.base() + w.size() - 1),
                    FormatBytes(w.size()), FormatBytes(w.alignment()),
                    FormatTimeMs(w.create_time_ms())});
    }
    windows = table.Render();
  }
  absl::StrAppend(
      &windows, More(d.more_windows(), absl::StrCat("iommuctl window list --container=", c.id())));
  return absl::StrCat(fields.Render(), Section("Windows", windows),
                      EventsSection(d.events(), now_ms));
}

std::string FormatWindowDescription(const iommu::ctl::WindowDescription& d, int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("ID", d.window().id()), EventsSection(d.events(), now_ms));
  }
  std::string container;
  if (d.has_container()) {
    const Container& c = d.container();
    Details details;
    details.Add("ID", c.id());
    details.Add("Node", c.node());
    details.Add("State", ContainerStateName(c.state()));
    details.Add("Windows",
                absl::StrCat(c.window_count(), " (", FormatBytes(c.window_bytes()), ")"));
    container = details.Render();
  }
  return absl::StrCat(FormatWindow(d.window()), Section("Container", container),
                      EventsSection(d.events(), now_ms));
}

std::string FormatFleetSummary(const iommu::ctl::FleetSummary& summary) {
  Details head;
  head.Add("As of", FormatTimeMs(summary.time_ms()));
  if (!summary.leader().empty()) {
    head.Add("Leader",
             absl::StrCat(summary.leader(), " since ", FormatTimeMs(summary.leader_since_ms()),
                          ", store ", summary.store()));
  }
  if (summary.nodes_visible()) {
    std::string nodes = absl::StrCat(summary.nodes());
    const std::string states =
        ByState(summary.nodes_by_state(), {"ready", "reconciling", "unavailable"});
    if (!states.empty()) absl::StrAppend(&nodes, ": ", states);
    if (!summary.nodes_not_ready().empty()) {
      absl::StrAppend(&nodes, " (not ready: ", FirstNames(summary.nodes_not_ready()), ")");
    }
    if (summary.nodes_cordoned() > 0) {
      absl::StrAppend(&nodes, "; ", summary.nodes_cordoned(), " cordoned (",
                      FirstNames(summary.nodes_cordoned_names()), ")");
    }
    head.Add("Nodes", nodes);
  }
  std::string containers = absl::StrCat(summary.containers());
  const std::string states =
      ByState(summary.containers_by_state(), {"ready", "node-unavailable", "failed", "deleting"});
  if (!states.empty()) absl::StrAppend(&containers, ": ", states);
  head.Add("Containers", containers);
  head.Add("Tenants", absl::StrCat(summary.tenants_size()));

  Table table({"TENANT", "PINNED(BILLED)", "PINNED-QUOTA", "USE", "MAPPED", "DEDUP-SAVED",
               "CONTAINERS", "WINDOWS", "WINDOW-BYTES"});
  auto row = [&table](const std::string& name, const iommu::v1::TenantUsage& u) {
    table.AddRow({name, FormatBytes(u.pinned_bytes()), FormatBytes(u.quota().pinned_bytes()),
                  Percent(u.pinned_bytes(), u.quota().pinned_bytes()),
                  FormatBytes(u.mapped_bytes()), FormatBytes(u.dedup_saved_bytes()),
                  absl::StrCat(u.containers()), absl::StrCat(u.windows()),
                  FormatBytes(u.window_bytes())});
  };
  for (const iommu::v1::TenantUsage& u : summary.tenants()) row(u.tenant_id(), u);
  row("TOTAL", summary.total());
  return absl::StrCat(head.Render(), "\n", table.Render());
}

}  // namespace client
}  // namespace iommu
