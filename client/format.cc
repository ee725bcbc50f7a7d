#include "client/format.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/labels.h"
#include "common/validation.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace iommu {
namespace client {
namespace {

using ::iommu::v1::Container;
using ::iommu::v1::ContainerState;
using ::iommu::v1::Node;
using ::iommu::v1::NodeState;
using ::iommu::v1::Tenant;
using ::iommu::v1::Window;

// "Key: value" lines with the values aligned. A value added with an empty
// key continues the value above it on a line of its own.
class Details final {
 public:
  void Add(std::string key, std::string value) {
    lines_.emplace_back(std::move(key), std::move(value));
  }
  std::string Render() const {
    size_t width = 0;
    for (const auto& [k, v] : lines_) width = std::max(width, k.size() + 1);
    std::string out;
    for (const auto& [k, v] : lines_) {
      std::string line = absl::StrFormat("%-*s  %s", static_cast<int>(width),
                                         k.empty() ? "" : absl::StrCat(k, ":"), v);
      absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
    }
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::string>> lines_;
};

std::string OrUnlimited(uint64_t limit, bool bytes) {
  if (limit == 0) return "unlimited";
  return bytes ? FormatBytes(limit) : absl::StrCat(limit);
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

std::string YesNo(bool b) { return b ? "yes" : "no"; }

std::string NodeStateCell(const Node& node) {
  std::string s = NodeStateName(node.state());
  if (node.cordoned()) absl::StrAppend(&s, ",cordoned");
  return s;
}

std::string PciId(uint32_t id) { return absl::StrFormat("0x%04x", id); }

std::string Percent(uint64_t used, uint64_t limit) {
  if (limit == 0) return "-";
  return absl::StrFormat("%.0f%%", 100.0 * static_cast<double>(used) / static_cast<double>(limit));
}

// "8.0GiB (8589934592 bytes)".
std::string BytesExact(uint64_t bytes) {
  return absl::StrCat(FormatBytes(bytes), " (", bytes, " bytes)");
}

std::string IdList(const google::protobuf::RepeatedPtrField<std::string>& ids) {
  return ids.empty() ? "none" : absl::StrJoin(ids, ", ");
}


// ---------------------------------------------------------------- JSON

namespace pb = ::google::protobuf;

void AppendJsonString(absl::string_view text, std::string* out) {
  out->push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void AppendJsonDouble(double v, std::string* out) {
  if (std::isnan(v)) {
    out->append("\"NaN\"");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  } else {
    absl::StrAppendFormat(out, "%.17g", v);
  }
}

void AppendJsonMessage(const pb::Message& message, int indent, std::string* out);

// One value of `field` (element `index` of a repeated field, else -1).
void AppendJsonValue(const pb::Message& m, const pb::FieldDescriptor* f, int index, int indent,
                     std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      absl::StrAppend(out, rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_INT64:
      absl::StrAppend(out, rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      absl::StrAppend(out, rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      absl::StrAppend(out, rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      AppendJsonDouble(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f), out);
      break;
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      AppendJsonDouble(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f), out);
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      out->append((rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false");
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const int number = rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      const pb::EnumValueDescriptor* v = f->enum_type()->FindValueByNumber(number);
      if (v != nullptr) {
        AppendJsonString(v->name(), out);
      } else {
        absl::StrAppend(out, number);
      }
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      const std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      AppendJsonString(f->type() == pb::FieldDescriptor::TYPE_BYTES ? absl::Base64Escape(v) : v,
                       out);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      AppendJsonMessage(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f), indent,
                        out);
      break;
  }
}

// A map entry's key as a JSON object key.
std::string MapKey(const pb::Message& entry) {
  const pb::FieldDescriptor* k = entry.GetDescriptor()->map_key();
  std::string text;
  if (k->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    text = entry.GetReflection()->GetString(entry, k);
  } else {
    AppendJsonValue(entry, k, -1, 0, &text);
  }
  return text;
}

// True for an int64 field holding milliseconds since the epoch: every int64
// field of the API whose name ends in "_ms" (create_time_ms, expires_ms, ...).
bool IsEpochMillis(const pb::FieldDescriptor* f) {
  return !f->is_repeated() && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT64 &&
         absl::EndsWith(f->name(), "_ms");
}

// Map field `f` of `m` (a member of an object indented by `indent`) as a JSON
// object, its entries sorted by key so that the output is stable.
void AppendJsonMap(const pb::Message& m, const pb::FieldDescriptor* f, int indent,
                   std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  const std::string pad(indent + 2, ' ');
  const int n = r->FieldSize(m, f);
  if (n == 0) {
    out->append("{}");
    return;
  }
  std::map<std::string, const pb::Message*> entries;
  for (int j = 0; j < n; ++j) {
    const pb::Message& entry = r->GetRepeatedMessage(m, f, j);
    entries[MapKey(entry)] = &entry;
  }
  out->append("{\n");
  bool first_entry = true;
  for (const auto& [k, entry] : entries) {
    if (!first_entry) out->append(",\n");
    first_entry = false;
    absl::StrAppend(out, pad, "  ");
    AppendJsonString(k, out);
    out->append(": ");
    AppendJsonValue(*entry, entry->GetDescriptor()->map_value(), -1, indent + 4, out);
  }
  absl::StrAppend(out, "\n", pad, "}");
}

// Repeated field `f` of `m` (a member of an object indented by `indent`) as a
// JSON array.
void AppendJsonArray(const pb::Message& m, const pb::FieldDescriptor* f, int indent,
                     std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  const std::string pad(indent + 2, ' ');
  const int n = r->FieldSize(m, f);
  if (n == 0) {
    out->append("[]");
    return;
  }
  out->append("[\n");
  for (int j = 0; j < n; ++j) {
    if (j > 0) out->append(",\n");
    absl::StrAppend(out, pad, "  ");
    AppendJsonValue(m, f, j, indent + 4, out);
  }
  absl::StrAppend(out, "\n", pad, "]");
}

void AppendJsonMessage(const pb::Message& m, int indent, std::string* out) {
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::Reflection* r = m.GetReflection();
  const std::string pad(indent + 2, ' ');
  bool first = true;
  auto key = [&](absl::string_view name) {
    out->append(first ? "{\n" : ",\n");
    first = false;
    out->append(pad);
    AppendJsonString(name, out);
    out->append(": ");
  };
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    // Like the proto3 JSON mapping with always_print_primitive_fields:
    // singular messages and oneof members only when set; the rest always.
    if (!f->is_repeated() && (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE ||
                              f->containing_oneof() != nullptr) &&
        !r->HasField(m, f)) {
      continue;
    }
    key(f->name());
    if (f->is_map()) {
      AppendJsonMap(m, f, indent, out);
    } else if (f->is_repeated()) {
      AppendJsonArray(m, f, indent, out);
    } else {
      AppendJsonValue(m, f, -1, indent + 2, out);
      if (IsEpochMillis(f)) {
        // The same instant for people and for kubectl-style tools.
        const int64_t ms = r->GetInt64(m, f);
        key(absl::StripSuffix(f->name(), "_ms"));
        if (ms == 0) {
          out->append("null");
        } else {
          AppendJsonString(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms),
                                            absl::UTCTimeZone()),
                           out);
        }
      }
    }
  }
  if (first) {
    out->append("{}");
  } else {
    absl::StrAppend(out, "\n", std::string(indent, ' '), "}");
  }
}

}  // namespace

// ---------------------------------------------------------------- Table

Table::Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(rows_[0].size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render(bool header) const {
  std::vector<size_t> widths(rows_[0].size(), 0);
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (size_t r = header ? 0 : 1; r < rows_.size(); ++r) {
    const std::vector<std::string>& row = rows_[r];
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line.append("  ");
      line.append(row[i]);
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size(), ' ');
    }
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  return out;
}

// ---------------------------------------------------------------- scalars

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, "B");
  int unit = 0;
  double value = static_cast<double>(bytes) / 1024.0;
  while (value >= 1024.0 && unit < 5) {
    value /= 1024.0;
    ++unit;
  }
  // Rounding may reach 1024.0 of a unit: show the next unit instead.
  if (absl::StrFormat("%.1f", value) == "1024.0" && unit < 5) {
    value /= 1024.0;
    ++unit;
  }
  return absl::StrFormat("%.1f%s", value, kUnits[unit]);
}

std::string FormatTimeMs(int64_t ms) {
  if (ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

std::string FormatPageSizes(uint64_t page_size_bitmap) {
  std::vector<std::string> sizes;
  for (int bit = 0; bit < 64; ++bit) {
    if (page_size_bitmap & (uint64_t{1} << bit)) {
      const uint64_t size = uint64_t{1} << bit;
      // Page sizes are powers of two: show them without the decimal.
      std::string s = FormatBytes(size);
      absl::StrReplaceAll({{".0", ""}}, &s);
      sizes.push_back(s);
    }
  }
  return sizes.empty() ? "-" : absl::StrJoin(sizes, ",");
}

std::string ContainerStateName(ContainerState state) {
  switch (state) {
    case iommu::v1::CONTAINER_STATE_READY:
      return "ready";
    case iommu::v1::CONTAINER_STATE_NODE_UNAVAILABLE:
      return "node-unavailable";
    case iommu::v1::CONTAINER_STATE_FAILED:
      return "failed";
    case iommu::v1::CONTAINER_STATE_DELETING:
      return "deleting";
    default:
      return "unknown";
  }
}

std::string NodeStateName(NodeState state) {
  switch (state) {
    case iommu::v1::NODE_STATE_READY:
      return "ready";
    case iommu::v1::NODE_STATE_UNAVAILABLE:
      return "unavailable";
    case iommu::v1::NODE_STATE_RECONCILING:
      return "reconciling";
    default:
      return "unknown";
  }
}

absl::StatusOr<std::string> FormatJson(const google::protobuf::Message& message) {
  std::string out;
  AppendJsonMessage(message, 0, &out);
  out.push_back('\n');
  return out;
}

// ---------------------------------------------------------------- lists

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

std::string FormatNodeTable(const iommu::v1::ListNodesResponse& response, bool headers,
                            bool wide) {
  std::vector<std::string> header = {"NAME",       "STATE", "BACKEND",       "DEVICES(FREE/ALL)",
                                     "CONTAINERS", "AGENT", "LAST-HEARTBEAT"};
  if (wide) header.insert(header.end(), {"AGENT-VERSION", "LAUNCHER-SOCKET"});
  Table table(std::move(header));
  for (const Node& n : response.nodes()) {
    std::vector<std::string> row = {n.name(), NodeStateCell(n), OrDash(n.backend()),
                                    absl::StrCat(n.free_device_count(), "/", n.device_count()),
                                    absl::StrCat(n.container_count()), OrDash(n.agent_address()),
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
                  PciId(d.device_id()), OrDash(d.driver()), assignable,
                  OrDash(d.container_id())});
  }
  return table.Render(headers);
}

std::string FormatContainerTable(const iommu::v1::ListContainersResponse& response, bool headers,
                                 bool wide) {
  std::vector<std::string> header = {"ID",      "NAME",    "TENANT",       "NODE",
                                     "STATE",   "DEVICES", "BUDGET",       "WINDOWS",
                                     "WINDOW-BYTES", "CREATED"};
  if (wide) header.insert(header.end(), {"PAGE-SIZES", "MAX-MAPPINGS", "LABELS", "MESSAGE"});
  Table table(std::move(header));
  for (const Container& c : response.containers()) {
    std::vector<std::string> row = {c.id(), OrDash(c.name()), c.tenant_id(), c.node(),
                                    ContainerStateName(c.state()),
                                    c.devices().empty() ? "-" : absl::StrJoin(c.devices(), ","),
                                    FormatBytes(c.pin_budget_bytes()),
                                    absl::StrCat(c.window_count()), FormatBytes(c.window_bytes()),
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
    tenants.AddRow({u.tenant_id(), FormatBytes(u.pinned_bytes()),
                    FormatBytes(u.quota().pinned_bytes()),
                    Percent(u.pinned_bytes(), u.quota().pinned_bytes()),
                    FormatBytes(u.mapped_bytes()), FormatBytes(u.dedup_saved_bytes()),
                    FormatBytes(u.window_bytes()), OrUnlimited(u.quota().window_bytes(), true),
                    absl::StrCat(u.containers()), OrUnlimited(u.quota().max_containers(), false),
                    absl::StrCat(u.windows())});
  }
  Table nodes({"TENANT", "NODE", "PINNED(BILLED)", "MAPPED", "DEDUP-SAVED", "WINDOW-BYTES",
               "CONTAINERS", "WINDOWS"});
  for (const iommu::v1::NodeUsage& u : response.nodes()) {
    const uint64_t saved = u.mapped_bytes() > u.pinned_bytes() ? u.mapped_bytes() - u.pinned_bytes()
                                                               : 0;
    nodes.AddRow({u.tenant_id(), u.node(), FormatBytes(u.pinned_bytes()),
                  FormatBytes(u.mapped_bytes()), FormatBytes(saved), FormatBytes(u.window_bytes()),
                  absl::StrCat(u.containers()), absl::StrCat(u.windows())});
  }
  return absl::StrCat(tenants.Render(headers), "\n", nodes.Render(headers));
}

// ---------------------------------------------------------------- objects

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

namespace {

// The lines of FormatContainer, for views that add their own below them.
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
  d.Add("Max mappings", c.geometry().max_mappings() == 0
                            ? "unlimited"
                            : absl::StrCat(c.geometry().max_mappings()));
  std::vector<std::string> ranges;
  for (const iommu::v1::IovaRange& r : c.geometry().usable_ranges()) {
    ranges.push_back(absl::StrCat(Hex(r.start()), "-", Hex(r.last())));
  }
  d.Add("Usable IOVA", ranges.empty() ? "-" : absl::StrJoin(ranges, ", "));
  d.Add("Windows", absl::StrCat(c.window_count(), " (", FormatBytes(c.window_bytes()), ")"));
  d.Add("Pin budget", BytesExact(c.pin_budget_bytes()));
  d.Add("Created", FormatTimeMs(c.create_time_ms()));
}

}  // namespace

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
    d.Add(i == 0 ? "Windows" : "", absl::StrCat(w.id(), "  ", Hex(w.base()), "-", last, "  (",
                                                FormatBytes(w.size()), ")"));
  }
  return d.Render();
}

