// The lock that keeps a second broker off a store: flock(LOCK_EX) on the
// database file itself, held on an fd kept open for the store's lifetime.
// Locking the inode, not a name (the old "<path>.lock" file), refuses every
// name of the file: the path, a symlink, a hard link, a bind mount. Two
// brokers on one file would each serve their own in-memory state and, through
// a hard link, each use its own -wal file: both acknowledge writes and one
// loses them.
//
// flock and SQLite's POSIX (fcntl) locks are independent on Linux, so this
// lock does not disturb SQLite's. But closing any fd of the file drops every
// POSIX lock the process holds on it: the lock's fd must stay open until
// every SQLite connection of the file is closed, and a process must not open
// a second StoreFileLock on a file it already has open as a store (the refused
// one closes its fd).
//
// Thread-safe (immutable after Acquire).
#ifndef SERVER_STORE_FILE_LOCK_H_
#define SERVER_STORE_FILE_LOCK_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

class StoreFileLock final {
 public:
  // Opens the database file `path`, creating it empty with mode 0600 when
  // missing (whatever the umask: SQLite then creates -wal and -shm with the
  // same mode), locks it, and checks that it and its -wal and -shm files
  // are private to their owner.
  // Errors: FAILED_PRECONDITION when another process holds the lock (naming
  // the file and, from /proc/locks, the holder's pid) or when a file is open
  // to group or others (naming it, its mode and the chmod that fixes it);
  // UNAVAILABLE when the file cannot be opened.
  static absl::StatusOr<std::unique_ptr<StoreFileLock>> Acquire(const std::string& path);

  ~StoreFileLock();  // Closes the fd, which releases the lock.
  StoreFileLock(const StoreFileLock&) = delete;
  StoreFileLock& operator=(const StoreFileLock&) = delete;

 private:
  explicit StoreFileLock(int fd) : fd_(fd) {}
  const int fd_;
};

// The pid holding a flock on the file (device `dev`, inode `ino`) according
// to `proc_locks` (the text of /proc/locks), or nullopt when no line names
// it. A line whose inode matches but whose device does not is accepted when
// it is the only one (overlay filesystems report another device in stat).
std::optional<pid_t> FindFlockHolder(absl::string_view proc_locks, dev_t dev, ino_t ino);

}  // namespace iommu

#endif  // SERVER_STORE_FILE_LOCK_H_
