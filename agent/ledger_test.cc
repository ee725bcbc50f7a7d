#include "agent/ledger.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Code = absl::StatusCode;

constexpr uint64_t kPage = Ledger::kPageSize;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

constexpr ObjectKey kMemA{8, 100};
constexpr ObjectKey kMemB{8, 200};
constexpr ObjectKey kUnknown{9, 999};

// Everything a caller can observe about a ledger, for "nothing changed"
// checks: totals, owners, counts and, per page, whether it is pinned.
struct Snapshot {
  std::vector<std::string> tenants;
  std::map<std::string, std::pair<uint64_t, uint64_t>> usage;
  std::vector<std::optional<std::string>> owners;
  std::vector<std::vector<uint64_t>> page_newly_billed;
  size_t objects = 0;
  size_t mappings = 0;
  size_t runs = 0;

  bool operator==(const Snapshot& o) const {
    return tenants == o.tenants && usage == o.usage && owners == o.owners &&
           page_newly_billed == o.page_newly_billed && objects == o.objects &&
           mappings == o.mappings && runs == o.runs;
  }
};

Snapshot Take(const Ledger& ledger, const std::vector<ObjectKey>& keys,
              const std::vector<std::string>& names) {
  Snapshot s;
  s.tenants = ledger.tenants();
  for (const std::string& name : names) {
    s.usage[name] = {ledger.billed_bytes(name), ledger.mapped_bytes(name)};
  }
  for (ObjectKey key : keys) {
    s.owners.push_back(ledger.owner(key));
    std::vector<uint64_t> pages;
    for (uint64_t off = 0;; off += kPage) {
      absl::StatusOr<uint64_t> n = ledger.NewlyBilledIfMapped(key, off, kPage);
      if (!n.ok()) break;
      pages.push_back(*n);
    }
    s.page_newly_billed.push_back(std::move(pages));
  }
  s.objects = ledger.object_count();
  s.mappings = ledger.live_mapping_count();
  s.runs = ledger.pin_run_count();
  return s;
}

// ---------------------------------------------------------------------------
// Billing behaviour.

TEST(LedgerTest, RegisterMakesFirstTenantOwnerAndLaterOnesShare) {
  Ledger ledger;
  EXPECT_THAT(ledger.Register(kMemA, 4 * kPage, "alpha"),
              ::testing::Eq(absl::StatusOr<std::string>("alpha")));
  absl::StatusOr<std::string> second = ledger.Register(kMemA, 4 * kPage, "beta");
  ASSERT_OK(second);
  EXPECT_EQ(*second, "alpha");
  EXPECT_EQ(ledger.owner(kMemA), std::optional<std::string>("alpha"));
  EXPECT_EQ(ledger.owner(kUnknown), std::nullopt);
  EXPECT_EQ(ledger.object_count(), 1u);
  // Registering pins nothing, so nobody is billed yet.
  EXPECT_THAT(ledger.tenants(), IsEmpty());
  EXPECT_EQ(ledger.billed_bytes("alpha"), 0u);
}

TEST(LedgerTest, SameObjectMappedByTwoContainersIsBilledOnce) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 4 * kPage, "alpha"));
  ASSERT_OK(ledger.Register(kMemA, 4 * kPage, "alpha"));
  EXPECT_THAT(ledger.NewlyBilledIfMapped(kMemA, 0, 4 * kPage),
              ::testing::Eq(absl::StatusOr<uint64_t>(4 * kPage)));
  absl::StatusOr<uint64_t> first = ledger.Map(kMemA, 0, 4 * kPage);
  ASSERT_OK(first);
  EXPECT_EQ(*first, 4 * kPage);
  EXPECT_THAT(ledger.NewlyBilledIfMapped(kMemA, 0, 4 * kPage),
              ::testing::Eq(absl::StatusOr<uint64_t>(0)));
  absl::StatusOr<uint64_t> second = ledger.Map(kMemA, 0, 4 * kPage);
  ASSERT_OK(second);
  EXPECT_EQ(*second, 0u);
  EXPECT_EQ(ledger.billed_bytes("alpha"), 4 * kPage);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), 8 * kPage);
  EXPECT_EQ(ledger.live_mapping_count(), 2u);
  EXPECT_THAT(ledger.tenants(), ElementsAre("alpha"));
}

