#include "agent/agent_core.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agent/log.h"
#include "agent/mapping_page.h"
#include "common/grant_token.h"
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


// True when [iova, iova + length) lies wholly inside one of `windows`.
bool InsideOneWindow(const std::vector<IovaRange>& windows, uint64_t iova, uint64_t length) {
  const uint64_t last = iova + (length - 1);  // Callers checked for overflow.
  for (const IovaRange& w : windows) {
    if (iova >= w.start && last <= w.last) return true;
  }
  return false;
}

std::string WindowList(const std::vector<IovaRange>& windows) {
  std::vector<std::string> out;
  for (const IovaRange& w : windows) out.push_back(absl::StrCat(Hex(w.start), "-", Hex(w.last)));
  return absl::StrCat("[", absl::StrJoin(out, ", "), "]");
}

std::string ContainerIdField(absl::string_view id) {
  return absl::StrCat("container_id: ", id);
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

// ---------------------------------------------------------------- budgets

void AgentCore::SetBudgets(const std::vector<v1::ContainerBudget>& budgets) {
  absl::MutexLock lock(&mu_);
  for (const v1::ContainerBudget& b : budgets) {
    auto it = containers_.find(b.container_id());
    if (it == containers_.end() || it->second.pin_budget_bytes == b.pin_budget_bytes()) continue;
    LogEvent(LogLevel::kInfo, "pin_budget_set",
             {{"container", b.container_id()},
              {"tenant", it->second.tenant_id},
              {"from", it->second.pin_budget_bytes},
              {"to", b.pin_budget_bytes()}});
    it->second.pin_budget_bytes = b.pin_budget_bytes();
  }
}

std::vector<v1::PinUsage> AgentCore::Usage() {
  absl::MutexLock lock(&mu_);
  return UsageLocked();
}

std::vector<v1::PinUsage> AgentCore::UsageLocked() {
  std::vector<v1::PinUsage> out;
  for (const std::string& tenant : UsageTenantsLocked()) {
    v1::PinUsage u;
    u.set_tenant_id(tenant);
    u.set_billed_bytes(ledger_.billed_bytes(tenant));
    u.set_mapped_bytes(ledger_.mapped_bytes(tenant));
    u.set_kernel_counted_bytes(kernel_pins_.tenant_bytes(tenant));
    out.push_back(std::move(u));
  }
  return out;
}

std::vector<std::string> AgentCore::UsageTenantsLocked() const {
  std::vector<std::string> a = ledger_.tenants();
  const std::vector<std::string> b = kernel_pins_.tenants();
  std::vector<std::string> out;
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

uint64_t AgentCore::NodeBudgetLocked(const std::string& tenant) const {
  uint64_t sum = 0;
  for (const auto& [id, held] : containers_) {
    if (held.tenant_id == tenant) sum += held.pin_budget_bytes;
  }
  return sum;
}

void AgentCore::SetGrantKey(std::string key) {
  absl::MutexLock lock(&mu_);
  grant_key_ = std::move(key);
}

std::string AgentCore::grant_key() {
  absl::MutexLock lock(&mu_);
  return grant_key_;
}

absl::StatusOr<std::string> AgentCore::ContainerTenant(absl::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(absl::StrCat(ContainerIdField(id), " is not held by this node"));
  }
  return it->second.tenant_id;
}

absl::StatusOr<AgentCore::Session*> AgentCore::LiveSessionLocked(const std::string& session_id) {
  auto s = sessions_.find(session_id);
  if (s == sessions_.end()) {
    return absl::NotFoundError(absl::StrCat("session: no session \"", session_id, "\""));
  }
  auto c = containers_.find(s->second.container_id);
  if (c == containers_.end() || c->second.handle != s->second.handle) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session: container ", s->second.container_id,
        " this session was opened on was destroyed; open a new session with a new token"));
  }
  if (c->second.destroying) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session: container ", s->second.container_id, " is being destroyed"));
  }
  return &s->second;
}

