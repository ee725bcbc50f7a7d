#include "agent/fake_launcher_handler.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/mapping_page.h"

namespace iommu {
namespace agent {
namespace {

ino_t InodeOf(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return 0;
  return st.st_ino;
}

void SetError(const absl::Status& status, v1::LauncherResponse* response) {
  response->set_code(static_cast<int32_t>(status.code()));
  response->set_message(std::string(status.message()));
}

}  // namespace

FakeLauncherHandler::FakeLauncherHandler() {
  absl::MutexLock lock(&mu_);
  for (const char* address : kDeviceAddresses) {
    UniqueFd fd(memfd_create(address, MFD_CLOEXEC));
    if (!fd.valid()) std::abort();  // The test cannot run without it.
    devices_.push_back(std::move(fd));
  }
}

void FakeLauncherHandler::Record(std::string event) {
  events_.push_back(std::move(event));
}

absl::Status FakeLauncherHandler::OnConnect(uint64_t conn_id, const PeerCred& peer) {
  absl::MutexLock lock(&mu_);
  Record(absl::StrCat("connect ", conn_id, " uid=", peer.uid));
  last_peer_ = peer;
  return connect_status_;
}

void FakeLauncherHandler::OnRequest(uint64_t conn_id, const v1::LauncherRequest& req,
                                    std::vector<UniqueFd> fds,
                                    v1::LauncherResponse* response,
                                    std::vector<int>* out_fds) {
  absl::MutexLock lock(&mu_);
  Record(absl::StrCat("request ", conn_id, " seq=", req.seq(), " ", req.op_case()));
  if (answer_without_result_) return;
  if (!next_error_.ok()) {
    SetError(next_error_, response);
    next_error_ = absl::OkStatus();
    for (const UniqueFd& d : devices_) out_fds->push_back(d.get());
    return;
  }
  auto& mine = mappings_[conn_id];
  switch (req.op_case()) {
    case v1::LauncherRequest::kOpenSession: {
      if (req.open_session().token() == "bad") {
        SetError(absl::UnauthenticatedError("token: bad signature"), response);
        return;
      }
      auto* s = response->mutable_session_opened();
      s->set_session_id(absl::StrCat("s-", conn_id));
      s->set_container_id("c-0123456789abcdef");
      s->set_tenant_id("acme");
      s->set_expires_ms(1'700'000'060'000);
      v1::GrantWindow* w = s->add_windows();
      w->set_window_id("w-0000000000000001");
      w->set_base(kWindowBase);
      w->set_size(kWindowSize);
      return;
    }
    case v1::LauncherRequest::kRegisterMemory: {
      if (fds.size() != 1) {
        SetError(absl::InvalidArgumentError(absl::StrCat(
                     "register_memory: attach exactly one fd, got ", fds.size())),
                 response);
        return;
      }
      struct stat st;
      if (fstat(fds[0].get(), &st) != 0) std::abort();
      last_memory_inode_ = st.st_ino;
      auto* m = response->mutable_memory_registered();
      m->set_memory_id(absl::StrCat("m-", st.st_ino));
      m->set_size(static_cast<uint64_t>(st.st_size));
      m->set_owner_tenant("acme");
      m->set_shared(!known_inodes_.insert(st.st_ino).second);
      memory_.push_back(std::move(fds[0]));
      return;
    }
    case v1::LauncherRequest::kMap: {
      const auto& m = req.map();
      if (m.length() == 0) {
        SetError(absl::InvalidArgumentError("length: must not be 0"), response);
        return;
      }
      if (m.iova() < kWindowBase || m.iova() + m.length() > kWindowBase + kWindowSize) {
        SetError(absl::InvalidArgumentError(absl::StrCat(
                     "iova: 0x", absl::Hex(m.iova()), " is outside every window")),
                 response);
        return;
      }
      v1::LauncherResponse::MappingEntry e;
      e.set_memory_id(m.memory_id());
      e.set_offset(m.offset());
      e.set_length(m.length());
      e.set_iova(m.iova());
      e.set_readable(m.readable());
      e.set_writable(m.writable());
      mine[m.iova()] = e;
      response->mutable_mapped();
      return;
    }
    case v1::LauncherRequest::kUnmap: {
      const uint64_t start = req.unmap().iova();
      const uint64_t end = start + req.unmap().length();
      uint64_t bytes = 0;
      for (auto it = mine.lower_bound(start); it != mine.end() && it->first < end;) {
        bytes += it->second.length();
        it = mine.erase(it);
      }
      if (bytes == 0) {
        SetError(absl::NotFoundError("iova: no mapping in range"), response);
        return;
      }
      response->mutable_unmapped()->set_bytes(bytes);
      return;
    }
    case v1::LauncherRequest::kListMappings: {
      // Pages as the agent does (agent/mapping_page.h), without its checks
      // of page_size.
      absl::StatusOr<std::optional<uint64_t>> after =
          ParseMappingPageToken("page_token", req.list_mappings().page_token());
      if (!after.ok()) {
        SetError(after.status(), response);
        return;
      }
      const uint32_t limit = req.list_mappings().page_size() == 0
                                 ? kDefaultLauncherMappingPage
                                 : req.list_mappings().page_size();
      auto* list = response->mutable_mapping_list();
      for (auto it = after->has_value() ? mine.upper_bound(**after) : mine.begin();
           it != mine.end(); ++it) {
        if (static_cast<uint32_t>(list->mappings_size()) == limit) {
          list->set_next_page_token(MappingPageToken(list->mappings().rbegin()->iova()));
          break;
        }
        *list->add_mappings() = it->second;
      }
      return;
    }
    case v1::LauncherRequest::kGetDevices: {
      auto* d = response->mutable_devices();
      for (size_t i = 0; i < devices_.size(); ++i) {
        d->add_addresses(kDeviceAddresses[i]);
        out_fds->push_back(devices_[i].get());
      }
      return;
    }
    case v1::LauncherRequest::kResumeSession:
      // The fake keeps no session beyond its connection: none to resume.
      SetError(absl::NotFoundError("session_id: no session to resume"), response);
      return;
    case v1::LauncherRequest::OP_NOT_SET:
      std::abort();  // The server filters these out.
  }
}

void FakeLauncherHandler::OnDisconnect(uint64_t conn_id) {
  absl::MutexLock lock(&mu_);
  Record(absl::StrCat("disconnect ", conn_id));
  mappings_.erase(conn_id);
}

std::vector<std::string> FakeLauncherHandler::events() {
  absl::MutexLock lock(&mu_);
  return events_;
}

size_t FakeLauncherHandler::CountEvents(const std::string& prefix) {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const std::string& e : events_) n += absl::StartsWith(e, prefix) ? 1 : 0;
  return n;
}

bool FakeLauncherHandler::WaitForEvents(const std::string& prefix, size_t n,
                                        absl::Duration timeout) {
  auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t count = 0;
    for (const std::string& e : events_) count += absl::StartsWith(e, prefix) ? 1 : 0;
    return count >= n;
  };
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

void FakeLauncherHandler::set_connect_status(absl::Status status) {
  absl::MutexLock lock(&mu_);
  connect_status_ = std::move(status);
}

void FakeLauncherHandler::set_answer_without_result(bool on) {
  absl::MutexLock lock(&mu_);
  answer_without_result_ = on;
}

void FakeLauncherHandler::set_error_for_next_request(absl::Status status) {
  absl::MutexLock lock(&mu_);
  next_error_ = std::move(status);
}

ino_t FakeLauncherHandler::device_inode(size_t i) {
  absl::MutexLock lock(&mu_);
  return InodeOf(devices_.at(i).get());
}

ino_t FakeLauncherHandler::last_memory_inode() {
  absl::MutexLock lock(&mu_);
  return last_memory_inode_;
}

PeerCred FakeLauncherHandler::last_peer() {
  absl::MutexLock lock(&mu_);
  return last_peer_;
}

}  // namespace agent
}  // namespace iommu
