#include "agent/agent_core.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/log.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Same tenant and same set of devices (order does not matter: the broker may
// list them in any order on a retry).
bool SameSpec(absl::string_view tenant_a, const std::vector<std::string>& devices_a,
              absl::string_view tenant_b, const std::vector<std::string>& devices_b) {
  return tenant_a == tenant_b && Sorted(devices_a) == Sorted(devices_b);
}

absl::Status ValidateCreate(absl::string_view id, absl::string_view tenant_id,
                            const std::vector<std::string>& devices) {
  RETURN_IF_ERROR(ValidateObjectId("container_id", id, "c-"));
  RETURN_IF_ERROR(ValidateTenantId("tenant_id", tenant_id));
  if (devices.empty()) {
    return absl::InvalidArgumentError("devices: at least one device required");
  }
  absl::flat_hash_map<absl::string_view, size_t> seen;
  for (size_t i = 0; i < devices.size(); ++i) {
    const std::string field = absl::StrCat("devices[", i, "]");
    RETURN_IF_ERROR(ValidatePciAddress(field, devices[i]));
    auto [it, inserted] = seen.emplace(devices[i], i);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": duplicate of devices[", it->second, "] (", devices[i], ")"));
    }
  }
  return absl::OkStatus();
}

v1::ContainerGeometry GeometryToProto(const Geometry& g) {
  v1::ContainerGeometry out;
  for (const IovaRange& r : g.usable) {
    v1::IovaRange* range = out.add_usable_ranges();
    range->set_start(r.start);
    range->set_last(r.last);
  }
  out.set_page_size_bitmap(g.page_size_bitmap);
  out.set_max_mappings(g.max_mappings);
  return out;
}

std::string ContainerIdField(absl::string_view id) {
  return absl::StrCat("container_id: ", id);
}

}  // namespace

AgentCore::AgentCore(std::string node, Backend* backend)
    : node_(std::move(node)), backend_(backend) {}

v1::AgentContainer AgentCore::ToProto(const std::string& id, const Held& held) {
  v1::AgentContainer out;
  out.set_id(id);
  out.set_tenant_id(held.tenant_id);
  for (const std::string& d : held.devices) out.add_devices(d);
  *out.mutable_geometry() = held.geometry;
  return out;
}

absl::StatusOr<v1::AgentContainer> AgentCore::CreateContainer(
    absl::string_view id, absl::string_view tenant_id,
    const std::vector<std::string>& devices) {
  absl::MutexLock lock(&mu_);
  return CreateLocked(id, tenant_id, devices);
}

absl::StatusOr<v1::AgentContainer> AgentCore::CreateLocked(
    absl::string_view id, absl::string_view tenant_id,
    const std::vector<std::string>& devices) {
  RETURN_IF_ERROR(ValidateCreate(id, tenant_id, devices));
  auto it = containers_.find(id);
  if (it != containers_.end()) {
    const Held& held = it->second;
    if (SameSpec(held.tenant_id, held.devices, tenant_id, devices)) {
      return ToProto(it->first, held);
    }
    return absl::AlreadyExistsError(absl::StrCat(
        ContainerIdField(id), " already exists with tenant ", held.tenant_id,
        " and devices [", absl::StrJoin(held.devices, ","), "]"));
  }

  ASSIGN_OR_RETURN(const ContainerHandle handle, backend_->CreateContainer(devices));
  absl::StatusOr<Geometry> geometry = backend_->GetGeometry(handle);
  if (!geometry.ok()) {
    // Without a geometry the broker cannot place windows: undo the create so
    // that a failure leaves nothing behind in the kernel.
    if (absl::Status undo = backend_->DestroyContainer(handle); !undo.ok()) {
      LogEvent(LogLevel::kError, "container_rollback_failed",
               {{"container", id}, {"handle", handle}, {"error", undo.ToString()}});
    }
    return geometry.status();
  }
  Held held;
  held.tenant_id = std::string(tenant_id);
  held.devices = devices;
  held.handle = handle;
  held.geometry = GeometryToProto(*geometry);
  auto [inserted, unused] = containers_.emplace(std::string(id), std::move(held));
  LogEvent(LogLevel::kInfo, "container_created",
           {{"container", id},
            {"tenant", tenant_id},
            {"devices", absl::StrJoin(devices, ",")},
            {"handle", handle}});
  return ToProto(inserted->first, inserted->second);
}

absl::Status AgentCore::DestroyContainer(absl::string_view id) {
  absl::MutexLock lock(&mu_);
  return DestroyLocked(id);
}

