#include "client/format.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/format_internal.h"
#include "client/json_format.h"

namespace iommu {
namespace client {
namespace {

using ::iommu::v1::ContainerState;
using ::iommu::v1::Node;
using ::iommu::v1::NodeState;

}  // namespace

// ---------------------------------------------------------------- helpers

std::string Details::Render() const {
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

std::string Percent(uint64_t used, uint64_t limit) {
  if (limit == 0) return "-";
  return absl::StrFormat("%.0f%%", 100.0 * static_cast<double>(used) / static_cast<double>(limit));
}

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
  std::string out = MessageToJson(message);
  out.push_back('\n');
  return out;
}

// ---------------------------------------------------------------- dispatch

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