TEST(LedgerTest, OtherTenantMappingOwnersObjectIsBilledToOwner) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 2 * kPage, "alpha"));
  absl::StatusOr<std::string> owner = ledger.Register(kMemA, 2 * kPage, "beta");
  ASSERT_OK(owner);
  EXPECT_EQ(*owner, "alpha");
  ASSERT_OK(ledger.Map(kMemA, 0, 2 * kPage));  // alpha's container
  ASSERT_OK(ledger.Map(kMemA, 0, 2 * kPage));  // beta's container
  EXPECT_EQ(ledger.billed_bytes("alpha"), 2 * kPage);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), 4 * kPage);
  EXPECT_EQ(ledger.billed_bytes("beta"), 0u);
  EXPECT_EQ(ledger.mapped_bytes("beta"), 0u);
  EXPECT_THAT(ledger.tenants(), ElementsAre("alpha"));
}

TEST(LedgerTest, PartialOverlapsBillDistinctPages) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 8 * kPage, "alpha"));
  ASSERT_OK(ledger.Map(kMemA, 0, 3 * kPage));
  // [2,5): page 2 is pinned already, pages 3 and 4 are new.
  EXPECT_THAT(ledger.NewlyBilledIfMapped(kMemA, 2 * kPage, 3 * kPage),
              ::testing::Eq(absl::StatusOr<uint64_t>(2 * kPage)));
  absl::StatusOr<uint64_t> added = ledger.Map(kMemA, 2 * kPage, 3 * kPage);
  ASSERT_OK(added);
  EXPECT_EQ(*added, 2 * kPage);
  EXPECT_EQ(ledger.billed_bytes("alpha"), 5 * kPage);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), 6 * kPage);
  EXPECT_THAT(ledger.NewlyBilledIfMapped(kMemA, 0, 8 * kPage),
              ::testing::Eq(absl::StatusOr<uint64_t>(3 * kPage)));
}

TEST(LedgerTest, UnmapOfOneOfTwoMappingsKeepsPagesBilled) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 8 * kPage, "alpha"));
  ASSERT_OK(ledger.Map(kMemA, 0, 3 * kPage));
  ASSERT_OK(ledger.Map(kMemA, 2 * kPage, 3 * kPage));
  absl::StatusOr<uint64_t> released = ledger.Unmap(kMemA, 0, 3 * kPage);
  ASSERT_OK(released);
  // Pages 0 and 1 are free again; page 2 is still pinned by [2,5).
  EXPECT_EQ(*released, 2 * kPage);
  EXPECT_EQ(ledger.billed_bytes("alpha"), 3 * kPage);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), 3 * kPage);

  // The same range twice: unmapping one copy releases nothing.
  ASSERT_OK(ledger.Map(kMemA, 2 * kPage, 3 * kPage));
  released = ledger.Unmap(kMemA, 2 * kPage, 3 * kPage);
  ASSERT_OK(released);
  EXPECT_EQ(*released, 0u);
  EXPECT_EQ(ledger.billed_bytes("alpha"), 3 * kPage);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), 3 * kPage);
  EXPECT_EQ(ledger.live_mapping_count(), 1u);
}

TEST(LedgerTest, UnmapOfBothMappingsReleasesEverything) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 8 * kPage, "alpha"));
  ASSERT_OK(ledger.Map(kMemA, 0, 3 * kPage));
  ASSERT_OK(ledger.Map(kMemA, 2 * kPage, 3 * kPage));
  ASSERT_OK(ledger.Unmap(kMemA, 2 * kPage, 3 * kPage));
  absl::StatusOr<uint64_t> released = ledger.Unmap(kMemA, 0, 3 * kPage);
  ASSERT_OK(released);
  EXPECT_EQ(*released, 3 * kPage);
  EXPECT_EQ(ledger.billed_bytes("alpha"), 0u);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), 0u);
  EXPECT_THAT(ledger.tenants(), IsEmpty());
  EXPECT_EQ(ledger.live_mapping_count(), 0u);
  EXPECT_EQ(ledger.pin_run_count(), 0u);
  // Still registered: unmapping does not forget the object.
  EXPECT_EQ(ledger.object_count(), 1u);
}

