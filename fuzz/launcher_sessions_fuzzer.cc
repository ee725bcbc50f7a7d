// Fuzz target: the agent's launcher-socket request handling. Each input is a
// sequence of launcher requests on a fresh AgentCore over SimBackend (three
// containers, two tenants, windows pushed, a grant key set), driven through
// LauncherSessions::OnConnect / OnRequest / OnDisconnect exactly as
// LauncherServer would after decoding a frame:
//  * raw bytes fed to v1::LauncherRequest::ParseFromString (the socket's
//    message parser) and, when they parse, to OnRequest;
//  * structured requests: OpenSession with a token correctly signed for a
//    fuzz-chosen grant (node, container, tenant, windows, expiry, uid, token
//    id), RegisterMemory with a real memfd (or a wrong fd, or none, or two),
//    Map / Unmap / ListMappings / GetDevices with fuzz-chosen ids and ranges,
//    fds attached to requests that take none, reconnects.
// Properties: no crash; every refusal has a code in 1..16, a non-empty
// message and no result and no fds; every success carries the result of its
// op; only GetDevices hands out fds; and once every connection is closed no
// session, pin or billing is left in the core and no fd has leaked.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/stubs/logging.h"
#include "absl/strings/str_cat.h"
#include "agent/agent_core.h"
#include "agent/launcher_sessions.h"
#include "agent/sim_backend.h"
#include "common/unique_fd.h"
#include "common/grant_token.h"
#include "common/log.h"
#include "fuzz/fuzz_input.h"
#include "proto/launcher.pb.h"

