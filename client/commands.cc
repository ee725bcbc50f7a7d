#include "client/commands.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/args.h"
#include "client/call_retry.h"
#include "client/config.h"
#include "client/config_commands.h"
#include "client/config_file.h"
#include "client/format.h"
#include "client/request_builder.h"
#include "client/structured_output.h"
#include "client/views.pb.h"
#include "client/watch_loop.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "common/version.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "grpcpp/client_context.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using Stub = v1::Broker::StubInterface;

// Usage errors found while building a request carry this payload, so that
// they exit with 2 rather than 1.
constexpr char kUsagePayload[] = "type.iommu/iommuctl.UsageError";

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}


// One run of one command: the stub, the options and the output stream.
class Session final {
 public:
  Session(const Invocation& inv, Stub* stub, std::string request_id, std::ostream& out,
          std::ostream& err, const CliEnvironment& env)
      : inv_(inv),
        stub_(stub),
        request_id_(std::move(request_id)),
        out_(out),
        err_(err),
        wait_(env.wait),
        retry_sleep_(env.retry_sleep),
        out_is_terminal_(env.out_is_terminal) {}
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Invocation& inv() const { return inv_; }
  const std::string& request_id() const { return request_id_; }

  // Fills `request` from the command line (client/request_builder.h); a
  // value its field cannot hold is a usage error.
  absl::Status Build(google::protobuf::Message* request) const {
    absl::Status built = BuildRequest(inv_, request_id_, request);
    if (absl::IsInvalidArgument(built)) return UsageError(built.message());
    return built;
  }

  // Calls `method`, again while no broker answers (client/call_retry.h),
  // for at most --timeout in all; returns its status.
  template <typename Req, typename Resp>
  absl::Status Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& request, Resp* response) {
    CallRetryOptions options;
    options.timeout = inv_.global.timeout;
    return CallWithRetries(
        options,
        [&](absl::Time deadline, bool wait_for_ready) {
          grpc::ClientContext context;
          context.set_deadline(absl::ToChronoTime(deadline));
          context.set_wait_for_ready(wait_for_ready);
          response->Clear();
          return FromGrpcStatus((stub_->*method)(&context, request, response));
        },
        [] { return absl::Now(); },
        [this](absl::Duration pause) {
          if (retry_sleep_) {
            retry_sleep_(pause);
          } else {
            absl::SleepFor(pause);
          }
        });
  }

  // Calls a list method page by page (page_size 1000, or fewer to stop at
  // --limit) and gathers the items of every page into `all`. When --limit
  // stops early, all->next_page_token resumes after the last item shown.
  template <typename Req, typename Resp, typename Item>
  absl::Status ListAll(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                       Req request,
                       google::protobuf::RepeatedPtrField<Item>* (Resp::*items)(), Resp* all) {
    const uint64_t limit = inv_.Number("limit");
    std::string token;
    while (true) {
      uint64_t page_size = kMaxPageSize;
      const uint64_t have = static_cast<uint64_t>((all->*items)()->size());
      if (limit > 0) page_size = std::min<uint64_t>(page_size, limit - have);
      request.set_page_size(static_cast<uint32_t>(page_size));
      request.set_page_token(token);
      Resp page;
      RETURN_IF_ERROR(Call(method, request, &page));
      auto* got = (page.*items)();
      for (Item& item : *got) {
        if (limit > 0 && static_cast<uint64_t>((all->*items)()->size()) >= limit) break;
        *(all->*items)()->Add() = std::move(item);
      }
      const bool full = limit > 0 && static_cast<uint64_t>((all->*items)()->size()) >= limit;
      if (page.next_page_token().empty() || full) {
        all->set_next_page_token(full ? page.next_page_token() : "");
        return absl::OkStatus();
      }
      if (page.next_page_token() == token) {
        return absl::InternalError(absl::StrCat(
            "the broker returned the same page_token twice (\"", token, "\"); stopping"));
      }
      token = page.next_page_token();
    }
  }

  // Prints `message` in the format of -o: a table view, or its data.
  absl::Status Print(const google::protobuf::Message& message) {
    absl::StatusOr<std::string> text;
    switch (inv_.global.output) {
      case OutputFormat::kJson:
      case OutputFormat::kYaml:
      case OutputFormat::kJsonPath:
        text = FormatStructured(message, inv_.global);
        break;
      case OutputFormat::kName:
        // ParseCommandLine admits -o name only for commands that answer
        // with named objects.
        text = FormatNames(message);
        break;
      case OutputFormat::kTable:
      case OutputFormat::kWide:
        text = FormatTable(message, !inv_.global.no_headers,
                           inv_.global.output == OutputFormat::kWide);
        break;
    }
    if (!text.ok()) return text.status();
    out_ << *text;
    return absl::OkStatus();
  }

  // Prints `line` and a newline, whatever the output format: for the views
  // meant for shell scripts (--token-only).
  void PrintLine(absl::string_view line) { out_ << line << "\n"; }

  // Prints `message` as JSON, or `table` (already rendered, ending in a
  // newline): for views that combine several answers (describe, top).
  absl::Status PrintView(const google::protobuf::Message& message, absl::string_view table) {
    if (IsStructured(inv_.global.output)) return Print(message);
    out_ << table;
    return absl::OkStatus();
  }

  // Prints one frame of `top --watch`: on a terminal, clears the screen
  // first; elsewhere (a pipe, a file) writes no escape sequences and puts a
  // blank line between frames, as `watch` does when piped.
  void Redraw(absl::string_view table) {
    if (out_is_terminal_) {
      out_ << "\x1b[H\x1b[2J";
    } else if (frames_ > 0) {
      out_ << "\n";
    }
    ++frames_;
    out_ << table << std::flush;
  }

  Stub* stub() const { return stub_; }
  // A note for people, on stderr (the reconnects of --watch).
  void Note(absl::string_view line) { err_ << line << std::endl; }
  void Flush() { out_ << std::flush; }

  // Waits between redraws; false: stop.
  bool Wait(absl::Duration interval) {
    if (wait_) return wait_(interval);
    absl::SleepFor(interval);
    return true;
  }

  // Prints `message` as JSON, or `confirmation` (a line) for tables: for the
  // answers that carry nothing (deletes, releases).
  absl::Status PrintDone(const google::protobuf::Message& message,
                         absl::string_view confirmation) {
    if (IsStructured(inv_.global.output)) return Print(message);
    out_ << confirmation << "\n";
    return absl::OkStatus();
  }

 private:
  const Invocation& inv_;
  Stub* const stub_;
  const std::string request_id_;
  std::ostream& out_;
  std::ostream& err_;
  const std::function<bool(absl::Duration)> wait_;
  const std::function<void(absl::Duration)> retry_sleep_;
  const bool out_is_terminal_;
  int frames_ = 0;  // Frames drawn by Redraw.
};

