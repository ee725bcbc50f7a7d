// LauncherClient: what a VM launcher links to talk to the node agent's unix
// socket (proto/launcher.proto). It opens a session with the broker's grant
// token, hands guest memory to the agent as an fd, asks for mappings inside
// the session's windows, and receives its device fds. The launcher never
// holds an iommufd, container or group fd, and needs no RLIMIT_MEMLOCK: the
// agent pins and bills every page.
//
// Errors: an error the agent answered comes back as an absl::Status with the
// agent's code and message, unchanged (e.g. UNAUTHENTICATED "token: expired
// at ..."). Transport failures are UNAVAILABLE "launcher socket: ..." (agent
// gone) or the errno's code; a reply that breaks the protocol is INTERNAL
// "launcher protocol: ...".
//
// Thread-safe: one request is in flight at a time; concurrent calls are
// serialised.
#ifndef LAUNCHER_CLIENT_H_
#define LAUNCHER_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"
#include "proto/launcher.pb.h"

namespace iommu {
namespace launcher {

// GetDevices' answer: fds[i] is the device at addresses[i]. The caller owns
// the fds (close-on-exec; clear FD_CLOEXEC on those a VMM child inherits).
struct LauncherDevices {
  std::vector<std::string> addresses;
  std::vector<UniqueFd> fds;
};

class LauncherClient final {
 public:
  // Connects to the agent's socket at `socket_path`. Errors: NOT_FOUND (no
  // socket there), UNAVAILABLE (nobody listening), PERMISSION_DENIED (not in
  // the socket's group), naming the path.
  static absl::StatusOr<std::unique_ptr<LauncherClient>> Connect(
      const std::string& socket_path);

  LauncherClient(const LauncherClient&) = delete;
  LauncherClient& operator=(const LauncherClient&) = delete;

  // Closing the connection ends the session: the agent unmaps everything it
  // mapped and releases the memory.
  ~LauncherClient() = default;

  // Opens the connection's session with the broker's single-use `token`.
  absl::StatusOr<v1::LauncherResponse::SessionOpened> OpenSession(
      absl::string_view token);

  // Takes back the session `session_id` after the agent restarted, with the
  // resume_token SessionOpened gave (proto/launcher.proto, ResumeSession).
  // Memory ids stay valid; the device fds the launcher holds stay open
  // throughout.
  absl::StatusOr<v1::LauncherResponse::SessionOpened> ResumeSession(
      absl::string_view session_id, absl::string_view resume_token);

  // Registers guest memory: `fd` (a memfd, or a file the agent can mmap
  // shared) is sent as SCM_RIGHTS; the caller keeps its own fd. `name` is a
  // label for the agent's logs.
  absl::StatusOr<v1::LauncherResponse::MemoryRegistered> RegisterMemory(
      int fd, absl::string_view name);

  // A new memfd of `size` bytes (MFD_CLOEXEC | MFD_ALLOW_SEALING), zero
  // filled, for guest memory. It is sealed against shrinking (F_SEAL_SHRINK):
  // the agent maps it, and a truncation under its mappings would pull pinned
  // pages out from under a device. Errors: INVALID_ARGUMENT for size 0 or over
  // INT64_MAX; memfd_create / ftruncate errno naming `name` and `size`.
  static absl::StatusOr<UniqueFd> CreateMemfd(uint64_t size,
                                              absl::string_view name);

  // Maps [offset, offset + length) of `memory_id` at `iova`.
  absl::Status Map(absl::string_view memory_id, uint64_t offset,
                   uint64_t length, uint64_t iova, bool readable,
                   bool writable);

  // Unmaps the whole mappings inside [iova, iova + length); returns the bytes
  // unmapped.
  absl::StatusOr<uint64_t> Unmap(uint64_t iova, uint64_t length);

  // All the session's mappings, sorted by IOVA: pages through them with
  // ListMappingsPage, `page_size` at a time (0: the agent's default of 1000,
  // so 66 requests for 65,535 mappings).
  absl::StatusOr<std::vector<v1::LauncherResponse::MappingEntry>>
  ListMappings(uint32_t page_size = 0);

  // One page: at most `page_size` mappings (0 means 1000, at most 1000)
  // after `page_token` ("" for the first page); next_page_token is empty on
  // the last page.
  absl::StatusOr<v1::LauncherResponse::MappingList> ListMappingsPage(
      uint32_t page_size, const std::string& page_token);

  // The session's device fds.
  absl::StatusOr<LauncherDevices> GetDevices();

  // The socket, for poll() only (POLLHUP/POLLIN tell that the agent closed
  // the connection). Do not read or write it.
  int socket_fd() const { return fd_.get(); }

 private:
  explicit LauncherClient(UniqueFd fd) : fd_(std::move(fd)) {}

  // Sends `request` (seq assigned here) with `fds` and returns the reply and
  // the fds that came with it. The agent's non-OK code becomes the status.
  absl::StatusOr<v1::LauncherResponse> Call(v1::LauncherRequest request,
                                            const std::vector<int>& fds,
                                            std::vector<UniqueFd>* reply_fds);

  absl::Mutex mu_;
  UniqueFd fd_;  // Constant after construction (the owned socket).
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace launcher
}  // namespace iommu

#endif  // LAUNCHER_CLIENT_H_
