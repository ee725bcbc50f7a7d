#include "agent/fd_holder.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/errno_status.h"
#include "agent/log.h"
#include "common/unix_socket.h"

namespace iommu {
namespace agent {
namespace {

// A client silent (or not reading) for this long is disconnected, so that a
// stuck client cannot hold one of the few connection slots forever. The
// agent connects per call, so it is never idle that long.
constexpr int kClientIoTimeoutSeconds = 60;

absl::Status SetBlockingWithTimeouts(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    return ErrnoStatus(errno, absl::StrCat("fcntl F_SETFL ~O_NONBLOCK fd=", fd));
  }
  timeval timeout{kClientIoTimeoutSeconds, 0};
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) < 0) {
    return ErrnoStatus(errno, absl::StrCat("setsockopt SO_RCVTIMEO/SO_SNDTIMEO fd=", fd));
  }
  return absl::OkStatus();
}

absl::string_view VerbName(HolderRequest::Verb verb) {
  switch (verb) {
    case HolderRequest::Verb::kPut:
      return "PUT";
    case HolderRequest::Verb::kRemove:
      return "REMOVE";
    case HolderRequest::Verb::kList:
      return "LIST";
  }
  return "?";
}

}  // namespace

bool FdHolderServesPeer(uid_t peer_uid, uid_t own_uid) {
  return peer_uid == own_uid || peer_uid == 0;
}

absl::StatusOr<std::unique_ptr<FdHolder>> FdHolder::Listen(const Options& options) {
  if (options.max_fds == 0) {
    return absl::InvalidArgumentError("max_fds: must be at least 1");
  }
  if (options.max_connections == 0) {
    return absl::InvalidArgumentError("max_connections: must be at least 1");
  }
  absl::StatusOr<UniqueFd> listen_fd = ListenUnix(options.socket_path, options.socket_mode);
  if (!listen_fd.ok()) return listen_fd.status();
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoStatus(errno, "eventfd (fd holder wake-up)");
  return std::unique_ptr<FdHolder>(
      new FdHolder(options, *std::move(listen_fd), std::move(wake)));
}

FdHolder::FdHolder(Options options, UniqueFd listen_fd, UniqueFd wake_fd)
    : options_(std::move(options)),
      wake_fd_(std::move(wake_fd)),
      own_uid_(::geteuid()),
      listen_fd_(std::move(listen_fd)) {}

FdHolder::~FdHolder() {
  Shutdown();
  absl::MutexLock lock(&mu_);
  // Serve joined every connection thread before returning; a holder that was
  // never served has none.
  CloseAllLocked();
}

void FdHolder::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  stopping_ = true;
  const uint64_t one = 1;
  // The eventfd counter cannot overflow with one write; a failure would
  // leave Serve in poll, which only a bug (a closed wake fd) can cause.
  if (::write(wake_fd_.get(), &one, sizeof(one)) != sizeof(one)) {
    LogEvent(LogLevel::kError, "fdholder_wake_failed", {{"errno", ErrnoName(errno)}});
  }
}

size_t FdHolder::fd_count() const {
  absl::MutexLock lock(&mu_);
  return fds_.size();
}

size_t FdHolder::connection_count() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const Connection& c : connections_) n += c.done ? 0 : 1;
  return n;
}

absl::Status FdHolder::Serve() {
  {
    absl::MutexLock lock(&mu_);
    if (served_) return absl::FailedPreconditionError("fd holder: Serve called twice");
    served_ = true;
  }
  LogEvent(LogLevel::kInfo, "fdholder_listening",
           {{"socket", options_.socket_path},
            {"max_fds", options_.max_fds},
            {"max_connections", options_.max_connections},
            {"uid", own_uid_}});
  absl::Status result = absl::OkStatus();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    pollfd pfds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    const int r = ::poll(pfds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      result = ErrnoStatus(errno, "poll (fd holder listen socket)");
      break;
    }
    if (pfds[1].revents != 0) continue;  // Shutdown: the loop head sees stopping_.
    if (pfds[0].revents != 0) AcceptOne();
  }

  // Refuse new connections (ECONNREFUSED rather than a connect that nobody
  // ever answers), disconnect every client, wait for their threads, close
  // the held fds.
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    listen_fd_.reset();
    stopping_ = true;
    for (Connection& c : connections_) {
      if (c.fd.valid()) ::shutdown(c.fd.get(), SHUT_RDWR);
      threads.push_back(std::move(c.thread));
    }
  }
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  size_t closed;
  {
    absl::MutexLock lock(&mu_);
    connections_.clear();
    closed = CloseAllLocked();
  }
  LogEvent(LogLevel::kWarning, "fdholder_stopped",
           {{"fds_closed", closed},
            {"note", "every held fd was closed; a restarted agent cannot re-adopt them"}});
  return result;
}

