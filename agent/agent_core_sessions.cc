// AgentCore's budgets, grant key, launcher sessions and windows: what the
// broker pushes and what a launcher's session may map (the mappings
// themselves are agent_core_mappings.cc).
#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/agent_core.h"
#include "agent/agent_core_internal.h"
#include "agent/log.h"
#include "common/status_macros.h"

namespace iommu {
namespace agent {

using core_internal::ContainerIdField;
using core_internal::InsideOneWindow;

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
    return absl::FailedPreconditionError(
        absl::StrCat("session: container ", s->second.container_id, " is being destroyed"));
  }
  return &s->second;
}

absl::StatusOr<std::vector<IovaRange>> AgentCore::OpenSession(const std::string& session_id,
                                                              const std::string& container_id,
                                                              const std::string& tenant,
                                                              std::vector<IovaRange> grant_windows,
                                                              std::string* resume_token) {
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
  TakeRunsLocked(
      container_id, c->second,
      [&](const MappingRecord& m) { return !InsideOneWindow(now, m.iova, m.size); }, revoke);
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