// ---------------------------------------------------------------- generic

// Most commands send a request that is a plain copy of the command line
// (CommandSpec::positional_field and flag_fields, built by BuildRequest) and
// print the answer; the handlers below them hold only what is more.

template <typename Req, typename Resp>
using Method = grpc::Status (Stub::*)(grpc::ClientContext*, const Req&, Resp*);

// Builds the request, sends it and prints the answer.
template <typename Req, typename Resp>
absl::Status Send(Session& s, Method<Req, Resp> method) {
  Req req;
  RETURN_IF_ERROR(s.Build(&req));
  Resp resp;
  RETURN_IF_ERROR(s.Call(method, req, &resp));
  return s.Print(resp);
}

// Builds the request, sends it and confirms "<noun> <ID> <done>" (for the
// answers that carry nothing: deletes, releases).
template <typename Req, typename Resp>
absl::Status SendAndConfirm(Session& s, Method<Req, Resp> method, const char* done) {
  Req req;
  RETURN_IF_ERROR(s.Build(&req));
  Resp resp;
  RETURN_IF_ERROR(s.Call(method, req, &resp));
  return s.PrintDone(resp, absl::StrCat(s.inv().command->noun, " ", s.inv().positional, " ", done));
}

// Builds the request of a list method, pages through it and prints every
// item.
template <typename Req, typename Resp, typename Item>
absl::Status List(Session& s, Method<Req, Resp> method,
                  google::protobuf::RepeatedPtrField<Item>* (Resp::*items)()) {
  Req req;
  RETURN_IF_ERROR(s.Build(&req));
  Resp all;
  RETURN_IF_ERROR(s.ListAll(method, req, items, &all));
  return s.Print(all);
}

// ---------------------------------------------------------------- tenants

// --label KEY=VALUE flags into `labels`; the broker checks the rules.
absl::Status FillLabels(const Invocation& inv,
                        google::protobuf::Map<std::string, std::string>* labels) {
  for (const std::string& text : inv.Strings("label")) {
    const size_t eq = text.find('=');
    if (eq == std::string::npos) {
      return UsageError(absl::StrCat("--label: expects KEY=VALUE (VALUE may be empty), got \"",
                                     text, "\""));
    }
    (*labels)[text.substr(0, eq)] = text.substr(eq + 1);
  }
  return absl::OkStatus();
}

