#include "common/unix_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/errno_status.h"

namespace iommu {
namespace {

// The kernel's SCM_MAX_FD: more fds in one SCM_RIGHTS message is EINVAL.
constexpr size_t kKernelMaxFds = 253;

// The path to hand to bind/connect/chmod/unlink for `path`. sun_path holds
// 107 characters; for a longer path the directory is opened (O_PATH) into
// `*dir` and the name is reached as /proc/self/fd/<dir>/<basename>, which
// the kernel resolves like any path. `*dir` must stay open while the
// returned path is used.
absl::StatusOr<std::string> ReachablePath(const std::string& path,
                                          UniqueFd* dir) {
  if (path.empty()) {
    return absl::InvalidArgumentError("socket path: must not be empty");
  }
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("socket path: must not contain NUL");
  }
  if (path.size() < sizeof(sockaddr_un::sun_path)) return path;
  const size_t slash = path.rfind('/');
  const std::string dir_path =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  dir->reset(::open(dir_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir->valid()) {
    return ErrnoStatus(errno, absl::StrCat("open socket directory ", dir_path));
  }
  std::string reachable = absl::StrCat("/proc/self/fd/", dir->get(), "/", base);
  if (reachable.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path: file name \"", base, "\" is too long for a unix socket"));
  }
  return reachable;
}

socklen_t FillAddress(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
}

absl::StatusOr<UniqueFd> NewSocket(bool nonblocking, absl::string_view what) {
  UniqueFd fd(::socket(AF_UNIX,
                       SOCK_SEQPACKET | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0),
                       0));
  if (!fd.valid()) {
    return ErrnoStatus(errno, absl::StrCat("socket(AF_UNIX, SOCK_SEQPACKET) for ", what));
  }
  return fd;
}

// connect() on a fresh socket, retrying EINTR. For unix sockets a blocking
// connect either completes or fails at once, so a retry after EINTR sees
// EISCONN at worst, which is success.
int ConnectRetrying(int fd, const sockaddr_un& addr, socklen_t len) {
  while (true) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EISCONN) return 0;
    return errno;
  }
}

}  // namespace

absl::Status SendPacket(int fd, absl::string_view bytes,
                        const std::vector<int>& fds) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError(
        "packet: must not be empty (a zero-length packet reads as end of stream)");
  }
  if (fds.size() > kKernelMaxFds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packet: ", fds.size(), " fds attached, the kernel allows ", kKernelMaxFds));
  }
  iovec iov;
  iov.iov_base = const_cast<char*>(bytes.data());
  iov.iov_len = bytes.size();
  msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    const size_t payload = fds.size() * sizeof(int);
    control.assign(CMSG_SPACE(payload), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(payload);
    std::memcpy(CMSG_DATA(cmsg), fds.data(), payload);
  }
  while (true) {
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n >= 0) {
      // SOCK_SEQPACKET sends whole packets or fails; a short count would be
      // a kernel contract violation.
      if (static_cast<size_t>(n) != bytes.size()) {
        return absl::InternalError(absl::StrCat(
            "sendmsg fd=", fd, ": sent ", n, " of ", bytes.size(), " bytes"));
      }
      return absl::OkStatus();
    }
    if (errno == EINTR) continue;
    return ErrnoStatus(errno, absl::StrCat("sendmsg fd=", fd, " bytes=", bytes.size(),
                                           " fds=", fds.size()));
  }
}

