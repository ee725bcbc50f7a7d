// Ledger: the node agent's pinned-page ledger. It records the guest memory
// objects (launcher memfds) registered on this node, the tenant that owns
// each one, and how many live mappings pin each host page of each object.
// From that it keeps, per tenant:
//   * billed bytes: 4096 x the number of distinct pages of objects the tenant
//     owns that at least one live mapping pins, however many containers,
//     sessions or tenants map them (DESIGN invariant 3);
//   * mapped bytes: the sum of the lengths of the live mappings of objects the
//     tenant owns (mapped - billed is what sharing saved).
// Both are charged to the OWNER of the memory, even when another tenant maps
// it. NewlyBilledIfMapped lets the caller refuse a map that would pass a
// tenant's limit before anything changes (invariant 4).
//
// Pure logic: no I/O, no syscalls, no gRPC, so unit tests, fuzzers and
// benchmarks link it directly. Every failed call changes nothing.
//
// Cost: pin counts are kept per object as an interval map of maximal runs of
// pages with equal non-zero counts, so Map, Unmap and NewlyBilledIfMapped
// cost O(log n + k), n the runs of the object and k the runs the range
// touches, independent of the object's size in pages. Per-tenant totals are
// kept incrementally; nothing is recomputed by scanning.
//
// Thread-safety: NOT thread-safe. The agent core serialises every call under
// its own lock; concurrent const calls are safe only without a writer.
#ifndef AGENT_LEDGER_H_
#define AGENT_LEDGER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace iommu {
namespace agent {

// Identifies a memory object on the host the way the kernel does: the
// (st_dev, st_ino) of the memfd. Two fds with the same key are the same
// memory, which is what lets the ledger bill shared pages once.
struct ObjectKey {
  uint64_t dev = 0;
  uint64_t ino = 0;

  // "dev:ino" in decimal (as stat(1) and /proc/PID/maps show them), for
  // error messages.
  std::string DebugString() const;

  friend bool operator==(const ObjectKey& a, const ObjectKey& b) {
    return a.dev == b.dev && a.ino == b.ino;
  }
  friend bool operator!=(const ObjectKey& a, const ObjectKey& b) {
    return !(a == b);
  }
  friend bool operator<(const ObjectKey& a, const ObjectKey& b) {
    return std::tie(a.dev, a.ino) < std::tie(b.dev, b.ino);
  }
  template <typename H>
  friend H AbslHashValue(H h, const ObjectKey& k) {
    return H::combine(std::move(h), k.dev, k.ino);
  }
};

class Ledger final {
 public:
  // The host page size: the granule of pinning and of billing.
  static constexpr uint64_t kPageSize = 4096;

  Ledger() = default;
  // One ledger per node; a copy would be a second, diverging account.
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Registers one reference to object `key` of `size` bytes for `tenant`.
  // The first reference makes `tenant` the owner, who is billed for every
  // page of it that gets pinned; later references (any tenant, any session)
  // only count up the object's reference count. Returns the owner.
  //
  // The size is strict: a later registration with another size fails, even
  // though memfds can grow. Every mapping is bounded by the size, so letting
  // it change under live mappings would need a re-check (and a shrink could
  // leave pins past the end); a launcher that grows its memory registers the
  // new object after the old one is gone.
  //
  // Errors (nothing changes):
  //   INVALID_ARGUMENT "size: ..." when size is 0 or not a multiple of
  //     kPageSize; "tenant: ..." when tenant is empty;
  //   FAILED_PRECONDITION "size: object DEV:INO is 0x.. bytes, registered
  //     before as 0x.." when the object is known with another size.
  absl::StatusOr<std::string> Register(ObjectKey key, uint64_t size,
                                       const std::string& tenant);

  // Drops one reference to `key`. The object is forgotten (and a later
  // Register makes a new owner) once no reference and no live mapping is
  // left; until then live mappings keep it, and keep billing its owner.
  // Errors (nothing changes): NOT_FOUND "key: ..." for an unknown object;
  // FAILED_PRECONDITION "key: ..." when the object is known only through
  // live mappings (every reference already dropped).
  absl::Status Unregister(ObjectKey key);

  // How many bytes the owner's billed total would grow by if
  // [offset, offset + length) of `key` were pinned once more: kPageSize x the
  // pages in the range that no live mapping pins. Changes nothing.
  // Errors, checked in this order:
  //   INVALID_ARGUMENT "offset: ..." offset not a multiple of kPageSize;
  //   INVALID_ARGUMENT "length: ..." length 0, not a multiple of kPageSize,
  //     or offset + length overflows 64 bits;
  //   NOT_FOUND "key: ..." unknown object;
  //   INVALID_ARGUMENT "offset: ..." offset at or past the object's size;
  //   INVALID_ARGUMENT "length: ..." offset + length past the object's size.
  absl::StatusOr<uint64_t> NewlyBilledIfMapped(ObjectKey key, uint64_t offset,
                                               uint64_t length) const;

