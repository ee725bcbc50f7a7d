#include "agent/launcher_sessions.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agent/guest_memory.h"
#include "agent/log.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

absl::Status NeedsSession() {
  return absl::FailedPreconditionError(
      "open_session: the first request on a connection must open a session with a token (or "
      "resume one)");
}

PeerPolicyOptions PeerOptions(const LauncherSessionOptions& options) {
  PeerPolicyOptions out;
  out.allowed_uids = options.allowed_uids;
  out.allowed_gids = options.allowed_gids;
  out.max_sessions_per_peer = options.max_sessions_per_peer;
  return out;
}

absl::Status OverMemoryLimit(uint64_t size, uint64_t limit) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "fd: registering ", Hex(size), " more bytes passes this session's limit of ", Hex(limit),
      " bytes of registered memory"));
}

}  // namespace

absl::Status ValidateLauncherSessionOptions(const LauncherSessionOptions& options) {
  RETURN_IF_ERROR(ValidatePeerPolicyOptions(PeerOptions(options)));
  RETURN_IF_ERROR(ValidateReplayCacheLimits(options.replay));
  if (options.max_memory_objects == 0) {
    return absl::InvalidArgumentError("max_session_memory_objects: must be at least 1");
  }
  if (options.max_sessions_per_tenant == 0) {
    return absl::InvalidArgumentError("max_sessions_per_tenant: must be at least 1");
  }
  if (options.max_memory_bytes_per_tenant < 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_memory_bytes_per_tenant: must be at least 4096 (one page), got ",
        options.max_memory_bytes_per_tenant));
  }
  if (options.max_memory_bytes < 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_session_memory_bytes: must be at least 4096 (one page), got ",
        options.max_memory_bytes));
  }
  return absl::OkStatus();
}

size_t LauncherSessions::TenantSessionsLocked(const std::string& tenant) {
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += !c.session_id.empty() && c.tenant_id == tenant;
  return n;
}

uint64_t LauncherSessions::TenantMemoryBytesLocked(const std::string& tenant) {
  uint64_t n = 0;
  for (const auto& [id, c] : conns_) {
    if (!c.session_id.empty() && c.tenant_id == tenant) n += c.memory_bytes;
  }
  return n;
}

absl::Status LauncherSessions::Refuse(const Conn& conn, const std::string& container,
                                      absl::Status s) {
  LogIfAllowed(warnings_, absl::StrCat("uid=", conn.peer.uid), LogLevel::kWarning,
               "session_refused",
               {{"pid", conn.peer.pid},
                {"uid", conn.peer.uid},
                {"container", container},
                {"error", s.message()}});
  return s;
}

void LauncherSessions::LogAbout(const Conn& conn, absl::string_view kind, absl::string_view event,
                                std::vector<LogField> fields) {
  LogIfAllowed(events_, absl::StrCat(kind, " uid=", conn.peer.uid), LogLevel::kInfo, event,
               std::move(fields));
}

LauncherSessions::LauncherSessions(AgentCore* core, LauncherSessionOptions options)
    : core_(core),
      options_(std::move(options)),
      replay_(options_.replay),
      peers_(PeerOptions(options_)) {}

absl::Status LauncherSessions::OnConnect(uint64_t conn_id, const PeerCred& peer) {
  absl::MutexLock l(&mu_);
  // The server logs the refusal with the peer's pid and uid and tells the
  // peer; nothing is counted for it.
  RETURN_IF_ERROR(peers_.Admit(peer.uid, peer.gid));
  conns_[conn_id].peer = peer;
  return absl::OkStatus();
}

size_t LauncherSessions::peer_connections(uid_t uid) {
  absl::MutexLock l(&mu_);
  return peers_.held(uid);
}

size_t LauncherSessions::session_count() {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += !c.session_id.empty();
  return n;
}

void LauncherSessions::OnDisconnect(uint64_t conn_id) {
  std::string session;
  {
    absl::MutexLock l(&mu_);
    auto it = conns_.find(conn_id);
    if (it == conns_.end()) return;
    session = it->second.session_id;
    const absl::Status released = peers_.Release(it->second.peer.uid);
    if (!released.ok()) {
      LogEvent(LogLevel::kError, "peer_count_mismatch", {{"error", released.message()}});
    }
    conns_.erase(it);
  }
  // Whatever the launcher mapped goes with it: a killed launcher leaves no
  // pins and no billing behind.
  if (!session.empty()) core_->CloseSession(session);
}