absl::StatusOr<Packet> RecvPacket(int fd, size_t max_bytes, size_t max_fds) {
  Packet packet;
  // One spare byte is not needed: MSG_TRUNC below reports the real length.
  packet.bytes.resize(max_bytes);
  iovec iov;
  iov.iov_base = packet.bytes.data();
  iov.iov_len = packet.bytes.size();
  // CMSG_SPACE rounds up to alignment, so the buffer may fit more fds than
  // max_fds without MSG_CTRUNC; the count is checked again below.
  std::vector<char> control(max_fds > 0 ? CMSG_SPACE(max_fds * sizeof(int)) : 0);
  msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.empty() ? nullptr : control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  while (true) {
    // MSG_TRUNC in flags makes recvmsg return the packet's real length.
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      packet.bytes.clear();
      packet.would_block = true;
      return packet;
    }
    return ErrnoStatus(errno, absl::StrCat("recvmsg fd=", fd));
  }
  // Take ownership of every fd the kernel installed before any check, so
  // that each error return below closes them.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      packet.fds.emplace_back(received);
    }
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0 || static_cast<size_t>(n) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packet: ", n, " bytes exceeds the limit of ", max_bytes, " bytes"));
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || packet.fds.size() > max_fds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packet: more than ", max_fds, max_fds == 1 ? " fd" : " fds",
        " attached (the limit)"));
  }
  packet.bytes.resize(static_cast<size_t>(n));
  if (n == 0 && packet.fds.empty()) packet.eof = true;
  return packet;
}

absl::StatusOr<PeerCred> GetPeerCred(int fd) {
  ucred cred;
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus(errno, absl::StrCat("getsockopt SO_PEERCRED fd=", fd));
  }
  PeerCred peer;
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  return peer;
}

absl::StatusOr<UniqueFd> ListenUnix(const std::string& path, mode_t mode,
                                    std::optional<gid_t> gid) {
  UniqueFd dir;
  absl::StatusOr<std::string> reachable = ReachablePath(path, &dir);
  if (!reachable.ok()) return reachable.status();
  const std::string& p = *reachable;
  sockaddr_un addr;
  const socklen_t addr_len = FillAddress(p, &addr);

  struct stat st;
  if (::lstat(p.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "socket path: ", path, " exists and is not a socket; not replacing it"));
    }
    // A socket file outlives its process. Replace it only if nobody accepts
    // there: two agents on one socket would split the launchers between them.
    absl::StatusOr<UniqueFd> probe = NewSocket(false, path);
    if (!probe.ok()) return probe.status();
    const int err = ConnectRetrying(probe->get(), addr, addr_len);
    if (err == 0 || err == EPROTOTYPE) {
      return absl::FailedPreconditionError(absl::StrCat(
          "socket path: another process is listening on ", path));
    }
    if (err != ECONNREFUSED) {
      return ErrnoStatus(err, absl::StrCat("connect to existing socket ", path));
    }
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("unlink stale socket ", path));
    }
  } else if (errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("lstat ", path));
  }

  absl::StatusOr<UniqueFd> fd = NewSocket(true, path);
  if (!fd.ok()) return fd.status();
  if (::bind(fd->get(), reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0) {
    return ErrnoStatus(errno, absl::StrCat("bind ", path));
  }
  // Until listen() below, connects are refused, so the permissive mode bind
  // gave the file (0777 & ~umask) is never usable.
  absl::Status status;
  if (gid.has_value() && ::chown(p.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("chown ", path, " gid=", *gid));
  } else if (::chmod(p.c_str(), mode) != 0) {
    status = ErrnoStatus(errno, absl::StrFormat("chmod %s mode=0%o", path, mode));
  } else if (::listen(fd->get(), SOMAXCONN) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("listen ", path));
  }
  if (!status.ok()) {
    ::unlink(p.c_str());
    return status;
  }
  return fd;
}

absl::StatusOr<UniqueFd> AcceptUnix(int listen_fd) {
  while (true) {
    UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (fd.valid()) return fd;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) {
      return UniqueFd();
    }
    return ErrnoStatus(errno, absl::StrCat("accept4 fd=", listen_fd));
  }
}

absl::StatusOr<UniqueFd> ConnectUnix(const std::string& path) {
  UniqueFd dir;
  absl::StatusOr<std::string> reachable = ReachablePath(path, &dir);
  if (!reachable.ok()) return reachable.status();
  sockaddr_un addr;
  const socklen_t addr_len = FillAddress(*reachable, &addr);
  absl::StatusOr<UniqueFd> fd = NewSocket(false, path);
  if (!fd.ok()) return fd.status();
  const int err = ConnectRetrying(fd->get(), addr, addr_len);
  if (err != 0) return ErrnoStatus(err, absl::StrCat("connect ", path));
  return fd;
}

}  // namespace iommu
