// The ledger's share of a map: the whole agent map path (AgentCore::MapMemory
// + AgentCore::Unmap through the simulated backend, agent/agent_core.h,
// agent/sim_backend.h) next to exactly the ledger calls that path makes
// (owner, NewlyBilledIfMapped, billed_bytes, Map; Unmap), on the same layout
// of N live mappings (mapping_layout.h), N in {1e3, 1e4, 1e5, 1e6}.
//
//   bazel run -c opt //bench:map_path_bench
//
// One iteration ("op") = one unmap + one map of random mappings. The ledger's
// share = BM_LedgerAsInMapPath* / BM_AgentCoreMapPath* at the same N (the
// ledger alone runs in its own process state, so it sees a warmer cache than
// inside the agent: the share is, if anything, understated at large N).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "agent/agent_core.h"
#include "agent/backend.h"
#include "agent/ledger.h"
#include "agent/sim_backend.h"
#include "bench/bench_util.h"
#include "bench/mapping_layout.h"
#include "benchmark/benchmark.h"
#include "common/log.h"

namespace iommu {
namespace bench {
namespace {

using agent::AgentCore;
using agent::GuestMemoryRegion;
using agent::IovaRange;
using agent::Ledger;
using agent::ObjectKey;
using agent::SimBackend;
using agent::SimDeviceSpec;

constexpr char kTenant[] = "tenant-a";
constexpr uint64_t kIovaLast = (uint64_t{1} << 48) - 1;
// Per container; eight of them still sum below 2^64.
constexpr uint64_t kBudget = uint64_t{1} << 58;
constexpr uint64_t kGuestVaddr = 0x7f0000000000;

ObjectKey Key(uint32_t object) { return ObjectKey{0x2b, 1000 + uint64_t{object}}; }

// One AgentCore on a SimBackend with one container (and one launcher
// session) per set of the layout; every session registers every object of
// the layout, and `live` random slots are mapped at IOVA = offset in their
// set's container.
struct AgentState {
  AgentState(Sharing sharing, int64_t live)
      : rng(0x5eed0005),
        layout(sharing, static_cast<uint32_t>(live)),
        pool(layout.total_slots(), static_cast<uint32_t>(live), rng) {
    // The agent logs each container and memory registration at info level;
    // the benchmark's output is the numbers.
    SetMinLogLevel(LogLevel::kWarning);
    std::vector<SimDeviceSpec> devices;
    for (uint32_t c = 0; c < layout.sets(); ++c) {
      devices.push_back({absl::StrFormat("0000:00:%02x.0", c + 4), 0x1234, 0x11e8, c + 5, ""});
    }
    // Unlimited mappings: the point is 1e6 live ones, beyond type1's 65535.
    agent::Geometry geometry{{{0, kIovaLast}}, kPage, /*max_mappings=*/0};
    absl::StatusOr<std::unique_ptr<SimBackend>> b = SimBackend::Create(devices, geometry);
    BENCH_CHECK(b.ok(), b.status().ToString());
    backend = *std::move(b);
    core = std::make_unique<AgentCore>("node-1", backend.get());

    for (uint32_t c = 0; c < layout.sets(); ++c) {
      const std::string id = absl::StrFormat("c-%016x", c + 1);
      const std::string session = absl::StrFormat("session-%u", c);
      auto created = core->CreateContainer(id, kTenant, {devices[c].address}, kBudget);
      BENCH_CHECK(created.ok(), created.status().ToString());
      const std::vector<IovaRange> windows = {{0, kIovaLast}};
      auto revoked = core->SetWindows(id, windows);
      BENCH_CHECK(revoked.ok(), revoked.status().ToString());
      auto opened = core->OpenSession(session, id, kTenant, windows);
      BENCH_CHECK(opened.ok(), opened.status().ToString());
      std::vector<std::string> memory;
      for (uint32_t o = 0; o < layout.objects(); ++o) {
        GuestMemoryRegion region{Key(o), layout.object_size(), kGuestVaddr, nullptr};
        auto info = core->RegisterMemory(session, kTenant, region, "ram");
        BENCH_CHECK(info.ok(), info.status().ToString());
        memory.push_back(info->memory_id);
      }
      containers.push_back(id);
      sessions.push_back(session);
      memory_ids.push_back(std::move(memory));
    }
    for (uint32_t slot : pool.live()) Map(slot);
  }

