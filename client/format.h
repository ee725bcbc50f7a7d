// Output of iommuctl: each broker response as an aligned table (for people)
// or as JSON (for scripts).
//
// Tables: one header row in capitals, columns left-aligned and separated by
// two spaces, sizes human-readable ("2.0GiB"), IOVA addresses as exact hex
// ("0x100000000"), times as RFC 3339 UTC. A single object (a get or a create)
// is shown as "Key: value" lines instead.
//
// JSON: the proto3 JSON mapping with proto field names and every primitive
// field printed (so zeros are explicit), with two changes that make it read
// like kubectl's:
//  - 64-bit integers are plain JSON numbers, printed exactly (never rounded),
//    not strings. Values above 2^53 (9007199254740992) are exact in the text
//    but a parser reading numbers as doubles (JavaScript, jq before 1.7)
//    rounds them; read such fields with an exact-integer parser (Python,
//    Go's json.Number) or use the table view's hex.
//  - every int64 field whose name ends in "_ms" holds milliseconds since the
//    epoch, and is followed by a sibling without the suffix holding the same
//    instant in RFC 3339 UTC with milliseconds ("create_time_ms": 1714564800000,
//    "create_time": "2024-05-01T12:00:00.000Z"), or null when the field is 0
//    (unset). The *_ms field stays, so the output still parses into the API's
//    messages with unknown fields ignored.
// Every output ends with a newline.
//
// Pure functions: no I/O, thread-safe.
#ifndef CLIENT_FORMAT_H_
#define CLIENT_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/views.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/broker.pb.h"

namespace iommu {
namespace client {

// Column-aligned text table. Not thread-safe (a plain value type).
class Table final {
 public:
  explicit Table(std::vector<std::string> header);

  // Adds a row; missing cells are blank, extra cells are an error of the
  // caller and are dropped.
  void AddRow(std::vector<std::string> cells);

  // The header (unless !header) and the rows, aligned (the header counts
  // for the widths either way), each line ending in '\n' with no trailing
  // blanks.
  std::string Render(bool header = true) const;

 private:
  std::vector<std::vector<std::string>> rows_;  // rows_[0] is the header.
};

// Bytes in binary units with one decimal: 512 -> "512B", 4096 -> "4.0KiB",
// 3 << 29 -> "1.5GiB".
std::string FormatBytes(uint64_t bytes);

// Milliseconds since the epoch as "2024-05-01T12:00:00Z"; "-" for 0.
std::string FormatTimeMs(int64_t ms);

// The page sizes set in a page-size bitmap, e.g. "4KiB,2MiB,1GiB"; "-" if none.
std::string FormatPageSizes(uint64_t page_size_bitmap);

// Display names of states: "ready", "node-unavailable", "unavailable".
std::string ContainerStateName(iommu::v1::ContainerState state);
std::string NodeStateName(iommu::v1::NodeState state);

// `message` as pretty-printed JSON (see the file comment), by reflection;
// map entries sorted by key. Never fails today (StatusOr for callers that
// chain it).
absl::StatusOr<std::string> FormatJson(const google::protobuf::Message& message);

// Tables for lists; !headers leaves out the header row (--no-headers); wide
// (-o wide) adds columns where a list has more to show: nodes their agent
// version and launcher socket, containers their page sizes, mapping limit
// and status message, and both tenants and containers their labels.
std::string FormatTenantTable(const iommu::v1::ListTenantsResponse& response,
                              bool headers = true, bool wide = false);
std::string FormatNodeTable(const iommu::v1::ListNodesResponse& response, bool headers = true,
                            bool wide = false);
std::string FormatDeviceTable(const iommu::v1::ListDevicesResponse& response,
                              bool headers = true);
std::string FormatContainerTable(const iommu::v1::ListContainersResponse& response,
                                 bool headers = true, bool wide = false);
std::string FormatWindowTable(const iommu::v1::ListWindowsResponse& response,
                              bool headers = true);
// Two tables: per tenant (quota, pinned (billed), mapped, dedup saved, window
// bytes, ...), then per tenant and node; !headers leaves out both header rows.
std::string FormatUsage(const iommu::v1::GetUsageResponse& response, bool headers = true);

// "Key: value" views of single objects.
std::string FormatTenant(const iommu::v1::Tenant& tenant);
std::string FormatNode(const iommu::v1::Node& node);
std::string FormatContainer(const iommu::v1::Container& container);
std::string FormatWindow(const iommu::v1::Window& window);
// The node after the drain, then the deleted and remaining containers.
std::string FormatDrain(const iommu::v1::DrainNodeResponse& response);
// A launcher grant: the token first, then the node, the launcher socket, the
// container, the tenant, the expiry and the windows (id, base-last, size),
// one window a line.
std::string FormatGrant(const iommu::v1::GrantLauncherResponse& grant);

// ---- describe and top (iommuctl for people). `now_ms` is the time event
// ages are measured from (milliseconds since the epoch).

// How long ago, kubectl style: "45s", "12m", "5h", "3d" (a duration in
// milliseconds; negative counts as 0).
std::string FormatAge(int64_t ms);

// Events as `kubectl describe` shows them: a table of AGE (of the last
// occurrence; "5m (x3 over 1h)" when repeated), TYPE (Normal or Warning),
// REASON and MESSAGE, oldest first; "<none>\n" without events.
std::string FormatEventTable(const google::protobuf::RepeatedPtrField<iommu::v1::Event>& events,
                             int64_t now_ms);

// An object's fields ("Key: value" lines), then its related objects as
// indented tables (a tenant's usage per node and containers; a node's
// devices, containers and usage per tenant; a container's windows and its
// tenant's usage on its node; a window's container), then "Events:". A
// deleted object (description.deleted) shows its id and its events only.
std::string FormatTenantDescription(const iommu::ctl::TenantDescription& d, int64_t now_ms);
std::string FormatNodeDescription(const iommu::ctl::NodeDescription& d, int64_t now_ms);
std::string FormatContainerDescription(const iommu::ctl::ContainerDescription& d,
                                       int64_t now_ms);
std::string FormatWindowDescription(const iommu::ctl::WindowDescription& d, int64_t now_ms);

// The fleet on one screen: nodes by state (naming those not ready and the
// cordoned ones, the first few), containers by state, then one row per
// tenant (in the order given: most pinned first) and a TOTAL row.
std::string FormatFleetSummary(const iommu::ctl::FleetSummary& summary);

// The table view of any broker response above, chosen by message type;
// !headers leaves out the header rows of lists and usage (the "Key: value"
// views have none); wide adds the wide columns of the lists that have them.
// INVALID_ARGUMENT for a type it has no view for (e.g. the empty delete
// responses; callers print their own confirmation for those).
absl::StatusOr<std::string> FormatTable(const google::protobuf::Message& message,
                                        bool headers = true, bool wide = false);

// kubectl's `-o name`: one "KIND/ID" line per object of a list response
// (tenant/ID, node/NAME, device/ADDRESS, container/ID, window/ID), or the
// one line of a Tenant, Node, Container or Window; "" for an empty list.
// INVALID_ARGUMENT for any other type.
absl::StatusOr<std::string> FormatNames(const google::protobuf::Message& message);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_FORMAT_H_
