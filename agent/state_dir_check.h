// State directory checks: the agent runs as root and rebuilds containers,
// sessions and mappings from the journal in --state-dir at every start, so
// whoever can write that directory or its files decides what the next start
// restores. Before the journal is opened, the directory and the files the
// journal keeps in it must belong to the agent's effective uid and be
// writable by no group and no other user; otherwise the agent refuses to
// start and says how to fix it (the broker refuses a store file open to
// others the same way, server/private_file.h).
#ifndef AGENT_STATE_DIR_CHECK_H_
#define AGENT_STATE_DIR_CHECK_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

// The files of the journal in the state directory, checked when present:
// SQLite's database, its write-ahead log and shared-memory index, and the
// lock that keeps a second agent out.
inline constexpr const char* kStateFiles[] = {"journal.db", "journal.db-wal", "journal.db-shm",
                                              "journal.lock"};

// Pure: FAILED_PRECONDITION naming --state-dir, `path`, the owner and mode
// found and the fix, when `st` (of `path`, from lstat or fstat) is not of
// the expected type (a directory when `directory`, else a regular file: a
// symlink is refused, since its target is what would be written), is not
// owned by `euid`, or is writable by group or others. OK otherwise.
absl::Status CheckStatePath(const std::string& path, const struct stat& st, uid_t euid,
                            bool directory);

// Checks the existing directory `dir` and the kStateFiles in it against
// geteuid(). `dir` itself may be a symlink only if the link is owned by the
// agent's uid or root (only they could have pointed it elsewhere); its
// target is then checked like the directory. Returns the directory, open
// (O_DIRECTORY), so that the files are checked in the directory that was
// checked even if the path is swapped meanwhile. Errors: CheckStatePath's;
// the errno of lstat/open/fstat, naming the path.
absl::StatusOr<UniqueFd> CheckStateDir(const std::string& dir);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_STATE_DIR_CHECK_H_
