#include "agent/fd_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <systemd/sd-daemon.h>

#include <set>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/errno_status.h"
#include "agent/fd_holder_protocol.h"
#include "agent/log.h"
#include "common/unix_socket.h"

namespace iommu {
namespace agent {
namespace {

constexpr absl::string_view kHolderPrefix = "holder:";
// How long a holder call waits for the holder to read or answer one packet
// before DEADLINE_EXCEEDED: a wedged holder must not wedge the agent.
constexpr int kHolderIoTimeoutSeconds = 30;

absl::Status CheckOpenFd(int fd) {
  if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd: ", fd, " is not an open file descriptor"));
  }
  return absl::OkStatus();
}

// A new close-on-exec duplicate of `fd`, numbered 3 or above (never 0-2).
absl::StatusOr<UniqueFd> DupCloexec(int fd, absl::string_view what) {
  const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (dup < 0) {
    return ErrnoStatus(errno, absl::StrCat("fcntl F_DUPFD_CLOEXEC fd=", fd, " (", what, ")"));
  }
  return UniqueFd(dup);
}

absl::StatusOr<std::map<std::string, UniqueFd>> DupAll(
    const std::map<std::string, UniqueFd>& fds) {
  std::map<std::string, UniqueFd> out;
  for (const auto& [name, fd] : fds) {
    absl::StatusOr<UniqueFd> dup = DupCloexec(fd.get(), name);
    if (!dup.ok()) return dup.status();
    out.emplace(name, *std::move(dup));
  }
  return out;
}

// ---------------------------------------------------------------------------

class NoneFdStore final : public FdStore {
 public:
  std::string Describe() const override { return "none"; }
  absl::Status Put(absl::string_view name, int fd) override {
    if (absl::Status s = ValidateFdName(name); !s.ok()) return s;
    return CheckOpenFd(fd);
  }
  absl::Status Remove(absl::string_view name) override {
    return ValidateFdName(name);
  }
  absl::StatusOr<std::map<std::string, UniqueFd>> Retrieve() override {
    return std::map<std::string, UniqueFd>();
  }
};

// ---------------------------------------------------------------------------

// systemd's fd store. Put sends FDSTOREREMOVE then FDSTORE for the name
// (systemd would otherwise keep several fds under one name) and keeps a
// duplicate in memory; Retrieve takes the fds systemd passed at start
// (LISTEN_FDS, once, unsetting the variables) and returns duplicates of
// everything held in memory.
class SystemdFdStore final : public FdStore {
 public:
  std::string Describe() const override { return "systemd fd store"; }

  absl::Status Put(absl::string_view name, int fd) override {
    if (absl::Status s = ValidateFdName(name); !s.ok()) return s;
    if (absl::Status s = CheckOpenFd(fd); !s.ok()) return s;
    absl::StatusOr<UniqueFd> copy = DupCloexec(fd, name);
    if (!copy.ok()) return copy.status();
    absl::MutexLock lock(&mu_);
    if (absl::Status s = NotifyLocked(absl::StrCat("FDSTOREREMOVE=1\nFDNAME=", name), -1);
        !s.ok()) {
      return s;
    }
    fds_.erase(std::string(name));
    if (absl::Status s = NotifyLocked(absl::StrCat("FDSTORE=1\nFDNAME=", name), fd);
        !s.ok()) {
      return s;
    }
    fds_[std::string(name)] = *std::move(copy);
    return absl::OkStatus();
  }

  absl::Status Remove(absl::string_view name) override {
    if (absl::Status s = ValidateFdName(name); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    if (absl::Status s = NotifyLocked(absl::StrCat("FDSTOREREMOVE=1\nFDNAME=", name), -1);
        !s.ok()) {
      return s;
    }
    fds_.erase(std::string(name));
    return absl::OkStatus();
  }

  absl::StatusOr<std::map<std::string, UniqueFd>> Retrieve() override {
    absl::MutexLock lock(&mu_);
    if (!loaded_) {
      loaded_ = true;
      if (absl::Status s = LoadListenFdsLocked(); !s.ok()) return s;
    }
    return DupAll(fds_);
  }

 private:
  // Sends `state` (with `fd` attached unless -1) to $NOTIFY_SOCKET.
  absl::Status NotifyLocked(const std::string& state, int fd)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int r = fd >= 0 ? sd_pid_notify_with_fds(0, 0, state.c_str(), &fd, 1)
                          : sd_pid_notify_with_fds(0, 0, state.c_str(), nullptr, 0);
    std::string what = state;
    for (char& c : what) {
      if (c == '\n') c = ' ';
    }
    if (r < 0) return ErrnoStatus(-r, absl::StrCat("sd_pid_notify_with_fds ", what));
    if (r == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sd_pid_notify_with_fds ", what, ": $NOTIFY_SOCKET is not set"));
    }
    return absl::OkStatus();
  }

