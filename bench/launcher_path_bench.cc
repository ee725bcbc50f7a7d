// The agent's map path seen from a VM launcher: what the launcher socket
// costs on top of the agent's own work (issue 7). Everything runs in one
// process on the simulated backend:
//
//   BM_Socket   LauncherClient::Map + Unmap over the SOCK_SEQPACKET socket
//               to a LauncherServer + LauncherSessions on its own thread
//               (protobuf both ways, a thread handoff each way, token-opened
//               session, memory registered as a memfd fd)
//   BM_Core     AgentCore::MapMemory + AgentCore::Unmap called directly, with
//               the same session semantics (a session opened on the core,
//               memory registered as a mapped memfd): what LauncherSessions
//               calls for each request
//   BM_Backend  SimBackend::Map + Unmap called directly on a container the
//               core does not know: the floor
//   BM_SocketList2  two ListMappings requests over the socket (an empty
//               session): the transport's own cost for the two requests of
//               a map + unmap
//
// Each for one mapping of 4 KiB and of 2 MiB (arg `len_kib`), with N live
// 4 KiB mappings already in the same container (arg `live`: 0 and 1e4).
// One iteration ("op") = one map + one unmap of the same range. Times are
// WALL time (UseRealTime): the socket path spends most of its time in the
// server thread and the kernel, which a CPU-time clock of the benchmark
// thread would not see. bench/launcher_path.sh turns the JSON into a CSV
// with the ratios socket/core and socket/backend.
//
//   bazel run -c opt //bench:launcher_path_bench
//   bench/launcher_path.sh              # JSON + CSV into bench/results/
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/agent_core.h"
#include "agent/backend.h"
#include "agent/guest_memory.h"
#include "agent/launcher_server.h"
#include "agent/launcher_sessions.h"
#include "agent/sim_backend.h"
#include "common/unique_fd.h"
#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "common/grant_token.h"
#include "common/log.h"
#include "launcher/client.h"
#include "proto/launcher.pb.h"