absl::StatusOr<std::vector<IovaRange>> AgentCore::OpenSession(
    const std::string& session_id, const std::string& container_id, const std::string& tenant,
    std::vector<IovaRange> grant_windows, std::string* resume_token) {
  absl::MutexLock lock(&mu_);
  auto c = containers_.find(container_id);
  if (c == containers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(ContainerIdField(container_id), " is not held by this node"));
  }
  if (c->second.tenant_id != tenant) {
    return absl::UnauthenticatedError(absl::StrCat("token: container ", container_id,
                                                   " does not belong to tenant \"", tenant, "\""));
  }
  if (sessions_.count(session_id)) {
    return absl::AlreadyExistsError(absl::StrCat("session: \"", session_id, "\" exists"));
  }
  std::vector<IovaRange> usable;
  for (const IovaRange& w : grant_windows) {
    if (InsideOneWindow(c->second.windows, w.start, w.last - w.start + 1)) usable.push_back(w);
  }
  Session session{container_id, c->second.handle, tenant, std::move(grant_windows)};
  const std::string token = NewResumeToken();
  session.resume_digest = ResumeDigest(token);
  RETURN_IF_ERROR(JournalSessionLocked(session_id, session));
  sessions_[session_id] = std::move(session);
  if (resume_token != nullptr && journal_ != nullptr) *resume_token = token;
  return usable;
}

absl::StatusOr<size_t> AgentCore::SetWindows(const std::string& container_id,
                                             std::vector<IovaRange> windows) {
  std::vector<DrainRun> revoke;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(SetWindowsLocked(container_id, std::move(windows), &revoke).status());
  }
  return UnmapRuns(std::move(revoke), "revoke_failed", "outside the container's windows");
}

absl::StatusOr<size_t> AgentCore::SetWindowsLocked(const std::string& container_id,
                                                   std::vector<IovaRange> windows,
                                                   std::vector<DrainRun>* revoke) {
  auto c = containers_.find(container_id);
  if (c == containers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(ContainerIdField(container_id), " is not held by this node"));
  }
  c->second.windows = std::move(windows);
  // A released window takes its mappings with it: the broker's word on which
  // IOVA a tenant holds is final (DESIGN.md invariant 2). They leave the live
  // table now (so nothing uses them) and are unmapped without mu_.
  const std::vector<IovaRange>& now = c->second.windows;
  const size_t before = revoke->size();
  TakeRunsLocked(container_id, c->second,
                 [&](const MappingRecord& m) { return !InsideOneWindow(now, m.iova, m.size); },
                 revoke);
  size_t taken = 0;
  for (size_t i = before; i < revoke->size(); ++i) taken += (*revoke)[i].records.size();
  if (taken > 0) {
    LogEvent(LogLevel::kWarning, "mappings_revoked",
             {{"container", container_id},
              {"mappings", taken},
              {"unmap_calls", revoke->size() - before},
              {"reason", "outside the container's windows"}});
  }
  return taken;
}

absl::StatusOr<std::vector<std::string>> AgentCore::SessionDevices(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Session * session, LiveSessionLocked(session_id));
  return containers_.at(session->container_id).devices;
}

absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> AgentCore::SessionDeviceFds(
    const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Session * session, LiveSessionLocked(session_id));
  return backend_->DeviceFds(session->handle);
}

// ---------------------------------------------------------------- memory