// ---------------------------------------------------------------- describe, top

namespace {

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
std::string FirstNames(const google::protobuf::RepeatedPtrField<std::string>& names,
                       int max = 5) {
  std::vector<std::string> shown(names.begin(),
                                 names.begin() + std::min(max, names.size()));
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
      absl::StrAppend(&age, " (x", e.count(), " over ", FormatAge(now_ms - e.first_time_ms()),
                      ")");
    }
    table.AddRow({age, EventTypeName(e.type()), e.reason(), e.message()});
  }
  return table.Render();
}

std::string FormatTenantDescription(const iommu::ctl::TenantDescription& d, int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("ID", d.tenant().id()),
                        EventsSection(d.events(), now_ms));
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
  details.Add("Containers", absl::StrCat(u.containers(), " of ",
                                         OrUnlimited(t.quota().max_containers(), false)));
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
  absl::StrAppend(&containers,
                  More(d.more_containers(),
                       absl::StrCat("iommuctl container list --tenant=", t.id())));
  return absl::StrCat(details.Render(), Section("Usage by node", by_node),
                      Section("Containers", containers),
                      EventsSection(d.events(), now_ms));
}

std::string FormatNodeDescription(const iommu::ctl::NodeDescription& d, int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("Name", d.node().name()),
                        EventsSection(d.events(), now_ms));
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
  absl::StrAppend(&containers,
                  More(d.more_containers(),
                       absl::StrCat("iommuctl container list --node=", d.node().name())));
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

