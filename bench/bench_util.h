// Helpers shared by the microbenchmarks in bench/: a cheap deterministic
// random source, the "live slots / free slots" bookkeeping that lets a
// benchmark pick a random live object and a random free position in O(1),
// and a one-entry cache for the (expensive) state a benchmark sets up.
//
// Why these exist: at 1e6 live objects, anything the harness itself does per
// iteration (a std::mt19937_64 draw, a std::set lookup to find a free
// position) would show up in the numbers and hide what the benchmark is
// about. Everything here is a few arithmetic instructions plus at most one
// access into a 4-byte-per-slot array. bench/ledger_bench.cc measures this
// overhead on its own (BM_HarnessOnly) so it can be subtracted.
//
// Not thread-safe: each benchmark runs single-threaded.
#ifndef BENCH_BENCH_UTIL_H_
#define BENCH_BENCH_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"

namespace iommu {
namespace bench {

// The live-object counts every scaling benchmark runs at.
inline void LiveCounts(benchmark::internal::Benchmark* b) {
  for (int64_t n : {1000, 10000, 100000, 1000000}) b->Arg(n);
}

// xorshift64*: deterministic (seeded), one multiply per draw. Statistical
// quality is irrelevant here; speed and reproducibility are not.
class FastRng {
 public:
  explicit FastRng(uint64_t seed) : state_(seed | 1) {}

  uint64_t Next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545F4914F6CDD1DULL;
  }

  // Uniform in [0, bound), bound > 0, without a division (Lemire's
  // multiply-shift; the bias is below 2^-32 for the bounds used here).
  uint64_t Below(uint64_t bound) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * bound) >> 64);
  }

 private:
  uint64_t state_;
};

// A fixed set of slot ids 0..total-1, each either live or free. Pick() draws
// a uniformly random live slot and a uniformly random free slot; Commit()
// swaps their roles. O(1), no allocation, so a benchmark keeps exactly the
// same number of live objects in every iteration while visiting random
// positions.
class SlotPool {
 public:
  // Makes `live` random slots out of `total` live (live < total).
  SlotPool(uint32_t total, uint32_t live, FastRng& rng) {
    std::vector<uint32_t> all(total);
    for (uint32_t i = 0; i < total; ++i) all[i] = i;
    for (uint32_t i = total - 1; i > 0; --i) {  // Fisher-Yates
      std::swap(all[i], all[rng.Below(i + 1)]);
    }
    live_.assign(all.begin(), all.begin() + live);
    free_.assign(all.begin() + live, all.end());
  }

  const std::vector<uint32_t>& live() const { return live_; }

  struct Choice {
    uint32_t live_index;
    uint32_t free_index;
    uint32_t live_slot;  // To take down.
    uint32_t free_slot;  // To bring up.
  };

  Choice Pick(FastRng& rng) const {
    const uint32_t li = static_cast<uint32_t>(rng.Below(live_.size()));
    const uint32_t fi = static_cast<uint32_t>(rng.Below(free_.size()));
    return {li, fi, live_[li], free_[fi]};
  }

  // The live slot became free and the free slot live.
  void Commit(const Choice& c) {
    live_[c.live_index] = c.free_slot;
    free_[c.free_index] = c.live_slot;
  }

 private:
  std::vector<uint32_t> live_;
  std::vector<uint32_t> free_;
};

// Keeps the state one benchmark built for argument `n` so that the several
// calls google-benchmark makes per argument (iteration-count probing,
// repetitions) reuse it instead of rebuilding 1e6 objects each time. Holds a
// single entry: moving to another `n` frees the previous state first, so two
// 1e6 states never coexist. The state is steady-state by construction (every
// iteration leaves the same number of live objects), so reusing it across
// runs is sound.
template <typename State>
class StateCache {
 public:
  template <typename Make>
  State& Get(int64_t n, Make make) {
    if (state_ == nullptr || n_ != n) {
      state_.reset();
      state_ = make(n);
      n_ = n;
    }
    return *state_;
  }

 private:
  int64_t n_ = -1;
  std::unique_ptr<State> state_;
};

// Reports the standard counters of a scaling benchmark: items/s (one item =
// one iteration, e.g. one allocate + release) and the live count `n`.
inline void ReportCounters(benchmark::State& state, int64_t n) {
  state.SetItemsProcessed(state.iterations());
  state.counters["n"] = static_cast<double>(n);
}

// Aborts the benchmark run when `ok` is false: a benchmark whose operation
// fails measures an error path, not the operation.
#define BENCH_CHECK(ok, what)                                                 \
  do {                                                                        \
    if (!(ok)) {                                                              \
      fprintf(stderr, "%s:%d: benchmark setup/op failed: %s\n", __FILE__,     \
              __LINE__, std::string(what).c_str());                           \
      abort();                                                                \
    }                                                                         \
  } while (0)

}  // namespace bench
}  // namespace iommu

#endif  // BENCH_BENCH_UTIL_H_