absl::Status TenantCreate(Session& s) {
  v1::CreateTenantRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  RETURN_IF_ERROR(FillLabels(s.inv(), req.mutable_labels()));
  v1::Tenant resp;
  RETURN_IF_ERROR(s.Call(&Stub::CreateTenant, req, &resp));
  return s.Print(resp);
}

absl::Status TenantSetQuota(Session& s) {
  v1::SetTenantQuotaRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  // Only the limits given change (AIP-134 update mask): the fields their
  // flags fill, in the order the command lists its flags.
  const CommandSpec& command = *s.inv().command;
  for (const FlagSpec& flag : command.flags) {
    if (s.inv().Has(flag.name)) {
      req.mutable_update_mask()->add_paths(command.flag_fields.at(flag.name));
    }
  }
  if (req.update_mask().paths_size() == 0) {
    return UsageError(
        "\"tenant set-quota\": give at least one of --pinned, --max-containers, --window-bytes");
  }
  v1::Tenant resp;
  RETURN_IF_ERROR(s.Call(&Stub::SetTenantQuota, req, &resp));
  return s.Print(resp);
}

// "tenant label" and "container label": the labels given set, the keys
// given removed (remove_keys, built from --remove), the rest kept.
template <typename Req, typename Resp>
absl::Status Label(Session& s, Method<Req, Resp> method) {
  Req req;
  RETURN_IF_ERROR(s.Build(&req));
  RETURN_IF_ERROR(FillLabels(s.inv(), req.mutable_labels()));
  if (req.labels().empty() && req.remove_keys().empty()) {
    return UsageError(absl::StrCat("\"", s.inv().command->FullName(),
                                   "\": give at least one --label or --remove"));
  }
  Resp resp;
  RETURN_IF_ERROR(s.Call(method, req, &resp));
  return s.Print(resp);
}

// ---------------------------------------------------------------- containers

// The rules of container create's two ways to choose devices: exactly
// (--node and --device) or by a selector (--vendor, --device-id, --count).
absl::Status CheckDeviceChoice(const Invocation& inv) {
  if (inv.Has("node") || inv.Has("device")) {
    for (const char* selector : {"vendor", "device-id", "count"}) {
      if (inv.Has(selector)) {
        return UsageError(absl::StrCat("--", selector,
                                       ": cannot be combined with --node/--device (name the "
                                       "devices exactly, or select them, not both)"));
      }
    }
    if (!inv.Has("node")) return UsageError("--node: required with --device");
    if (!inv.Has("device")) return UsageError("--device: required with --node (repeatable)");
    return absl::OkStatus();
  }
  if (inv.Has("count") && inv.Number("count") == 0) {
    return UsageError("--count: must be at least 1");
  }
  auto vendor = inv.flags.find("vendor");
  if (vendor != inv.flags.end() && vendor->second.back().has_second && inv.Has("device-id")) {
    return UsageError(absl::StrCat("--device-id: cannot be combined with --vendor=",
                                   vendor->second.back().text,
                                   ", which names the device id already"));
  }
  return absl::OkStatus();
}

absl::Status ContainerCreate(Session& s) {
  const Invocation& inv = s.inv();
  RETURN_IF_ERROR(CheckDeviceChoice(inv));
  v1::CreateContainerRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  if (!inv.Has("node")) {
    // Placement by the broker: a selector, even an empty one (any device).
    v1::DeviceSelector* selector = req.mutable_selector();
    auto vendor = inv.flags.find("vendor");
    if (vendor != inv.flags.end() && vendor->second.back().has_second) {
      selector->set_device_id(static_cast<uint32_t>(vendor->second.back().second));
    }
  }
  RETURN_IF_ERROR(FillLabels(inv, req.mutable_labels()));
  v1::Container resp;
  RETURN_IF_ERROR(s.Call(&Stub::CreateContainer, req, &resp));
  return s.Print(resp);
}

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

absl::Status ContainerList(Session& s) {
  const Invocation& inv = s.inv();
  v1::ListContainersRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  if (inv.Has("state")) {
    const std::string state = absl::AsciiStrToLower(inv.String("state"));
    if (state == "ready") {
      req.set_state(v1::CONTAINER_STATE_READY);
    } else if (state == "node-unavailable") {
      req.set_state(v1::CONTAINER_STATE_NODE_UNAVAILABLE);
    } else if (state == "failed") {
      req.set_state(v1::CONTAINER_STATE_FAILED);
    } else if (state == "deleting") {
      req.set_state(v1::CONTAINER_STATE_DELETING);
    } else {
      return UsageError(
          absl::StrCat("--state: must be ready, node-unavailable, failed or deleting, got \"",
                       inv.String("state"), "\""));
    }
  }
  if (inv.Number("watch") == 0) {
    v1::ListContainersResponse all;
    RETURN_IF_ERROR(s.ListAll(&Stub::ListContainers, req,
                              &v1::ListContainersResponse::mutable_containers, &all));
    return s.Print(all);
  }
  return WatchContainers(s, req);
}

