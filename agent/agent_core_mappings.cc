// AgentCore, the part that maps guest memory: registering a session's memory,
// mapping and unmapping it inside the granted windows, draining mappings in
// runs outside the lock, and closing a session (agent_core.h).
#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agent/agent_core.h"
#include "agent/agent_core_internal.h"
#include "agent/log.h"
#include "agent/mapping_page.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {

using core_internal::ContainerIdField;
using core_internal::InsideOneWindow;
using core_internal::WindowList;

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
                                  const std::string& memory_id, uint64_t offset, uint64_t length,
                                  uint64_t iova, bool readable, bool writable) {
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
    return absl::ResourceExhaustedError(
        absl::StrCat("iova: tenant \"", session->tenant, "\" already holds ", held_maps,
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
    LogIfAllowed(warnings_, session->tenant, LogLevel::kWarning, "map_refused_quota",
                 {{"container", container_id},
                  {"session", session_id},
                  {"owner", owner},
                  {"billed", billed},
                  {"newly", newly},
                  {"budget", budget}});
    return absl::ResourceExhaustedError(absl::StrCat(
        "length: mapping ", Hex(length), " bytes would bill tenant \"", owner, "\" ", Hex(newly),
        " more bytes; it has ", Hex(billed), " billed of its ", Hex(budget),
        " byte pin budget on node ", node_, " (the sum of its containers' budgets here)"));
  }
  // What the kernel will charge (per mapping), checked before asking it.
  RETURN_IF_ERROR(kernel_pins_.CheckMap(session->tenant, length, node_));
  if (mem->second.region.vaddr == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("memory_id: the fd of memory ", memory_id,
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
  if (absl::Status mapped = backend_->Map(c->second.handle, iova, mem->second.region.vaddr + offset,
                                          length, readable, writable);
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
    return absl::InternalError(
        absl::StrCat("ledger refused a checked map: ", billed_now.status().ToString()));
  }
  c->second.mappings.emplace(iova, std::move(m));
  ++mappings_per_tenant_[session->tenant];
  kernel_pins_.Add(session->tenant, length);
  LogEvent(LogLevel::kDebug, "mapped",
           {{"container", container_id},
            {"session", session_id},
            {"memory", memory_id},
            {"iova", Hex(iova)},
            {"size", Hex(length)},
            {"newly_billed", *billed_now}});
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
    LogEvent(
        LogLevel::kError, "ledger_unmap_failed",
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
        return absl::InvalidArgumentError(absl::StrCat("iova: range ", Hex(iova), "-", Hex(last),
                                                       " cuts mapping ", Hex(m.iova), "-",
                                                       Hex(m_last), "; unmap whole mappings"));
      }
      if (!session_id.empty() && m.session_id != session_id) {
        return absl::PermissionDeniedError(absl::StrCat("iova: range ", Hex(iova), "-", Hex(last),
                                                        " holds a mapping of another session"));
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
    return absl::InvalidArgumentError(absl::StrCat("page_size: at most ", kMaxLauncherMappingPage,
                                                   " (what fits one packet), got ", page_size));
  }
  const size_t limit = page_size == 0 ? kDefaultLauncherMappingPage : page_size;
  ASSIGN_OR_RETURN(const std::optional<uint64_t> after,
                   ParseMappingPageToken("page_token", page_token));
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Session * session, LiveSessionLocked(session_id));
  MappingPage page;
  page.next_page_token = PageOf(containers_.at(session->container_id).mappings, session_id, after,
                                limit, &page.mappings);
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

}  // namespace agent
}  // namespace iommu
