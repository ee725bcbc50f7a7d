// `iommuctl describe tenant|node|container|window`: one object for people, in
// the style of kubectl describe: its Get answer, its related objects (the
// first 50), its usage and its events, gathered into one views.proto message
// and printed as a table view or as data. A deleted object is described by
// the events the broker still holds of it.
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "client/command_handlers.h"
#include "client/command_session.h"
#include "client/format.h"
#include "client/views.pb.h"
#include "common/status_macros.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

namespace v1 = ::iommu::v1;

namespace {

// Related objects a describe lists before it says "... and N more".
constexpr uint32_t kDescribeListLimit = 50;

v1::ObjectRef ObjectOf(v1::ObjectKind kind, const std::string& id) {
  v1::ObjectRef r;
  r.set_kind(kind);
  r.set_id(id);
  return r;
}

// Every event the broker holds of `object` (and of what is under it).
absl::Status FetchEvents(Session& s, const v1::ObjectRef& object,
                         google::protobuf::RepeatedPtrField<v1::Event>* events) {
  v1::ListEventsRequest req;
  *req.mutable_object() = object;
  v1::ListEventsResponse all;
  RETURN_IF_ERROR(s.ListAll(&Stub::ListEvents, req, &v1::ListEventsResponse::mutable_events, &all));
  *events = std::move(*all.mutable_events());
  return absl::OkStatus();
}

// After the object's Get answered `not_found`: its events when the broker
// still holds some (the object was deleted), else `not_found` itself.
absl::Status EventsOfDeleted(Session& s, const v1::ObjectRef& object, const absl::Status& not_found,
                             google::protobuf::RepeatedPtrField<v1::Event>* events) {
  if (!FetchEvents(s, object, events).ok() || events->empty()) return not_found;
  return absl::OkStatus();
}

// How many of `total` a first page of `shown` leaves out, when the broker
// said more follow.
uint32_t MoreThan(int shown, uint64_t total, const std::string& next_page_token) {
  if (next_page_token.empty()) return 0;
  return total > static_cast<uint64_t>(shown) ? static_cast<uint32_t>(total - shown) : 1;
}

// Finds window `id` among the windows ListWindows pages through for
// `container_id` (empty: every window the caller may see).
absl::StatusOr<bool> FindWindow(Session& s, const std::string& id, const std::string& container_id,
                                v1::Window* out) {
  v1::ListWindowsRequest req;
  req.set_container_id(container_id);
  v1::ListWindowsResponse all;
  RETURN_IF_ERROR(
      s.ListAll(&Stub::ListWindows, req, &v1::ListWindowsResponse::mutable_windows, &all));
  for (const v1::Window& w : all.windows()) {
    if (w.id() == id) {
      *out = w;
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status DescribeTenant(Session& s) {
  const std::string& id = s.inv().positional;
  iommu::ctl::TenantDescription d;
  v1::GetTenantRequest get;
  get.set_tenant_id(id);
  absl::Status got = s.Call(&Stub::GetTenant, get, d.mutable_tenant());
  if (absl::IsNotFound(got)) {
    RETURN_IF_ERROR(
        EventsOfDeleted(s, ObjectOf(v1::OBJECT_KIND_TENANT, id), got, d.mutable_events()));
    d.mutable_tenant()->set_id(id);
    d.set_deleted(true);
    return s.PrintView(d, FormatTenantDescription(d, NowMs()));
  }
  RETURN_IF_ERROR(got);
  v1::GetUsageRequest usage_req;
  usage_req.set_tenant_id(id);
  v1::GetUsageResponse usage;
  RETURN_IF_ERROR(AllUsage(s, usage_req, &usage));
  for (const v1::TenantUsage& u : usage.tenants()) {
    if (u.tenant_id() == id) *d.mutable_usage() = u;
  }
  *d.mutable_usage_by_node() = usage.nodes();
  v1::ListContainersRequest list;
  list.set_tenant_id(id);
  list.set_page_size(kDescribeListLimit);
  v1::ListContainersResponse containers;
  RETURN_IF_ERROR(s.Call(&Stub::ListContainers, list, &containers));
  *d.mutable_containers() = containers.containers();
  d.set_more_containers(
      MoreThan(containers.containers_size(), d.usage().containers(), containers.next_page_token()));
  RETURN_IF_ERROR(FetchEvents(s, ObjectOf(v1::OBJECT_KIND_TENANT, id), d.mutable_events()));
  return s.PrintView(d, FormatTenantDescription(d, NowMs()));
}

absl::Status DescribeNode(Session& s) {
  const std::string& name = s.inv().positional;
  iommu::ctl::NodeDescription d;
  v1::GetNodeRequest get;
  get.set_node(name);
  absl::Status got = s.Call(&Stub::GetNode, get, d.mutable_node());
  if (absl::IsNotFound(got)) {
    RETURN_IF_ERROR(
        EventsOfDeleted(s, ObjectOf(v1::OBJECT_KIND_NODE, name), got, d.mutable_events()));
    d.mutable_node()->set_name(name);
    d.set_deleted(true);
    return s.PrintView(d, FormatNodeDescription(d, NowMs()));
  }
  RETURN_IF_ERROR(got);
  v1::ListDevicesRequest devices_req;
  devices_req.set_node(name);
  devices_req.set_page_size(kDescribeListLimit);
  v1::ListDevicesResponse devices;
  RETURN_IF_ERROR(s.Call(&Stub::ListDevices, devices_req, &devices));
  *d.mutable_devices() = devices.devices();
  d.set_more_devices(
      MoreThan(devices.devices_size(), d.node().device_count(), devices.next_page_token()));
  v1::ListContainersRequest list;
  list.set_node(name);
  list.set_page_size(kDescribeListLimit);
  v1::ListContainersResponse containers;
  RETURN_IF_ERROR(s.Call(&Stub::ListContainers, list, &containers));
  *d.mutable_containers() = containers.containers();
  d.set_more_containers(MoreThan(containers.containers_size(), d.node().container_count(),
                                 containers.next_page_token()));
  v1::GetUsageRequest usage_req;
  usage_req.set_node(name);
  v1::GetUsageResponse usage;
  RETURN_IF_ERROR(AllUsage(s, usage_req, &usage));
  *d.mutable_usage() = usage.nodes();
  RETURN_IF_ERROR(FetchEvents(s, ObjectOf(v1::OBJECT_KIND_NODE, name), d.mutable_events()));
  return s.PrintView(d, FormatNodeDescription(d, NowMs()));
}

absl::Status DescribeContainer(Session& s) {
  const std::string& id = s.inv().positional;
  iommu::ctl::ContainerDescription d;
  v1::GetContainerRequest get;
  get.set_container_id(id);
  absl::Status got = s.Call(&Stub::GetContainer, get, d.mutable_container());
  if (absl::IsNotFound(got)) {
    RETURN_IF_ERROR(
        EventsOfDeleted(s, ObjectOf(v1::OBJECT_KIND_CONTAINER, id), got, d.mutable_events()));
    d.mutable_container()->set_id(id);
    d.set_deleted(true);
    return s.PrintView(d, FormatContainerDescription(d, NowMs()));
  }
  RETURN_IF_ERROR(got);
  // From here on the id the broker answered with, not a name that could be
  // taken by another container meanwhile.
  const v1::Container& c = d.container();
  v1::ListWindowsRequest windows_req;
  windows_req.set_container_id(c.id());
  windows_req.set_page_size(kDescribeListLimit);
  v1::ListWindowsResponse windows;
  RETURN_IF_ERROR(s.Call(&Stub::ListWindows, windows_req, &windows));
  *d.mutable_windows() = windows.windows();
  d.set_more_windows(MoreThan(windows.windows_size(), c.window_count(), windows.next_page_token()));
  v1::GetUsageRequest usage_req;
  usage_req.set_tenant_id(c.tenant_id());
  usage_req.set_node(c.node());
  v1::GetUsageResponse usage;
  RETURN_IF_ERROR(AllUsage(s, usage_req, &usage));
  d.mutable_usage()->set_tenant_id(c.tenant_id());
  d.mutable_usage()->set_node(c.node());
  for (const v1::NodeUsage& u : usage.nodes()) {
    if (u.tenant_id() == c.tenant_id() && u.node() == c.node()) *d.mutable_usage() = u;
  }
  RETURN_IF_ERROR(FetchEvents(s, ObjectOf(v1::OBJECT_KIND_CONTAINER, c.id()), d.mutable_events()));
  return s.PrintView(d, FormatContainerDescription(d, NowMs()));
}

absl::Status DescribeWindow(Session& s) {
  const std::string& id = s.inv().positional;
  iommu::ctl::WindowDescription d;
  // There is no GetWindow: the events (which also say whether the broker
  // knows the id at all) name the container to look in; without them, every
  // window the caller may see is searched.
  RETURN_IF_ERROR(FetchEvents(s, ObjectOf(v1::OBJECT_KIND_WINDOW, id), d.mutable_events()));
  std::string hint;
  for (const v1::Event& e : d.events()) {
    for (const v1::ObjectRef& r : e.related()) {
      if (r.kind() == v1::OBJECT_KIND_CONTAINER) hint = r.id();
    }
  }
  bool found = false;
  if (!hint.empty()) {
    ASSIGN_OR_RETURN(found, FindWindow(s, id, hint, d.mutable_window()));
  }
  if (!found && hint.empty()) {
    ASSIGN_OR_RETURN(found, FindWindow(s, id, "", d.mutable_window()));
  }
  if (!found) {
    if (d.events().empty()) {
      return absl::NotFoundError(absl::StrCat("window_id: no window \"", id, "\""));
    }
    d.mutable_window()->set_id(id);
    d.set_deleted(true);
    return s.PrintView(d, FormatWindowDescription(d, NowMs()));
  }
  v1::GetContainerRequest get;
  get.set_container_id(d.window().container_id());
  RETURN_IF_ERROR(s.Call(&Stub::GetContainer, get, d.mutable_container()));
  return s.PrintView(d, FormatWindowDescription(d, NowMs()));
}

}  // namespace client
}  // namespace iommu
