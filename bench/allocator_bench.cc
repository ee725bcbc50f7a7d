// Microbenchmarks of the broker's IOVA window allocator
// (server/window_allocator.h): the steady-state cost of one release + one
// allocate with N windows already live in the container, N in {1e3, 1e4,
// 1e5, 1e6}. The window taken down and the place the new one goes are random,
// as they are for real tenants; appending at the end would measure only the
// best case of every tree.
//
//   bazel run -c opt //bench:allocator_bench
//   bench/micro.sh            # all benchmarks, JSON + CSV into bench/results/
//
// One iteration ("op") = one Release + one Allocate (or AllocateAt).
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "server/window_allocator.h"

namespace iommu {
namespace bench {
namespace {

constexpr uint64_t kIommuPage = 4096;
constexpr uint64_t kMaxWindowPages = 16;

// What type1 and iommufd report on a typical x86 host: everything up to 39
// bits except the MSI window.
WindowAllocator X86Allocator() {
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create(
      {{0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}}, kIommuPage);
  BENCH_CHECK(a.ok(), a.status().ToString());
  return *std::move(a);
}

uint64_t RandomWindowSize(FastRng& rng) { return (1 + rng.Below(kMaxWindowPages)) * kIommuPage; }

// N live windows of random sizes placed by best fit, with N holes of random
// sizes between them (2N were allocated, a random half released), so the
// free-extent indexes hold about N extents too.
struct BestFitState {
  explicit BestFitState(int64_t n) : rng(0x5eed0001), allocator(X86Allocator()) {
    std::vector<uint64_t> all(2 * n);
    for (uint64_t& b : all) {
      absl::StatusOr<uint64_t> base = allocator.Allocate(RandomWindowSize(rng), kIommuPage);
      BENCH_CHECK(base.ok(), base.status().ToString());
      b = *base;
    }
    for (size_t i = all.size() - 1; i > 0; --i) std::swap(all[i], all[rng.Below(i + 1)]);
    for (size_t i = 0; i < all.size(); ++i) {
      if (i < static_cast<size_t>(n)) {
        bases.push_back(all[i]);
      } else {
        absl::Status s = allocator.Release(all[i]);
        BENCH_CHECK(s.ok(), s.ToString());
      }
    }
  }

  FastRng rng;
  WindowAllocator allocator;
  std::vector<uint64_t> bases;  // The live windows.
};

void BM_AllocatorBestFit(benchmark::State& state) {
  static StateCache<BestFitState> cache;
  const int64_t n = state.range(0);
  BestFitState& s = cache.Get(n, [](int64_t n) { return std::make_unique<BestFitState>(n); });
  for (auto _ : state) {
    const uint64_t i = s.rng.Below(s.bases.size());
    absl::Status released = s.allocator.Release(s.bases[i]);
    absl::StatusOr<uint64_t> base = s.allocator.Allocate(RandomWindowSize(s.rng), kIommuPage);
    BENCH_CHECK(released.ok() && base.ok(), "release/allocate");
    s.bases[i] = *base;
  }
  BENCH_CHECK(s.allocator.window_count() == static_cast<size_t>(n), "window count drifted");
  state.counters["free_extents"] = static_cast<double>(s.allocator.FreeRanges().size());
  ReportCounters(state, n);
}
BENCHMARK(BM_AllocatorBestFit)->Apply(LiveCounts);

// Fixed-base windows (AllocateAt): 2N slots of kMaxWindowPages pages, N of
// them holding a window of random size at the slot's start. Each op releases
// a random live window and places one at a random free slot.
struct FixedState {
  static constexpr uint64_t kSlotBytes = kMaxWindowPages * kIommuPage;
  static constexpr uint64_t kFirstSlot = 0x100000000;  // above the MSI window

  explicit FixedState(int64_t n)
      : rng(0x5eed0002),
        allocator(X86Allocator()),
        pool(static_cast<uint32_t>(2 * n), static_cast<uint32_t>(n), rng) {
    for (uint32_t slot : pool.live()) {
      absl::Status s = allocator.AllocateAt(Base(slot), RandomWindowSize(rng));
      BENCH_CHECK(s.ok(), s.ToString());
    }
  }
  static uint64_t Base(uint32_t slot) { return kFirstSlot + slot * kSlotBytes; }

  FastRng rng;
  WindowAllocator allocator;
  SlotPool pool;
};

void BM_AllocatorFixedBase(benchmark::State& state) {
  static StateCache<FixedState> cache;
  const int64_t n = state.range(0);
  FixedState& s = cache.Get(n, [](int64_t n) { return std::make_unique<FixedState>(n); });
  for (auto _ : state) {
    const SlotPool::Choice c = s.pool.Pick(s.rng);
    absl::Status released = s.allocator.Release(FixedState::Base(c.live_slot));
    absl::Status placed =
        s.allocator.AllocateAt(FixedState::Base(c.free_slot), RandomWindowSize(s.rng));
    BENCH_CHECK(released.ok() && placed.ok(), "release/allocate_at");
    s.pool.Commit(c);
  }
  BENCH_CHECK(s.allocator.window_count() == static_cast<size_t>(n), "window count drifted");
  ReportCounters(state, n);
}
BENCHMARK(BM_AllocatorFixedBase)->Apply(LiveCounts);

// Copying the whole allocator, which is how server/broker.cc stages an
// AllocateWindow or ReleaseWindow so that a failed store commit can roll
// back. Not an allocator operation, but it is paid once per window RPC, so
// its growth with N belongs next to the allocator's own numbers.
void BM_AllocatorCopy(benchmark::State& state) {
  static StateCache<BestFitState> cache;
  const int64_t n = state.range(0);
  BestFitState& s = cache.Get(n, [](int64_t n) { return std::make_unique<BestFitState>(n); });
  for (auto _ : state) {
    WindowAllocator staged = s.allocator;
    benchmark::DoNotOptimize(staged);
  }
  ReportCounters(state, n);
}
BENCHMARK(BM_AllocatorCopy)->Apply(LiveCounts)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
