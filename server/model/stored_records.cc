#include "server/model/stored_records.h"

#include <iterator>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/model/fleet_state.h"

namespace iommu {
namespace model {
namespace {

absl::Status Lost(const StoreRecord& r, const std::string& why) {
  return absl::DataLossError(absl::StrCat("store: record ", r.kind, "/", r.id, ": ", why));
}

// Parses `r` into `m` and checks that it names `r`'s own id.
template <typename M>
absl::Status ParseFiled(const StoreRecord& r, M* m, const std::string& (M::*id)() const) {
  if (!m->ParseFromString(r.value)) return Lost(r, "does not parse");
  if ((m->*id)() != r.id) {
    return Lost(r, absl::StrCat("holds ", r.kind, " \"", (m->*id)(), "\", not its own"));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

using PendingWindows = std::vector<std::pair<const StoreRecord*, v1::Window>>;

// Parses every record into `out` (windows into `windows`, placed later),
// checking each on its own.
absl::Status ParseEach(const std::vector<StoreRecord>& records, StoredState* out,
                       PendingWindows* windows) {
  for (const StoreRecord& r : records) {
    if (r.kind == kTenantKind) {
      v1::Tenant t;
      RETURN_IF_ERROR(ParseFiled(r, &t, &v1::Tenant::id));
      out->tenants.emplace(r.id, std::move(t));
    } else if (r.kind == kNodeKind) {
      v1::Node n;
      RETURN_IF_ERROR(ParseFiled(r, &n, &v1::Node::name));
      out->nodes.emplace(r.id, std::move(n));
    } else if (r.kind == kDevicesKind) {
      v1::ListDevicesResponse d;
      if (!d.ParseFromString(r.value)) return Lost(r, "does not parse");
      out->devices[r.id].assign(std::make_move_iterator(d.mutable_devices()->begin()),
                                std::make_move_iterator(d.mutable_devices()->end()));
    } else if (r.kind == kNodeKeyKind) {
      out->node_keys[r.id] = r.value;
    } else if (r.kind == kContainerKind) {
      v1::Container c;
      RETURN_IF_ERROR(ParseFiled(r, &c, &v1::Container::id));
      absl::StatusOr<WindowAllocator> a = ContainerAllocator(c);
      if (!a.ok()) return Lost(r, std::string(a.status().message()));
      out->containers.emplace(r.id, StoredContainer{std::move(c), *std::move(a), {}});
    } else if (r.kind == kWindowKind) {
      v1::Window w;
      RETURN_IF_ERROR(ParseFiled(r, &w, &v1::Window::id));
      windows->emplace_back(&r, std::move(w));
    } else {
      return Lost(r, "unknown kind");
    }
  }
  return absl::OkStatus();
}

// Moves the devices and keys of nodes without a record to leftover_nodes.
void SetLeftoversAside(StoredState* out) {
  std::set<std::string> leftovers;
  for (const auto& [name, d] : out->devices) {
    if (!out->nodes.count(name)) leftovers.insert(name);
  }
  for (const auto& [name, k] : out->node_keys) {
    if (!out->nodes.count(name)) leftovers.insert(name);
  }
  for (const std::string& name : leftovers) {
    out->devices.erase(name);
    out->node_keys.erase(name);
  }
  out->leftover_nodes.assign(leftovers.begin(), leftovers.end());
}

// Owners present, devices held once, names unique per tenant.
absl::Status CheckContainers(const StoredState& state) {
  std::map<std::pair<std::string, std::string>, std::string> holder;  // (node, device) -> id.
  std::map<std::pair<std::string, std::string>, std::string> named;   // (tenant, name) -> id.
  for (const auto& [id, sc] : state.containers) {
    const v1::Container& c = sc.container;
    const std::string where = absl::StrCat("store: container ", id);
    if (!state.tenants.count(c.tenant_id())) {
      return absl::DataLossError(
          absl::StrCat(where, " belongs to tenant ", c.tenant_id(), ", which does not exist"));
    }
    if (!state.nodes.count(c.node())) {
      return absl::DataLossError(
          absl::StrCat(where, " is on node ", c.node(), ", which does not exist"));
    }
    for (const std::string& d : c.devices()) {
      auto [held, fresh] = holder.try_emplace({c.node(), d}, id);
      if (fresh) continue;
      return absl::DataLossError(
          held->second == id ? absl::StrCat(where, " lists device ", c.node(), "/", d, " twice")
                             : absl::StrCat("store: containers ", held->second, " and ", id,
                                            " both hold device ", c.node(), "/", d));
    }
    if (c.name().empty()) continue;
    auto [other, fresh] = named.try_emplace({c.tenant_id(), c.name()}, id);
    if (!fresh) {
      return absl::DataLossError(absl::StrCat("store: containers ", other->second, " and ", id,
                                              " of tenant ", c.tenant_id(), " are both named \"",
                                              c.name(), "\""));
    }
  }
  return absl::OkStatus();
}

// Reserves each window in its container's allocator, refusing one of
// another tenant, of no container, or that does not fit.
absl::Status PlaceWindows(PendingWindows windows, StoredState* out) {
  for (auto& [r, w] : windows) {
    auto c = out->containers.find(w.container_id());
    if (c == out->containers.end()) {
      return Lost(*r, absl::StrCat("names missing container ", w.container_id()));
    }
    if (w.tenant_id() != c->second.container.tenant_id()) {
      return Lost(*r,
                  absl::StrCat("of tenant ", w.tenant_id(), " is in container ", w.container_id(),
                               " of tenant ", c->second.container.tenant_id()));
    }
    if (absl::Status s = c->second.allocator.AllocateAt(w.base(), w.size()); !s.ok()) {
      return Lost(*r, absl::StrCat("does not fit container ", w.container_id(), ": ", s.message()));
    }
    c->second.window_ids.insert(w.id());
    std::string id = w.id();
    out->windows.emplace(std::move(id), std::move(w));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StoredState> ParseStoredRecords(const std::vector<StoreRecord>& records) {
  StoredState out;
  PendingWindows windows;
  RETURN_IF_ERROR(ParseEach(records, &out, &windows));
  SetLeftoversAside(&out);
  // Containers and windows once every owner is known: records come in any
  // order.
  RETURN_IF_ERROR(CheckContainers(out));
  RETURN_IF_ERROR(PlaceWindows(std::move(windows), &out));
  return out;
}

absl::Status CheckStoredRecords(const std::vector<StoreRecord>& records) {
  return ParseStoredRecords(records).status();
}

}  // namespace model
}  // namespace iommu