TEST(LedgerTest, ObjectForgottenOnlyWhenUnregisteredAndUnmapped) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 2 * kPage, "alpha"));
  ASSERT_OK(ledger.Register(kMemA, 2 * kPage, "beta"));
  ASSERT_OK(ledger.Map(kMemA, 0, kPage));

  ASSERT_OK(ledger.Unregister(kMemA));
  ASSERT_OK(ledger.Unregister(kMemA));
  // No reference left, but the mapping still pins it and bills alpha.
  EXPECT_EQ(ledger.object_count(), 1u);
  EXPECT_EQ(ledger.owner(kMemA), std::optional<std::string>("alpha"));
  EXPECT_EQ(ledger.billed_bytes("alpha"), kPage);

  ASSERT_OK(ledger.Unmap(kMemA, 0, kPage));
  EXPECT_EQ(ledger.object_count(), 0u);
  EXPECT_EQ(ledger.owner(kMemA), std::nullopt);
  EXPECT_THAT(ledger.NewlyBilledIfMapped(kMemA, 0, kPage),
              StatusIs(Code::kNotFound, "key: object 8:100 is not registered"));

  // Forgotten means a new registration makes a new owner, of any size.
  absl::StatusOr<std::string> owner = ledger.Register(kMemA, 4 * kPage, "beta");
  ASSERT_OK(owner);
  EXPECT_EQ(*owner, "beta");
}

TEST(LedgerTest, UnmappedObjectForgottenAtLastUnregister) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 2 * kPage, "alpha"));
  ASSERT_OK(ledger.Register(kMemA, 2 * kPage, "alpha"));
  ASSERT_OK(ledger.Unregister(kMemA));
  EXPECT_EQ(ledger.object_count(), 1u);
  ASSERT_OK(ledger.Unregister(kMemA));
  EXPECT_EQ(ledger.object_count(), 0u);
}

TEST(LedgerTest, ObjectsOfDifferentOwnersAreBilledSeparately) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 4 * kPage, "alpha"));
  ASSERT_OK(ledger.Register(kMemB, 4 * kPage, "beta"));
  ASSERT_OK(ledger.Map(kMemA, 0, 4 * kPage));
  ASSERT_OK(ledger.Map(kMemB, kPage, 2 * kPage));
  EXPECT_EQ(ledger.billed_bytes("alpha"), 4 * kPage);
  EXPECT_EQ(ledger.billed_bytes("beta"), 2 * kPage);
  EXPECT_THAT(ledger.tenants(), ElementsAre("alpha", "beta"));
}

TEST(LedgerTest, NewlyBilledIfMappedChangesNothing) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 8 * kPage, "alpha"));
  ASSERT_OK(ledger.Map(kMemA, 2 * kPage, 2 * kPage));
  const Snapshot before = Take(ledger, {kMemA}, {"alpha"});
  EXPECT_THAT(ledger.NewlyBilledIfMapped(kMemA, 0, 8 * kPage),
              ::testing::Eq(absl::StatusOr<uint64_t>(6 * kPage)));
  EXPECT_TRUE(Take(ledger, {kMemA}, {"alpha"}) == before);
}

TEST(LedgerTest, TouchingRunsOfEqualCountAreMerged) {
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, 16 * kPage, "alpha"));
  ASSERT_OK(ledger.Map(kMemA, 0, 3 * kPage));
  ASSERT_OK(ledger.Map(kMemA, 3 * kPage, 3 * kPage));
  EXPECT_EQ(ledger.pin_run_count(), 1u);  // [0,6) x1
  ASSERT_OK(ledger.Map(kMemA, 2 * kPage, 2 * kPage));
  EXPECT_EQ(ledger.pin_run_count(), 3u);  // [0,2) x1, [2,4) x2, [4,6) x1
  ASSERT_OK(ledger.Unmap(kMemA, 2 * kPage, 2 * kPage));
  EXPECT_EQ(ledger.pin_run_count(), 1u);
  ASSERT_OK(ledger.Unmap(kMemA, 0, 3 * kPage));
  EXPECT_EQ(ledger.pin_run_count(), 1u);  // [3,6) x1
  ASSERT_OK(ledger.Unmap(kMemA, 3 * kPage, 3 * kPage));
  EXPECT_EQ(ledger.pin_run_count(), 0u);
}

TEST(LedgerTest, HugeObjectNeedsNoPerPageState) {
  // 1 PiB: a per-page array would not fit; runs cost O(1) here.
  constexpr uint64_t kHuge = uint64_t{1} << 50;
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, kHuge, "alpha"));
  ASSERT_OK(ledger.Map(kMemA, 0, kHuge));
  ASSERT_OK(ledger.Map(kMemA, kHuge / 2, kHuge / 4));
  EXPECT_EQ(ledger.billed_bytes("alpha"), kHuge);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), kHuge + kHuge / 4);
  EXPECT_EQ(ledger.pin_run_count(), 3u);
  absl::StatusOr<uint64_t> released = ledger.Unmap(kMemA, 0, kHuge);
  ASSERT_OK(released);
  EXPECT_EQ(*released, kHuge - kHuge / 4);
  EXPECT_EQ(ledger.billed_bytes("alpha"), kHuge / 4);
}

