#include "agent/launcher_server.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/errno_status.h"
#include "agent/log.h"
#include "google/protobuf/descriptor.h"

namespace iommu {
namespace agent {

struct LauncherServer::Connection {
  uint64_t id = 0;
  UniqueFd fd;
  PeerCred peer;
  bool open = true;  // False once it must be closed.
  bool session_opened = false;  // An OpenSession was answered OK.
  bool logged = false;          // Its launcher_connected line was logged.
  absl::Time open_deadline;     // Closed at this time unless session_opened.
};

namespace {

// After accept fails (EMFILE, ENFILE, ENOBUFS), the listener stays readable;
// polling it again at once would spin. Pausing lets connections close.
constexpr absl::Duration kAcceptBackoff = absl::Milliseconds(100);

v1::LauncherResponse ErrorResponse(uint64_t seq, const absl::Status& status) {
  v1::LauncherResponse response;
  response.set_seq(seq);
  response.set_code(static_cast<int32_t>(status.code()));
  response.set_message(std::string(status.message()));
  return response;
}

std::string UidKey(uid_t uid) { return absl::StrCat("uid=", uid); }

// The op's field name ("map"), for logs.
std::string OpName(const v1::LauncherRequest& req) {
  const google::protobuf::FieldDescriptor* field =
      v1::LauncherRequest::descriptor()->FindFieldByNumber(req.op_case());
  return field == nullptr ? "none" : field->name();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LauncherServer>> LauncherServer::Start(
    LauncherServerOptions options, LauncherHandler* handler) {
  if (options.max_connections == 0) {
    return absl::InvalidArgumentError("max_connections: must be at least 1");
  }
  if (options.max_request_bytes == 0 ||
      options.max_request_bytes > kMaxLauncherPacketBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_request_bytes: must be 1-", kMaxLauncherPacketBytes));
  }
  if (options.session_open_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("launcher_session_open_timeout: must be positive");
  }
  if (options.max_request_fds > kMaxLauncherPacketFds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_request_fds: must be at most ", kMaxLauncherPacketFds));
  }
  absl::StatusOr<UniqueFd> listener =
      ListenUnix(options.socket_path, options.socket_mode, options.socket_gid);
  if (!listener.ok()) return listener.status();
  // Remembered so that Stop removes the socket file only if it is still
  // ours, not one a newer agent created at the same path.
  struct stat st;
  if (::stat(options.socket_path.c_str(), &st) != 0) {
    return ErrnoStatus(errno, absl::StrCat("stat ", options.socket_path));
  }
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoStatus(errno, "eventfd for the launcher server");
  std::unique_ptr<LauncherServer> server(
      new LauncherServer(std::move(options), handler, *std::move(listener),
                         std::move(wake), st.st_dev, st.st_ino));
  {
    absl::MutexLock lock(&server->mu_);
    server->thread_ = std::thread([s = server.get()] { s->Run(); });
  }
  LogEvent(LogLevel::kInfo, "launcher_socket_listening",
           {{"path", server->options_.socket_path}});
  return server;
}

LauncherServer::LauncherServer(LauncherServerOptions options,
                               LauncherHandler* handler, UniqueFd listener,
                               UniqueFd wake, dev_t socket_dev,
                               ino_t socket_ino)
    : options_(std::move(options)),
      handler_(handler),
      listener_(std::move(listener)),
      wake_(std::move(wake)),
      socket_dev_(socket_dev),
      socket_ino_(socket_ino) {}

LauncherServer::~LauncherServer() { Stop(); }

void LauncherServer::Stop() {
  // Held across join so that a concurrent Stop returns only once the thread
  // is gone too. The thread never takes mu_.
  absl::MutexLock lock(&mu_);
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  // An eventfd write fails only if the counter would overflow, which cannot
  // happen with one write per Stop.
  while (::write(wake_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
  }
  thread_.join();
}

void LauncherServer::Run() {
  std::vector<std::unique_ptr<Connection>> conns;
  std::vector<pollfd> fds;
  absl::Time accept_paused_until = absl::InfinitePast();
  while (true) {
    const absl::Time now = absl::Now();
    const bool poll_listener = now >= accept_paused_until;
    int timeout_ms = CloseIdle(&conns, now);
    if (!poll_listener) {
      const int resume_ms =
          static_cast<int>(absl::ToInt64Milliseconds(accept_paused_until - now)) + 1;
      timeout_ms = timeout_ms < 0 ? resume_ms : std::min(timeout_ms, resume_ms);
    }
    fds.clear();
    fds.push_back({wake_.get(), POLLIN, 0});
    fds.push_back({poll_listener ? listener_.get() : -1, POLLIN, 0});
    for (const auto& c : conns) fds.push_back({c->fd.get(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno != EINTR) {
        LogEvent(LogLevel::kError, "launcher_poll_failed",
                 {{"error", ErrnoStatus(errno, "poll").message()}});
      }
      continue;
    }
    if (fds[0].revents != 0) break;  // Stop().

    // Each ready connection gets one packet per round, so a chatty launcher
    // cannot starve the others.
    for (size_t i = 0; i < conns.size(); ++i) {
      if (fds[i + 2].revents == 0) continue;
      if (!ServeOne(conns[i].get())) conns[i]->open = false;
    }
    for (auto it = conns.begin(); it != conns.end();) {
      if ((*it)->open) {
        ++it;
        continue;
      }
      LogDisconnected(**it, "");
      handler_->OnDisconnect((*it)->id);
      it = conns.erase(it);
    }
    if (poll_listener && fds[1].revents != 0) {
      if (!AcceptOne(&conns)) accept_paused_until = absl::Now() + kAcceptBackoff;
    }
  }

  for (const auto& c : conns) {
    LogDisconnected(*c, "server stopping");
    handler_->OnDisconnect(c->id);
  }
  conns.clear();
  listener_.reset();
  struct stat st;
  if (::lstat(options_.socket_path.c_str(), &st) == 0 &&
      st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    ::unlink(options_.socket_path.c_str());
  }
  LogEvent(LogLevel::kInfo, "launcher_socket_stopped",
           {{"path", options_.socket_path}});
}

int LauncherServer::CloseIdle(std::vector<std::unique_ptr<Connection>>* conns, absl::Time now) {
  absl::Time next = absl::InfiniteFuture();
  for (auto it = conns->begin(); it != conns->end();) {
    Connection& c = **it;
    if (c.session_opened) {
      ++it;
      continue;
    }
    if (now < c.open_deadline) {
      next = std::min(next, c.open_deadline);
      ++it;
      continue;
    }
    const absl::Status idle = absl::DeadlineExceededError(absl::StrCat(
        "launcher socket: no session opened within ",
        absl::FormatDuration(options_.session_open_timeout),
        " of connecting; closing (open a session first, with a token)"));
    WarnAbout(c.peer.uid, "launcher_idle_closed",
              {{"conn", c.id}, {"pid", c.peer.pid}, {"uid", c.peer.uid},
               {"error", idle.message()}});
    Refuse(&c, idle);
    handler_->OnDisconnect(c.id);
    it = conns->erase(it);
  }
  if (next == absl::InfiniteFuture()) return -1;
  // Rounded up so that the deadline has passed when poll returns.
  return static_cast<int>(absl::ToInt64Milliseconds(next - now)) + 1;
}

LauncherServer::Connection* LauncherServer::IdleVictimFor(
    const std::vector<std::unique_ptr<Connection>>& conns, uid_t newcomer) {
  std::map<uid_t, size_t> held;
  for (const auto& c : conns) ++held[c->peer.uid];
  // Strictly more than one above the newcomer's count: an eviction must
  // make the shares more even, or two uids would take turns evicting each
  // other. Connections are in accept order, so the first found of the uid
  // with the most is its oldest.
  size_t most = held[newcomer] + 1;
  Connection* victim = nullptr;
  for (const auto& c : conns) {
    if (c->session_opened || !c->open) continue;
    const size_t n = held[c->peer.uid];
    if (n > most) {
      most = n;
      victim = c.get();
    }
  }
  return victim;
}

void LauncherServer::Evict(std::vector<std::unique_ptr<Connection>>* conns, Connection* victim,
                           uid_t newcomer) {
  const absl::Status evicted = absl::ResourceExhaustedError(absl::StrCat(
      "launcher socket: full (limit ", options_.max_connections,
      "); closing this connection, which has no session, to admit uid ", newcomer,
      ", which holds fewer connections than uid ", victim->peer.uid));
  WarnAbout(victim->peer.uid, "launcher_idle_evicted",
            {{"conn", victim->id}, {"pid", victim->peer.pid}, {"uid", victim->peer.uid},
             {"for_uid", newcomer}, {"error", evicted.message()}});
  Refuse(victim, evicted);
  handler_->OnDisconnect(victim->id);
  for (auto it = conns->begin(); it != conns->end(); ++it) {
    if (it->get() == victim) {
      conns->erase(it);
      break;
    }
  }
}

void LauncherServer::WarnAbout(uid_t uid, absl::string_view event,
                               std::vector<LogField> fields) {
  LogIfAllowed(warnings_, UidKey(uid), LogLevel::kWarning, event, std::move(fields));
}

void LauncherServer::LogConnected(Connection* conn) {
  uint64_t suppressed = 0;
  if (!connection_lines_.Allow(UidKey(conn->peer.uid), absl::Now(), &suppressed)) return;
  conn->logged = true;
  std::vector<LogField> fields = {{"conn", conn->id},
                                  {"pid", conn->peer.pid},
                                  {"uid", conn->peer.uid},
                                  {"gid", conn->peer.gid}};
  // Connections of this uid logged neither at connect nor at disconnect.
  if (suppressed > 0) fields.push_back({"suppressed", suppressed});
  LogEvent(LogLevel::kInfo, "launcher_connected", fields);
}

void LauncherServer::LogDisconnected(const Connection& conn, absl::string_view reason) {
  if (!conn.logged) return;
  std::vector<LogField> fields = {
      {"conn", conn.id}, {"pid", conn.peer.pid}, {"uid", conn.peer.uid}};
  if (!reason.empty()) fields.push_back({"reason", reason});
  LogEvent(LogLevel::kInfo, "launcher_disconnected", fields);
}

bool LauncherServer::AcceptOne(std::vector<std::unique_ptr<Connection>>* conns) {
  absl::StatusOr<UniqueFd> fd = AcceptUnix(listener_.get());
  if (!fd.ok()) {
    // Not tied to a peer (the fd table is full and the like), but peers can
    // keep it so; the accept backoff alone still allows 10 lines a second.
    LogIfAllowed(warnings_, "accept", LogLevel::kWarning, "launcher_accept_failed",
                 {{"error", fd.status().message()}});
    return false;
  }
  if (!fd->valid()) return true;  // Nothing pending after all.
  Connection conn;
  conn.fd = *std::move(fd);
  absl::StatusOr<PeerCred> peer = GetPeerCred(conn.fd.get());
  if (!peer.ok()) {
    // No uid to key by: all such refusals share one bucket.
    LogIfAllowed(warnings_, "peercred", LogLevel::kWarning, "launcher_refused",
                 {{"error", peer.status().message()}});
    return true;
  }
  // When full, a connection without a session of the uid holding the most
  // connections may make room for a uid holding fewer, so that a few uids
  // churning idle connections cannot keep everyone else out.
  Connection* victim = nullptr;
  if (conns->size() >= options_.max_connections) victim = IdleVictimFor(*conns, peer->uid);
  if (conns->size() >= options_.max_connections && victim == nullptr) {
    // Told rather than just hung up on, so the launcher's error says why.
    const absl::Status refused = absl::ResourceExhaustedError(absl::StrCat(
        "launcher socket: too many connections (limit ", options_.max_connections,
        "); connections without a session are closed after ",
        absl::FormatDuration(options_.session_open_timeout)));
    WarnAbout(peer->uid, "launcher_refused",
              {{"pid", peer->pid}, {"uid", peer->uid}, {"error", refused.message()}});
    Refuse(&conn, refused);
    return true;
  }
  conn.peer = *peer;
  conn.id = next_conn_id_++;
  conn.open_deadline = absl::Now() + options_.session_open_timeout;
  const absl::Status status = handler_->OnConnect(conn.id, conn.peer);
  if (!status.ok()) {
    WarnAbout(conn.peer.uid, "launcher_refused",
              {{"conn", conn.id}, {"pid", conn.peer.pid}, {"uid", conn.peer.uid},
               {"code", absl::StatusCodeToString(status.code())},
               {"error", status.message()}});
    Refuse(&conn, status);
    return true;
  }
  // Only now, so that a newcomer the handler refuses evicts nobody.
  if (victim != nullptr) Evict(conns, victim, conn.peer.uid);
  LogConnected(&conn);
  conns->push_back(std::make_unique<Connection>(std::move(conn)));
  return true;
}

void LauncherServer::Refuse(Connection* conn, const absl::Status& why) {
  if (!Send(conn, ErrorResponse(0, why), {})) return;
  // Closing a unix socket with unread requests in its queue makes the peer's
  // next read fail with ECONNRESET before it sees our answer. Shut both
  // directions first (further sends get EPIPE, and the client then reads the
  // answer), drop what is already queued, and only then close.
  ::shutdown(conn->fd.get(), SHUT_RDWR);
  while (true) {
    absl::StatusOr<Packet> dropped =
        RecvPacket(conn->fd.get(), kMaxLauncherPacketBytes, kMaxLauncherPacketFds);
    if (!dropped.ok()) {
      if (dropped.status().code() == absl::StatusCode::kInvalidArgument) continue;
      break;
    }
    if (dropped->eof || dropped->would_block) break;
  }
  conn->fd.reset();
}

bool LauncherServer::ServeOne(Connection* conn) {
  absl::StatusOr<Packet> packet = RecvPacket(
      conn->fd.get(), options_.max_request_bytes, options_.max_request_fds);
  if (!packet.ok()) {
    // Over a limit: the packet was consumed whole and its fds closed, so the
    // stream is still in step; answer and keep the connection.
    if (packet.status().code() == absl::StatusCode::kInvalidArgument) {
      WarnAbout(conn->peer.uid, "launcher_bad_request",
                {{"conn", conn->id}, {"uid", conn->peer.uid},
                 {"error", packet.status().message()}});
      return Send(conn, ErrorResponse(0, packet.status()), {});
    }
    WarnAbout(conn->peer.uid, "launcher_recv_failed",
              {{"conn", conn->id}, {"uid", conn->peer.uid}, {"error", packet.status().message()}});
    return false;
  }
  if (packet->would_block) return true;
  if (packet->eof) return false;

  v1::LauncherRequest req;
  if (!req.ParseFromString(packet->bytes)) {
    const absl::Status bad = absl::InvalidArgumentError(absl::StrCat(
        "request: does not parse as iommu.v1.LauncherRequest (",
        packet->bytes.size(), " bytes)"));
    WarnAbout(conn->peer.uid, "launcher_bad_request",
              {{"conn", conn->id}, {"uid", conn->peer.uid}, {"error", bad.message()}});
    return Send(conn, ErrorResponse(0, bad), {});
  }
  if (req.op_case() == v1::LauncherRequest::OP_NOT_SET) {
    return Send(conn,
                ErrorResponse(req.seq(), absl::InvalidArgumentError(
                                             "request: no operation set (want one "
                                             "of open_session, resume_session, register_memory, map, "
                                             "unmap, list_mappings, get_devices)")),
                {});
  }

  v1::LauncherResponse response;
  std::vector<int> out_fds;
  const size_t fds_in = packet->fds.size();
  handler_->OnRequest(conn->id, req, std::move(packet->fds), &response, &out_fds);
  response.set_seq(req.seq());
  if ((req.op_case() == v1::LauncherRequest::kOpenSession ||
       req.op_case() == v1::LauncherRequest::kResumeSession) &&
      response.code() == 0) {
    conn->session_opened = true;
  }
  if (response.code() != 0) {
    // An error carries no result and no fds, whatever the handler left.
    response.clear_result();
    out_fds.clear();
  }
  absl::Status internal;
  if (response.code() == 0 &&
      response.result_case() == v1::LauncherResponse::RESULT_NOT_SET) {
    internal = absl::InternalError(absl::StrCat(
        "response: the agent answered ", OpName(req), " with neither a result nor an error"));
  } else if (response.ByteSizeLong() > kMaxLauncherPacketBytes) {
    internal = absl::InternalError(absl::StrCat(
        "response: ", response.ByteSizeLong(), " bytes exceeds the limit of ",
        kMaxLauncherPacketBytes));
  } else if (out_fds.size() > kMaxLauncherPacketFds) {
    internal = absl::InternalError(absl::StrCat(
        "response: ", out_fds.size(), " fds exceeds the limit of ",
        kMaxLauncherPacketFds));
  }
  if (!internal.ok()) {
    // A handler bug, but one a peer may be able to repeat at will.
    LogIfAllowed(warnings_, UidKey(conn->peer.uid), LogLevel::kError, "launcher_bad_response",
                 {{"conn", conn->id},
                  {"uid", conn->peer.uid},
                  {"op", OpName(req)},
                  {"error", internal.message()}});
    response = ErrorResponse(req.seq(), internal);
    out_fds.clear();
  }
  LogIfAllowed(request_lines_, UidKey(conn->peer.uid), LogLevel::kDebug, "launcher_request",
               {{"conn", conn->id},
                {"uid", conn->peer.uid},
                {"seq", req.seq()},
                {"op", OpName(req)},
                {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(response.code()))},
                {"fds_in", fds_in},
                {"fds_out", out_fds.size()}});
  return Send(conn, response, out_fds);
}

bool LauncherServer::Send(Connection* conn, const v1::LauncherResponse& response,
                          const std::vector<int>& fds) {
  std::string bytes;
  if (!response.SerializeToString(&bytes)) {
    LogIfAllowed(
        warnings_, UidKey(conn->peer.uid), LogLevel::kError, "launcher_send_failed",
        {{"conn", conn->id}, {"uid", conn->peer.uid}, {"error", "response does not serialize"}});
    return false;
  }
  // The socket is non-blocking: a launcher that does not read its responses
  // gets EAGAIN here and is disconnected instead of stalling every other
  // launcher on this thread.
  const absl::Status status = SendPacket(conn->fd.get(), bytes, fds);
  if (!status.ok()) {
    WarnAbout(conn->peer.uid, "launcher_send_failed",
              {{"conn", conn->id}, {"uid", conn->peer.uid}, {"error", status.message()}});
    return false;
  }
  return true;
}

}  // namespace agent
}  // namespace iommu