void FdHolder::AcceptOne() {
  absl::StatusOr<UniqueFd> fd = AcceptUnix(listen_fd_.get());
  if (!fd.ok()) {
    LogEvent(LogLevel::kWarning, "fdholder_accept_failed",
             {{"error", fd.status().ToString()}});
    return;
  }
  if (!fd->valid()) return;
  if (absl::Status s = SetBlockingWithTimeouts(fd->get()); !s.ok()) {
    LogEvent(LogLevel::kWarning, "fdholder_accept_failed", {{"error", s.ToString()}});
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    ReapLocked();
    if (connections_.size() < options_.max_connections) {
      connections_.emplace_back();
      Connection* conn = &connections_.back();
      conn->fd = *std::move(fd);
      conn->thread = std::thread(&FdHolder::ServeConnection, this, conn);
      return;
    }
  }
  LogEvent(LogLevel::kWarning, "fdholder_connection_refused",
           {{"reason", "max_connections"}, {"max_connections", options_.max_connections}});
  // Best effort: the client learns why before the close.
  (void)SendPacket(fd->get(),
                   FormatErrorReply(absl::ResourceExhaustedError(absl::StrCat(
                       "fd holder: ", options_.max_connections,
                       " connections already open (the limit)"))),
                   {});
}

void FdHolder::ReapLocked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (!it->done) {
      ++it;
      continue;
    }
    // The thread set `done` as its last step; joining only waits for it to
    // return.
    if (it->thread.joinable()) it->thread.join();
    it = connections_.erase(it);
  }
}

void FdHolder::ServeConnection(Connection* conn) {
  const int fd = conn->fd.get();
  absl::StatusOr<PeerCred> cred = GetPeerCred(fd);
  if (!cred.ok() || !FdHolderServesPeer(cred->uid, own_uid_)) {
    const absl::Status refusal =
        cred.ok() ? absl::PermissionDeniedError(absl::StrCat(
                        "fd holder: peer uid ", cred->uid, " is neither the holder's uid ",
                        own_uid_, " nor 0"))
                  : absl::PermissionDeniedError(absl::StrCat(
                        "fd holder: cannot identify the peer: ", cred.status().message()));
    LogEvent(LogLevel::kWarning, "fdholder_peer_refused",
             {{"uid", cred.ok() ? absl::StrCat(cred->uid) : "unknown"},
              {"pid", cred.ok() ? absl::StrCat(cred->pid) : "unknown"},
              {"error", refusal.message()}});
    (void)SendPacket(fd, FormatErrorReply(refusal), {});
  } else {
    while (HandleRequest(fd)) {
    }
  }
  // Closed under the lock that Serve's shutdown() of every connection takes,
  // so that it never reaches an fd number reused meanwhile.
  absl::MutexLock lock(&mu_);
  conn->fd.reset();
  conn->done = true;
}