TEST(LedgerTest, ManyMappingsStayConsistent) {
  // 50k single-page mappings of every other page, then one mapping over all
  // of them, then everything unmapped: totals and runs follow exactly.
  constexpr uint64_t kPages = 100000;
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, kPages * kPage, "alpha"));
  for (uint64_t p = 0; p < kPages; p += 2) {
    ASSERT_OK(ledger.Map(kMemA, p * kPage, kPage));
  }
  EXPECT_EQ(ledger.billed_bytes("alpha"), kPages / 2 * kPage);
  EXPECT_EQ(ledger.pin_run_count(), kPages / 2);
  absl::StatusOr<uint64_t> added = ledger.Map(kMemA, 0, kPages * kPage);
  ASSERT_OK(added);
  EXPECT_EQ(*added, kPages / 2 * kPage);
  EXPECT_EQ(ledger.pin_run_count(), kPages);
  for (uint64_t p = 0; p < kPages; p += 2) {
    ASSERT_OK(ledger.Unmap(kMemA, p * kPage, kPage));
  }
  EXPECT_EQ(ledger.pin_run_count(), 1u);
  EXPECT_EQ(ledger.live_mapping_count(), 1u);
  EXPECT_EQ(ledger.billed_bytes("alpha"), kPages * kPage);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), kPages * kPage);
  ASSERT_OK(ledger.Unmap(kMemA, 0, kPages * kPage));
  EXPECT_THAT(ledger.tenants(), IsEmpty());
  EXPECT_EQ(ledger.pin_run_count(), 0u);
}

// ---------------------------------------------------------------------------
// Bad input: exact error, nothing changes.

class LedgerErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(ledger_.Register(kMemA, 8 * kPage, "alpha"));
    ASSERT_OK(ledger_.Register(kMemA, 8 * kPage, "beta"));
    ASSERT_OK(ledger_.Register(kMemB, 2 * kPage, "beta"));
    ASSERT_OK(ledger_.Map(kMemA, 0, 3 * kPage));
    ASSERT_OK(ledger_.Map(kMemA, 2 * kPage, 3 * kPage));
    ASSERT_OK(ledger_.Map(kMemB, 0, 2 * kPage));
    before_ = TakeSnapshot();
  }

  Snapshot TakeSnapshot() const {
    return Take(ledger_, {kMemA, kMemB, kUnknown}, {"alpha", "beta", "gamma"});
  }

  void ExpectUnchanged() { EXPECT_TRUE(TakeSnapshot() == before_); }

  Ledger ledger_;
  Snapshot before_;
};

TEST_F(LedgerErrorTest, RegisterRejectsZeroSize) {
  EXPECT_THAT(ledger_.Register(kMemB, 0, "beta"),
              StatusIs(Code::kInvalidArgument, "size: must be > 0"));
  EXPECT_THAT(ledger_.Register(kUnknown, 0, "gamma"),
              StatusIs(Code::kInvalidArgument, "size: must be > 0"));
  ExpectUnchanged();
}

TEST_F(LedgerErrorTest, RegisterRejectsSizeNotPageMultiple) {
  EXPECT_THAT(
      ledger_.Register(kUnknown, kPage + 1, "gamma"),
      StatusIs(Code::kInvalidArgument,
               "size: 0x1001 is not a multiple of the page size 0x1000"));
  EXPECT_THAT(ledger_.Register(kMemA, 100, "alpha"),
              StatusIs(Code::kInvalidArgument, "size: 0x64"));
  ExpectUnchanged();
}

TEST_F(LedgerErrorTest, RegisterRejectsEmptyTenant) {
  EXPECT_THAT(ledger_.Register(kUnknown, kPage, ""),
              StatusIs(Code::kInvalidArgument, "tenant: must not be empty"));
  ExpectUnchanged();
}