absl::StatusOr<MemoryInfo> AgentCore::RegisterMemory(const std::string& session_id,
                                                     const std::string& tenant,
                                                     GuestMemoryRegion memory,
                                                     absl::string_view name) {
  if (memory.size == 0 || memory.size % Ledger::kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd: memory size must be a non-zero multiple of 4096, got ", memory.size));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Session * session, LiveSessionLocked(session_id));
  if (session->tenant != tenant) {
    return absl::InternalError(absl::StrCat("session ", session_id, " belongs to tenant ",
                                            session->tenant, ", not ", tenant));
  }
  const bool known = ledger_.owner(memory.key).has_value();
  ASSIGN_OR_RETURN(std::string owner, ledger_.Register(memory.key, memory.size, tenant));
  std::string id;
  do {
    id = absl::StrFormat("m-%016x", absl::Uniform<uint64_t>(rng_));
  } while (memory_.count(id));
  MemoryInfo info{id, memory.size, owner, known};
  LogEvent(LogLevel::kInfo, "memory_registered",
           {{"memory", id},
            {"session", session_id},
            {"tenant", tenant},
            {"owner", owner},
            {"object", memory.key.DebugString()},
            {"size", Hex(memory.size)},
            {"shared", known}});
  auto [stored, unused] =
      memory_.emplace(id, Memory{session_id, tenant, std::string(name), std::move(memory)});
  if (absl::Status persisted = PersistMemoryLocked(id, stored->second); !persisted.ok()) {
    ledger_.Unregister(stored->second.region.key).IgnoreError();
    memory_.erase(stored);
    return persisted;
  }
  return info;
}

absl::Status AgentCore::MapMemory(const std::string& session_id, const std::string& container_id,
                                  const std::string& memory_id, uint64_t offset,
                                  uint64_t length, uint64_t iova, bool readable, bool writable) {
  const absl::Time start = absl::Now();
  absl::MutexLock lock(&mu_);
  // Every return below, refusals included, is one timed map.
  absl::Cleanup observe = [&] {
    if (observer_ != nullptr) observer_->ObserveMap(absl::Now() - start);
  };
  ASSIGN_OR_RETURN(Session * session, LiveSessionLocked(session_id));
  if (session->container_id != container_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        ContainerIdField(container_id), " is not the container of session ", session_id));
  }
  auto c = containers_.find(container_id);
  auto mem = memory_.find(memory_id);
  if (mem == memory_.end() || mem->second.session_id != session_id) {
    // Another session's memory is as absent as memory that never existed.
    return absl::NotFoundError(
        absl::StrCat("memory_id: this session has no memory \"", memory_id, "\""));
  }
  if (!readable && !writable) {
    return absl::InvalidArgumentError("readable, writable: at least one must be set");
  }
  const uint64_t page = MinPageSize(c->second.geometry.page_size_bitmap());
  for (const auto& [field, value] :
       {std::pair<const char*, uint64_t>{"offset", offset}, {"length", length}, {"iova", iova}}) {
    if (value % page != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": must be a multiple of the IOMMU page size ", Hex(page), ", got ", Hex(value)));
    }
  }
  if (length == 0) return absl::InvalidArgumentError("length: must be greater than 0");
  const uint64_t size = mem->second.region.size;
  if (offset > size || length > size - offset) {
    return absl::InvalidArgumentError(absl::StrCat("length: offset ", Hex(offset), " + length ",
                                                   Hex(length), " passes the end of memory ",
                                                   memory_id, " (", Hex(size), " bytes)"));
  }
  if (length - 1 > UINT64_MAX - iova) {
    return absl::InvalidArgumentError(
        absl::StrCat("iova: ", Hex(iova), " + length ", Hex(length), " overflows 64 bits"));
  }
  // Inside a window the token named, and one the container still has: a
  // window released since the token was issued is closed to it.
  if (!InsideOneWindow(session->grant_windows, iova, length) ||
      !InsideOneWindow(c->second.windows, iova, length)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "iova: ", Hex(iova), "+", Hex(length), " is outside every window of the session ",
        WindowList(session->grant_windows), " that container ", container_id, " still holds ",
        WindowList(c->second.windows)));
  }
  // Mapping records live in the agent's memory whichever container they are
  // in: one tenant may not take them all (DESIGN.md invariant 10).
  auto tenant_maps = mappings_per_tenant_.find(session->tenant);
  const size_t held_maps = tenant_maps == mappings_per_tenant_.end() ? 0 : tenant_maps->second;
  if (held_maps >= max_mappings_per_tenant_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "iova: tenant \"", session->tenant, "\" already holds ", held_maps,
        " mappings on node ", node_, " (limit ", max_mappings_per_tenant_,
        " per tenant, --max-mappings-per-tenant); unmap some first"));
  }
  const ObjectKey key = mem->second.region.key;
  const std::string owner = ledger_.owner(key).value_or(mem->second.tenant);
  ASSIGN_OR_RETURN(uint64_t newly, ledger_.NewlyBilledIfMapped(key, offset, length));
  const uint64_t billed = ledger_.billed_bytes(owner);
  const uint64_t budget = NodeBudgetLocked(owner);
  if (newly > 0 && (billed > budget || newly > budget - billed)) {
    // Rate-limited per tenant: a launcher retrying a refused map in a loop
    // must not flood the log (DESIGN.md invariant 10).
    uint64_t suppressed = 0;
    if (warnings_.Allow(session->tenant, absl::Now(), &suppressed)) {
      std::vector<LogField> fields = {{"container", container_id}, {"session", session_id},
                                      {"owner", owner},            {"billed", billed},
                                      {"newly", newly},            {"budget", budget}};
      if (suppressed > 0) fields.push_back({"suppressed", suppressed});
      LogEvent(LogLevel::kWarning, "map_refused_quota", fields);
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "length: mapping ", Hex(length), " bytes would bill tenant \"", owner, "\" ", Hex(newly),
        " more bytes; it has ", Hex(billed), " billed of its ", Hex(budget),
        " byte pin budget on node ", node_, " (the sum of its containers' budgets here)"));
  }
  // What the kernel will charge (per mapping), checked before asking it.
  RETURN_IF_ERROR(kernel_pins_.CheckMap(session->tenant, length, node_));
  if (mem->second.region.vaddr == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "memory_id: the fd of memory ", memory_id,
        " was lost across an agent restart; register the memory again"));
  }
  RETURN_IF_ERROR(CheckNotDraining(c->second, iova, iova + (length - 1)));
  MappingRecord m;
  m.iova = iova;
  m.size = length;
  m.readable = readable;
  m.writable = writable;
  m.session_id = session_id;
  m.memory_id = memory_id;
  m.offset = offset;
  m.key = key;
  m.owner = owner;
  m.tenant = session->tenant;
  // Journaled before the kernel pins anything: after a crash the journal
  // names every mapping the kernel may hold (billing may over-count one
  // that never reached the kernel, never under-count).
  RETURN_IF_ERROR(JournalMappingLocked(container_id, m));
  if (absl::Status mapped = backend_->Map(c->second.handle, iova,
                                          mem->second.region.vaddr + offset, length, readable,
                                          writable);
      !mapped.ok()) {
    ForgetMappingsLocked(container_id, {iova});
    return mapped;
  }
  absl::StatusOr<uint64_t> billed_now = ledger_.Map(key, offset, length);
  if (!billed_now.ok()) {
    // Cannot happen after NewlyBilledIfMapped succeeded; keep the backend
    // and the ledger in step anyway.
    backend_->Unmap(c->second.handle, iova, length).IgnoreError();
    ForgetMappingsLocked(container_id, {iova});
    return absl::InternalError(absl::StrCat("ledger refused a checked map: ",
                                            billed_now.status().ToString()));
  }
  c->second.mappings.emplace(iova, std::move(m));
  ++mappings_per_tenant_[session->tenant];
  kernel_pins_.Add(session->tenant, length);
  LogEvent(LogLevel::kDebug, "mapped",
           {{"container", container_id}, {"session", session_id}, {"memory", memory_id},
            {"iova", Hex(iova)}, {"size", Hex(length)}, {"newly_billed", *billed_now}});
  return absl::OkStatus();
}

