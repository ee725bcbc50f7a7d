// `container list --watch`: the list, then each change as it becomes durable,
// until the wait says stop (list+watch, client/watch_loop.h), with --node and
// --state applied here by Kubernetes' enter/leave rule. Apart from
// resource_commands.cc because it is the one command that keeps a stream open
// and reconnects.
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/args.h"
#include "client/command_handlers.h"
#include "client/command_session.h"
#include "client/format.h"
#include "client/watch_loop.h"
#include "common/status_macros.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

namespace v1 = ::iommu::v1;

namespace {

// One change of `container list --watch`: in tables a row of the container
// after its change type; in json/yaml the WatchEvent; with -o name its name.
absl::Status PrintContainerChange(Session& s, const v1::WatchEvent& e) {
  if (!e.has_container()) return absl::OkStatus();
  const OutputFormat format = s.inv().global.output;
  if (IsStructured(format) || format == OutputFormat::kName) {
    if (format == OutputFormat::kName) {
      s.PrintLine(absl::StrCat("container/", e.container().id()));
    } else {
      RETURN_IF_ERROR(s.Print(e));
    }
  } else {
    v1::ListContainersResponse one;
    *one.add_containers() = e.container();
    absl::StatusOr<std::string> row =
        FormatTable(one, /*headers=*/false, format == OutputFormat::kWide);
    if (!row.ok()) return row.status();
    s.PrintLine(absl::StrCat(e.type() == v1::WatchEvent::DELETE ? "DELETED  " : "CHANGED  ",
                             absl::StripTrailingAsciiWhitespace(*row)));
  }
  s.Flush();
  return absl::OkStatus();
}

}  // namespace

// container list --watch: the list, then its changes as they become durable,
// until interrupted (list+watch, client/watch_loop.h). Watch takes the tenant
// and the selector; --node and --state are applied here, with the same
// enter/leave rule the broker applies to the selector (ShownObjects).
absl::Status WatchContainers(Session& s, const v1::ListContainersRequest& req) {
  v1::WatchRequest watch;
  watch.add_kinds(v1::OBJECT_KIND_CONTAINER);
  watch.set_tenant_id(req.tenant_id());
  watch.set_label_selector(req.label_selector());
  ShownObjects shown([&req](const v1::WatchEvent& e) {
    return (req.node().empty() || e.container().node() == req.node()) &&
           (req.state() == v1::CONTAINER_STATE_UNSPECIFIED || e.container().state() == req.state());
  });
  WatchLoop loop;
  loop.relist = [&]() -> absl::StatusOr<std::string> {
    // The version first, then the list: a change between them shows twice,
    // never not at all.
    v1::ListContainersRequest probe = req;
    probe.set_page_size(1);
    v1::ListContainersResponse first;
    RETURN_IF_ERROR(s.Call(&Stub::ListContainers, probe, &first));
    v1::ListContainersResponse all;
    RETURN_IF_ERROR(s.ListAll(&Stub::ListContainers, req,
                              &v1::ListContainersResponse::mutable_containers, &all));
    RETURN_IF_ERROR(s.Print(all));
    s.Flush();
    std::set<std::string> ids;
    for (const v1::Container& c : all.containers()) ids.insert(c.id());
    shown.Reset(std::move(ids));
    return first.resource_version();
  };
  loop.on_event = [&](const v1::WatchEvent& e) {
    std::optional<v1::WatchEvent> change = shown.Next(e);
    return change.has_value() ? PrintContainerChange(s, *change) : absl::OkStatus();
  };
  loop.wait = [&](absl::Duration d) { return s.Wait(d); };
  loop.note = [&](const std::string& line) { s.Note(line); };
  return RunWatch(s.stub(), watch, loop);
}

}  // namespace client
}  // namespace iommu
