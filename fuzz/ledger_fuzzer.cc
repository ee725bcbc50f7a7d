// Fuzz target: op sequences on agent/ledger.h's Ledger, checked against a
// small reference model kept inside the target. The model keeps, per object,
// its size, owner, reference count and the list of live mappings; a page's
// pin count is the number of live mappings covering it, so "pinned pages" of
// a range is the measure of (union of live mappings) within it. That is the
// per-page definition evaluated on intervals, so huge objects (up to 2^64 - 4
// KiB) cost nothing. After every op the ledger must agree with the model on:
// the op's result or error (code and leading field, in the documented order),
// per-tenant billed and mapped bytes, tenants(), owner(), object_count() and
// live_mapping_count(); and a failed op must change none of them.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/ledger.h"
#include "fuzz/fuzz_input.h"

namespace iommu {
namespace fuzz {
namespace {

using agent::Ledger;
using agent::ObjectKey;
using absl::StatusCode;
using u128 = absl::uint128;

constexpr uint64_t kPage = Ledger::kPageSize;
const char* const kTenants[] = {"acme", "globex", "initech", ""};

struct ModelObject {
  uint64_t size = 0;
  std::string owner;
  uint64_t references = 0;
  std::multiset<std::pair<uint64_t, uint64_t>> live;  // (offset, length)
};

// Bytes of [lo, hi) covered by at least one of `live`.
u128 Covered(const std::multiset<std::pair<uint64_t, uint64_t>>& live, u128 lo, u128 hi) {
  std::vector<std::pair<u128, u128>> iv;
  for (const auto& [off, len] : live) {
    const u128 s = std::max<u128>(off, lo), e = std::min<u128>(u128(off) + len, hi);
    if (s < e) iv.push_back({s, e});
  }
  std::sort(iv.begin(), iv.end());
  u128 total = 0, cur_s = 0, cur_e = 0;
  bool have = false;
  for (const auto& [s, e] : iv) {
    if (have && s <= cur_e) {
      cur_e = std::max(cur_e, e);
    } else {
      if (have) total += cur_e - cur_s;
      cur_s = s, cur_e = e, have = true;
    }
  }
  if (have) total += cur_e - cur_s;
  return total;
}

struct Model {
  std::map<ObjectKey, ModelObject> objects;