bool FdHolder::HandleRequest(int fd) {
  absl::StatusOr<Packet> packet = RecvPacket(fd, kMaxHolderRequestBytes, 1);
  absl::Status status = absl::OkStatus();
  if (!packet.ok()) {
    // Over the size or fd limit: the packet was consumed and its fds closed;
    // the connection stays usable. Anything else is a broken connection.
    if (packet.status().code() != absl::StatusCode::kInvalidArgument) return false;
    status = packet.status();
  } else if (packet->eof || packet->would_block) {
    return false;  // Closed, or idle past kClientIoTimeoutSeconds.
  } else {
    absl::StatusOr<HolderRequest> request = ParseHolderRequest(packet->bytes);
    if (!request.ok()) {
      status = request.status();
    } else if (packet->fds.size() != request->expected_fds()) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "holder request: ", VerbName(request->verb), " takes exactly ", request->expected_fds(), request->expected_fds() == 1 ? " fd" : " fds",
          ", got ", packet->fds.size()));
    } else if (request->verb == HolderRequest::Verb::kList) {
      return SendList(fd);
    } else {
      UniqueFd attached;
      if (!packet->fds.empty()) attached = std::move(packet->fds[0]);
      absl::MutexLock lock(&mu_);
      status = ApplyLocked(*request, std::move(attached));
    }
  }
  if (!status.ok()) {
    // Rate-limited: a client sending refused requests as fast as it can
    // must not flood the log. One key: the holder serves one uid.
    uint64_t suppressed = 0;
    bool allowed;
    {
      absl::MutexLock lock(&mu_);
      allowed = refusal_log_limiter_.Allow("refused", absl::Now(), &suppressed);
    }
    if (allowed) {
      LogEvent(LogLevel::kWarning, "fdholder_request_refused",
               {{"code", absl::StatusCodeToString(status.code())},
                {"error", status.message()},
                {"suppressed", suppressed}});
    }
  }
  // The refused packet's fds (if any) are closed when `packet` goes out of
  // scope, before the reply is read by the client.
  if (packet.ok()) packet->fds.clear();
  return SendPacket(fd, status.ok() ? FormatOkReply() : FormatErrorReply(status), {}).ok();
}

absl::Status FdHolder::ApplyLocked(const HolderRequest& request, UniqueFd fd) {
  switch (request.verb) {
    case HolderRequest::Verb::kPut: {
      auto it = fds_.find(request.name);
      if (it == fds_.end() && fds_.size() >= options_.max_fds) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "fd holder: already holding ", fds_.size(), " fds, the --max-fds limit; PUT ",
            request.name, " refused"));
      }
      const bool replaced = it != fds_.end();
      fds_[request.name] = std::move(fd);
      LogEvent(LogLevel::kDebug, "fdholder_put",
               {{"name", request.name}, {"replaced", replaced}, {"fds", fds_.size()}});
      return absl::OkStatus();
    }
    case HolderRequest::Verb::kRemove: {
      const bool removed = fds_.erase(request.name) > 0;
      LogEvent(LogLevel::kDebug, "fdholder_remove",
               {{"name", request.name}, {"removed", removed}, {"fds", fds_.size()}});
      return absl::OkStatus();
    }
    case HolderRequest::Verb::kList:
      break;
  }
  return absl::InternalError("fd holder: LIST is not applied");
}

bool FdHolder::SendList(int fd) {
  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    names.reserve(fds_.size());
    for (const auto& entry : fds_) names.push_back(entry.first);
  }
  // Duplicates of one batch at a time, sent without the lock, so that a slow
  // client delays nobody else and costs at most kMaxHolderFdsPerPacket fds.
  for (size_t start = 0; start < names.size(); start += kMaxHolderFdsPerPacket) {
    std::vector<std::string> batch;
    std::vector<UniqueFd> dups;
    absl::Status status = absl::OkStatus();
    {
      absl::MutexLock lock(&mu_);
      for (size_t i = start; i < names.size() && i < start + kMaxHolderFdsPerPacket; ++i) {
        auto it = fds_.find(names[i]);
        if (it == fds_.end()) continue;  // Removed by another client meanwhile.
        const int dup = ::fcntl(it->second.get(), F_DUPFD_CLOEXEC, 3);
        if (dup < 0) {
          status = ErrnoStatus(errno, absl::StrCat("fcntl F_DUPFD_CLOEXEC (LIST) name=",
                                                   names[i]));
          break;
        }
        batch.push_back(names[i]);
        dups.emplace_back(dup);
      }
    }
    if (!status.ok()) {
      LogEvent(LogLevel::kWarning, "fdholder_list_failed", {{"error", status.ToString()}});
      return SendPacket(fd, FormatErrorReply(status), {}).ok();
    }
    if (batch.empty()) continue;
    std::vector<int> raw;
    for (const UniqueFd& d : dups) raw.push_back(d.get());
    if (!SendPacket(fd, FormatFdsReply(batch), raw).ok()) return false;
  }
  return SendPacket(fd, FormatOkReply(), {}).ok();
}

size_t FdHolder::CloseAllLocked() {
  const size_t n = fds_.size();
  fds_.clear();
  return n;
}

}  // namespace agent
}  // namespace iommu