std::string FormatContainerDescription(const iommu::ctl::ContainerDescription& d,
                                       int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("ID", d.container().id()),
                        EventsSection(d.events(), now_ms));
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
  absl::StrAppend(&windows,
                  More(d.more_windows(),
                       absl::StrCat("iommuctl window list --container=", c.id())));
  return absl::StrCat(fields.Render(), Section("Windows", windows),
                      EventsSection(d.events(), now_ms));
}

std::string FormatWindowDescription(const iommu::ctl::WindowDescription& d, int64_t now_ms) {
  if (d.deleted()) {
    return absl::StrCat(DeletedHeader("ID", d.window().id()),
                        EventsSection(d.events(), now_ms));
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
    head.Add("Leader", absl::StrCat(summary.leader(), " since ",
                                    FormatTimeMs(summary.leader_since_ms()), ", store ",
                                    summary.store()));
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

absl::StatusOr<std::string> FormatTable(const google::protobuf::Message& message,
                                        bool headers, bool wide) {
  using namespace iommu::v1;  // NOLINT: dispatch over every response type.
  if (auto* m = dynamic_cast<const Tenant*>(&message)) return FormatTenant(*m);
  if (auto* m = dynamic_cast<const ListTenantsResponse*>(&message)) {
    return FormatTenantTable(*m, headers, wide);
  }
  if (auto* m = dynamic_cast<const Node*>(&message)) return FormatNode(*m);
  if (auto* m = dynamic_cast<const ListNodesResponse*>(&message)) {
    return FormatNodeTable(*m, headers, wide);
  }
  if (auto* m = dynamic_cast<const DrainNodeResponse*>(&message)) return FormatDrain(*m);
  if (auto* m = dynamic_cast<const ListDevicesResponse*>(&message)) {
    return FormatDeviceTable(*m, headers);
  }
  if (auto* m = dynamic_cast<const Container*>(&message)) return FormatContainer(*m);
  if (auto* m = dynamic_cast<const ListContainersResponse*>(&message)) {
    return FormatContainerTable(*m, headers, wide);
  }
  if (auto* m = dynamic_cast<const Window*>(&message)) return FormatWindow(*m);
  if (auto* m = dynamic_cast<const ListWindowsResponse*>(&message)) {
    return FormatWindowTable(*m, headers);
  }
  if (auto* m = dynamic_cast<const GetUsageResponse*>(&message)) return FormatUsage(*m, headers);
  if (auto* m = dynamic_cast<const GrantLauncherResponse*>(&message)) return FormatGrant(*m);
  return absl::InvalidArgumentError(
      absl::StrCat("no table view for ", message.GetTypeName()));
}

absl::StatusOr<std::string> FormatNames(const google::protobuf::Message& message) {
  using namespace iommu::v1;  // NOLINT: dispatch over every response type.
  std::string out;
  auto add = [&out](absl::string_view kind, absl::string_view id) {
    absl::StrAppend(&out, kind, "/", id, "\n");
  };
  if (auto* m = dynamic_cast<const Tenant*>(&message)) {
    add("tenant", m->id());
  } else if (auto* m = dynamic_cast<const ListTenantsResponse*>(&message)) {
    for (const Tenant& t : m->tenants()) add("tenant", t.id());
  } else if (auto* m = dynamic_cast<const Node*>(&message)) {
    add("node", m->name());
  } else if (auto* m = dynamic_cast<const ListNodesResponse*>(&message)) {
    for (const Node& n : m->nodes()) add("node", n.name());
  } else if (auto* m = dynamic_cast<const ListDevicesResponse*>(&message)) {
    for (const Device& d : m->devices()) add("device", d.address());
  } else if (auto* m = dynamic_cast<const Container*>(&message)) {
    add("container", m->id());
  } else if (auto* m = dynamic_cast<const ListContainersResponse*>(&message)) {
    for (const Container& c : m->containers()) add("container", c.id());
  } else if (auto* m = dynamic_cast<const Window*>(&message)) {
    add("window", m->id());
  } else if (auto* m = dynamic_cast<const ListWindowsResponse*>(&message)) {
    for (const Window& w : m->windows()) add("window", w.id());
  } else {
    return absl::InvalidArgumentError(absl::StrCat("no names in ", message.GetTypeName()));
  }
  return out;
}

}  // namespace client
}  // namespace iommu