  // Takes the fds systemd passed (SD_LISTEN_FDS_START onwards), marks them
  // close-on-exec and files them by name; names stored by Put in this run
  // win. Several fds under one name (an interrupted replace) keep the first;
  // the store is then told to hold only that one.
  absl::Status LoadListenFdsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    char** names = nullptr;
    const int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
    if (n < 0) return ErrnoStatus(-n, "sd_listen_fds_with_names");
    std::vector<std::pair<std::string, UniqueFd>> passed;
    for (int i = 0; i < n; ++i) {
      UniqueFd fd(SD_LISTEN_FDS_START + i);
      std::string name = names != nullptr && names[i] != nullptr ? names[i] : "";
      passed.emplace_back(std::move(name), std::move(fd));
    }
    if (names != nullptr) {
      for (char** p = names; *p != nullptr; ++p) free(*p);
      free(names);
    }
    absl::Status result = absl::OkStatus();
    std::set<std::string> loaded_names;
    std::set<std::string> duplicated;
    for (auto& [name, fd] : passed) {
      if (::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) < 0) {
        result.Update(ErrnoStatus(errno, absl::StrCat("fcntl F_SETFD FD_CLOEXEC fd=",
                                                      fd.get(), " name=", name)));
        continue;
      }
      if (!ValidateFdName(name).ok()) {
        // Not one this store sent (it validates every name): close our copy.
        // systemd keeps its own until the unit stops.
        LogEvent(LogLevel::kWarning, "fd_store_badly_named_fd_closed",
                 {{"store", "systemd"}, {"fd", fd.get()}, {"name", name}});
        continue;
      }
      const bool inserted = fds_.emplace(name, std::move(fd)).second;
      if (!inserted && loaded_names.count(name) > 0) duplicated.insert(name);
      loaded_names.insert(name);
    }
    for (const std::string& name : duplicated) {
      LogEvent(LogLevel::kWarning, "fd_store_duplicate_name",
               {{"store", "systemd"}, {"name", name}, {"kept", "first"}});
      const int fd = fds_[name].get();
      if (absl::Status s = NotifyLocked(absl::StrCat("FDSTOREREMOVE=1\nFDNAME=", name), -1);
          !s.ok()) {
        result.Update(s);
        continue;
      }
      result.Update(NotifyLocked(absl::StrCat("FDSTORE=1\nFDNAME=", name), fd));
    }
    return result;
  }

  absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, UniqueFd> fds_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------

// The iommu-fdholder client: one connection per call, so a holder that
// restarted between calls is simply connected to again.
class HolderFdStore final : public FdStore {
 public:
  explicit HolderFdStore(std::string path) : path_(std::move(path)) {}

  std::string Describe() const override { return absl::StrCat("fd holder at ", path_); }