  void Map(uint32_t slot) {
    const Placement p = layout.Place(slot);
    absl::Status s = core->MapMemory(sessions[p.set], containers[p.set],
                                     memory_ids[p.set][p.object], p.offset, p.length,
                                     /*iova=*/p.offset, true, true);
    BENCH_CHECK(s.ok(), s.ToString());
  }
  void Unmap(uint32_t slot) {
    const Placement p = layout.Place(slot);
    absl::StatusOr<uint64_t> bytes =
        core->Unmap(containers[p.set], /*iova=*/p.offset, p.length, sessions[p.set]);
    BENCH_CHECK(bytes.ok(), bytes.status().ToString());
  }

  FastRng rng;
  MappingLayout layout;
  SlotPool pool;
  std::unique_ptr<SimBackend> backend;
  std::unique_ptr<AgentCore> core;
  std::vector<std::string> containers;             // By set.
  std::vector<std::string> sessions;               // By set.
  std::vector<std::vector<std::string>> memory_ids;  // By set, then object.
};

template <Sharing kSharing>
void BM_AgentCoreMapPath(benchmark::State& state) {
  static StateCache<AgentState> cache;
  const int64_t n = state.range(0);
  AgentState& s = cache.Get(n, [](int64_t n) { return std::make_unique<AgentState>(kSharing, n); });
  for (auto _ : state) {
    const SlotPool::Choice c = s.pool.Pick(s.rng);
    s.Unmap(c.live_slot);
    s.Map(c.free_slot);
    s.pool.Commit(c);
  }
  ReportCounters(state, n);
}
BENCHMARK_TEMPLATE(BM_AgentCoreMapPath, Sharing::kDisjoint)
    ->Name("BM_AgentCoreMapPathDisjoint")
    ->Apply(LiveCounts);
BENCHMARK_TEMPLATE(BM_AgentCoreMapPath, Sharing::kShared)
    ->Name("BM_AgentCoreMapPathShared")
    ->Apply(LiveCounts);

// The same layout in a bare Ledger, driven with the calls MapMemory and
// Unmap make on it.
struct LedgerState {
  LedgerState(Sharing sharing, int64_t live)
      : rng(0x5eed0005),
        layout(sharing, static_cast<uint32_t>(live)),
        pool(layout.total_slots(), static_cast<uint32_t>(live), rng) {
    for (uint32_t s = 0; s < layout.sets(); ++s) {
      for (uint32_t o = 0; o < layout.objects(); ++o) {
        auto owner = ledger.Register(Key(o), layout.object_size(), kTenant);
        BENCH_CHECK(owner.ok(), owner.status().ToString());
      }
    }
    for (uint32_t slot : pool.live()) Map(slot);
  }

  // What AgentCore::MapMemory asks of the ledger, in its order.
  void Map(uint32_t slot) {
    const Placement p = layout.Place(slot);
    const ObjectKey key = Key(p.object);
    const std::string owner = ledger.owner(key).value_or(kTenant);
    absl::StatusOr<uint64_t> newly = ledger.NewlyBilledIfMapped(key, p.offset, p.length);
    BENCH_CHECK(newly.ok(), newly.status().ToString());
    benchmark::DoNotOptimize(ledger.billed_bytes(owner));
    absl::StatusOr<uint64_t> added = ledger.Map(key, p.offset, p.length);
    BENCH_CHECK(added.ok(), added.status().ToString());
  }
  void Unmap(uint32_t slot) {
    const Placement p = layout.Place(slot);
    absl::StatusOr<uint64_t> released = ledger.Unmap(Key(p.object), p.offset, p.length);
    BENCH_CHECK(released.ok(), released.status().ToString());
  }

  FastRng rng;
  MappingLayout layout;
  SlotPool pool;
  Ledger ledger;
};

template <Sharing kSharing>
void BM_LedgerAsInMapPath(benchmark::State& state) {
  static StateCache<LedgerState> cache;
  const int64_t n = state.range(0);
  LedgerState& s =
      cache.Get(n, [](int64_t n) { return std::make_unique<LedgerState>(kSharing, n); });
  for (auto _ : state) {
    const SlotPool::Choice c = s.pool.Pick(s.rng);
    s.Unmap(c.live_slot);
    s.Map(c.free_slot);
    s.pool.Commit(c);
  }
  ReportCounters(state, n);
}
BENCHMARK_TEMPLATE(BM_LedgerAsInMapPath, Sharing::kDisjoint)
    ->Name("BM_LedgerAsInMapPathDisjoint")
    ->Apply(LiveCounts);
BENCHMARK_TEMPLATE(BM_LedgerAsInMapPath, Sharing::kShared)
    ->Name("BM_LedgerAsInMapPathShared")
    ->Apply(LiveCounts);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