namespace iommu {
namespace bench {
namespace {

using agent::AgentCore;
using agent::Backend;
using agent::ContainerHandle;
using agent::GuestMemoryRegion;
using agent::IovaRange;
using agent::LauncherServer;
using agent::LauncherServerOptions;
using agent::LauncherSessionOptions;
using agent::LauncherSessions;
using agent::SimBackend;
using agent::SimDeviceSpec;
using launcher::LauncherClient;

constexpr char kNode[] = "bench-node";
constexpr char kTenant[] = "tenant-a";
constexpr char kKey[] = "0123456789abcdef0123456789abcdef";
constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kPage4K = 4 * kKiB;
// The guest memory each path registers. The live mappings use its first
// pages (1e4 x 4 KiB = 39 MiB); the measured mapping is its last 2 MiB.
constexpr uint64_t kMemBytes = 64 * kMiB;
constexpr uint64_t kOpOffset = kMemBytes - 2 * kMiB;
// One window holds everything: live mappings from kLiveIova on, the
// measured one at kOpIova (2 MiB aligned, past the live ones).
constexpr uint64_t kWindowBase = 0;
constexpr uint64_t kWindowSize = uint64_t{1} << 32;
constexpr uint64_t kLiveIova = 0x10000000;
constexpr uint64_t kOpIova = 0x80000000;
constexpr uint64_t kBudget = uint64_t{1} << 40;

// The three paths, each on its own container (edu-like sim devices) of one
// AgentCore + SimBackend, each with `live` 4 KiB mappings in place.
class PathState {
 public:
  explicit PathState(int64_t live) {
    SetMinLogLevel(LogLevel::kWarning);
    char dir_template[] = "/tmp/launcher-path-bench.XXXXXX";
    BENCH_CHECK(mkdtemp(dir_template) != nullptr, "mkdtemp");
    dir_ = dir_template;

    std::vector<SimDeviceSpec> devices;
    for (uint32_t i = 0; i < 3; ++i) {
      devices.push_back({absl::StrFormat("0000:00:%02x.0", i + 4), 0x1234, 0x11e8, i + 5, ""});
    }
    // Type1's 65535-mapping limit does not matter at 1e4; keep the default
    // x86 geometry so the sim checks what it checks for a real container.
    absl::StatusOr<std::unique_ptr<SimBackend>> b = SimBackend::Create(devices);
    BENCH_CHECK(b.ok(), b.status().ToString());
    backend_ = *std::move(b);
    core_ = std::make_unique<AgentCore>(kNode, backend_.get());
    core_->SetGrantKey(kKey);
    const std::vector<IovaRange> windows = {{kWindowBase, kWindowBase + kWindowSize - 1}};
    for (const char* id : {kSocketContainer, kCoreContainer}) {
      const size_t i = id == kSocketContainer ? 0 : 1;
      auto created = core_->CreateContainer(id, kTenant, {devices[i].address}, kBudget);
      BENCH_CHECK(created.ok(), created.status().ToString());
      auto revoked = core_->SetWindows(id, windows);
      BENCH_CHECK(revoked.ok(), revoked.status().ToString());
    }

    // (a) The socket: server + sessions, a client with a token-opened
    // session and a registered memfd.
    sessions_ = std::make_unique<LauncherSessions>(core_.get(), LauncherSessionOptions{});
    LauncherServerOptions options;
    options.socket_path = dir_ + "/launcher.sock";
    auto server = LauncherServer::Start(options, sessions_.get());
    BENCH_CHECK(server.ok(), server.status().ToString());
    server_ = *std::move(server);
    auto client = LauncherClient::Connect(options.socket_path);
    BENCH_CHECK(client.ok(), client.status().ToString());
    client_ = *std::move(client);
    absl::StatusOr<std::string> token = SignGrant(Grant(kSocketContainer), kKey);
    BENCH_CHECK(token.ok(), token.status().ToString());
    auto opened = client_->OpenSession(*token);
    BENCH_CHECK(opened.ok(), opened.status().ToString());
    auto memfd = LauncherClient::CreateMemfd(kMemBytes, "socket-guest-ram");
    BENCH_CHECK(memfd.ok(), memfd.status().ToString());
    socket_memfd_ = *std::move(memfd);
    auto registered = client_->RegisterMemory(socket_memfd_.get(), "ram");
    BENCH_CHECK(registered.ok(), registered.status().ToString());
    socket_memory_ = registered->memory_id();

    // (b) The core directly: what LauncherSessions does for Open and
    // RegisterMemory, without the socket.
    auto core_opened = core_->OpenSession(kCoreSession, kCoreContainer, kTenant, windows);
    BENCH_CHECK(core_opened.ok(), core_opened.status().ToString());
    auto core_memfd = LauncherClient::CreateMemfd(kMemBytes, "core-guest-ram");
    BENCH_CHECK(core_memfd.ok(), core_memfd.status().ToString());
    absl::StatusOr<GuestMemoryRegion> region = agent::MapGuestMemory(*std::move(core_memfd));
    BENCH_CHECK(region.ok(), region.status().ToString());
    auto info = core_->RegisterMemory(kCoreSession, kTenant, *std::move(region), "ram");
    BENCH_CHECK(info.ok(), info.status().ToString());
    core_memory_ = info->memory_id;

    // (c) The backend directly: its own container and its own mapping of
    // guest memory (the sim records vaddrs, it does not pin them).
    auto handle = backend_->CreateContainer({devices[2].address});
    BENCH_CHECK(handle.ok(), handle.status().ToString());
    backend_container_ = *handle;
    void* p = mmap(nullptr, kMemBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    BENCH_CHECK(p != MAP_FAILED, "mmap");
    backend_vaddr_ = reinterpret_cast<uint64_t>(p);

    for (int64_t i = 0; i < live; ++i) {
      const uint64_t offset = static_cast<uint64_t>(i) * kPage4K;
      const uint64_t iova = kLiveIova + offset;
      absl::Status s = client_->Map(socket_memory_, offset, kPage4K, iova, true, true);
      BENCH_CHECK(s.ok(), s.ToString());
      s = core_->MapMemory(kCoreSession, kCoreContainer, core_memory_, offset, kPage4K, iova, true,
                           true);
      BENCH_CHECK(s.ok(), s.ToString());
      s = backend_->Map(backend_container_, iova, backend_vaddr_ + offset, kPage4K, true, true);
      BENCH_CHECK(s.ok(), s.ToString());
    }
  }

  ~PathState() {
    client_.reset();  // Ends the session: the agent unmaps its mappings.
    server_.reset();
    sessions_.reset();
    core_.reset();
    backend_.reset();
    munmap(reinterpret_cast<void*>(backend_vaddr_), kMemBytes);
    rmdir(dir_.c_str());
  }

  void SocketOp(uint64_t length) {
    absl::Status s = client_->Map(socket_memory_, kOpOffset, length, kOpIova, true, true);
    BENCH_CHECK(s.ok(), s.ToString());
    absl::StatusOr<uint64_t> unmapped = client_->Unmap(kOpIova, length);
    BENCH_CHECK(unmapped.ok() && *unmapped == length, unmapped.status().ToString());
  }
  // Two requests that touch neither the ledger nor the backend: the socket's
  // own cost for the two requests of a map + unmap.
  void SocketListOp() {
    for (int i = 0; i < 2; ++i) {
      auto listed = client_->ListMappings();
      BENCH_CHECK(listed.ok(), listed.status().ToString());
    }
  }
  void CoreOp(uint64_t length) {
    absl::Status s = core_->MapMemory(kCoreSession, kCoreContainer, core_memory_, kOpOffset,
                                      length, kOpIova, true, true);
    BENCH_CHECK(s.ok(), s.ToString());
    absl::StatusOr<uint64_t> unmapped = core_->Unmap(kCoreContainer, kOpIova, length, kCoreSession);
    BENCH_CHECK(unmapped.ok() && *unmapped == length, unmapped.status().ToString());
  }
  void BackendOp(uint64_t length) {
    absl::Status s =
        backend_->Map(backend_container_, kOpIova, backend_vaddr_ + kOpOffset, length, true, true);
    BENCH_CHECK(s.ok(), s.ToString());
    absl::StatusOr<uint64_t> unmapped = backend_->Unmap(backend_container_, kOpIova, length);
    BENCH_CHECK(unmapped.ok() && *unmapped == length, unmapped.status().ToString());
  }

 private:
  static constexpr char kSocketContainer[] = "c-00000000000000a1";
  static constexpr char kCoreContainer[] = "c-00000000000000b2";
  static constexpr char kCoreSession[] = "core-session";

  v1::LauncherGrant Grant(const std::string& container) const {
    v1::LauncherGrant g;
    g.set_token_id(NewGrantTokenId());
    g.set_node(kNode);
    g.set_agent_incarnation(core_->incarnation());
    g.set_container_id(container);
    g.set_tenant_id(kTenant);
    v1::GrantWindow* w = g.add_windows();
    w->set_window_id("w-0000000000000001");
    w->set_base(kWindowBase);
    w->set_size(kWindowSize);
    const int64_t now = absl::ToUnixMillis(absl::Now());
    g.set_issued_ms(now);
    g.set_expires_ms(now + 3'600'000);
    return g;
  }

  std::string dir_;
  std::unique_ptr<SimBackend> backend_;
  std::unique_ptr<AgentCore> core_;
  std::unique_ptr<LauncherSessions> sessions_;
  std::unique_ptr<LauncherServer> server_;
  std::unique_ptr<LauncherClient> client_;
  UniqueFd socket_memfd_;
  std::string socket_memory_;
  std::string core_memory_;
  ContainerHandle backend_container_{};
  uint64_t backend_vaddr_ = 0;
};

// One state per live count, built on first use and kept for every
// benchmark at that count (the socket path's 1e4 setup maps take a moment).
// Destroyed at exit, which stops the servers and removes their temp dirs.
PathState& StateFor(int64_t live) {
  static std::map<int64_t, std::unique_ptr<PathState>> states;
  std::unique_ptr<PathState>& s = states[live];
  if (!s) s = std::make_unique<PathState>(live);
  return *s;
}

enum class Path { kSocket, kSocketList2, kCore, kBackend };

template <Path kPath>
void BM_MapUnmap(benchmark::State& state) {
  const uint64_t length = static_cast<uint64_t>(state.range(0)) * kKiB;
  const int64_t live = state.range(1);
  PathState& s = StateFor(live);
  for (auto _ : state) {
    switch (kPath) {
      case Path::kSocket:
        s.SocketOp(length);
        break;
      case Path::kSocketList2:
        s.SocketListOp();
        break;
      case Path::kCore:
        s.CoreOp(length);
        break;
      case Path::kBackend:
        s.BackendOp(length);
        break;
    }
  }
  state.counters["len_kib"] = static_cast<double>(state.range(0));
  state.counters["live"] = static_cast<double>(live);
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"len_kib", "live"});
  for (int64_t live : {0, 10000}) {
    for (int64_t kib : {4, 2048}) b->Args({kib, live});
  }
  b->UseRealTime();
}

BENCHMARK_TEMPLATE(BM_MapUnmap, Path::kSocket)->Name("BM_Socket")->Apply(Args);
// ListMappings answers every live mapping: only meaningful at live 0.
BENCHMARK_TEMPLATE(BM_MapUnmap, Path::kSocketList2)
    ->Name("BM_SocketList2")
    ->ArgNames({"len_kib", "live"})
    ->Args({0, 0})
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_MapUnmap, Path::kCore)->Name("BM_Core")->Apply(Args);
BENCHMARK_TEMPLATE(BM_MapUnmap, Path::kBackend)->Name("BM_Backend")->Apply(Args);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