namespace iommu {
namespace fuzz {
namespace {

using agent::AgentCore;
using agent::IovaRange;
using agent::LauncherSessionOptions;
using agent::LauncherSessions;
using agent::SimBackend;

constexpr char kDevices[] =
    "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,"
    "0000:00:05.1=1234:11e9@6,0000:00:07.0=1af4:1041@8";
const char* const kContainers[] = {"c-0000000000000001", "c-0000000000000002",
                                   "c-0000000000000003", "c-00000000000000ee"};
const char* const kTenants[] = {"acme", "globex", "acme", "initech"};
constexpr char kKey[] = "0123456789abcdef0123456789abcdef";
constexpr uint64_t kPage = 4096;
constexpr uint64_t kW1Base = 0x100000, kW1Size = 0x100000;
constexpr uint64_t kW2Base = 0x40000000, kW2Size = 0x200000;
constexpr int64_t kNow = 1'700'000'000'000;
constexpr uid_t kUid = 1000;

int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

#define FUZZ_OK(expr)                                        \
  do {                                                       \
    const absl::Status _s = (expr).status();                 \
    FUZZ_CHECK(_s.ok(), "setup: " + _s.ToString());          \
  } while (0)

UniqueFd Memfd(uint64_t size) {
  UniqueFd fd(memfd_create("guest", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  FUZZ_CHECK(fd.valid(), "memfd_create");
  FUZZ_CHECK(ftruncate(fd.get(), static_cast<off_t>(size)) == 0, "ftruncate");
  return fd;
}

uint64_t PickIova(FuzzInput& in) {
  switch (in.U8() % 4) {
    case 0: return in.U64();
    case 1: return kW1Base + kPage * (in.U8() % 300);
    case 2: return kW2Base + kPage * (in.UInt(2) % 600);
    default: return kPage * in.UInt(3);
  }
}
uint64_t PickLength(FuzzInput& in) {
  switch (in.U8() % 3) {
    case 0: return in.U64();
    case 1: return kPage * (in.U8() % 80);
    default: return kPage << (in.U8() % 12);
  }
}

void CheckResponse(const v1::LauncherRequest& req, const v1::LauncherResponse& r,
                   const std::vector<int>& out_fds) {
  if (r.code() != 0) {
    FUZZ_CHECK(r.code() > 0 && r.code() <= 16, absl::StrCat("code ", r.code()));
    FUZZ_CHECK(!r.message().empty(), absl::StrCat("refusal without a message, code ", r.code()));
    FUZZ_CHECK(r.result_case() == v1::LauncherResponse::RESULT_NOT_SET,
               "a refusal carries a result: " + r.message());
    FUZZ_CHECK(out_fds.empty(), "a refusal hands out fds");
    return;
  }
  FUZZ_CHECK(req.op_case() == v1::LauncherRequest::kGetDevices || out_fds.empty(),
             "only GetDevices hands out fds");
  switch (req.op_case()) {
    case v1::LauncherRequest::kOpenSession:
      FUZZ_CHECK(r.has_session_opened(), "open_session result");
      break;
    case v1::LauncherRequest::kResumeSession:
      FUZZ_CHECK(r.has_session_opened(), "resume_session result");
      break;
    case v1::LauncherRequest::kRegisterMemory:
      FUZZ_CHECK(r.has_memory_registered(), "register_memory result");
      break;
    case v1::LauncherRequest::kMap:
      FUZZ_CHECK(r.has_mapped(), "map result");
      break;
    case v1::LauncherRequest::kUnmap:
      FUZZ_CHECK(r.has_unmapped(), "unmap result");
      break;
    case v1::LauncherRequest::kListMappings:
      FUZZ_CHECK(r.has_mapping_list(), "list result");
      break;
    case v1::LauncherRequest::kGetDevices:
      FUZZ_CHECK(r.has_devices(), "devices result");
      FUZZ_CHECK(out_fds.size() == static_cast<size_t>(r.devices().addresses_size()),
                 "one fd per device");
      break;
    case v1::LauncherRequest::OP_NOT_SET:
      FUZZ_CHECK(false, "a request without an op succeeded");
  }
}

}  // namespace
}  // namespace fuzz
}  // namespace iommu

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace iommu;        // NOLINT: a fuzz target, not library code.
  using namespace iommu::fuzz;  // NOLINT
  google::protobuf::SetLogHandler(nullptr);
  SetMinLogLevel(LogLevel::kError);  // refusals are the point; keep the fuzzer quiet
  FuzzInput in(data, size);
  const int fds_at_start = CountOpenFds();
  {
    absl::StatusOr<std::vector<agent::SimDeviceSpec>> specs = agent::ParseSimDevices(kDevices);
    FUZZ_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> backend = SimBackend::Create(*std::move(specs));
    FUZZ_OK(backend);
    AgentCore core("n1", backend->get());
    FUZZ_OK(core.CreateContainer(kContainers[0], "acme", {"0000:00:04.0"}, 64 << 20));
    FUZZ_OK(core.CreateContainer(kContainers[1], "globex", {"0000:00:07.0"}, 4 * kPage));
    FUZZ_OK(core.CreateContainer(kContainers[2], "acme", {"0000:00:05.1", "0000:00:05.0"}, 0));
    const std::vector<IovaRange> windows = {{kW1Base, kW1Base + kW1Size - 1},
                                            {kW2Base, kW2Base + kW2Size - 1}};
    for (int c = 0; c < 3; ++c) FUZZ_OK(core.SetWindows(kContainers[c], windows));
    core.SetGrantKey(kKey);

    LauncherSessionOptions options;
    options.now_ms = [] { return kNow; };
    options.max_memory_objects = 4;
    options.max_memory_bytes = 64 * kPage;
    LauncherSessions sessions(&core, options);

    uint64_t conn = 1;
    std::vector<uint64_t> open_conns;
    auto connect = [&](uid_t uid) {
      PeerCred peer;
      peer.pid = 4242;
      peer.uid = uid;
      peer.gid = uid;
      if (sessions.OnConnect(conn, peer).ok()) open_conns.push_back(conn);
    };
    connect(kUid);
    std::vector<std::string> memory_ids;

    int ops = 0;
    while (!in.empty() && ops++ < 64) {
      const uint8_t op = in.U8();
      v1::LauncherRequest req;
      req.set_seq(ops);
      std::vector<UniqueFd> fds;
      switch (op % 8) {
        case 0: {  // Raw bytes through the wire parser.
          if (!req.ParseFromString(in.String16())) continue;
          if (req.op_case() == v1::LauncherRequest::kRegisterMemory) fds.push_back(Memfd(kPage));
          break;
        }
        case 1: {  // OpenSession with a properly signed, fuzz-chosen grant.
          v1::LauncherGrant g;
          const uint8_t flags = in.U8();
          g.set_token_id((flags & 1) ? std::string("fixed-token-id") : NewGrantTokenId());
          g.set_node((flags & 2) ? in.ShortString() : std::string("n1"));
          // Mostly this run's incarnation, sometimes another run's.
          g.set_agent_incarnation((flags & 128) ? in.ShortString() : core.incarnation());
          const uint8_t c = in.U8() % 4;
          g.set_container_id((flags & 4) ? in.ShortString() : std::string(kContainers[c]));
          g.set_tenant_id((flags & 8) ? std::string(kTenants[in.U8() % 4]) : std::string(kTenants[c]));
          for (int n = in.U8() % 4; n > 0; --n) {
            auto* w = g.add_windows();
            w->set_window_id("w-0000000000000001");
            switch (in.U8() % 3) {
              case 0: w->set_base(kW1Base), w->set_size(kW1Size); break;
              case 1: w->set_base(kW2Base), w->set_size(kW2Size); break;
              default: w->set_base(in.U64()), w->set_size(in.U64()); break;
            }
          }
          g.set_issued_ms(kNow);
          g.set_expires_ms((flags & 16) ? kNow - static_cast<int64_t>(in.UInt(2)) : kNow + 60'000);
          if (flags & 32) g.set_launcher_uid((flags & 64) ? kUid : static_cast<uint32_t>(in.UInt(4)));
          // An oversize grant cannot be signed; the fuzzer then sends it empty.
          absl::StatusOr<std::string> token = SignGrant(g, kKey);
          req.mutable_open_session()->set_token(token.ok() ? *token : std::string());
          break;
        }
        case 2: {  // RegisterMemory with 0, 1 (memfd or not) or 2 fds.
          req.mutable_register_memory()->set_name(in.ShortString());
          const uint8_t how = in.U8();
          if (how % 5 == 1) {
            fds.push_back(UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC)));
          } else if (how % 5 == 2) {
            fds.push_back(Memfd(kPage * (in.U8() % 4)));
            fds.push_back(Memfd(kPage));
          } else if (how % 5 != 3) {
            fds.push_back(Memfd(kPage * (in.U8() % 80)));
          }
          break;
        }
        case 3: {  // Map
          auto* m = req.mutable_map();
          if (!memory_ids.empty() && in.Bool()) {
            m->set_memory_id(memory_ids[in.U8() % memory_ids.size()]);
          } else {
            m->set_memory_id(in.ShortString());
          }
          m->set_offset(in.Bool() ? in.U64() : kPage * (in.U8() % 80));
          m->set_length(PickLength(in));
          m->set_iova(PickIova(in));
          const uint8_t rw = in.U8();
          m->set_readable(rw & 1);
          m->set_writable(rw & 2);
          break;
        }
        case 4:  // Unmap
          req.mutable_unmap()->set_iova(PickIova(in));
          req.mutable_unmap()->set_length(PickLength(in));
          break;
        case 5:
          req.mutable_list_mappings();
          break;
        case 6:
          req.mutable_get_devices();
          break;
        default: {  // Close this connection and open another (maybe another uid).
          const uint8_t what = in.U8();
          if (!open_conns.empty() && (what & 1)) {
            sessions.OnDisconnect(open_conns.back());
            open_conns.pop_back();
          }
          ++conn;
          connect((what & 2) ? static_cast<uid_t>(in.UInt(4)) : kUid);
          continue;
        }
      }
      // Sometimes an fd rides along with a request that takes none.
      if (in.U8() % 16 == 0) fds.push_back(Memfd(kPage));
      v1::LauncherResponse response;
      std::vector<int> out_fds;
      sessions.OnRequest(conn, req, std::move(fds), &response, &out_fds);
      CheckResponse(req, response, out_fds);
      if (response.code() == 0 && response.has_memory_registered()) {
        memory_ids.push_back(response.memory_registered().memory_id());
      }
    }
    for (uint64_t c : open_conns) sessions.OnDisconnect(c);
    FUZZ_CHECK(sessions.session_count() == 0, "sessions left after every connection closed");
    FUZZ_CHECK(core.Usage().empty(), "pins or billing left after every connection closed");
  }
  FUZZ_CHECK(CountOpenFds() == fds_at_start, "fds leaked");
  return 0;
}