  // Records a live mapping of [offset, offset + length) of `key`: every page
  // in the range is pinned once more. Returns the bytes added to the owner's
  // billed total (what NewlyBilledIfMapped predicted); the owner's mapped
  // total grows by `length`. The agent checks with NewlyBilledIfMapped, maps
  // in the kernel, then calls this (so billing rises only with a real pin);
  // on unmap it calls Unmap after the kernel has unpinned (so billing never
  // shows less than the kernel pins).
  // Errors (nothing changes): those of NewlyBilledIfMapped, and OUT_OF_RANGE
  // "length: ..." if the owner's mapped total would overflow 64 bits.
  absl::StatusOr<uint64_t> Map(ObjectKey key, uint64_t offset, uint64_t length);

  // Removes one live mapping that an earlier Map recorded with exactly this
  // offset and length (whole mappings only, DESIGN invariant 2): every page
  // in the range is pinned once less. Returns the bytes released from the
  // owner's billed total; the owner's mapped total shrinks by `length`. The
  // object is forgotten if this was its last use (see Unregister).
  // Errors (nothing changes): those of NewlyBilledIfMapped, and
  // FAILED_PRECONDITION "unmap: ..." when no live mapping has this offset and
  // length (which covers any page of the range having pin count 0). That is a
  // bug in the caller, reported rather than crashed on.
  absl::StatusOr<uint64_t> Unmap(ObjectKey key, uint64_t offset,
                                 uint64_t length);

  // Totals of `tenant` as the owner of memory; 0 for an unknown tenant.
  uint64_t billed_bytes(const std::string& tenant) const;
  uint64_t mapped_bytes(const std::string& tenant) const;

  // Tenants with non-zero billed or mapped bytes, sorted.
  std::vector<std::string> tenants() const;

  // The owner of `key`, or nullopt if the object is not known.
  std::optional<std::string> owner(ObjectKey key) const;

  // Objects known (registered or still mapped).
  size_t object_count() const { return objects_.size(); }
  // Live mappings over every object.
  size_t live_mapping_count() const { return live_mapping_count_; }
  // Runs of equal pin count over every object: for tests and benchmarks
  // that check adjacent runs are merged. O(number of objects).
  size_t pin_run_count() const;

 private:
  // A run of pages [start, end_page) sharing the same non-zero pin count;
  // the start page is the key in PinRuns.
  struct PinRun {
    uint64_t end_page;
    uint64_t count;
  };
  // Pages absent from the map have pin count 0. Invariant: runs never
  // overlap, and two touching runs never have the same count (so the map is
  // as small as the pin counts allow). A B-tree rather than std::map: with
  // many runs per object the lookups stay in a few cache lines per level,
  // which keeps the cost at 1e6 live mappings close to the cost at 1e3.
  using PinRuns = absl::btree_map<uint64_t, PinRun>;

  // A range in pages: [first, end).
  struct PageRange {
    uint64_t first;
    uint64_t end;
  };

  struct Usage;
  struct Object {
    uint64_t size = 0;
    std::string owner;
    Usage* usage = nullptr;  // usage_[owner], which outlives the object.
    // Registrations not yet dropped by Unregister.
    uint64_t references = 0;
    // Live mappings, keyed by (offset, length) in bytes, with how many live
    // mappings have exactly that range. Lets Unmap insist on whole mappings.
    absl::flat_hash_map<std::pair<uint64_t, uint64_t>, uint64_t> live;
    uint64_t live_count = 0;
    PinRuns pins;
  };

  // Totals of one owner. The entry lives while the owner owns at least one
  // known object (so objects can point at it and Map/Unmap need no lookup
  // by name); tenants() skips entries whose totals are both zero.
  struct Usage {
    uint64_t billed = 0;
    uint64_t mapped = 0;
    size_t objects = 0;  // Known objects this tenant owns.
  };

  // Validates a range request in the documented order and returns it in
  // pages. `object` is what objects_ holds for `key`, or nullptr: callers
  // look it up once and use it afterwards.
  static absl::StatusOr<PageRange> CheckRange(ObjectKey key,
                                              const Object* object,
                                              uint64_t offset,
                                              uint64_t length);

  // Forgets the object at `it` when no reference and no mapping is left.
  void MaybeForget(absl::flat_hash_map<ObjectKey, Object>::iterator it);

  // Pages in `range` with pin count 0.
  static uint64_t CountUnpinned(const PinRuns& pins, PageRange range);
  // Adds `delta` (+1 or -1) to the pin count of every page in `range` and
  // returns the pages whose count went from 0 to 1 (+1) or 1 to 0 (-1).
  // With -1 every page of the range must be pinned. `at` must be
  // pins.lower_bound(range.first): Unmap walks the tree early (see there).
  //
  // One left-to-right pass over the runs touching the range that rewrites
  // them in place where it can and merges as it goes, so that the common
  // cases cost a single B-tree insert or erase (pinning a gap between two
  // runs of count 1: one erase; unpinning the middle of a run of count 1:
  // one insert). O(log n + k) for k runs touching the range.
  static uint64_t AddToRange(PinRuns& pins, PageRange range,
                             PinRuns::iterator at, int delta);

  absl::flat_hash_map<ObjectKey, Object> objects_;
  // Node-based so that Object::usage stays valid while other owners come
  // and go.
  absl::node_hash_map<std::string, Usage> usage_;
  size_t live_mapping_count_ = 0;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_LEDGER_H_