void AgentCore::SetMaxMappingsPerTenant(size_t limit) {
  absl::MutexLock lock(&mu_);
  max_mappings_per_tenant_ = limit;
}

void AgentCore::SetKernelPinLimits(uint64_t per_tenant_bytes, uint64_t node_bytes) {
  absl::MutexLock lock(&mu_);
  kernel_pins_.SetLimits(per_tenant_bytes, node_bytes);
}

void AgentCore::ForgetMappingLocked(const MappingRecord& m) {
  kernel_pins_.Remove(m.tenant, m.size);
  auto t = mappings_per_tenant_.find(m.tenant);
  if (t != mappings_per_tenant_.end() && --t->second == 0) mappings_per_tenant_.erase(t);
  absl::StatusOr<uint64_t> released = ledger_.Unmap(m.key, m.offset, m.size);
  if (!released.ok()) {
    LogEvent(LogLevel::kError, "ledger_unmap_failed",
             {{"memory", m.memory_id}, {"iova", Hex(m.iova)}, {"error", released.status().ToString()}});
  }
}

absl::StatusOr<uint64_t> AgentCore::Unmap(const std::string& container_id, uint64_t iova,
                                          uint64_t length, const std::string& session_id) {
  const absl::Time start = absl::Now();
  absl::Cleanup observe = [&] {
    if (observer_ != nullptr) observer_->ObserveUnmap(absl::Now() - start);
  };
  DrainRun run;
  {
    absl::MutexLock lock(&mu_);
    if (!session_id.empty()) {
      ASSIGN_OR_RETURN(Session * session, LiveSessionLocked(session_id));
      if (session->container_id != container_id) {
        return absl::PermissionDeniedError(absl::StrCat(
            ContainerIdField(container_id), " is not the container of session ", session_id));
      }
    }
    auto c = containers_.find(container_id);
    if (c == containers_.end()) {
      return absl::NotFoundError(
          absl::StrCat(ContainerIdField(container_id), " is not held by this node"));
    }
    if (length == 0) return absl::InvalidArgumentError("length: must be greater than 0");
    if (length - 1 > UINT64_MAX - iova) {
      return absl::InvalidArgumentError(
          absl::StrCat("iova: ", Hex(iova), " + length ", Hex(length), " overflows 64 bits"));
    }
    const uint64_t last = iova + (length - 1);
    Held& held = c->second;
    // The backend would unmap a draining run's mappings under its feet.
    RETURN_IF_ERROR(CheckNotDraining(held, iova, last));
    auto& mappings = held.mappings;
    // The first mapping that may intersect: the one starting at or before iova.
    auto it = mappings.upper_bound(iova);
    if (it != mappings.begin()) --it;
    auto first = mappings.end();
    auto end = mappings.end();
    for (; it != mappings.end() && it->first <= last; ++it) {
      const MappingRecord& m = it->second;
      const uint64_t m_last = m.iova + (m.size - 1);
      if (m_last < iova) continue;
      if (m.iova < iova || m_last > last) {
        return absl::InvalidArgumentError(absl::StrCat(
            "iova: range ", Hex(iova), "-", Hex(last), " cuts mapping ", Hex(m.iova), "-",
            Hex(m_last), "; unmap whole mappings"));
      }
      if (!session_id.empty() && m.session_id != session_id) {
        return absl::PermissionDeniedError(absl::StrCat(
            "iova: range ", Hex(iova), "-", Hex(last), " holds a mapping of another session"));
      }
      if (first == mappings.end()) first = it;
    }
    end = it;
    if (first == mappings.end()) {
      return absl::NotFoundError(
          absl::StrCat("iova: no mapping inside ", Hex(iova), "-", Hex(last)));
    }
    // One backend call for the whole range, made without mu_: the mappings
    // leave the live table and the range is reserved until it settles.
    run.container_id = container_id;
    run.handle = held.handle;
    run.start = iova;
    run.last = last;
    for (auto m = first; m != end; ++m) run.records.push_back(std::move(m->second));
    mappings.erase(first, end);
    held.draining.emplace(run.start, run.last);
    held.draining_mappings += run.records.size();
  }
  absl::StatusOr<uint64_t> unmapped = backend_->Unmap(run.handle, iova, length);
  uint64_t bytes = 0;
  for (const MappingRecord& m : run.records) bytes += m.size;
  absl::MutexLock lock(&mu_);
  SettleRunLocked(run, unmapped, "unmap_failed");
  if (!unmapped.ok()) return unmapped.status();
  return bytes;
}