// The broker's bounds of GrantLauncherRequest.ttl_seconds.
constexpr absl::Duration kMinGrantTtl = absl::Seconds(1);
constexpr absl::Duration kMaxGrantTtl = absl::Hours(1);

absl::Status ContainerGrant(Session& s) {
  const Invocation& inv = s.inv();
  const bool token_only = inv.Number("token-only") != 0;
  if (token_only && IsStructured(inv.global.output)) {
    return UsageError(
        "--token-only: prints the bare token; cannot be combined with -o json, yaml or jsonpath");
  }
  v1::GrantLauncherRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  if (inv.Has("ttl")) {
    const absl::Duration ttl = inv.Duration("ttl");
    const std::string given = absl::StrCat("\"", inv.String("ttl"), "\"");
    if (ttl < kMinGrantTtl) {
      return UsageError(absl::StrCat("--ttl: must be at least 1s, got ", given));
    }
    if (ttl > kMaxGrantTtl) {
      return UsageError(absl::StrCat("--ttl: must be at most 1h, got ", given));
    }
    if (absl::Trunc(ttl, absl::Seconds(1)) != ttl) {
      return UsageError(absl::StrCat("--ttl: must be a whole number of seconds, got ", given));
    }
    req.set_ttl_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(ttl)));
  }
  v1::GrantLauncherResponse resp;
  RETURN_IF_ERROR(s.Call(&Stub::GrantLauncher, req, &resp));
  if (!token_only) return s.Print(resp);
  // A script would carry on with an empty $TOKEN: fail instead.
  if (resp.token().empty()) return absl::InternalError("the broker returned an empty token");
  s.PrintLine(resp.token());
  return absl::OkStatus();
}

// ---------------------------------------------------------------- windows

absl::Status WindowAllocate(Session& s) {
  v1::AllocateWindowRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  req.set_fixed_base(s.inv().Has("base"));
  v1::Window resp;
  RETURN_IF_ERROR(s.Call(&Stub::AllocateWindow, req, &resp));
  return s.Print(resp);
}

// Every page of GetUsage (pages are by tenant; each carries its tenants'
// node rows) into `all`.
absl::Status AllUsage(Session& s, v1::GetUsageRequest req, v1::GetUsageResponse* all_out) {
  v1::GetUsageResponse& all = *all_out;
  std::string token;
  while (true) {
    req.set_page_size(kMaxPageSize);
    req.set_page_token(token);
    v1::GetUsageResponse page;
    RETURN_IF_ERROR(s.Call(&Stub::GetUsage, req, &page));
    for (auto& t : *page.mutable_tenants()) *all.add_tenants() = std::move(t);
    for (auto& n : *page.mutable_nodes()) *all.add_nodes() = std::move(n);
    if (page.next_page_token().empty()) break;
    if (page.next_page_token() == token) {
      return absl::InternalError(absl::StrCat(
          "the broker returned the same page_token twice (\"", token, "\"); stopping"));
    }
    token = page.next_page_token();
  }
  return absl::OkStatus();
}

absl::Status Usage(Session& s) {
  v1::GetUsageRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  v1::GetUsageResponse all;
  RETURN_IF_ERROR(AllUsage(s, req, &all));
  return s.Print(all);
}

// ---------------------------------------------------------------- describe

