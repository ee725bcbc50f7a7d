// Microbenchmarks of the agent's pinned-page ledger (agent/ledger.h): the
// steady-state cost of one Unmap + one Map with N mappings already live,
// N in {1e3, 1e4, 1e5, 1e6}, for disjoint memory (one object; and many
// objects) and for heavily shared memory (the same pages mapped through
// eight "containers" with staggered boundaries, ~6 pins per page). See
// mapping_layout.h for the exact layouts. The mapping taken down and the one
// put up are random.
//
//   bazel run -c opt //bench:ledger_bench
//
// One iteration ("op") = one Unmap + one Map. BM_HarnessOnly is the same loop
// without the ledger calls: the benchmark's own share of each number.
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/ledger.h"
#include "bench/bench_util.h"
#include "bench/mapping_layout.h"
#include "benchmark/benchmark.h"

namespace iommu {
namespace bench {
namespace {

using agent::Ledger;
using agent::ObjectKey;

ObjectKey Key(uint32_t object) { return ObjectKey{0x2b, 1000 + uint64_t{object}}; }

// A ledger with the layout's objects registered to one tenant and
// `live` random slots mapped.
struct LedgerState {
  LedgerState(Sharing sharing, int64_t live)
      : rng(0x5eed0003),
        layout(sharing, static_cast<uint32_t>(live)),
        pool(layout.total_slots(), static_cast<uint32_t>(live), rng) {
    for (uint32_t o = 0; o < layout.objects(); ++o) {
      // One reference per set, as each container's session registers it.
      for (uint32_t s = 0; s < layout.sets(); ++s) {
        absl::StatusOr<std::string> owner = ledger.Register(Key(o), layout.object_size(), "tenant-a");
        BENCH_CHECK(owner.ok(), owner.status().ToString());
      }
    }
    for (uint32_t slot : pool.live()) {
      const Placement p = layout.Place(slot);
      absl::StatusOr<uint64_t> r = ledger.Map(Key(p.object), p.offset, p.length);
      BENCH_CHECK(r.ok(), r.status().ToString());
    }
  }

  FastRng rng;
  MappingLayout layout;
  SlotPool pool;
  Ledger ledger;
};

template <Sharing kSharing>
void BM_LedgerMapUnmap(benchmark::State& state) {
  static StateCache<LedgerState> cache;
  const int64_t n = state.range(0);
  LedgerState& s =
      cache.Get(n, [](int64_t n) { return std::make_unique<LedgerState>(kSharing, n); });
  for (auto _ : state) {
    const SlotPool::Choice c = s.pool.Pick(s.rng);
    const Placement down = s.layout.Place(c.live_slot);
    const Placement up = s.layout.Place(c.free_slot);
    absl::StatusOr<uint64_t> released = s.ledger.Unmap(Key(down.object), down.offset, down.length);
    absl::StatusOr<uint64_t> added = s.ledger.Map(Key(up.object), up.offset, up.length);
    BENCH_CHECK(released.ok() && added.ok(), "unmap/map");
    benchmark::DoNotOptimize(*released + *added);
    s.pool.Commit(c);
  }
  BENCH_CHECK(s.ledger.live_mapping_count() == static_cast<size_t>(n), "live count drifted");
  state.counters["pin_runs"] = static_cast<double>(s.ledger.pin_run_count());
  ReportCounters(state, n);
}
BENCHMARK_TEMPLATE(BM_LedgerMapUnmap, Sharing::kDisjoint)
    ->Name("BM_LedgerDisjoint")
    ->Apply(LiveCounts);
BENCHMARK_TEMPLATE(BM_LedgerMapUnmap, Sharing::kDisjointManyObjects)
    ->Name("BM_LedgerDisjointManyObjects")
    ->Apply(LiveCounts);
BENCHMARK_TEMPLATE(BM_LedgerMapUnmap, Sharing::kShared)
    ->Name("BM_LedgerShared")
    ->Apply(LiveCounts);

// The loop above without the ledger: random picks, placements, bookkeeping.
void BM_HarnessOnly(benchmark::State& state) {
  const int64_t n = state.range(0);
  FastRng rng(0x5eed0004);
  MappingLayout layout(Sharing::kDisjoint, static_cast<uint32_t>(n));
  SlotPool pool(layout.total_slots(), static_cast<uint32_t>(n), rng);
  for (auto _ : state) {
    const SlotPool::Choice c = pool.Pick(rng);
    const Placement down = layout.Place(c.live_slot);
    const Placement up = layout.Place(c.free_slot);
    benchmark::DoNotOptimize(down.offset + up.offset);
    pool.Commit(c);
  }
  ReportCounters(state, n);
}
BENCHMARK(BM_HarnessOnly)->Apply(LiveCounts);

// The admission check the agent makes before every map (changes nothing).
template <Sharing kSharing>
void BM_LedgerNewlyBilled(benchmark::State& state) {
  static StateCache<LedgerState> cache;
  const int64_t n = state.range(0);
  LedgerState& s =
      cache.Get(n, [](int64_t n) { return std::make_unique<LedgerState>(kSharing, n); });
  for (auto _ : state) {
    const SlotPool::Choice c = s.pool.Pick(s.rng);
    const Placement up = s.layout.Place(c.free_slot);
    absl::StatusOr<uint64_t> newly = s.ledger.NewlyBilledIfMapped(Key(up.object), up.offset, up.length);
    BENCH_CHECK(newly.ok(), newly.status().ToString());
    benchmark::DoNotOptimize(*newly);
  }
  ReportCounters(state, n);
}
BENCHMARK_TEMPLATE(BM_LedgerNewlyBilled, Sharing::kDisjoint)
    ->Name("BM_LedgerNewlyBilledDisjoint")
    ->Apply(LiveCounts);
BENCHMARK_TEMPLATE(BM_LedgerNewlyBilled, Sharing::kShared)
    ->Name("BM_LedgerNewlyBilledShared")
    ->Apply(LiveCounts);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
