#include "agent/agent_core.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/agent_core_internal.h"
#include "agent/log.h"
#include "agent/mapping_page.h"
#include "common/grant_token.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

using core_internal::ContainerIdField;

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

}  // namespace

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

AgentCore::AgentCore(std::string node, Backend* backend, AgentCoreObserver* observer)
    : node_(std::move(node)),
      incarnation_(NewGrantTokenId()),
      backend_(backend),
      observer_(observer) {}

v1::AgentContainer AgentCore::ToProto(const std::string& id, const Held& held) {
  v1::AgentContainer out;
  out.set_id(id);
  out.set_tenant_id(held.tenant_id);
  for (const std::string& d : held.devices) out.add_devices(d);
  *out.mutable_geometry() = held.geometry;
  out.set_pin_budget_bytes(held.pin_budget_bytes);
  return out;
}

v1::Mapping AgentCore::MappingToProto(const MappingRecord& m) {
  v1::Mapping out;
  out.set_iova(m.iova);
  out.set_size(m.size);
  out.set_readable(m.readable);
  out.set_writable(m.writable);
  out.set_session_id(m.session_id);
  out.set_memory_id(m.memory_id);
  out.set_offset(m.offset);
  out.set_owner_tenant(m.owner);
  return out;
}

absl::StatusOr<v1::AgentContainer> AgentCore::CreateContainer(
    absl::string_view id, absl::string_view tenant_id,
    const std::vector<std::string>& devices, uint64_t pin_budget_bytes) {
  absl::MutexLock lock(&mu_);
  return CreateLocked(id, tenant_id, devices, pin_budget_bytes);
}

absl::StatusOr<v1::AgentContainer> AgentCore::CreateLocked(
    absl::string_view id, absl::string_view tenant_id,
    const std::vector<std::string>& devices, uint64_t pin_budget_bytes) {
  RETURN_IF_ERROR(ValidateCreate(id, tenant_id, devices));
  auto it = containers_.find(id);
  if (it != containers_.end() && it->second.orphaned) {
    // An earlier run's address space, its fds lost: only once the kernel has
    // let it go can the container be made again (its pins go with it).
    if (!OrphanReleasedLocked(it->first, it->second)) {
      return absl::FailedPreconditionError(absl::StrCat(
          ContainerIdField(id), ": the address space an earlier run of this agent made is still "
          "alive in the kernel (a launcher holds a device fd) and its fds were lost across the "
          "restart; its mappings stay billed until the kernel releases it"));
    }
    containers_.erase(it);
    it = containers_.end();
  }
  if (it != containers_.end()) {
    Held& held = it->second;
    if (held.destroying) {
      return absl::FailedPreconditionError(absl::StrCat(
          ContainerIdField(id), " is being destroyed; retry when it is gone"));
    }
    if (SameSpec(held.tenant_id, held.devices, tenant_id, devices)) {
      held.pin_budget_bytes = pin_budget_bytes;  // The broker's word is the latest.
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
  held.pin_budget_bytes = pin_budget_bytes;
  auto [inserted, unused] = containers_.emplace(std::string(id), std::move(held));
  // Acknowledged only once it would survive a restart.
  if (absl::Status persisted = PersistContainerLocked(inserted->first, inserted->second);
      !persisted.ok()) {
    if (absl::Status undo = backend_->DestroyContainer(handle); !undo.ok()) {
      LogEvent(LogLevel::kError, "container_rollback_failed",
               {{"container", id}, {"handle", handle}, {"error", undo.ToString()}});
    }
    containers_.erase(inserted);
    return persisted;
  }
  LogEvent(LogLevel::kInfo, "container_created",
           {{"container", id},
            {"tenant", tenant_id},
            {"devices", absl::StrJoin(devices, ",")},
            {"handle", handle}});
  return ToProto(inserted->first, inserted->second);
}

absl::Status AgentCore::DestroyContainer(absl::string_view id) {
  ContainerHandle handle = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = containers_.find(id);
    if (it == containers_.end()) {
      return absl::NotFoundError(
          absl::StrCat(ContainerIdField(id), " is not held by this node"));
    }
    // The restart and orphan rules are DestroyLocked's; an orphan has no
    // kernel objects of ours to destroy without the lock.
    if (keep_for_restart_ || it->second.orphaned) return DestroyLocked(id);
    if (it->second.destroying) {
      return absl::FailedPreconditionError(
          absl::StrCat(ContainerIdField(id), " is already being destroyed"));
    }
    // From here until the backend answers the container stays listed and
    // billed, but takes no new mapping (LiveSessionLocked) and cannot be
    // destroyed or recreated by anyone else.
    it->second.destroying = true;
    handle = it->second.handle;
  }
  // Without mu_: the kernel unmaps everything at once (type1
  // VFIO_DMA_UNMAP_FLAG_ALL, iommufd IOAS destroy) but may take a while.
  const absl::Status destroyed = backend_->DestroyContainer(handle);
  absl::MutexLock lock(&mu_);
  auto it = containers_.find(id);
  if (it == containers_.end() || it->second.handle != handle) {
    // Only this call removes a destroying container.
    LogEvent(LogLevel::kError, "destroy_lost_container", {{"container", id}, {"handle", handle}});
    return absl::InternalError(absl::StrCat(ContainerIdField(id), " vanished while destroyed"));
  }
  if (!destroyed.ok()) {
    it->second.destroying = false;
    return destroyed;
  }
  FinishDestroyLocked(it);
  return absl::OkStatus();
}

absl::Status AgentCore::DestroyLocked(absl::string_view id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(ContainerIdField(id), " is not held by this node"));
  }
  if (keep_for_restart_) {
    return absl::UnavailableError("the agent is restarting; retry");
  }
  if (it->second.orphaned) {
    if (!OrphanReleasedLocked(it->first, it->second)) {
      return absl::FailedPreconditionError(absl::StrCat(
          ContainerIdField(id), ": the address space an earlier run of this agent made is still "
          "alive in the kernel (a launcher holds a device fd) and its fds were lost across the "
          "restart; it cannot be revoked from here until the launcher closes it"));
    }
    ForgetContainerLocked(it->first, it->second);
    containers_.erase(it);
    return absl::OkStatus();
  }
  if (it->second.destroying) {
    return absl::FailedPreconditionError(
        absl::StrCat(ContainerIdField(id), " is already being destroyed"));
  }
  RETURN_IF_ERROR(backend_->DestroyContainer(it->second.handle));
  FinishDestroyLocked(it);
  return absl::OkStatus();
}

