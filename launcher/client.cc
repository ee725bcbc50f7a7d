#include "launcher/client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/unix_socket.h"

namespace iommu {
namespace launcher {
namespace {

// errno -> status once, at the call site, naming the call and its object.
absl::Status ErrnoStatus(int err, absl::string_view context) {
  return absl::ErrnoToStatus(err, context);
}

absl::Status StatusFromResponse(const v1::LauncherResponse& response) {
  const int32_t code = response.code();
  if (code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(
        absl::StrCat("agent answered code ", code, ": ", response.message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), response.message());
}

absl::Status Unexpected(const v1::LauncherResponse& response, absl::string_view want) {
  return absl::InternalError(absl::StrCat(
      "launcher protocol: the agent answered ", response.result_case(),
      " to a ", want, " request"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LauncherClient>> LauncherClient::Connect(
    const std::string& socket_path) {
  absl::StatusOr<UniqueFd> fd = ConnectUnix(socket_path);
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<LauncherClient>(new LauncherClient(*std::move(fd)));
}

absl::StatusOr<v1::LauncherResponse> LauncherClient::Call(
    v1::LauncherRequest request, const std::vector<int>& fds,
    std::vector<UniqueFd>* reply_fds) {
  absl::MutexLock lock(&mu_);
  const uint64_t seq = next_seq_++;
  request.set_seq(seq);
  const std::string bytes = request.SerializeAsString();
  if (bytes.size() > kMaxLauncherPacketBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request: ", bytes.size(), " bytes exceeds the launcher protocol's limit of ",
        kMaxLauncherPacketBytes));
  }
  const absl::Status sent = SendPacket(fd_.get(), bytes, fds);
  if (!sent.ok()) {
    // The agent may have refused the connection with a reason (too many
    // connections, peer not allowed) and closed it; that reason is what the
    // user needs, not the EPIPE that followed. Only read if something is
    // there, so a live agent never leaves this call blocked.
    pollfd p = {fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0) {
      absl::StatusOr<Packet> packet =
          RecvPacket(fd_.get(), kMaxLauncherPacketBytes, kMaxLauncherPacketFds);
      v1::LauncherResponse response;
      if (packet.ok() && !packet->eof && response.ParseFromString(packet->bytes) &&
          response.seq() == 0 && response.code() != 0) {
        return StatusFromResponse(response);
      }
    }
    return absl::UnavailableError(
        absl::StrCat("launcher socket: sending the request failed: ", sent.message()));
  }
  absl::StatusOr<Packet> packet =
      RecvPacket(fd_.get(), kMaxLauncherPacketBytes, kMaxLauncherPacketFds);
  if (!packet.ok()) {
    return absl::Status(packet.status().code(),
                        absl::StrCat("launcher socket: ", packet.status().message()));
  }
  if (packet->eof) {
    return absl::UnavailableError("launcher socket: the agent closed the connection");
  }
  v1::LauncherResponse response;
  if (!response.ParseFromString(packet->bytes)) {
    return absl::InternalError("launcher protocol: the agent's response does not parse");
  }
  // seq 0: the agent could not read the request or refused the connection;
  // either way the answer is for the request in flight.
  if (response.seq() != seq && !(response.seq() == 0 && response.code() != 0)) {
    return absl::InternalError(absl::StrCat(
        "launcher protocol: response seq ", response.seq(), ", want ", seq));
  }
  if (response.code() != 0) return StatusFromResponse(response);
  if (reply_fds != nullptr) *reply_fds = std::move(packet->fds);
  return response;
}

absl::StatusOr<v1::LauncherResponse::SessionOpened> LauncherClient::OpenSession(
    absl::string_view token) {
  v1::LauncherRequest request;
  request.mutable_open_session()->set_token(std::string(token));
  absl::StatusOr<v1::LauncherResponse> response = Call(std::move(request), {}, nullptr);
  if (!response.ok()) return response.status();
  if (!response->has_session_opened()) return Unexpected(*response, "open_session");
  return std::move(*response->mutable_session_opened());
}

absl::StatusOr<v1::LauncherResponse::SessionOpened> LauncherClient::ResumeSession(
    absl::string_view session_id, absl::string_view resume_token) {
  v1::LauncherRequest request;
  request.mutable_resume_session()->set_session_id(std::string(session_id));
  request.mutable_resume_session()->set_resume_token(std::string(resume_token));
  absl::StatusOr<v1::LauncherResponse> response = Call(std::move(request), {}, nullptr);
  if (!response.ok()) return response.status();
  if (!response->has_session_opened()) return Unexpected(*response, "resume_session");
  return std::move(*response->mutable_session_opened());
}

absl::StatusOr<v1::LauncherResponse::MemoryRegistered> LauncherClient::RegisterMemory(
    int fd, absl::string_view name) {
  if (fd < 0) return absl::InvalidArgumentError("fd: must be an open fd");
  v1::LauncherRequest request;
  request.mutable_register_memory()->set_name(std::string(name));
  absl::StatusOr<v1::LauncherResponse> response =
      Call(std::move(request), {fd}, nullptr);
  if (!response.ok()) return response.status();
  if (!response->has_memory_registered()) {
    return Unexpected(*response, "register_memory");
  }
  return std::move(*response->mutable_memory_registered());
}

absl::StatusOr<UniqueFd> LauncherClient::CreateMemfd(uint64_t size,
                                                     absl::string_view name) {
  if (size == 0 || size > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("size: must be 1-", std::numeric_limits<off_t>::max(), ", got ", size));
  }
  const std::string n(name);
  UniqueFd fd(::memfd_create(n.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("memfd_create name=", n));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("ftruncate memfd name=", n, " size=", size));
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return ErrnoStatus(errno, absl::StrCat("F_ADD_SEALS F_SEAL_SHRINK memfd name=", n));
  }
  return fd;
}

absl::Status LauncherClient::Map(absl::string_view memory_id, uint64_t offset,
                                 uint64_t length, uint64_t iova, bool readable,
                                 bool writable) {
  v1::LauncherRequest request;
  v1::LauncherRequest::Map* map = request.mutable_map();
  map->set_memory_id(std::string(memory_id));
  map->set_offset(offset);
  map->set_length(length);
  map->set_iova(iova);
  map->set_readable(readable);
  map->set_writable(writable);
  absl::StatusOr<v1::LauncherResponse> response = Call(std::move(request), {}, nullptr);
  if (!response.ok()) return response.status();
  if (!response->has_mapped()) return Unexpected(*response, "map");
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> LauncherClient::Unmap(uint64_t iova, uint64_t length) {
  v1::LauncherRequest request;
  request.mutable_unmap()->set_iova(iova);
  request.mutable_unmap()->set_length(length);
  absl::StatusOr<v1::LauncherResponse> response = Call(std::move(request), {}, nullptr);
  if (!response.ok()) return response.status();
  if (!response->has_unmapped()) return Unexpected(*response, "unmap");
  return response->unmapped().bytes();
}

absl::StatusOr<v1::LauncherResponse::MappingList> LauncherClient::ListMappingsPage(
    uint32_t page_size, const std::string& page_token) {
  v1::LauncherRequest request;
  request.mutable_list_mappings()->set_page_size(page_size);
  request.mutable_list_mappings()->set_page_token(page_token);
  absl::StatusOr<v1::LauncherResponse> response = Call(std::move(request), {}, nullptr);
  if (!response.ok()) return response.status();
  if (!response->has_mapping_list()) return Unexpected(*response, "list_mappings");
  return std::move(*response->mutable_mapping_list());
}

absl::StatusOr<std::vector<v1::LauncherResponse::MappingEntry>>
LauncherClient::ListMappings(uint32_t page_size) {
  std::vector<v1::LauncherResponse::MappingEntry> out;
  std::string token;
  do {
    absl::StatusOr<v1::LauncherResponse::MappingList> page = ListMappingsPage(page_size, token);
    if (!page.ok()) return page.status();
    if (!page->next_page_token().empty() && page->next_page_token() == token) {
      // A token that does not move would page forever.
      return absl::InternalError(absl::StrCat(
          "launcher protocol: list_mappings answered the same next_page_token ", token));
    }
    for (auto& m : *page->mutable_mappings()) out.push_back(std::move(m));
    token = page->next_page_token();
  } while (!token.empty());
  return out;
}

absl::StatusOr<LauncherDevices> LauncherClient::GetDevices() {
  v1::LauncherRequest request;
  request.mutable_get_devices();
  std::vector<UniqueFd> fds;
  absl::StatusOr<v1::LauncherResponse> response = Call(std::move(request), {}, &fds);
  if (!response.ok()) return response.status();
  if (!response->has_devices()) return Unexpected(*response, "get_devices");
  const auto& addresses = response->devices().addresses();
  if (static_cast<size_t>(addresses.size()) != fds.size()) {
    return absl::InternalError(absl::StrCat(
        "launcher protocol: ", addresses.size(), " device addresses but ",
        fds.size(), " fds"));
  }
  LauncherDevices devices;
  devices.addresses.assign(addresses.begin(), addresses.end());
  devices.fds = std::move(fds);
  return devices;
}

}  // namespace launcher
}  // namespace iommu