// Related objects a describe lists before it says "... and N more".
constexpr uint32_t kDescribeListLimit = 50;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

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
absl::Status EventsOfDeleted(Session& s, const v1::ObjectRef& object,
                             const absl::Status& not_found,
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

absl::Status DescribeTenant(Session& s) {
  const std::string& id = s.inv().positional;
  iommu::ctl::TenantDescription d;
  v1::GetTenantRequest get;
  get.set_tenant_id(id);
  absl::Status got = s.Call(&Stub::GetTenant, get, d.mutable_tenant());
  if (absl::IsNotFound(got)) {
    RETURN_IF_ERROR(EventsOfDeleted(s, ObjectOf(v1::OBJECT_KIND_TENANT, id), got,
                                    d.mutable_events()));
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
  d.set_more_containers(MoreThan(containers.containers_size(), d.usage().containers(),
                                 containers.next_page_token()));
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
    RETURN_IF_ERROR(EventsOfDeleted(s, ObjectOf(v1::OBJECT_KIND_NODE, name), got,
                                    d.mutable_events()));
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
    RETURN_IF_ERROR(EventsOfDeleted(s, ObjectOf(v1::OBJECT_KIND_CONTAINER, id), got,
                                    d.mutable_events()));
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
  d.set_more_windows(
      MoreThan(windows.windows_size(), c.window_count(), windows.next_page_token()));
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
  RETURN_IF_ERROR(
      FetchEvents(s, ObjectOf(v1::OBJECT_KIND_CONTAINER, c.id()), d.mutable_events()));
  return s.PrintView(d, FormatContainerDescription(d, NowMs()));
}

// Finds window `id` among the windows ListWindows pages through for
// `container_id` (empty: every window the caller may see).
absl::StatusOr<bool> FindWindow(Session& s, const std::string& id,
                                const std::string& container_id, v1::Window* out) {
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

// ---------------------------------------------------------------- top

// The number of containers in `state` the caller may see.
absl::StatusOr<uint32_t> CountContainers(Session& s, v1::ContainerState state) {
  v1::ListContainersRequest req;
  req.set_state(state);
  v1::ListContainersResponse all;
  RETURN_IF_ERROR(
      s.ListAll(&Stub::ListContainers, req, &v1::ListContainersResponse::mutable_containers, &all));
  return static_cast<uint32_t>(all.containers_size());
}

absl::Status TakeFleetSummary(Session& s, iommu::ctl::FleetSummary* sum) {
  sum->set_time_ms(NowMs());
  v1::GetVersionResponse version;
  RETURN_IF_ERROR(s.Call(&Stub::GetVersion, v1::GetVersionRequest(), &version));
  sum->set_leader(version.replica());
  sum->set_leader_since_ms(version.leader_since_ms());
  sum->set_store(version.store());
  v1::ListNodesResponse nodes;
  absl::Status listed =
      s.ListAll(&Stub::ListNodes, v1::ListNodesRequest(), &v1::ListNodesResponse::mutable_nodes,
                &nodes);
  // Nodes are for operators: a tenant's summary goes without them.
  if (!absl::IsPermissionDenied(listed)) {
    RETURN_IF_ERROR(listed);
    sum->set_nodes_visible(true);
    sum->set_nodes(nodes.nodes_size());
    for (const v1::Node& n : nodes.nodes()) {
      ++(*sum->mutable_nodes_by_state())[NodeStateName(n.state())];
      if (n.state() != v1::NODE_STATE_READY) sum->add_nodes_not_ready(n.name());
      if (n.cordoned()) {
        sum->set_nodes_cordoned(sum->nodes_cordoned() + 1);
        sum->add_nodes_cordoned_names(n.name());
      }
    }
  }
  v1::GetUsageResponse usage;
  RETURN_IF_ERROR(AllUsage(s, v1::GetUsageRequest(), &usage));
  std::vector<v1::TenantUsage> tenants(usage.tenants().begin(), usage.tenants().end());
  std::stable_sort(tenants.begin(), tenants.end(),
                   [](const v1::TenantUsage& a, const v1::TenantUsage& b) {
                     if (a.pinned_bytes() != b.pinned_bytes()) {
                       return a.pinned_bytes() > b.pinned_bytes();
                     }
                     return a.tenant_id() < b.tenant_id();
                   });
  v1::TenantUsage* total = sum->mutable_total();
  total->set_tenant_id("total");
  for (v1::TenantUsage& u : tenants) {
    v1::Quota* q = total->mutable_quota();
    q->set_pinned_bytes(q->pinned_bytes() + u.quota().pinned_bytes());
    q->set_window_bytes(q->window_bytes() + u.quota().window_bytes());
    q->set_max_containers(q->max_containers() + u.quota().max_containers());
    total->set_containers(total->containers() + u.containers());
    total->set_windows(total->windows() + u.windows());
    total->set_window_bytes(total->window_bytes() + u.window_bytes());
    total->set_pinned_bytes(total->pinned_bytes() + u.pinned_bytes());
    total->set_mapped_bytes(total->mapped_bytes() + u.mapped_bytes());
    total->set_dedup_saved_bytes(total->dedup_saved_bytes() + u.dedup_saved_bytes());
    *sum->add_tenants() = std::move(u);
  }
  sum->set_containers(total->containers());
  ASSIGN_OR_RETURN(uint32_t failed, CountContainers(s, v1::CONTAINER_STATE_FAILED));
  ASSIGN_OR_RETURN(uint32_t unavailable, CountContainers(s, v1::CONTAINER_STATE_NODE_UNAVAILABLE));
  ASSIGN_OR_RETURN(uint32_t deleting, CountContainers(s, v1::CONTAINER_STATE_DELETING));
  auto& by_state = *sum->mutable_containers_by_state();
  const uint32_t not_ready = failed + unavailable + deleting;
  by_state[ContainerStateName(v1::CONTAINER_STATE_READY)] =
      sum->containers() > not_ready ? sum->containers() - not_ready : 0;
  by_state[ContainerStateName(v1::CONTAINER_STATE_NODE_UNAVAILABLE)] = unavailable;
  by_state[ContainerStateName(v1::CONTAINER_STATE_FAILED)] = failed;
  if (deleting > 0) by_state[ContainerStateName(v1::CONTAINER_STATE_DELETING)] = deleting;
  return absl::OkStatus();
}

absl::Status Top(Session& s) {
  const bool watch = s.inv().Has("watch");
  if (watch && IsStructured(s.inv().global.output)) {
    return UsageError(
        "--watch: redraws a table; cannot be combined with -o json, yaml or jsonpath");
  }
  while (true) {
    iommu::ctl::FleetSummary sum;
    RETURN_IF_ERROR(TakeFleetSummary(s, &sum));
    if (!watch) return s.PrintView(sum, FormatFleetSummary(sum));
    s.Redraw(FormatFleetSummary(sum));
    if (!s.Wait(s.inv().Duration("watch"))) return absl::OkStatus();
  }
}

// ---------------------------------------------------------------- version

iommu::ctl::VersionView ClientVersion() {
  iommu::ctl::VersionView v;
  v.set_client_version(kVersion);
  v.set_client_commit(BuildCommit());
  return v;
}

std::string FormatVersion(const iommu::ctl::VersionView& v) {
  std::string out = absl::StrCat("Client: iommuctl ", v.client_version(), " (commit ",
                                 v.client_commit(), ")\n");
  if (!v.broker_version().empty()) {
    absl::StrAppend(&out, "Broker: iommu-broker ", v.broker_version(), " (commit ",
                    v.broker_commit(), ")\n");
    if (!v.broker_replica().empty()) {
      absl::StrAppend(&out, "Leader: ", v.broker_replica(), " since ",
                      FormatTimeMs(v.broker_leader_since_ms()), ", store ", v.broker_store(),
                      "\n");
    }
  }
  if (v.agents_visible()) {
    Table agents({"NODE", "AGENT-VERSION"});
    for (const auto& a : v.agents()) {
      agents.AddRow({a.node(), a.version().empty() ? "-" : a.version()});
    }
    absl::StrAppend(&out, "Agents:", v.agents().empty() ? " <none>\n" : "\n");
    if (!v.agents().empty()) {
      for (absl::string_view line : absl::StrSplit(agents.Render(), '\n', absl::SkipEmpty())) {
        absl::StrAppend(&out, "  ", line, "\n");
      }
    }
  }
  return out;
}

absl::Status Version(Session& s) {
  iommu::ctl::VersionView v = ClientVersion();
  v1::GetVersionResponse broker;
  RETURN_IF_ERROR(s.Call(&Stub::GetVersion, v1::GetVersionRequest(), &broker));
  v.set_broker_version(broker.version());
  v.set_broker_commit(broker.commit());
  v.set_broker_replica(broker.replica());
  v.set_broker_leader_since_ms(broker.leader_since_ms());
  v.set_broker_store(broker.store());
  v1::ListNodesResponse nodes;
  absl::Status listed = s.ListAll(&Stub::ListNodes, v1::ListNodesRequest(),
                                  &v1::ListNodesResponse::mutable_nodes, &nodes);
  if (listed.ok()) {
    v.set_agents_visible(true);
    for (const v1::Node& n : nodes.nodes()) {
      auto* a = v.add_agents();
      a->set_node(n.name());
      a->set_version(n.agent_version());
    }
  } else if (!absl::IsPermissionDenied(listed)) {
    return listed;
  }
  return s.PrintView(v, FormatVersion(v));
}

using Handler = absl::Status (*)(Session&);

// Every command's handler, by its full name: the generic ones where the
// request is a plain copy of the command line, else the command's own.
const std::map<std::string, Handler>& Handlers() {
  static const auto* handlers = new std::map<std::string, Handler>{
      {"tenant create", &TenantCreate},
      {"tenant get", [](Session& s) { return Send(s, &Stub::GetTenant); }},
      {"tenant list",
       [](Session& s) {
         return List(s, &Stub::ListTenants, &v1::ListTenantsResponse::mutable_tenants);
       }},
      {"tenant set-quota", &TenantSetQuota},
      {"tenant label", [](Session& s) { return Label(s, &Stub::SetTenantLabels); }},
      {"tenant delete",
       [](Session& s) { return SendAndConfirm(s, &Stub::DeleteTenant, "deleted"); }},
      {"node list",
       [](Session& s) { return List(s, &Stub::ListNodes, &v1::ListNodesResponse::mutable_nodes); }},
      {"node get", [](Session& s) { return Send(s, &Stub::GetNode); }},
      {"node cordon", [](Session& s) { return Send(s, &Stub::CordonNode); }},
      {"node uncordon", [](Session& s) { return Send(s, &Stub::UncordonNode); }},
      {"node drain", [](Session& s) { return Send(s, &Stub::DrainNode); }},
      {"node delete", [](Session& s) { return SendAndConfirm(s, &Stub::DeleteNode, "deleted"); }},
      {"device list",
       [](Session& s) {
         return List(s, &Stub::ListDevices, &v1::ListDevicesResponse::mutable_devices);
       }},
      {"container create", &ContainerCreate},
      {"container get", [](Session& s) { return Send(s, &Stub::GetContainer); }},
      {"container list", &ContainerList},
      {"container delete",
       [](Session& s) { return SendAndConfirm(s, &Stub::DeleteContainer, "deleted"); }},
      {"container set-budget", [](Session& s) { return Send(s, &Stub::SetContainerBudget); }},
      {"container label", [](Session& s) { return Label(s, &Stub::SetContainerLabels); }},
      {"container grant", &ContainerGrant},
      {"window allocate", &WindowAllocate},
      {"window release",
       [](Session& s) { return SendAndConfirm(s, &Stub::ReleaseWindow, "released"); }},
      {"window list",
       [](Session& s) {
         return List(s, &Stub::ListWindows, &v1::ListWindowsResponse::mutable_windows);
       }},
      {"usage", &Usage},
      {"describe tenant", &DescribeTenant},
      {"describe node", &DescribeNode},
      {"describe container", &DescribeContainer},
      {"describe window", &DescribeWindow},
      {"top", &Top},
      {"version", &Version},
  };
  return *handlers;
}

// True when the broker may or may not have applied a mutation that failed
// with `code`, so that retrying with the same request id is the safe move.
bool OutcomeUnknown(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kUnknown || code == absl::StatusCode::kInternal ||
         code == absl::StatusCode::kCancelled || code == absl::StatusCode::kAborted;
}

// The broker and credentials to use: flags, --context, the environment,
// the current context, the defaults (client/config.h). INVALID_ARGUMENT for
// an unreadable or malformed config file or an unknown context.
absl::StatusOr<GlobalOptions> ConnectionSettings(const Invocation& inv,
                                                 const CliEnvironment& env) {
  EnvSettings from_env;
  from_env.broker = env.default_broker;
  from_env.cert = env.cert;
  from_env.key = env.key;
  from_env.ca = env.ca;
  from_env.trust_domain = env.trust_domain;
  from_env.insecure = env.insecure;
  iommu::ctl::CliConfig config;
  if (!env.config_path.empty()) {
    absl::StatusOr<iommu::ctl::CliConfig> loaded = LoadConfigFile(env.config_path);
    // An unreadable config is the caller's to fix, like a bad flag.
    if (!loaded.ok()) return absl::InvalidArgumentError(loaded.status().message());
    config = *std::move(loaded);
  } else if (!inv.global.context.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--context: no config file (set $", kConfigEnvVar, " or $HOME)"));
  }
  return ResolveSettings(inv.global, inv.global.context, from_env, config);
}

}  // namespace

std::string NewRequestId() {
  absl::BitGen gen;
  const uint64_t hi = absl::Uniform<uint64_t>(gen);
  const uint64_t lo = absl::Uniform<uint64_t>(gen);
  // Version 4, variant 10xx.
  const uint64_t h = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  const uint64_t l = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", h >> 32, (h >> 16) & 0xffff, h & 0xffff,
                         l >> 48, l & 0xffffffffffffULL);
}

CliEnvironment ProcessEnvironment() {
  CliEnvironment env;
  const char* broker = std::getenv(kBrokerEnvVar);
  env.default_broker = broker != nullptr ? broker : "";
  auto get = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v == nullptr ? "" : v);
  };
  env.cert = get(kCertEnvVar);
  env.key = get(kKeyEnvVar);
  env.ca = get(kCaEnvVar);
  env.trust_domain = get(kTrustDomainEnvVar);
  env.insecure = get(kInsecureEnvVar) == "1";
  env.config_path = DefaultConfigPath();
  env.out_is_terminal = isatty(STDOUT_FILENO) == 1;
  return env;
}