TEST_F(LedgerErrorTest, RegisterRejectsOtherSizeOfKnownObject) {
  EXPECT_THAT(ledger_.Register(kMemB, 3 * kPage, "beta"),
              StatusIs(Code::kFailedPrecondition,
                       "size: object 8:200 is 0x3000 bytes, registered "
                       "before as 0x2000"));
  ExpectUnchanged();
  // The reference count did not move either: two unregisters forget kMemB's
  // registration (one reference) and the second one fails.
  ASSERT_OK(ledger_.Unregister(kMemB));
  EXPECT_THAT(ledger_.Unregister(kMemB),
              StatusIs(Code::kFailedPrecondition,
                       "key: object 8:200 has no registered reference left"));
}

TEST_F(LedgerErrorTest, UnregisterOfUnknownObjectIsNotFound) {
  EXPECT_THAT(ledger_.Unregister(kUnknown),
              StatusIs(Code::kNotFound, "key: object 9:999 is not registered"));
  ExpectUnchanged();
}

TEST_F(LedgerErrorTest, UnregisterWithNoReferenceLeftFails) {
  ASSERT_OK(ledger_.Unregister(kMemB));
  before_ = TakeSnapshot();
  EXPECT_THAT(ledger_.Unregister(kMemB),
              StatusIs(Code::kFailedPrecondition,
                       "key: object 8:200 has no registered reference left "
                       "(1 live mapping(s) still pin it)"));
  ExpectUnchanged();
}

struct BadRange {
  ObjectKey key;
  uint64_t offset;
  uint64_t length;
  Code code;
  std::string message;
};

std::vector<BadRange> BadRanges() {
  return {
      {kMemA, 1, kPage, Code::kInvalidArgument,
       "offset: 0x1 is not a multiple of the page size 0x1000"},
      {kMemA, 0, 0, Code::kInvalidArgument, "length: must be > 0"},
      {kMemA, 0, kPage + 8, Code::kInvalidArgument,
       "length: 0x1008 is not a multiple of the page size 0x1000"},
      {kMemA, kMax - kPage + 1, 2 * kPage, Code::kInvalidArgument,
       "length: offset 0xfffffffffffff000 + length 0x2000 overflows 64 bits"},
      // Shape errors come before the lookup.
      {kUnknown, 1, kPage, Code::kInvalidArgument, "offset: 0x1"},
      {kUnknown, 0, kPage, Code::kNotFound,
       "key: object 9:999 is not registered"},
      {kMemA, 8 * kPage, kPage, Code::kInvalidArgument,
       "offset: 0x8000 is at or past the end of object 8:100 (0x8000 bytes)"},
      {kMemA, 6 * kPage, 3 * kPage, Code::kInvalidArgument,
       "length: range [0x6000, 0x9000) runs past the end of object 8:100 "
       "(0x8000 bytes)"},
      {kMemA, 0, kMax - kPage + 1, Code::kInvalidArgument,
       "length: range [0x0, 0xfffffffffffff000) runs past the end"},
  };
}

TEST_F(LedgerErrorTest, NewlyBilledIfMappedRejectsBadRanges) {
  for (const BadRange& bad : BadRanges()) {
    SCOPED_TRACE(bad.message);
    EXPECT_THAT(ledger_.NewlyBilledIfMapped(bad.key, bad.offset, bad.length),
                StatusIs(bad.code, bad.message));
  }
  ExpectUnchanged();
}

TEST_F(LedgerErrorTest, MapRejectsBadRangesAndChangesNothing) {
  for (const BadRange& bad : BadRanges()) {
    SCOPED_TRACE(bad.message);
    EXPECT_THAT(ledger_.Map(bad.key, bad.offset, bad.length),
                StatusIs(bad.code, bad.message));
    ExpectUnchanged();
  }
}

TEST_F(LedgerErrorTest, UnmapRejectsBadRangesAndChangesNothing) {
  for (const BadRange& bad : BadRanges()) {
    SCOPED_TRACE(bad.message);
    EXPECT_THAT(ledger_.Unmap(bad.key, bad.offset, bad.length),
                StatusIs(bad.code, bad.message));
    ExpectUnchanged();
  }
}

TEST_F(LedgerErrorTest, UnmapOfUnpinnedRangeFails) {
  EXPECT_THAT(ledger_.Unmap(kMemA, 5 * kPage, 2 * kPage),
              StatusIs(Code::kFailedPrecondition,
                       "unmap: object 8:100 has no live mapping at offset "
                       "0x5000 length 0x2000 (2 of 2 pages in the range are "
                       "not pinned); unmap takes whole mappings"));
  // Partly pinned: page 4 is pinned, page 5 is not.
  EXPECT_THAT(ledger_.Unmap(kMemA, 4 * kPage, 2 * kPage),
              StatusIs(Code::kFailedPrecondition, "(1 of 2 pages"));
  ExpectUnchanged();
}

