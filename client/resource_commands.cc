// The handlers of the tenant, container and window commands that do more
// than copy the command line into a request: labels, a quota's update mask,
// container create's two ways to choose devices, container list's state
// filter, container grant's TTL and --token-only, window allocate's fixed
// base. `container list --watch` continues in container_watch.cc.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/args.h"
#include "client/command_handlers.h"
#include "client/command_session.h"
#include "common/status_macros.h"
#include "google/protobuf/map.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

namespace v1 = ::iommu::v1;

namespace {

// --label KEY=VALUE flags into `labels`; the broker checks the rules.
absl::Status FillLabels(const Invocation& inv,
                        google::protobuf::Map<std::string, std::string>* labels) {
  for (const std::string& text : inv.Strings("label")) {
    const size_t eq = text.find('=');
    if (eq == std::string::npos) {
      return UsageError(
          absl::StrCat("--label: expects KEY=VALUE (VALUE may be empty), got \"", text, "\""));
    }
    (*labels)[text.substr(0, eq)] = text.substr(eq + 1);
  }
  return absl::OkStatus();
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
    return UsageError(
        absl::StrCat("--device-id: cannot be combined with --vendor=", vendor->second.back().text,
                     ", which names the device id already"));
  }
  return absl::OkStatus();
}

// The broker's bounds of GrantLauncherRequest.ttl_seconds.
constexpr absl::Duration kMinGrantTtl = absl::Seconds(1);
constexpr absl::Duration kMaxGrantTtl = absl::Hours(1);

}  // namespace

// ---------------------------------------------------------------- tenants

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

absl::Status TenantLabel(Session& s) { return Label(s, &Stub::SetTenantLabels); }

// ---------------------------------------------------------------- containers

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

absl::Status ContainerLabel(Session& s) { return Label(s, &Stub::SetContainerLabels); }

// ---------------------------------------------------------------- windows

absl::Status WindowAllocate(Session& s) {
  v1::AllocateWindowRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  req.set_fixed_base(s.inv().Has("base"));
  v1::Window resp;
  RETURN_IF_ERROR(s.Call(&Stub::AllocateWindow, req, &resp));
  return s.Print(resp);
}

}  // namespace client
}  // namespace iommu