absl::Status AgentCore::CheckNotDraining(const Held& held, uint64_t iova, uint64_t last) {
  // The draining range starting at or before `last` with the highest start
  // is the only one that can overlap [iova, last] (they are disjoint).
  auto d = held.draining.upper_bound(last);
  if (d == held.draining.begin()) return absl::OkStatus();
  --d;
  if (d->second < iova) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "iova: ", Hex(iova), "-", Hex(last), " overlaps ", Hex(d->first), "-", Hex(d->second),
      ", which is being unmapped (a closing session, a revoked window or an unmap); retry"));
}

void AgentCore::TakeRunsLocked(const std::string& container_id, Held& held,
                               absl::FunctionRef<bool(const MappingRecord&)> pick,
                               std::vector<DrainRun>* out) {
  const size_t before = out->size();
  DrainRun* open = nullptr;  // The run the last picked mapping joined.
  for (auto it = held.mappings.begin(); it != held.mappings.end();) {
    MappingRecord& m = it->second;
    if (!pick(m)) {
      open = nullptr;  // Another mapping ends the run.
      ++it;
      continue;
    }
    // A gap may join the run only if no draining range lies in it (another
    // run's unmap must not be ours too).
    if (open != nullptr && m.iova > open->last + 1 &&
        !CheckNotDraining(held, open->last + 1, m.iova - 1).ok()) {
      open = nullptr;
    }
    if (open == nullptr) {
      out->push_back(DrainRun{container_id, held.handle, m.iova, m.iova + (m.size - 1), {}});
      open = &out->back();
    }
    open->last = m.iova + (m.size - 1);
    open->records.push_back(std::move(m));
    it = held.mappings.erase(it);
  }
  // Reserve after the walk: the check above must see only older runs.
  for (size_t i = before; i < out->size(); ++i) {
    const DrainRun& run = (*out)[i];
    held.draining.emplace(run.start, run.last);
    held.draining_mappings += run.records.size();
  }
}