void LauncherSessions::OnRequest(uint64_t conn_id, const v1::LauncherRequest& req,
                                 std::vector<UniqueFd> fds, v1::LauncherResponse* response,
                                 std::vector<int>* out_fds) {
  absl::MutexLock l(&mu_);
  auto it = conns_.find(conn_id);
  absl::Status s;
  if (it != conns_.end()) it->second.sent_fds.clear();  // The last answer went out.
  if (it == conns_.end()) {
    s = absl::InternalError("connection unknown to the session table");
  } else if (req.op_case() != v1::LauncherRequest::kRegisterMemory && !fds.empty()) {
    // Only RegisterMemory carries an fd; anything else sent along is closed
    // (by UniqueFd) and refused.
    s = absl::InvalidArgumentError(absl::StrCat("fd: this request takes no fd, got ", fds.size()));
  } else if (req.op_case() != v1::LauncherRequest::kOpenSession &&
             req.op_case() != v1::LauncherRequest::kResumeSession &&
             it->second.session_id.empty()) {
    s = NeedsSession();
  } else {
    Conn& conn = it->second;
    switch (req.op_case()) {
      case v1::LauncherRequest::kOpenSession:
        s = Open(conn, req.open_session(), response);
        break;
      case v1::LauncherRequest::kResumeSession:
        s = Resume(conn, req.resume_session(), response);
        break;
      case v1::LauncherRequest::kRegisterMemory:
        s = Register(conn, req.register_memory(), std::move(fds), response);
        break;
      case v1::LauncherRequest::kMap:
        s = Map(conn, req.map());
        if (s.ok()) response->mutable_mapped();
        break;
      case v1::LauncherRequest::kUnmap: {
        absl::StatusOr<uint64_t> bytes = core_->Unmap(conn.container_id, req.unmap().iova(),
                                                      req.unmap().length(), conn.session_id);
        s = bytes.status();
        if (s.ok()) response->mutable_unmapped()->set_bytes(*bytes);
        break;
      }
      case v1::LauncherRequest::kListMappings: {
        // Paged: 65,535 mappings do not fit one 65536-byte packet.
        absl::StatusOr<AgentCore::MappingPage> page = core_->SessionMappingsPage(
            conn.session_id, req.list_mappings().page_size(), req.list_mappings().page_token());
        s = page.status();
        if (!s.ok()) break;
        auto* list = response->mutable_mapping_list();
        list->set_next_page_token(page->next_page_token);
        for (const v1::Mapping& m : page->mappings) {
          auto* e = list->add_mappings();
          e->set_memory_id(m.memory_id());
          e->set_offset(m.offset());
          e->set_length(m.size());
          e->set_iova(m.iova());
          e->set_readable(m.readable());
          e->set_writable(m.writable());
        }
        break;
      }
      case v1::LauncherRequest::kGetDevices: {
        // Device fds only: the iommufd / container / group fds never leave
        // the agent (DESIGN.md, "Launchers never hold the IOMMU side").
        absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> devices =
            core_->SessionDeviceFds(conn.session_id);
        s = devices.status();
        if (s.ok()) {
          for (auto& [address, fd] : *devices) {
            response->mutable_devices()->add_addresses(address);
            out_fds->push_back(fd.get());
            conn.sent_fds.push_back(std::move(fd));
          }
          // A launcher may ask for its devices as often as it likes.
          LogAbout(conn, "devices", "device_fds_sent",
                   {{"session", conn.session_id},
                    {"container", conn.container_id},
                    {"devices", out_fds->size()},
                    {"pid", conn.peer.pid},
                    {"uid", conn.peer.uid}});
        }
        break;
      }
      case v1::LauncherRequest::OP_NOT_SET:
        s = absl::InvalidArgumentError("op: exactly one operation must be set");
        break;
    }
  }
  if (!s.ok()) {
    out_fds->clear();
    response->clear_result();
    response->set_code(static_cast<int32_t>(s.code()));
    response->set_message(std::string(s.message()));
  }
}