int RunIommuctl(int argc, const char* const argv[], std::ostream& out, std::ostream& err,
                const StubFactory& stub_factory) {
  return RunIommuctl(argc, argv, out, err, stub_factory, ProcessEnvironment());
}

int RunIommuctl(int argc, const char* const argv[], std::ostream& out, std::ostream& err,
                const StubFactory& stub_factory, const CliEnvironment& env) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  if (args.empty()) {
    err << RenderHelp("", nullptr);
    return 2;
  }
  // No default broker here: ResolveSettings ranks the environment's and the
  // config file's against --broker.
  absl::StatusOr<Invocation> parsed = ParseCommandLine(args, "");
  if (!parsed.ok()) {
    err << "error: " << parsed.status().message() << "\n" << UsageHint(args) << "\n";
    return 2;
  }
  const Invocation& inv = *parsed;
  if (inv.help) {
    out << RenderHelp(inv.help_noun, inv.help_command);
    return 0;
  }
  if (inv.command->FullName() == "completion") {
    if (inv.positional != "bash") {
      err << "error: completion: only bash is supported, got \"" << inv.positional << "\"\n"
          << UsageHint(args) << "\n";
      return 2;
    }
    out << RenderBashCompletion();
    return 0;
  }
  if (inv.command->noun == "config") {
    absl::Status status = RunConfigCommand(inv, env.config_path, out);
    if (status.ok()) return 0;
    if (absl::IsInvalidArgument(status)) {
      err << "error: " << status.message() << "\n" << UsageHint(args) << "\n";
      return 2;
    }
    err << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
        << "\n";
    return 1;
  }
  // `version` prints the client's line even when the broker is unreachable.
  const bool version = inv.command->FullName() == "version";
  if (version && inv.Has("client")) {
    const iommu::ctl::VersionView v = ClientVersion();
    absl::StatusOr<std::string> text =
        IsStructured(inv.global.output) ? FormatStructured(v, inv.global) : FormatVersion(v);
    out << (text.ok() ? *text : FormatVersion(v));
    return 0;
  }

  auto handler = Handlers().find(inv.command->FullName());
  if (handler == Handlers().end()) {
    err << "error: INTERNAL: no handler for \"" << inv.command->FullName() << "\"\n";
    return 1;
  }

  std::string request_id;
  if (inv.command->mutation) {
    if (!inv.global.request_id.empty()) {
      absl::Status valid = ValidateRequestId("--request-id", inv.global.request_id);
      if (!valid.ok()) {
        err << "error: " << valid.message() << "\n" << UsageHint(args) << "\n";
        return 2;
      }
      request_id = inv.global.request_id;
    } else {
      request_id = env.new_request_id ? env.new_request_id() : NewRequestId();
    }
  }

  absl::StatusOr<GlobalOptions> global = ConnectionSettings(inv, env);
  if (!global.ok()) {
    err << "error: " << global.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::shared_ptr<Stub>> stub = stub_factory(*global);
  if (stub.ok() && *stub == nullptr) stub = absl::InternalError("stub factory returned null");
  if (!stub.ok()) {
    // A transport configuration the factory cannot use is the caller's
    // mistake (exit 2); anything else is a failure to connect (exit 1).
    if (absl::IsInvalidArgument(stub.status())) {
      err << "error: " << stub.status().message() << "\n";
      return 2;
    }
    err << "error: " << absl::StatusCodeToString(stub.status().code()) << ": "
        << stub.status().message() << "\n";
    return 1;
  }

  Session session(inv, stub->get(), request_id, out, err, env);
  absl::Status status = handler->second(session);
  // Version prints only once it has every answer; on failure the client's
  // own line still goes out before the error.
  if (version && !status.ok() && !IsStructured(inv.global.output)) {
    out << FormatVersion(ClientVersion());
  }
  if (status.ok()) return 0;
  if (IsUsageError(status)) {
    err << "error: " << status.message() << "\n" << UsageHint(args) << "\n";
    return 2;
  }
  err << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message() << "\n";
  if (inv.command->mutation && OutcomeUnknown(status.code())) {
    err << "hint: the broker may or may not have applied this; retry safely with --request-id="
        << request_id << "\n";
  }
  return 1;
}

}  // namespace client
}  // namespace iommu