absl::Status AgentCore::DestroyLocked(absl::string_view id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(ContainerIdField(id), " is not held by this node"));
  }
  RETURN_IF_ERROR(backend_->DestroyContainer(it->second.handle));
  LogEvent(LogLevel::kInfo, "container_destroyed",
           {{"container", id}, {"tenant", it->second.tenant_id}});
  containers_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<v1::AgentGetContainerResponse> AgentCore::GetContainer(
    absl::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(ContainerIdField(id), " is not held by this node"));
  }
  ASSIGN_OR_RETURN(std::vector<BackendMapping> mappings,
                   backend_->ListMappings(it->second.handle));
  v1::AgentGetContainerResponse out;
  *out.mutable_container() = ToProto(it->first, it->second);
  for (const BackendMapping& m : mappings) {
    v1::Mapping* mapping = out.add_mappings();
    mapping->set_iova(m.iova);
    mapping->set_size(m.size);
    mapping->set_readable(m.readable);
    mapping->set_writable(m.writable);
  }
  return out;
}

absl::StatusOr<v1::GetInventoryResponse> AgentCore::Inventory() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::vector<BackendDevice> devices, backend_->ListDevices());
  absl::flat_hash_map<absl::string_view, absl::string_view> holder;
  for (const auto& [id, held] : containers_) {
    for (const std::string& d : held.devices) holder[d] = id;
  }
  v1::GetInventoryResponse out;
  out.set_node(node_);
  out.set_backend(std::string(backend_->kind()));
  out.set_simulated(backend_->simulated());
  for (const BackendDevice& d : devices) {
    v1::Device* device = out.add_devices();
    device->set_address(d.address);
    device->set_iommu_group(d.iommu_group);
    device->set_vendor_id(d.vendor_id);
    device->set_device_id(d.device_id);
    device->set_driver(d.driver);
    device->set_assignable(d.assignable);
    device->set_unassignable_reason(d.unassignable_reason);
    auto h = holder.find(d.address);
    if (h != holder.end()) device->set_container_id(std::string(h->second));
  }
  for (v1::AgentContainer& c : ContainersLocked()) {
    *out.add_containers() = std::move(c);
  }
  return out;
}

std::vector<v1::AgentContainer> AgentCore::Containers() {
  absl::MutexLock lock(&mu_);
  return ContainersLocked();
}

std::vector<v1::AgentContainer> AgentCore::ContainersLocked() {
  std::vector<v1::AgentContainer> out;
  out.reserve(containers_.size());
  for (const auto& [id, held] : containers_) out.push_back(ToProto(id, held));
  return out;
}

size_t AgentCore::container_count() {
  absl::MutexLock lock(&mu_);
  return containers_.size();
}

ReconcileResult AgentCore::Reconcile(
    const std::vector<v1::AgentContainer>& desired) {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<absl::string_view, const v1::AgentContainer*> wanted;
  for (const v1::AgentContainer& c : desired) wanted.emplace(c.id(), &c);

  // Destroy first, so that devices freed here can go to desired containers.
  std::vector<std::string> to_destroy;
  for (const auto& [id, held] : containers_) {
    auto w = wanted.find(id);
    if (w == wanted.end()) {
      to_destroy.push_back(id);
    } else if (!SameSpec(held.tenant_id, held.devices, w->second->tenant_id(),
                         {w->second->devices().begin(), w->second->devices().end()})) {
      LogEvent(LogLevel::kWarning, "reconcile_container_differs",
               {{"container", id},
                {"held_tenant", held.tenant_id},
                {"held_devices", absl::StrJoin(held.devices, ",")},
                {"desired_tenant", w->second->tenant_id()},
                {"desired_devices", absl::StrJoin(w->second->devices(), ",")}});
      to_destroy.push_back(id);
    }
  }
  for (const std::string& id : to_destroy) {
    if (absl::Status s = DestroyLocked(id); !s.ok()) {
      LogEvent(LogLevel::kError, "reconcile_destroy_failed",
               {{"container", id}, {"error", s.ToString()}});
    }
  }

  ReconcileResult result;
  for (const v1::AgentContainer& c : desired) {
    absl::StatusOr<v1::AgentContainer> created = CreateLocked(
        c.id(), c.tenant_id(), {c.devices().begin(), c.devices().end()});
    if (!created.ok()) {
      LogEvent(LogLevel::kError, "reconcile_create_failed",
               {{"container", c.id()}, {"error", created.status().ToString()}});
      result.failed_ids.push_back(c.id());
      result.failure_reasons.push_back(created.status().ToString());
    }
  }
  result.held = ContainersLocked();
  return result;
}

absl::Status AgentCore::Map(const v1::AgentMapRequest& request) {
  (void)request;
  return absl::UnimplementedError(
      "Map: the node-side map path arrives with the pinned-page ledger");
}

absl::Status AgentCore::Unmap(const v1::AgentUnmapRequest& request) {
  (void)request;
  return absl::UnimplementedError(
      "Unmap: the node-side unmap path arrives with the pinned-page ledger");
}

}  // namespace agent
}  // namespace iommu