TEST_F(LedgerErrorTest, UnmapOfPartOfMappingFails) {
  // Every page is pinned, but no mapping has exactly this range.
  EXPECT_THAT(ledger_.Unmap(kMemA, kPage, kPage),
              StatusIs(Code::kFailedPrecondition,
                       "(0 of 1 pages in the range are not pinned); unmap "
                       "takes whole mappings"));
  // Nor this union of two mappings.
  EXPECT_THAT(ledger_.Unmap(kMemA, 0, 5 * kPage),
              StatusIs(Code::kFailedPrecondition, "no live mapping"));
  ExpectUnchanged();
}

TEST_F(LedgerErrorTest, UnmapTwiceFailsTheSecondTime) {
  ASSERT_OK(ledger_.Unmap(kMemB, 0, 2 * kPage));
  before_ = TakeSnapshot();
  EXPECT_THAT(ledger_.Unmap(kMemB, 0, 2 * kPage),
              StatusIs(Code::kFailedPrecondition,
                       "unmap: object 8:200 has no live mapping"));
  ExpectUnchanged();
}

TEST(LedgerOverflowTest, MapOverflowingOwnersMappedTotalIsRefused) {
  constexpr uint64_t kHalf = uint64_t{1} << 63;
  Ledger ledger;
  ASSERT_OK(ledger.Register(kMemA, kHalf, "alpha"));
  ASSERT_OK(ledger.Map(kMemA, 0, kHalf));
  const Snapshot before = Take(ledger, {}, {"alpha"});
  EXPECT_THAT(ledger.Map(kMemA, 0, kHalf),
              StatusIs(Code::kOutOfRange,
                       "would overflow the mapped total of tenant alpha"));
  EXPECT_TRUE(Take(ledger, {}, {"alpha"}) == before);
  EXPECT_EQ(ledger.mapped_bytes("alpha"), kHalf);
}

// ---------------------------------------------------------------------------
// Randomized comparison against a brute-force model: a vector of pin counts
// per page and a list of live mappings per object, with totals recomputed
// from scratch after every step.

class ReferenceModel {
 public:
  struct Object {
    uint64_t size = 0;
    std::string owner;
    uint64_t references = 0;
    std::vector<int> pins;  // one per page
    std::vector<std::pair<uint64_t, uint64_t>> mappings;  // (offset, length)
  };

  absl::StatusOr<std::string> Register(ObjectKey key, uint64_t size,
                                       const std::string& tenant) {
    if (size == 0 || size % kPage != 0 || tenant.empty()) {
      return absl::InvalidArgumentError("");
    }
    auto it = objects_.find(key);
    if (it != objects_.end()) {
      if (it->second.size != size) return absl::FailedPreconditionError("");
      ++it->second.references;
      return it->second.owner;
    }
    Object& o = objects_[key];
    o.size = size;
    o.owner = tenant;
    o.references = 1;
    o.pins.assign(size / kPage, 0);
    return tenant;
  }