  u128 Billed(const std::string& tenant) const {
    u128 b = 0;
    for (const auto& [k, o] : objects) {
      if (o.owner == tenant) b += Covered(o.live, 0, u128(o.size));
    }
    return b;
  }
  u128 Mapped(const std::string& tenant) const {
    u128 m = 0;
    for (const auto& [k, o] : objects) {
      if (o.owner != tenant) continue;
      for (const auto& [off, len] : o.live) m += len;
    }
    return m;
  }
  size_t LiveCount() const {
    size_t n = 0;
    for (const auto& [k, o] : objects) n += o.live.size();
    return n;
  }
  void MaybeForget(const ObjectKey& key) {
    auto it = objects.find(key);
    if (it != objects.end() && it->second.references == 0 && it->second.live.empty()) {
      objects.erase(it);
    }
  }
};

// The expected outcome of a checked range, in the documented order.
struct Expect {
  StatusCode code = StatusCode::kOk;
  const char* field = "";
};
Expect CheckRange(const Model& m, ObjectKey key, uint64_t offset, uint64_t length) {
  if (offset % kPage != 0) return {StatusCode::kInvalidArgument, "offset: "};
  if (length == 0 || length % kPage != 0 || length > UINT64_MAX - offset) {
    return {StatusCode::kInvalidArgument, "length: "};
  }
  auto it = m.objects.find(key);
  if (it == m.objects.end()) return {StatusCode::kNotFound, "key: "};
  if (offset >= it->second.size) return {StatusCode::kInvalidArgument, "offset: "};
  if (offset + length > it->second.size) return {StatusCode::kInvalidArgument, "length: "};
  return {};
}

void CheckStatus(const absl::Status& s, const Expect& want, const std::string& op) {
  FUZZ_CHECK(s.code() == want.code, absl::StrCat(op, " = ", s.ToString(), ", model expects ",
                                                 absl::StatusCodeToString(want.code), " ",
                                                 want.field));
  if (!s.ok()) {
    FUZZ_CHECK(absl::StartsWith(s.message(), want.field), absl::StrCat(op, ": ", s.ToString()));
  }
}

void CheckAgrees(const Ledger& l, const Model& m, const std::string& op) {
  FUZZ_CHECK(l.object_count() == m.objects.size(),
             absl::StrCat(op, ": object_count ", l.object_count(), " model ", m.objects.size()));
  FUZZ_CHECK(l.live_mapping_count() == m.LiveCount(), op + ": live_mapping_count");
  std::vector<std::string> want_tenants;
  for (const char* t : kTenants) {
    const u128 b = m.Billed(t), mp = m.Mapped(t);
    FUZZ_CHECK(u128(l.billed_bytes(t)) == b,
               absl::StrCat(op, ": billed_bytes(", t, ") = ", l.billed_bytes(t), ", model ",
                            static_cast<uint64_t>(b)));
    FUZZ_CHECK(u128(l.mapped_bytes(t)) == mp,
               absl::StrCat(op, ": mapped_bytes(", t, ") = ", l.mapped_bytes(t)));
    if (b != 0 || mp != 0) want_tenants.push_back(t);
  }
  std::sort(want_tenants.begin(), want_tenants.end());
  FUZZ_CHECK(l.tenants() == want_tenants, op + ": tenants()");
  for (uint64_t dev = 0; dev < 2; ++dev) {
    for (uint64_t ino = 0; ino < 3; ++ino) {
      const ObjectKey k{dev, ino};
      auto it = m.objects.find(k);
      const std::optional<std::string> owner = l.owner(k);
      if (it == m.objects.end()) {
        FUZZ_CHECK(!owner.has_value(), op + ": owner of a forgotten object");
      } else {
        FUZZ_CHECK(owner.has_value() && *owner == it->second.owner, op + ": owner");
      }
    }
  }
}

uint64_t PickSize(FuzzInput& in) {
  switch (in.U8() % 4) {
    case 0: return in.U64();
    case 1: return kPage * (1 + in.U8() % 32);
    case 2: return UINT64_MAX - kPage * in.U8() + 1;  // near the top: 2^64 - k pages
    default: return kPage * in.UInt(4);
  }
}

uint64_t PickOffset(FuzzInput& in, const Model& m, ObjectKey key) {
  auto it = m.objects.find(key);
  const uint64_t size = it == m.objects.end() ? 0 : it->second.size;
  switch (in.U8() % 5) {
    case 0: return in.U64();
    case 1: return kPage * (in.U8() % 40);
    case 2: return size - kPage * (in.U8() % 4);
    case 3:
      if (it != m.objects.end() && !it->second.live.empty()) {
        auto l = it->second.live.begin();
        std::advance(l, in.U8() % it->second.live.size());
        return l->first;
      }
      return 0;
    default: return size / 2 / kPage * kPage;
  }
}

uint64_t PickLength(FuzzInput& in, const Model& m, ObjectKey key, uint64_t offset) {
  auto it = m.objects.find(key);
  const uint64_t size = it == m.objects.end() ? 0 : it->second.size;
  switch (in.U8() % 5) {
    case 0: return in.U64();
    case 1: return kPage * (in.U8() % 20);
    case 2: return size - offset;  // to the end
    case 3:
      if (it != m.objects.end() && !it->second.live.empty()) {
        auto l = it->second.live.begin();
        std::advance(l, in.U8() % it->second.live.size());
        return l->second;
      }
      return kPage;
    default: return size - offset + kPage * (in.U8() % 3);
  }
}

}  // namespace
}  // namespace fuzz
}  // namespace iommu

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace iommu;        // NOLINT: a fuzz target, not library code.
  using namespace iommu::fuzz;  // NOLINT
  FuzzInput in(data, size);
  Ledger ledger;
  Model model;
  int ops = 0;
  while (!in.empty() && ops++ < 256) {
    const uint8_t op = in.U8();
    const uint64_t dev = in.U8() % 2, ino = in.U8() % 3;
    const ObjectKey key{dev, ino};
    const std::string name = absl::StrCat("op#", ops, "(", op % 5, ") key ", key.DebugString());
    switch (op % 5) {
      case 0: {  // Register
        const uint64_t sz = PickSize(in);
        const std::string tenant = kTenants[in.U8() % 4];
        absl::StatusOr<std::string> owner = ledger.Register(key, sz, tenant);
        Expect want;
        auto it = model.objects.find(key);
        if (sz == 0 || sz % kPage != 0) {
          want = {StatusCode::kInvalidArgument, "size: "};
        } else if (tenant.empty()) {
          want = {StatusCode::kInvalidArgument, "tenant: "};
        } else if (it != model.objects.end() && it->second.size != sz) {
          want = {StatusCode::kFailedPrecondition, "size: "};
        }
        CheckStatus(owner.status(), want, name + " Register");
        if (owner.ok()) {
          ModelObject& o = model.objects[key];
          if (o.references == 0 && o.live.empty()) {
            o.size = sz;
            o.owner = tenant;
          }
          ++o.references;
          FUZZ_CHECK(*owner == o.owner, name + ": Register returned another owner");
        }
        break;
      }
      case 1: {  // Unregister
        const absl::Status s = ledger.Unregister(key);
        auto it = model.objects.find(key);
        Expect want;
        if (it == model.objects.end()) {
          want = {StatusCode::kNotFound, "key: "};
        } else if (it->second.references == 0) {
          want = {StatusCode::kFailedPrecondition, "key: "};
        }
        CheckStatus(s, want, name + " Unregister");
        if (s.ok()) {
          --it->second.references;
          model.MaybeForget(key);
        }
        break;
      }
      case 2:    // NewlyBilledIfMapped
      case 3: {  // Map
        const uint64_t offset = PickOffset(in, model, key);
        const uint64_t length = PickLength(in, model, key, offset);
        Expect want = CheckRange(model, key, offset, length);
        u128 newly = 0;
        if (want.code == StatusCode::kOk) {
          const ModelObject& o = model.objects.at(key);
          newly = u128(length) - Covered(o.live, offset, u128(offset) + length);
          if (op % 5 == 3 && model.Mapped(o.owner) + length > u128(UINT64_MAX)) {
            want = {StatusCode::kOutOfRange, "length: "};
          }
        }
        absl::StatusOr<uint64_t> r = op % 5 == 2 ? ledger.NewlyBilledIfMapped(key, offset, length)
                                                 : ledger.Map(key, offset, length);
        CheckStatus(r.status(), want, absl::StrCat(name, op % 5 == 2 ? " NewlyBilled" : " Map",
                                                   "(0x", absl::Hex(offset), ", 0x",
                                                   absl::Hex(length), ")"));
        if (r.ok()) {
          FUZZ_CHECK(u128(*r) == newly, absl::StrCat(name, ": newly billed ", *r, ", model ",
                                                     static_cast<uint64_t>(newly)));
          if (op % 5 == 3) model.objects.at(key).live.insert({offset, length});
        }
        break;
      }
      case 4: {  // Unmap
        const uint64_t offset = PickOffset(in, model, key);
        const uint64_t length = PickLength(in, model, key, offset);
        Expect want = CheckRange(model, key, offset, length);
        u128 released = 0;
        if (want.code == StatusCode::kOk) {
          ModelObject& o = model.objects.at(key);
          auto l = o.live.find({offset, length});
          if (l == o.live.end()) {
            want = {StatusCode::kFailedPrecondition, "unmap: "};
          } else {
            const u128 before = Covered(o.live, 0, u128(o.size));
            auto copy = o.live;
            copy.erase(copy.find({offset, length}));
            released = before - Covered(copy, 0, u128(o.size));
          }
        }
        absl::StatusOr<uint64_t> r = ledger.Unmap(key, offset, length);
        CheckStatus(r.status(), want, absl::StrCat(name, " Unmap(0x", absl::Hex(offset), ", 0x",
                                                   absl::Hex(length), ")"));
        if (r.ok()) {
          FUZZ_CHECK(u128(*r) == released, absl::StrCat(name, ": released ", *r, ", model ",
                                                        static_cast<uint64_t>(released)));
          ModelObject& o = model.objects.at(key);
          o.live.erase(o.live.find({offset, length}));
          model.MaybeForget(key);
        }
        break;
      }
    }
    CheckAgrees(ledger, model, name);
  }
  return 0;
}