size_t AgentCore::UnmapRuns(std::vector<DrainRun> runs, absl::string_view event,
                            absl::string_view reason) {
  size_t unmapped = 0;
  for (DrainRun& run : runs) {
    absl::StatusOr<uint64_t> result =
        backend_->Unmap(run.handle, run.start, run.last - run.start + 1);
    absl::MutexLock lock(&mu_);
    if (result.ok()) {
      unmapped += run.records.size();
      LogEvent(LogLevel::kDebug, "mappings_unmapped",
               {{"container", run.container_id},
                {"range", absl::StrCat(Hex(run.start), "-", Hex(run.last))},
                {"mappings", run.records.size()},
                {"reason", reason}});
    }
    SettleRunLocked(run, result, event);
  }
  return unmapped;
}

void AgentCore::SettleRunLocked(DrainRun& run, const absl::StatusOr<uint64_t>& unmapped,
                                absl::string_view event) {
  auto c = containers_.find(run.container_id);
  Held* held = c != containers_.end() && c->second.handle == run.handle ? &c->second : nullptr;
  if (held != nullptr) {
    held->draining.erase(run.start);
    held->draining_mappings -= run.records.size();
  }
  if (unmapped.ok() || held == nullptr) {
    // Unmapped, or the container was destroyed meanwhile and its address
    // space (and every pin) went with it: billing follows the kernel.
    uint64_t bytes = 0;
    std::vector<uint64_t> iovas;
    for (const MappingRecord& m : run.records) {
      bytes += m.size;
      ForgetMappingLocked(m);
      iovas.push_back(m.iova);
    }
    // The journal forgets them only now that the kernel has (it never names
    // less than the kernel holds).
    ForgetMappingsLocked(run.container_id, iovas);
    if (unmapped.ok() && *unmapped != bytes) {
      LogEvent(LogLevel::kError, "unmap_bytes_mismatch",
               {{"container", run.container_id},
                {"range", absl::StrCat(Hex(run.start), "-", Hex(run.last))},
                {"expected", Hex(bytes)},
                {"backend", Hex(*unmapped)}});
    }
    return;
  }
  // A failed backend call changed nothing: the kernel still pins the pages,
  // so they stay in the container and billed (as orphans when their session
  // is gone) until it is destroyed.
  LogEvent(LogLevel::kError, event,
           {{"container", run.container_id},
            {"range", absl::StrCat(Hex(run.start), "-", Hex(run.last))},
            {"mappings", run.records.size()},
            {"error", unmapped.status().ToString()}});
  for (MappingRecord& m : run.records) {
    const uint64_t iova = m.iova;
    held->mappings.emplace(iova, std::move(m));
  }
  run.records.clear();
}

std::vector<v1::Mapping> AgentCore::SessionMappings(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Mapping> out;
  for (const auto& [id, held] : containers_) {
    for (const auto& [iova, m] : held.mappings) {
      if (m.session_id == session_id) out.push_back(MappingToProto(m));
    }
  }
  return out;
}