  absl::Status Unregister(ObjectKey key) {
    auto it = objects_.find(key);
    if (it == objects_.end()) return absl::NotFoundError("");
    if (it->second.references == 0) return absl::FailedPreconditionError("");
    --it->second.references;
    MaybeForget(key);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> NewlyBilledIfMapped(ObjectKey key, uint64_t offset,
                                               uint64_t length) const {
    absl::Status s = Check(key, offset, length);
    if (!s.ok()) return s;
    const Object& o = objects_.at(key);
    uint64_t n = 0;
    for (uint64_t p = offset / kPage; p < (offset + length) / kPage; ++p) {
      if (o.pins[p] == 0) n += kPage;
    }
    return n;
  }

  absl::StatusOr<uint64_t> Map(ObjectKey key, uint64_t offset,
                               uint64_t length) {
    absl::StatusOr<uint64_t> added = NewlyBilledIfMapped(key, offset, length);
    if (!added.ok()) return added;
    Object& o = objects_.at(key);
    for (uint64_t p = offset / kPage; p < (offset + length) / kPage; ++p) {
      ++o.pins[p];
    }
    o.mappings.push_back({offset, length});
    return added;
  }

  absl::StatusOr<uint64_t> Unmap(ObjectKey key, uint64_t offset,
                                 uint64_t length) {
    absl::Status s = Check(key, offset, length);
    if (!s.ok()) return s;
    Object& o = objects_.at(key);
    auto m = std::find(o.mappings.begin(), o.mappings.end(),
                       std::make_pair(offset, length));
    if (m == o.mappings.end()) return absl::FailedPreconditionError("");
    o.mappings.erase(m);
    uint64_t released = 0;
    for (uint64_t p = offset / kPage; p < (offset + length) / kPage; ++p) {
      if (--o.pins[p] == 0) released += kPage;
    }
    MaybeForget(key);
    return released;
  }

  uint64_t Billed(const std::string& tenant) const {
    uint64_t n = 0;
    for (const auto& [key, o] : objects_) {
      if (o.owner != tenant) continue;
      for (int pin : o.pins) n += pin > 0 ? kPage : 0;
    }
    return n;
  }

  uint64_t Mapped(const std::string& tenant) const {
    uint64_t n = 0;
    for (const auto& [key, o] : objects_) {
      if (o.owner != tenant) continue;
      for (const auto& m : o.mappings) n += m.second;
    }
    return n;
  }

  size_t LiveMappings() const {
    size_t n = 0;
    for (const auto& [key, o] : objects_) n += o.mappings.size();
    return n;
  }

  // Maximal runs of pages with equal non-zero pin count: what the ledger's
  // interval map must shrink to.
  size_t Runs() const {
    size_t n = 0;
    for (const auto& [key, o] : objects_) {
      for (size_t p = 0; p < o.pins.size(); ++p) {
        if (o.pins[p] != 0 && (p == 0 || o.pins[p - 1] != o.pins[p])) ++n;
      }
    }
    return n;
  }

  const std::map<ObjectKey, Object>& objects() const { return objects_; }

 private:
  // The ledger's documented order of checks.
  absl::Status Check(ObjectKey key, uint64_t offset, uint64_t length) const {
    if (offset % kPage != 0 || length == 0 || length % kPage != 0 ||
        length > kMax - offset) {
      return absl::InvalidArgumentError("");
    }
    auto it = objects_.find(key);
    if (it == objects_.end()) return absl::NotFoundError("");
    if (offset >= it->second.size || offset + length > it->second.size) {
      return absl::InvalidArgumentError("");
    }
    return absl::OkStatus();
  }

  void MaybeForget(ObjectKey key) {
    const Object& o = objects_.at(key);
    if (o.references == 0 && o.mappings.empty()) objects_.erase(key);
  }

  std::map<ObjectKey, Object> objects_;
};

template <typename T>
void ExpectSameResult(const absl::StatusOr<T>& got,
                      const absl::StatusOr<T>& want) {
  ASSERT_EQ(got.status().code(), want.status().code()) << got.status();
  if (want.ok()) {
    EXPECT_EQ(*got, *want);
  }
}

class LedgerRandomTest : public ::testing::TestWithParam<int> {
 protected:
  uint64_t Uniform(uint64_t lo, uint64_t hi) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }

  ObjectKey RandomKey() {
    return keys_[Uniform(0, keys_.size() - 1)];
  }

  // Mostly a valid range of the object (or of its usual size when it is not
  // known); sometimes one of the invalid shapes.
  std::pair<uint64_t, uint64_t> RandomRange(ObjectKey key) {
    auto it = model_.objects().find(key);
    const uint64_t pages =
        (it != model_.objects().end() ? it->second.size : sizes_.at(key)) /
        kPage;
    const uint64_t first = Uniform(0, pages - 1);
    const uint64_t count = Uniform(1, pages - first);
    uint64_t offset = first * kPage;
    uint64_t length = count * kPage;
    switch (Uniform(0, 19)) {
      case 0: offset += Uniform(1, kPage - 1); break;
      case 1: length = 0; break;
      case 2: length += Uniform(1, kPage - 1); break;
      case 3: offset = kMax - kPage + 1; length = 2 * kPage; break;
      case 4: offset = pages * kPage; length = kPage; break;
      case 5: length = (pages - first + 1) * kPage; break;
      default: break;
    }
    return {offset, length};
  }

