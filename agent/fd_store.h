// FdStore: somewhere outside this process to keep the agent's IOMMU fds
// (/dev/vfio/vfio containers, /dev/vfio/N groups, VFIO device fds, /dev/iommu
// contexts) and launchers' guest-memory memfds, so that they outlive the
// agent: a restarted agent takes them back with Retrieve and re-adopts them.
//
// Implementations (OpenFdStore):
//   "none"             keeps nothing (tests; operators who accept that a
//                      restart loses the containers);
//   "systemd"          systemd's file-descriptor store: FDSTORE=1 over
//                      $NOTIFY_SOCKET, back through LISTEN_FDS/LISTEN_FDNAMES
//                      on the next start (unit: FileDescriptorStoreMax=,
//                      NotifyAccess=main; deploy/systemd/iommu-agent.service);
//   "holder:/abs/path" the iommu-fdholder process listening there
//                      (agent/fd_holder.h, protocol in
//                      agent/fd_holder_protocol.h), for hosts without systemd
//                      such as a Kubernetes DaemonSet.
//
// Names are checked with ValidateFdName (agent/fd_name.h): 1-200 characters
// of [A-Za-z0-9._-].
//
// The systemd store, specifically:
//   * systemd does not acknowledge FDSTORE=1: OK from Put means the message
//     and its fd were delivered to $NOTIFY_SOCKET. systemd drops (and only
//     logs) an fd past FileDescriptorStoreMax=, and drops any stored fd that
//     reports POLLHUP/POLLERR (VFIO, iommufd and memfd fds never do).
//   * The first Retrieve takes LISTEN_FDS/LISTEN_FDNAMES and unsets them
//     (unsetenv): call it early, before other threads read the environment.
//     fds systemd passed under a name that is not valid here are closed;
//     several fds under one name keep the first, and systemd is told so.
//   * It keeps a duplicate of every stored fd in this process too (for
//     Retrieve), so the agent's fd limit must allow twice the stored count.
//   * Only the unit's main process may send FDSTORE=1 (NotifyAccess=main).
//
// Thread-safe: every implementation serialises its calls with one mutex.
// Ownership: Put never takes the caller's fd; Retrieve returns new fds the
// caller owns; the store's own copies are closed by Remove (and, for the
// systemd store's in-memory copies, by destruction; systemd and the holder
// keep theirs).
#ifndef AGENT_FD_STORE_H_
#define AGENT_FD_STORE_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/fd_name.h"  // ValidateFdName
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

class FdStore {
 public:
  virtual ~FdStore() = default;

  // For logs: "systemd fd store", "fd holder at /run/iommu-agent/fdholder.sock",
  // "none".
  virtual std::string Describe() const = 0;

  // Keeps a duplicate of `fd` under `name` (the caller keeps its own fd),
  // replacing whatever was stored under that name before. After OK, the fd
  // survives this process's death. Errors: INVALID_ARGUMENT "fd name: ..."
  // or "fd: ... is not an open file descriptor"; the store's error
  // (UNAVAILABLE when the holder is gone, RESOURCE_EXHAUSTED past its
  // --max-fds, the sd_notify errno). On error the name may hold nothing
  // (systemd: the old fd was already removed); the caller's fd is untouched.
  virtual absl::Status Put(absl::string_view name, int fd) = 0;

  // Forgets `name` and closes the store's copy. Removing an unknown name is
  // OK. Errors: INVALID_ARGUMENT for a bad name; the store's error.
  virtual absl::Status Remove(absl::string_view name) = 0;

  // The fds stored by earlier runs (or this one), by name; each a new
  // O_CLOEXEC fd the caller owns. The store keeps its own copies until
  // Remove. Errors: the store's (UNAVAILABLE when the holder is gone).
  virtual absl::StatusOr<std::map<std::string, UniqueFd>> Retrieve() = 0;
};

// Checks the form of `spec` without looking at the environment: "none",
// "systemd" or "holder:" and an absolute path. Otherwise INVALID_ARGUMENT
// naming "--fd-store", the value and the accepted forms (OpenFdStore's own
// errors for these cases).
absl::Status CheckFdStoreSpec(absl::string_view spec);

// Opens the store `spec` names (the agent's --fd-store flag):
//   "none"; "systemd" (needs $NOTIFY_SOCKET: FAILED_PRECONDITION naming the
//   variable and FileDescriptorStoreMax= otherwise); "holder:/abs/path.sock"
//   (nothing is connected here: the holder may start later; each call
//   connects). Anything else: INVALID_ARGUMENT naming "--fd-store" and the
//   accepted forms.
absl::StatusOr<std::unique_ptr<FdStore>> OpenFdStore(absl::string_view spec);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_FD_STORE_H_