absl::Status LauncherSessions::Open(Conn& conn, const v1::LauncherRequest::OpenSession& req,
                                    v1::LauncherResponse* response) {
  if (!conn.session_id.empty()) {
    return absl::FailedPreconditionError(
        "open_session: this connection already holds a session; open another connection");
  }
  const std::string key = core_->grant_key();
  if (key.empty()) {
    return absl::UnavailableError(
        "token: this agent has not registered with the broker yet; retry shortly");
  }
  const int64_t now = options_.now_ms ? options_.now_ms() : absl::ToUnixMillis(absl::Now());
  ASSIGN_OR_RETURN(v1::LauncherGrant grant, VerifyGrant(req.token(), key, now));
  auto refuse = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Refuse(conn, grant.container_id(), std::move(s));
  };
  if (grant.node() != core_->node()) {
    return refuse(absl::UnauthenticatedError(absl::StrCat(
        "token: issued for node \"", grant.node(), "\", this is node \"", core_->node(), "\"")));
  }
  // The replay cache lives in memory and the key outlives a restart: a
  // token used before this run started must not open a session now. The
  // broker binds each grant to the latest run it heard register.
  if (grant.agent_incarnation() != core_->incarnation()) {
    return refuse(absl::UnauthenticatedError(
        "token: issued to an earlier run of this agent (it restarted since); ask the broker "
        "for a new grant"));
  }
  if (grant.has_launcher_uid() && grant.launcher_uid() != conn.peer.uid) {
    return refuse(absl::PermissionDeniedError(absl::StrCat(
        "token: issued for uid ", grant.launcher_uid(), ", presented by uid ", conn.peer.uid)));
  }
  absl::StatusOr<std::string> tenant = core_->ContainerTenant(grant.container_id());
  if (!tenant.ok()) return refuse(tenant.status());
  if (*tenant != grant.tenant_id()) {
    return refuse(absl::UnauthenticatedError(absl::StrCat(
        "token: container ", grant.container_id(), " does not belong to tenant \"",
        grant.tenant_id(), "\"")));
  }
  // Last: a token refused above for a transient reason can be presented again.
  // Per tenant: a tenant burning tokens fills its own share, not everyone's.
  // Before the replay cache, so a refused open does not use the token up.
  const size_t tenant_sessions = TenantSessionsLocked(grant.tenant_id());
  if (tenant_sessions >= options_.max_sessions_per_tenant) {
    return refuse(absl::ResourceExhaustedError(absl::StrCat(
        "open_session: tenant \"", grant.tenant_id(), "\" already holds ", tenant_sessions,
        " sessions on this node (limit ", options_.max_sessions_per_tenant,
        " per tenant, --max-sessions-per-tenant); close one first")));
  }
  const absl::Status consumed =
      replay_.Consume(grant.token_id(), grant.tenant_id(), grant.expires_ms(), now);
  if (!consumed.ok()) return refuse(consumed);
  const std::string session_id = absl::StrFormat("s-%016x", absl::Uniform<uint64_t>(rng_));
  std::vector<IovaRange> windows;
  for (const v1::GrantWindow& w : grant.windows()) {
    if (w.size() == 0 || w.size() - 1 > UINT64_MAX - w.base()) continue;  // Never signed so.
    windows.push_back({w.base(), w.base() + (w.size() - 1)});
  }
  // The core binds the session to this incarnation of the container (it
  // rechecks the tenant under its lock).
  std::string resume_token;
  absl::StatusOr<std::vector<IovaRange>> usable = core_->OpenSession(
      session_id, grant.container_id(), grant.tenant_id(), std::move(windows), &resume_token);
  if (!usable.ok()) return refuse(usable.status());
  conn.session_id = session_id;
  conn.container_id = grant.container_id();
  conn.tenant_id = grant.tenant_id();
  auto* opened = response->mutable_session_opened();
  opened->set_resume_token(resume_token);
  opened->set_session_id(conn.session_id);
  opened->set_container_id(conn.container_id);
  opened->set_tenant_id(conn.tenant_id);
  // Only the windows the container still holds: one released since the
  // grant was issued is closed to this session.
  for (const v1::GrantWindow& w : grant.windows()) {
    for (const IovaRange& u : *usable) {
      if (u.start == w.base()) *opened->add_windows() = w;
    }
  }
  opened->set_expires_ms(grant.expires_ms());
  LogAbout(conn, "session", "session_opened",
           {{"session", conn.session_id},
            {"container", conn.container_id},
            {"tenant", conn.tenant_id},
            {"pid", conn.peer.pid},
            {"uid", conn.peer.uid},
            {"windows", opened->windows_size()}});
  return absl::OkStatus();
}