  void Step() {
    const ObjectKey key = RandomKey();
    const uint64_t op = Uniform(0, 99);
    if (op < 20) {
      uint64_t size = sizes_.at(key);
      const uint64_t variant = Uniform(0, 19);
      if (variant == 0) size = 0;
      if (variant == 1) size += 512;
      if (variant == 2) size = Uniform(1, 64) * kPage;
      std::string tenant = tenants_[Uniform(0, tenants_.size() - 1)];
      if (variant == 3) tenant.clear();
      ExpectSameResult(ledger_.Register(key, size, tenant),
                       model_.Register(key, size, tenant));
    } else if (op < 32) {
      const absl::Status want = model_.Unregister(key);
      EXPECT_EQ(ledger_.Unregister(key).code(), want.code());
    } else if (op < 68) {
      const auto [offset, length] = RandomRange(key);
      ExpectSameResult(ledger_.Map(key, offset, length),
                       model_.Map(key, offset, length));
    } else if (op < 90) {
      // Unmap an existing mapping of some object, if there is one.
      std::vector<std::pair<ObjectKey, std::pair<uint64_t, uint64_t>>> live;
      for (const auto& [k, o] : model_.objects()) {
        for (const auto& m : o.mappings) live.push_back({k, m});
      }
      if (live.empty()) return;
      const auto& [k, m] = live[Uniform(0, live.size() - 1)];
      absl::StatusOr<uint64_t> want = model_.Unmap(k, m.first, m.second);
      ASSERT_OK(want);
      ExpectSameResult(ledger_.Unmap(k, m.first, m.second), want);
    } else {
      // Unmap of an arbitrary range: mostly not a live mapping.
      const auto [offset, length] = RandomRange(key);
      ExpectSameResult(ledger_.Unmap(key, offset, length),
                       model_.Unmap(key, offset, length));
    }
  }

  void CheckAgainstModel() {
    std::vector<std::string> want_tenants;
    for (const std::string& t : tenants_) {
      ASSERT_EQ(ledger_.billed_bytes(t), model_.Billed(t)) << t;
      ASSERT_EQ(ledger_.mapped_bytes(t), model_.Mapped(t)) << t;
      if (model_.Billed(t) != 0 || model_.Mapped(t) != 0) {
        want_tenants.push_back(t);
      }
    }
    std::sort(want_tenants.begin(), want_tenants.end());
    ASSERT_EQ(ledger_.tenants(), want_tenants);
    ASSERT_EQ(ledger_.object_count(), model_.objects().size());
    ASSERT_EQ(ledger_.live_mapping_count(), model_.LiveMappings());
    ASSERT_EQ(ledger_.pin_run_count(), model_.Runs());
    for (ObjectKey key : keys_) {
      auto it = model_.objects().find(key);
      ASSERT_EQ(ledger_.owner(key),
                it == model_.objects().end()
                    ? std::nullopt
                    : std::optional<std::string>(it->second.owner));
      if (it != model_.objects().end()) {
        ExpectSameResult(
            ledger_.NewlyBilledIfMapped(key, 0, it->second.size),
            model_.NewlyBilledIfMapped(key, 0, it->second.size));
      }
    }
    const ObjectKey key = RandomKey();
    const auto [offset, length] = RandomRange(key);
    ExpectSameResult(ledger_.NewlyBilledIfMapped(key, offset, length),
                     model_.NewlyBilledIfMapped(key, offset, length));
  }

  std::mt19937_64 rng_;
  std::vector<ObjectKey> keys_;
  std::map<ObjectKey, uint64_t> sizes_;
  std::vector<std::string> tenants_ = {"alpha", "beta", "gamma", "delta"};
  Ledger ledger_;
  ReferenceModel model_;
};

TEST_P(LedgerRandomTest, MatchesBruteForceModelAfterEveryStep) {
  rng_.seed(GetParam());
  for (uint64_t i = 0; i < 6; ++i) {
    const ObjectKey key{i % 2, 1000 + i};
    keys_.push_back(key);
    sizes_[key] = Uniform(1, 64) * kPage;
  }
  constexpr int kSteps = 5000;
  size_t max_live = 0;
  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(absl::StrCat("seed ", GetParam(), " step ", step));
    ASSERT_NO_FATAL_FAILURE(Step());
    ASSERT_NO_FATAL_FAILURE(CheckAgainstModel());
    if (::testing::Test::HasFailure()) return;
    max_live = std::max(max_live, ledger_.live_mapping_count());
  }
  // The walk must have stacked many overlapping mappings, not just hovered
  // around an empty ledger.
  EXPECT_GE(max_live, 20u);
}

INSTANTIATE_TEST_SUITE_P(Seeds, LedgerRandomTest, ::testing::Range(1, 6));

}  // namespace
}  // namespace agent
}  // namespace iommu