void AgentCore::FinishDestroyLocked(std::map<std::string, Held, std::less<>>::iterator it) {
  const std::string id = it->first;
  // The backend dropped every mapping with the address space; release their
  // pins so billing follows. Mappings still draining are released by their
  // run when it settles (it finds the container gone).
  for (const auto& [iova, m] : it->second.mappings) ForgetMappingLocked(m);
  LogEvent(LogLevel::kInfo, "container_destroyed",
           {{"container", id},
            {"tenant", it->second.tenant_id},
            {"mappings_dropped", it->second.mappings.size()}});
  ForgetContainerLocked(it->first, it->second);
  containers_.erase(it);
}

absl::StatusOr<v1::AgentGetContainerResponse> AgentCore::GetContainer(
    absl::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(ContainerIdField(id), " is not held by this node"));
  }
  v1::AgentGetContainerResponse out;
  *out.mutable_container() = ToProto(it->first, it->second);
  for (const auto& [iova, m] : it->second.mappings) *out.add_mappings() = MappingToProto(m);
  return out;
}

absl::StatusOr<v1::AgentGetContainerResponse> AgentCore::GetContainerPage(
    absl::string_view id, uint32_t page_size, absl::string_view page_token) {
  ASSIGN_OR_RETURN(const uint32_t limit, EffectivePageSize("page_size", page_size));
  ASSIGN_OR_RETURN(const std::optional<uint64_t> after,
                   ParseMappingPageToken("page_token", page_token));
  absl::MutexLock lock(&mu_);
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(ContainerIdField(id), " is not held by this node"));
  }
  v1::AgentGetContainerResponse out;
  *out.mutable_container() = ToProto(it->first, it->second);
  std::vector<v1::Mapping> page;
  out.set_next_page_token(PageOf(it->second.mappings, "", after, limit, &page));
  for (v1::Mapping& m : page) *out.add_mappings() = std::move(m);
  return out;
}

std::string AgentCore::PageOf(const std::map<uint64_t, MappingRecord>& mappings,
                              const std::string& session_id, std::optional<uint64_t> after,
                              size_t limit, std::vector<v1::Mapping>* out) {
  auto it = after.has_value() ? mappings.upper_bound(*after) : mappings.begin();
  for (; it != mappings.end(); ++it) {
    if (!session_id.empty() && it->second.session_id != session_id) continue;
    if (out->size() == limit) return MappingPageToken(out->back().iova());
    out->push_back(MappingToProto(it->second));
  }
  return "";
}

absl::StatusOr<v1::GetInventoryResponse> AgentCore::Inventory() {
  // Before mu_: the real backends' ListDevices waits for their create lock,
  // which a DestroyContainer holds across the kernel's bulk unmap; heartbeats
  // must not hold everyone else's lock while they wait.
  ASSIGN_OR_RETURN(std::vector<BackendDevice> devices, backend_->ListDevices());
  absl::MutexLock lock(&mu_);
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
  for (v1::PinUsage& u : UsageLocked()) *out.add_usage() = std::move(u);
  v1::LauncherHoldings* launcher = out.mutable_launcher();
  launcher->set_sessions(static_cast<uint32_t>(sessions_.size()));
  launcher->set_memory_objects(static_cast<uint32_t>(memory_.size()));
  uint64_t memory_bytes = 0;
  for (const auto& [id, m] : memory_) memory_bytes += m.region.size;
  launcher->set_memory_bytes(memory_bytes);
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
  ReconcileResult result;
  std::vector<DrainRun> revoke;
  {
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

  for (const v1::AgentContainer& c : desired) {
    absl::StatusOr<v1::AgentContainer> created =
        CreateLocked(c.id(), c.tenant_id(), {c.devices().begin(), c.devices().end()},
                     c.pin_budget_bytes());
    if (created.ok()) {
      std::vector<IovaRange> windows;
      for (const v1::IovaRange& w : c.windows()) windows.push_back({w.start(), w.last()});
      // Held: cannot fail.
      SetWindowsLocked(c.id(), std::move(windows), &revoke).IgnoreError();
    }
    if (!created.ok()) {
      LogEvent(LogLevel::kError, "reconcile_create_failed",
               {{"container", c.id()}, {"error", created.status().ToString()}});
      result.failed_ids.push_back(c.id());
      result.failure_reasons.push_back(created.status().ToString());
    }
  }
  result.held = ContainersLocked();
  }
  UnmapRuns(std::move(revoke), "revoke_failed", "outside the container's windows");
  return result;
}

}  // namespace agent
}  // namespace iommu
