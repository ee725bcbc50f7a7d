// AgentCore, the part that makes its state survive a restart of the process:
// journaling each change, handing kernel objects to the fd store, and
// rebuilding everything on start (agent_core.h, "surviving a restart").
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/agent_core.h"
#include "agent/log.h"
#include "common/grant_token.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

constexpr absl::string_view kMemoryFdPrefix = "mem.";

bool Inside(const std::vector<IovaRange>& windows, const IovaRange& r) {
  for (const IovaRange& w : windows) {
    if (r.start >= w.start && r.last <= w.last) return true;
  }
  return false;
}

}  // namespace

std::string NewResumeToken() { return NewGrantTokenId() + NewGrantTokenId(); }

std::string ResumeDigest(absl::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

void AgentCore::SetPersistence(StateJournal* journal, FdStore* fd_store) {
  absl::MutexLock lock(&mu_);
  journal_ = journal;
  fd_store_ = fd_store;
}

void AgentCore::KeepStateForRestart() {
  absl::MutexLock lock(&mu_);
  keep_for_restart_ = true;
}

// ------------------------------------------------------------ each change

absl::Status AgentCore::PersistContainerLocked(const std::string& id, Held& held) {
  if (fd_store_ != nullptr) {
    absl::StatusOr<PersistedContainer> persisted = backend_->PersistContainer(held.handle);
    if (!persisted.ok()) {
      return absl::Status(persisted.status().code(),
                          absl::StrCat("container_id: ", id, ": cannot keep its kernel objects "
                                       "across a restart: ", persisted.status().message()));
    }
    held.fd_names.clear();
    for (auto& [name, fd] : persisted->fds) {
      const std::string full = absl::StrCat(id, ".", name);
      if (absl::Status put = fd_store_->Put(full, fd.get()); !put.ok()) {
        for (const std::string& done : held.fd_names) fd_store_->Remove(done).IgnoreError();
        held.fd_names.clear();
        return absl::UnavailableError(absl::StrCat("container_id: ", id, ": ",
                                                   fd_store_->Describe(), ": ", put.message()));
      }
      held.fd_names.push_back(full);
    }
    if (journal_ != nullptr) {
      absl::Status journaled = journal_->PutContainer(
          {id, held.tenant_id, held.devices, std::string(backend_->kind()), persisted->state,
           held.fd_names});
      if (!journaled.ok()) {
        for (const std::string& done : held.fd_names) fd_store_->Remove(done).IgnoreError();
        held.fd_names.clear();
        return journaled;
      }
    }
    return absl::OkStatus();
  }
  if (journal_ == nullptr) return absl::OkStatus();
  return journal_->PutContainer(
      {id, held.tenant_id, held.devices, std::string(backend_->kind()), "", {}});
}

void AgentCore::ForgetContainerLocked(const std::string& id, const Held& held) {
  if (journal_ != nullptr) {
    if (absl::Status s = journal_->DeleteContainer(id); !s.ok()) {
      LogEvent(LogLevel::kError, "journal_write_failed", {{"container", id}, {"error", s.ToString()}});
    }
  }
  if (fd_store_ == nullptr) return;
  for (const std::string& name : held.fd_names) {
    if (absl::Status s = fd_store_->Remove(name); !s.ok()) {
      LogEvent(LogLevel::kError, "fd_store_remove_failed", {{"fd", name}, {"error", s.ToString()}});
    }
  }
}

absl::Status AgentCore::JournalSessionLocked(const std::string& id, const Session& s) {
  if (journal_ == nullptr) return absl::OkStatus();
  return journal_->PutSession({id, s.container_id, s.tenant, s.grant_windows, s.resume_digest});
}

absl::Status AgentCore::PersistMemoryLocked(const std::string& id, Memory& memory) {
  if (fd_store_ != nullptr && memory.region.fd >= 0) {
    const std::string name = absl::StrCat(kMemoryFdPrefix, id);
    if (absl::Status put = fd_store_->Put(name, memory.region.fd); !put.ok()) {
      return absl::UnavailableError(absl::StrCat("fd: ", fd_store_->Describe(), ": ", put.message()));
    }
    memory.fd_name = name;
  }
  if (journal_ == nullptr) return absl::OkStatus();
  absl::Status journaled =
      journal_->PutMemory({id, memory.session_id, memory.tenant, memory.name, memory.region.key,
                           memory.region.size, memory.fd_name});
  if (!journaled.ok() && !memory.fd_name.empty()) {
    fd_store_->Remove(memory.fd_name).IgnoreError();
    memory.fd_name.clear();
  }
  return journaled;
}

absl::Status AgentCore::JournalMappingLocked(const std::string& container_id,
                                             const MappingRecord& m) {
  if (journal_ == nullptr) return absl::OkStatus();
  JournalMapping j;
  j.container_id = container_id;
  j.iova = m.iova;
  j.size = m.size;
  j.readable = m.readable;
  j.writable = m.writable;
  j.session_id = m.session_id;
  j.memory_id = m.memory_id;
  j.offset = m.offset;
  j.owner = m.owner;
  j.tenant = m.tenant;
  return journal_->PutMapping(j);
}

void AgentCore::ForgetMappingsLocked(const std::string& container_id,
                                     const std::vector<uint64_t>& iovas) {
  if (journal_ == nullptr || iovas.empty()) return;
  // Failing here leaves records of mappings the kernel no longer holds:
  // billed until the next restart finds them unmapped, never lost.
  if (absl::Status s = journal_->DeleteMappings(container_id, iovas); !s.ok()) {
    LogEvent(LogLevel::kError, "journal_write_failed",
             {{"container", container_id}, {"mappings", iovas.size()}, {"error", s.ToString()}});
  }
}

void AgentCore::ForgetSessionLocked(const std::string& id,
                                    const std::vector<std::string>& memory_fd_names) {
  if (journal_ != nullptr) {
    if (absl::Status s = journal_->DeleteSession(id); !s.ok()) {
      LogEvent(LogLevel::kError, "journal_write_failed", {{"session", id}, {"error", s.ToString()}});
    }
  }
  if (fd_store_ == nullptr) return;
  for (const std::string& name : memory_fd_names) fd_store_->Remove(name).IgnoreError();
}

bool AgentCore::OrphanReleasedLocked(const std::string& id, Held& held) {
  absl::StatusOr<ContainerHandle> probe = backend_->CreateContainer(held.devices);
  if (!probe.ok()) {
    uint64_t suppressed = 0;
    if (warnings_.Allow(absl::StrCat("orphan ", id), absl::Now(), &suppressed)) {
      LogEvent(LogLevel::kWarning, "orphan_still_held",
               {{"container", id},
                {"tenant", held.tenant_id},
                {"mappings_billed", held.mappings.size()},
                {"error", probe.status().ToString()},
                {"suppressed", suppressed}});
    }
    return false;
  }
  if (absl::Status undo = backend_->DestroyContainer(*probe); !undo.ok()) {
    LogEvent(LogLevel::kError, "orphan_probe_destroy_failed",
             {{"container", id}, {"error", undo.ToString()}});
  }
  std::vector<uint64_t> iovas;
  for (const auto& [iova, m] : held.mappings) {
    ForgetMappingLocked(m);
    iovas.push_back(iova);
  }
  ForgetMappingsLocked(id, iovas);
  LogEvent(LogLevel::kInfo, "orphan_released",
           {{"container", id}, {"tenant", held.tenant_id}, {"mappings_released", iovas.size()}});
  held.mappings.clear();
  return true;
}

// ------------------------------------------------------------ on start

RestoreReport AgentCore::Restore(
    const JournalState& state, std::map<std::string, UniqueFd> fds, absl::Time resume_deadline,
    const std::function<absl::StatusOr<GuestMemoryRegion>(UniqueFd)>& map_memory) {
  absl::MutexLock lock(&mu_);
  RestoreReport report;
  std::set<std::string> named;  // Fd names the journal accounts for.
  std::map<std::string, std::vector<const JournalMapping*>> by_container;
  for (const JournalMapping& m : state.mappings) by_container[m.container_id].push_back(&m);

  for (const JournalContainer& jc : state.containers) {
    Held held;
    held.tenant_id = jc.tenant;
    held.devices = jc.devices;
    held.fd_names = jc.fd_names;
    std::map<std::string, UniqueFd> mine;
    const std::string prefix = absl::StrCat(jc.id, ".");
    for (const std::string& name : jc.fd_names) {
      named.insert(name);
      auto fd = fds.find(name);
      if (fd != fds.end() && absl::StartsWith(name, prefix)) {
        mine.emplace(name.substr(prefix.size()), std::move(fd->second));
      }
    }
    std::vector<BackendMapping> mappings;
    for (const JournalMapping* m : by_container[jc.id]) {
      mappings.push_back({m->iova, m->size, 0, m->readable, m->writable});
    }
    absl::StatusOr<ContainerHandle> adopted =
        jc.backend_kind != backend_->kind()
            ? absl::FailedPreconditionError(absl::StrCat("made by the ", jc.backend_kind,
                                                         " backend, this agent runs ",
                                                         backend_->kind()))
            : backend_->AdoptContainer(jc.devices, std::move(mine), jc.backend_state, mappings);
    if (adopted.ok()) {
      held.handle = *adopted;
      absl::StatusOr<Geometry> geometry = backend_->GetGeometry(held.handle);
      if (geometry.ok()) held.geometry = GeometryToProto(*geometry);
      ++report.containers_adopted;
    } else {
      held.orphaned = true;
      ++report.containers_orphaned;
      report.problems.push_back(absl::StrCat("container ", jc.id, ": ", adopted.status().ToString()));
    }
    LogEvent(adopted.ok() ? LogLevel::kInfo : LogLevel::kError,
             adopted.ok() ? "container_adopted" : "container_orphaned",
             {{"container", jc.id},
              {"tenant", jc.tenant},
              {"devices", absl::StrJoin(jc.devices, ",")},
              {"mappings", mappings.size()},
              {"error", adopted.ok() ? "" : adopted.status().ToString()}});
    containers_.emplace(jc.id, std::move(held));
  }

  // Memory, owners first: a shared object is billed to the tenant the
  // mappings say, as before the restart.
  std::map<ObjectKey, std::string> owner_of;
  std::map<std::string, ObjectKey> key_of_memory;
  for (const JournalMemory& jm : state.memory) key_of_memory[jm.id] = jm.key;
  for (const JournalMapping& m : state.mappings) {
    auto k = key_of_memory.find(m.memory_id);
    if (k != key_of_memory.end()) owner_of.emplace(k->second, m.owner);
  }
  std::vector<const JournalMemory*> memory;
  for (const JournalMemory& jm : state.memory) memory.push_back(&jm);
  std::stable_sort(memory.begin(), memory.end(), [&](const JournalMemory* a, const JournalMemory* b) {
    auto owns = [&](const JournalMemory* m) {
      auto o = owner_of.find(m->key);
      return o != owner_of.end() && o->second == m->tenant;
    };
    return owns(a) && !owns(b);
  });
  for (const JournalMemory* jm : memory) {
    GuestMemoryRegion region;
    region.key = jm->key;
    region.size = jm->size;
    if (!jm->fd_name.empty()) named.insert(jm->fd_name);
    auto fd = fds.find(jm->fd_name);
    if (fd != fds.end() && fd->second.get() >= 0) {
      absl::StatusOr<GuestMemoryRegion> mapped = map_memory(std::move(fd->second));
      if (mapped.ok() && mapped->key == jm->key && mapped->size == jm->size) {
        region = *std::move(mapped);
      } else {
        report.problems.push_back(absl::StrCat(
            "memory ", jm->id, ": its fd is not the memory journaled (",
            mapped.ok() ? mapped->key.DebugString() : mapped.status().ToString(), ")"));
        ++report.memory_fds_lost;
      }
    } else {
      report.problems.push_back(absl::StrCat("memory ", jm->id, ": fd ", jm->fd_name,
                                             " missing from the fd store"));
      ++report.memory_fds_lost;
    }
    if (absl::StatusOr<std::string> owner = ledger_.Register(jm->key, jm->size, jm->tenant);
        !owner.ok()) {
      report.problems.push_back(absl::StrCat("memory ", jm->id, ": ", owner.status().ToString()));
      continue;
    }
    memory_.emplace(jm->id, Memory{jm->session_id, jm->tenant, jm->name, std::move(region),
                                   jm->fd_name});
    ++report.memory_restored;
  }

  for (const JournalSession& js : state.sessions) {
    auto c = containers_.find(js.container_id);
    Session session{js.container_id, c == containers_.end() ? 0 : c->second.handle, js.tenant,
                    js.grant_windows};
    session.resume_digest = js.resume_digest;
    session.detached = true;
    session.resume_deadline = resume_deadline;
    sessions_[js.id] = std::move(session);
    ++report.sessions_restored;
  }

  for (const JournalMapping& jm : state.mappings) {
    auto c = containers_.find(jm.container_id);
    auto mem = memory_.find(jm.memory_id);
    if (c == containers_.end() || mem == memory_.end()) {
      report.problems.push_back(absl::StrCat("mapping ", jm.container_id, "@", Hex(jm.iova),
                                             ": its container or memory is not journaled"));
      continue;
    }
    MappingRecord m;
    m.iova = jm.iova;
    m.size = jm.size;
    m.readable = jm.readable;
    m.writable = jm.writable;
    m.session_id = jm.session_id;
    m.memory_id = jm.memory_id;
    m.offset = jm.offset;
    m.key = mem->second.region.key;
    m.owner = jm.owner;
    m.tenant = jm.tenant;
    if (absl::StatusOr<uint64_t> billed = ledger_.Map(m.key, m.offset, m.size); !billed.ok()) {
      report.problems.push_back(absl::StrCat("mapping ", jm.container_id, "@", Hex(jm.iova), ": ",
                                             billed.status().ToString()));
      continue;
    }
    ++mappings_per_tenant_[m.tenant];
    kernel_pins_.Add(m.tenant, m.size);
    c->second.mappings.emplace(m.iova, std::move(m));
    ++report.mappings_restored;
  }

  // Whatever the store holds that the journal does not name belonged to a
  // change that was never acknowledged: let it go.
  for (auto& [name, fd] : fds) {
    if (named.count(name)) continue;
    if (fd_store_ != nullptr) fd_store_->Remove(name).IgnoreError();
    ++report.stray_fds_removed;
  }
  return report;
}

absl::StatusOr<ResumedSession> AgentCore::ResumeSession(const std::string& session_id,
                                                        const std::string& resume_token) {
  absl::MutexLock lock(&mu_);
  auto s = sessions_.find(session_id);
  const std::string digest = ResumeDigest(resume_token);
  if (s == sessions_.end() || !s->second.detached ||
      s->second.resume_digest.size() != digest.size() ||
      CRYPTO_memcmp(s->second.resume_digest.data(), digest.data(), digest.size()) != 0) {
    return absl::UnauthenticatedError(
        "resume_token: no session waiting to be resumed matches this id and token (a session "
        "resumes once, after an agent restart, before --session-resume-timeout)");
  }
  auto c = containers_.find(s->second.container_id);
  if (c == containers_.end() || c->second.orphaned || c->second.handle != s->second.handle) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session: container ", s->second.container_id,
        " could not be adopted after the agent restarted; open a new session with a new token"));
  }
  s->second.detached = false;
  ResumedSession out;
  out.container_id = s->second.container_id;
  out.tenant = s->second.tenant;
  for (const IovaRange& w : s->second.grant_windows) {
    if (Inside(c->second.windows, w)) out.usable_windows.push_back(w);
  }
  for (const auto& [id, m] : memory_) {
    if (m.session_id != session_id) continue;
    ++out.memory_objects;
    out.memory_bytes += m.region.size;
  }
  LogEvent(LogLevel::kInfo, "session_resumed",
           {{"session", session_id}, {"container", out.container_id}, {"tenant", out.tenant}});
  return out;
}

size_t AgentCore::CloseUnresumedSessions(absl::Time now) {
  std::vector<std::string> expired;
  {
    absl::MutexLock lock(&mu_);
    if (keep_for_restart_) return 0;
    for (const auto& [id, s] : sessions_) {
      if (s.detached && s.resume_deadline <= now) expired.push_back(id);
    }
  }
  // Closed as a launcher's disconnect closes them: unmapped without mu_.
  for (const std::string& id : expired) {
    LogEvent(LogLevel::kWarning, "session_not_resumed",
             {{"session", id}, {"note", "no launcher resumed it in time; unmapping what it mapped"}});
    CloseSession(id);
  }
  return expired.size();
}

}  // namespace agent
}  // namespace iommu
