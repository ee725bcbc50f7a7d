// Where the benchmarks' mappings of guest memory go, shared by
// ledger_bench.cc and map_path_bench.cc so that "the ledger alone" and "the
// whole agent map path" measure the same access pattern.
//
// A layout has a fixed number of slots; a slot is one mapping that may be
// live or not (bench_util.h's SlotPool keeps a given number live and moves
// them around at random). Three layouts:
//
//  * kDisjoint: one guest-memory object; slot k maps pages [k*L, (k+1)*L).
//    Half the slots are live, so live mappings sit at random positions and
//    touching ones merge into one pin run, as a VM's memory does.
//  * kDisjointManyObjects: as kDisjoint, but every 1024 slots are another
//    object (many VMs with moderately many mappings each).
//  * kShared: one object mapped through kSharedSets "containers" (sets); set
//    c's slot k maps pages [k*L + c, k*L + c + L). Three quarters of the
//    slots are live, so most pages are pinned by about six mappings, and the
//    sets' boundaries are offset from each other by one page, so the pin
//    count changes at about 3 page boundaries in 8 and every map or unmap
//    splits and merges several runs: the hard case for the run map.
//
// Thread-safety: plain values; const methods only.
#ifndef BENCH_MAPPING_LAYOUT_H_
#define BENCH_MAPPING_LAYOUT_H_

#include <cstdint>

namespace iommu {
namespace bench {

enum class Sharing { kDisjoint, kDisjointManyObjects, kShared };

constexpr uint64_t kPage = 4096;

struct Placement {
  uint32_t object;  // Index of the memory object (0-based).
  uint32_t set;     // Which "container" maps it (always 0 unless kShared).
  uint64_t offset;  // Bytes into the object.
  uint64_t length;  // Bytes.
};

class MappingLayout {
 public:
  static constexpr uint32_t kSharedSets = 8;
  static constexpr uint32_t kSlotsPerObject = 1024;  // kDisjointManyObjects
  static constexpr uint64_t kSlotPages = 4;          // L for disjoint layouts
  static constexpr uint64_t kSharedSlotPages = 8;    // L for kShared (= sets)

  // A layout for `live` live mappings.
  MappingLayout(Sharing sharing, uint32_t live) : sharing_(sharing) {
    switch (sharing) {
      case Sharing::kDisjoint:
      case Sharing::kDisjointManyObjects:
        total_ = 2 * live;
        break;
      case Sharing::kShared: {
        // live / 0.75, rounded up to whole slots in every set.
        const uint64_t want = (uint64_t{live} * 4 + 2) / 3;
        total_ = static_cast<uint32_t>((want + kSharedSets - 1) / kSharedSets * kSharedSets);
        break;
      }
    }
    if (sharing == Sharing::kDisjointManyObjects) {
      total_ = (total_ + kSlotsPerObject - 1) / kSlotsPerObject * kSlotsPerObject;
    }
  }

  Sharing sharing() const { return sharing_; }
  uint32_t total_slots() const { return total_; }
  uint32_t sets() const { return sharing_ == Sharing::kShared ? kSharedSets : 1; }
  uint32_t objects() const {
    return sharing_ == Sharing::kDisjointManyObjects ? total_ / kSlotsPerObject : 1;
  }
  // Bytes of each object.
  uint64_t object_size() const {
    switch (sharing_) {
      case Sharing::kDisjoint:
        return uint64_t{total_} * kSlotPages * kPage;
      case Sharing::kDisjointManyObjects:
        return uint64_t{kSlotsPerObject} * kSlotPages * kPage;
      case Sharing::kShared:
        return (uint64_t{total_} / kSharedSets + 1) * kSharedSlotPages * kPage;
    }
    return 0;
  }

  Placement Place(uint32_t slot) const {
    switch (sharing_) {
      case Sharing::kDisjoint:
        return {0, 0, uint64_t{slot} * kSlotPages * kPage, kSlotPages * kPage};
      case Sharing::kDisjointManyObjects:
        return {slot / kSlotsPerObject, 0,
                uint64_t{slot % kSlotsPerObject} * kSlotPages * kPage, kSlotPages * kPage};
      case Sharing::kShared: {
        const uint32_t set = slot % kSharedSets;
        const uint64_t k = slot / kSharedSets;
        return {0, set, (k * kSharedSlotPages + set) * kPage, kSharedSlotPages * kPage};
      }
    }
    return {};
  }

 private:
  Sharing sharing_;
  uint32_t total_ = 0;
};

}  // namespace bench
}  // namespace iommu

#endif  // BENCH_MAPPING_LAYOUT_H_