absl::Status LauncherSessions::Resume(Conn& conn, const v1::LauncherRequest::ResumeSession& req,
                                      v1::LauncherResponse* response) {
  if (!conn.session_id.empty()) {
    return absl::FailedPreconditionError(
        "resume_session: this connection already holds a session; open another connection");
  }
  if (req.session_id().size() > 64 || req.resume_token().size() > 128) {
    return absl::InvalidArgumentError(
        "resume_session: session_id is at most 64 characters, resume_token at most 128");
  }
  absl::StatusOr<ResumedSession> resumed =
      core_->ResumeSession(req.session_id(), req.resume_token());
  if (!resumed.ok()) return Refuse(conn, "", resumed.status());
  conn.session_id = req.session_id();
  conn.container_id = resumed->container_id;
  conn.tenant_id = resumed->tenant;
  conn.memory_objects = resumed->memory_objects;
  conn.memory_bytes = resumed->memory_bytes;
  auto* opened = response->mutable_session_opened();
  opened->set_session_id(conn.session_id);
  opened->set_container_id(conn.container_id);
  opened->set_tenant_id(conn.tenant_id);
  for (const IovaRange& w : resumed->usable_windows) {
    v1::GrantWindow* out = opened->add_windows();
    out->set_base(w.start);
    out->set_size(w.last - w.start + 1);
  }
  LogAbout(conn, "session", "session_resumed_by_launcher",
           {{"session", conn.session_id},
            {"container", conn.container_id},
            {"tenant", conn.tenant_id},
            {"pid", conn.peer.pid},
            {"uid", conn.peer.uid}});
  return absl::OkStatus();
}

absl::Status LauncherSessions::Register(Conn& conn,
                                        const v1::LauncherRequest::RegisterMemory& req,
                                        std::vector<UniqueFd> fds,
                                        v1::LauncherResponse* response) {
  if (fds.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd: register_memory takes exactly one fd, got ", fds.size()));
  }
  if (req.name().size() > 64) {
    return absl::InvalidArgumentError("name: at most 64 characters");
  }
  if (conn.memory_objects >= options_.max_memory_objects) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "fd: this session already registered ", conn.memory_objects, " memory objects (limit ",
        options_.max_memory_objects, ")"));
  }
  const uint64_t room = options_.max_memory_bytes - conn.memory_bytes;
  // Checked before mapping as well, so that an fd announcing a terabyte does
  // not make the agent reserve the address space only to refuse it. The
  // launcher may resize the object between this fstat and the mmap, so the
  // check after mapping is the one that holds.
  struct stat st;
  if (::fstat(fds[0].get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
      static_cast<uint64_t>(st.st_size) > room) {
    return OverMemoryLimit(static_cast<uint64_t>(st.st_size), options_.max_memory_bytes);
  }
  ASSIGN_OR_RETURN(GuestMemoryRegion region, MapGuestMemory(std::move(fds[0])));
  if (region.size > room) return OverMemoryLimit(region.size, options_.max_memory_bytes);
  // The tenant's bound, across all its sessions on this node, so that many
  // sessions of one tenant cannot take the agent's address space together.
  const uint64_t tenant_bytes = TenantMemoryBytesLocked(conn.tenant_id);
  if (region.size > options_.max_memory_bytes_per_tenant - std::min(tenant_bytes, options_.max_memory_bytes_per_tenant)) {
    return Refuse(conn, conn.container_id, absl::ResourceExhaustedError(absl::StrCat(
        "fd: registering ", Hex(region.size), " more bytes passes tenant \"", conn.tenant_id,
        "\"'s limit of ", Hex(options_.max_memory_bytes_per_tenant),
        " bytes of registered memory on this node (--max-memory-bytes-per-tenant; it holds ",
        Hex(tenant_bytes), ")")));
  }
  const uint64_t size = region.size;
  ASSIGN_OR_RETURN(MemoryInfo info,
                   core_->RegisterMemory(conn.session_id, conn.tenant_id, std::move(region),
                                         req.name()));
  ++conn.memory_objects;
  conn.memory_bytes += size;
  auto* out = response->mutable_memory_registered();
  out->set_memory_id(info.memory_id);
  out->set_size(info.size);
  out->set_owner_tenant(info.owner_tenant);
  out->set_shared(info.shared);
  return absl::OkStatus();
}

absl::Status LauncherSessions::Map(Conn& conn, const v1::LauncherRequest::Map& req) {
  // The core checks the range against the grant's windows and the
  // container's current ones, atomically with the map.
  return core_->MapMemory(conn.session_id, conn.container_id, req.memory_id(), req.offset(),
                          req.length(), req.iova(), req.readable(), req.writable());
}

}  // namespace agent
}  // namespace iommu