absl::StatusOr<AgentCore::MappingPage> AgentCore::SessionMappingsPage(
    const std::string& session_id, uint32_t page_size, absl::string_view page_token) {
  if (page_size > kMaxLauncherMappingPage) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size: at most ", kMaxLauncherMappingPage, " (what fits one packet), got ",
        page_size));
  }
  const size_t limit = page_size == 0 ? kDefaultLauncherMappingPage : page_size;
  ASSIGN_OR_RETURN(const std::optional<uint64_t> after,
                   ParseMappingPageToken("page_token", page_token));
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Session * session, LiveSessionLocked(session_id));
  MappingPage page;
  page.next_page_token = PageOf(containers_.at(session->container_id).mappings, session_id,
                                after, limit, &page.mappings);
  return page;
}

void AgentCore::CloseSession(const std::string& session_id) {
  std::vector<DrainRun> runs;
  std::vector<Memory> memory;
  {
    absl::MutexLock lock(&mu_);
    // Exiting for a restart: the launcher's connection closes with this
    // process, its session (and the guest's DMA) must outlive it.
    if (keep_for_restart_) return;
    // Out of the live tables at once: nothing can map, unmap or list through
    // this session any more, and its IOVA runs are reserved. An orphan's
    // mappings are not ours to unmap: they stay billed until the kernel
    // releases the old address space.
    for (auto& [id, held] : containers_) {
      if (held.orphaned) continue;
      TakeRunsLocked(
          id, held, [&](const MappingRecord& m) { return m.session_id == session_id; }, &runs);
    }
    for (auto it = memory_.begin(); it != memory_.end();) {
      if (it->second.session_id != session_id) {
        ++it;
        continue;
      }
      memory.push_back(std::move(it->second));
      it = memory_.erase(it);
    }
    sessions_.erase(session_id);
  }
  const size_t run_count = runs.size();
  const size_t unmapped = UnmapRuns(std::move(runs), "session_unmap_failed", "session closed");
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> memory_fd_names;
    for (const Memory& m : memory) {
      absl::Status s = ledger_.Unregister(m.region.key);
      if (!s.ok()) {
        LogEvent(LogLevel::kError, "memory_unregister_failed",
                 {{"session", session_id}, {"error", s.ToString()}});
      }
      if (!m.fd_name.empty()) memory_fd_names.push_back(m.fd_name);
    }
    // A mapping the backend would not unmap (or an orphan's) stays in the
    // journal with its session.
    bool kept = false;
    for (const auto& [id, held] : containers_) {
      for (const auto& [iova, m] : held.mappings) kept |= m.session_id == session_id;
    }
    if (!kept) ForgetSessionLocked(session_id, memory_fd_names);
    LogEvent(LogLevel::kInfo, "session_closed",
             {{"session", session_id},
              {"unmapped", unmapped},
              {"unmap_calls", run_count},
              {"memory_released", memory.size()}});
  }
  // The agent's views of the memory (keepalive) go here, without mu_.
}

AgentStats AgentCore::Stats() {
  absl::MutexLock lock(&mu_);
  AgentStats s;
  for (const std::string& tenant : UsageTenantsLocked()) {
    s.tenants.push_back({tenant, ledger_.billed_bytes(tenant), ledger_.mapped_bytes(tenant),
                         kernel_pins_.tenant_bytes(tenant)});
  }
  s.kernel_counted_bytes = kernel_pins_.total_bytes();
  s.kernel_pin_bytes_per_tenant_limit = kernel_pins_.per_tenant_limit();
  s.kernel_pin_bytes_node_limit = kernel_pins_.node_limit();
  s.containers = containers_.size();
  for (const auto& [id, held] : containers_) {
    // Draining mappings still pin pages: count them until they settle.
    const uint64_t n = held.mappings.size() + held.draining_mappings;
    s.mappings += n;
    s.max_container_mappings = std::max(s.max_container_mappings, n);
    s.mappings_limit = std::max<uint64_t>(s.mappings_limit, held.geometry.max_mappings());
  }
  s.launcher_sessions = sessions_.size();
  return s;
}

}  // namespace agent
}  // namespace iommu
