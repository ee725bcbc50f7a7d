// Unix-domain SOCK_SEQPACKET sockets for the launcher path: one packet is one
// message, fds travel as SCM_RIGHTS, and the peer is identified by
// SO_PEERCRED. The helpers enforce size and fd limits on receive so that a
// hostile peer can neither make the agent allocate without bound nor leave
// fds in its table: every fd received with a refused packet is closed.
//
// Every fd these functions create is O_CLOEXEC (SOCK_CLOEXEC,
// MSG_CMSG_CLOEXEC), so nothing leaks into processes the agent spawns.
// Interrupted system calls (EINTR) are retried.
//
// Thread-safety: the functions share no state; concurrent calls on one fd
// follow the kernel's rules (SOCK_SEQPACKET keeps packets whole).
#ifndef COMMON_UNIX_SOCKET_H_
#define COMMON_UNIX_SOCKET_H_

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace iommu {

// Wire limits of the launcher protocol (proto/launcher.proto, "Framing").
// 64 KiB holds a MappingList of several hundred entries and stays below the
// default socket buffer (net.core.wmem_default, 208 KiB), so a send of a
// legal packet never fails with EMSGSIZE.
inline constexpr size_t kMaxLauncherPacketBytes = 64 * 1024;
// Fds per packet in either direction: a Devices response carries one per
// device of the container. The kernel allows 253 (SCM_MAX_FD); 32 bounds what
// a peer can push into the agent's fd table per packet.
inline constexpr size_t kMaxLauncherPacketFds = 32;

// The identity the kernel recorded for the peer when it connected.
struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// One received packet.
struct Packet {
  std::string bytes;
  std::vector<UniqueFd> fds;  // Owned; O_CLOEXEC.
  // The peer closed the connection (recvmsg returned 0 with no fds); `bytes`
  // and `fds` are empty.
  bool eof = false;
  // Non-blocking socket with nothing queued; `bytes` and `fds` are empty.
  bool would_block = false;
};

// Sends `bytes` as one packet with `fds` attached (SCM_RIGHTS; the kernel
// duplicates them into the message, the caller keeps ownership of its
// copies). MSG_NOSIGNAL: a closed peer is an EPIPE status, not SIGPIPE.
// Errors: INVALID_ARGUMENT for an empty packet (indistinguishable from EOF
// for the receiver) or more than 253 fds; otherwise the sendmsg errno
// (EAGAIN on a full non-blocking socket, EPIPE, EMSGSIZE, ...) as a status
// naming the fd. Nothing is sent on error.
absl::Status SendPacket(int fd, absl::string_view bytes,
                        const std::vector<int>& fds);

// Receives one packet of at most `max_bytes` bytes and `max_fds` fds.
// Received fds are close-on-exec (MSG_CMSG_CLOEXEC). A packet over either
// limit is consumed whole (SOCK_SEQPACKET) and refused: every fd that came
// with it is closed and the result is INVALID_ARGUMENT naming the limit,
// "packet: 70000 bytes exceeds the limit of 65536 bytes" or "packet: more
// than 1 fd attached (the limit)". The connection stays usable after such an
// error. Other errors: the recvmsg errno (ECONNRESET, EBADF, ...).
absl::StatusOr<Packet> RecvPacket(int fd, size_t max_bytes, size_t max_fds);

// The peer's pid, uid and gid as of connect() (SO_PEERCRED). The pid may have
// exited and been reused since; uid and gid are what to authorise on.
absl::StatusOr<PeerCred> GetPeerCred(int fd);

// Creates a listening SOCK_SEQPACKET socket at `path`, non-blocking (for
// poll) and close-on-exec. A socket file left at `path` by a dead process is
// replaced; a live one (something accepts connections there) or a file of
// another type is FAILED_PRECONDITION and left alone. The file gets `mode`
// and, if given, group `gid` before listen(), so no connection is accepted
// under looser permissions. Paths longer than sockaddr_un allows (108 bytes)
// are reached through /proc/self/fd of their directory. Errors: the failing
// call's errno naming the path (EACCES, ENOENT for a missing directory,
// EPERM from chown, ...); on error nothing is left at `path`.
absl::StatusOr<UniqueFd> ListenUnix(const std::string& path, mode_t mode = 0660,
                                    std::optional<gid_t> gid = std::nullopt);

// Accepts one connection on `listen_fd` (from ListenUnix). The new socket is
// non-blocking and close-on-exec. Returns an empty UniqueFd when no
// connection is pending or it was aborted before accept; errors: the accept4
// errno (EMFILE, ENFILE, ENOBUFS, ...).
absl::StatusOr<UniqueFd> AcceptUnix(int listen_fd);

// Connects a blocking, close-on-exec SOCK_SEQPACKET socket to `path` (long
// paths as for ListenUnix). Errors: NOT_FOUND (ENOENT: no socket there),
// UNAVAILABLE (ECONNREFUSED: nobody listening), PERMISSION_DENIED (EACCES),
// naming the path.
absl::StatusOr<UniqueFd> ConnectUnix(const std::string& path);

}  // namespace iommu

#endif  // COMMON_UNIX_SOCKET_H_