  absl::Status Put(absl::string_view name, int fd) override {
    if (absl::Status s = ValidateFdName(name); !s.ok()) return s;
    if (absl::Status s = CheckOpenFd(fd); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    return CallLocked(FormatPutRequest(name), fd, nullptr);
  }

  absl::Status Remove(absl::string_view name) override {
    if (absl::Status s = ValidateFdName(name); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    return CallLocked(FormatRemoveRequest(name), -1, nullptr);
  }

  absl::StatusOr<std::map<std::string, UniqueFd>> Retrieve() override {
    absl::MutexLock lock(&mu_);
    std::map<std::string, UniqueFd> fds;
    if (absl::Status s = CallLocked(FormatListRequest(), -1, &fds); !s.ok()) return s;
    return fds;
  }

 private:
  absl::Status Error(absl::StatusCode code, absl::string_view what) const {
    return absl::Status(code, absl::StrCat("fd holder at ", path_, ": ", what));
  }

  // One request and its replies; FDS replies go into `*fds` (LIST only).
  absl::Status CallLocked(const std::string& request, int fd,
                          std::map<std::string, UniqueFd>* fds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<UniqueFd> conn = ConnectUnix(path_);
    if (!conn.ok()) {
      const bool gone = conn.status().code() == absl::StatusCode::kNotFound ||
                        conn.status().code() == absl::StatusCode::kUnavailable;
      return Error(gone ? absl::StatusCode::kUnavailable : conn.status().code(),
                   absl::StrCat("connect: ", conn.status().message(),
                                " (is iommu-fdholder running?)"));
    }
    timeval timeout{kHolderIoTimeoutSeconds, 0};
    if (::setsockopt(conn->get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0 ||
        ::setsockopt(conn->get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) < 0) {
      return ErrnoStatus(errno, absl::StrCat("setsockopt SO_RCVTIMEO/SO_SNDTIMEO ", path_));
    }
    std::vector<int> attached;
    if (fd >= 0) attached.push_back(fd);
    if (absl::Status s = SendPacket(conn->get(), request, attached); !s.ok()) {
      return Error(s.code() == absl::StatusCode::kUnavailable ? s.code()
                                                              : absl::StatusCode::kUnavailable,
                   absl::StrCat("send: ", s.message()));
    }
    while (true) {
      absl::StatusOr<Packet> packet =
          RecvPacket(conn->get(), kMaxHolderReplyBytes, kMaxHolderFdsPerPacket);
      if (!packet.ok()) {
        return Error(absl::StatusCode::kUnavailable,
                     absl::StrCat("receive: ", packet.status().message()));
      }
      if (packet->would_block) {
        return Error(absl::StatusCode::kDeadlineExceeded,
                     absl::StrCat("no reply within ", kHolderIoTimeoutSeconds, "s"));
      }
      if (packet->eof) {
        return Error(absl::StatusCode::kUnavailable, "closed the connection before replying");
      }
      absl::StatusOr<HolderReply> reply = ParseHolderReply(packet->bytes);
      if (!reply.ok()) return Error(absl::StatusCode::kInternal, reply.status().message());
      switch (reply->kind) {
        case HolderReply::Kind::kOk:
          if (!packet->fds.empty()) {
            return Error(absl::StatusCode::kInternal, "OK reply came with fds");
          }
          return absl::OkStatus();
        case HolderReply::Kind::kError:
          return Error(reply->error.code(), reply->error.message());
        case HolderReply::Kind::kFds:
          if (fds == nullptr || reply->names.size() != packet->fds.size()) {
            return Error(absl::StatusCode::kInternal,
                         absl::StrCat("FDS reply with ", reply->names.size(), " names and ",
                                      packet->fds.size(), " fds",
                                      fds == nullptr ? " to a request other than LIST" : ""));
          }
          for (size_t i = 0; i < reply->names.size(); ++i) {
            (*fds)[reply->names[i]] = std::move(packet->fds[i]);
          }
          break;
      }
    }
  }

  const std::string path_;
  absl::Mutex mu_;  // One call at a time (a call is one connection).
};

}  // namespace

absl::Status CheckFdStoreSpec(absl::string_view spec) {
  if (spec == "none" || spec == "systemd") return absl::OkStatus();
  if (absl::StartsWith(spec, kHolderPrefix)) {
    const absl::string_view path = spec.substr(kHolderPrefix.size());
    if (path.empty() || path[0] != '/' || path.find('\0') != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--fd-store=", spec, ": the holder's socket must be an absolute path, "
          "e.g. holder:/run/iommu-agent/fdholder.sock"));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--fd-store=", spec, ": expected none, systemd or holder:/absolute/socket/path"));
}

absl::StatusOr<std::unique_ptr<FdStore>> OpenFdStore(absl::string_view spec) {
  if (absl::Status form = CheckFdStoreSpec(spec); !form.ok()) return form;
  if (spec == "none") return std::make_unique<NoneFdStore>();
  if (spec == "systemd") {
    const char* notify = ::getenv("NOTIFY_SOCKET");
    if (notify == nullptr || *notify == '\0') {
      return absl::FailedPreconditionError(
          "--fd-store=systemd: $NOTIFY_SOCKET is not set; run the agent as a systemd "
          "service with NotifyAccess=main and FileDescriptorStoreMax= set above 0 "
          "(deploy/systemd/iommu-agent.service)");
    }
    return std::make_unique<SystemdFdStore>();
  }
  // CheckFdStoreSpec left only the holder form.
  return std::make_unique<HolderFdStore>(std::string(spec.substr(kHolderPrefix.size())));
}

}  // namespace agent
}  // namespace iommu
