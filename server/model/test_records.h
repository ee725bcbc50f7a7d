// Builders of store records for the model's tests and benchmarks.
#ifndef SERVER_MODEL_TEST_RECORDS_H_
#define SERVER_MODEL_TEST_RECORDS_H_

#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/model/fleet_state.h"

namespace iommu {
namespace model {

// The PCI address of test device `i`.
inline std::string Dev(int i) { return absl::StrFormat("0000:00:%02x.0", i); }

constexpr uint64_t kGiB = uint64_t{1} << 30;

inline StoreRecord TenantRec(const std::string& id) {
  v1::Tenant t;
  t.set_id(id);
  t.mutable_quota()->set_pinned_bytes(kGiB);
  return {kTenantKind, id, t.SerializeAsString()};
}

inline StoreRecord NodeRec(const std::string& name, bool cordoned = false) {
  v1::Node n;
  n.set_name(name);
  n.set_cordoned(cordoned);
  return {kNodeKind, name, n.SerializeAsString()};
}

inline StoreRecord DevicesRec(const std::string& node, int count, uint32_t vendor = 0x10de) {
  v1::ListDevicesResponse r;
  for (int i = 0; i < count; ++i) {
    v1::Device* d = r.add_devices();
    d->set_address(Dev(i));
    d->set_iommu_group(i);
    d->set_vendor_id(vendor);
    d->set_device_id(0x2330);
    d->set_assignable(true);
  }
  return {kDevicesKind, node, r.SerializeAsString()};
}

inline v1::Container Container(const std::string& id, const std::string& tenant, const std::string& node,
                        std::vector<std::string> devices, uint64_t budget = 0,
                        uint64_t usable_last = 0xffffffff) {
  v1::Container c;
  c.set_id(id);
  c.set_tenant_id(tenant);
  c.set_node(node);
  for (const std::string& d : devices) c.add_devices(d);
  c.set_pin_budget_bytes(budget);
  c.set_state(v1::CONTAINER_STATE_READY);
  v1::IovaRange* r = c.mutable_geometry()->add_usable_ranges();
  r->set_start(0);
  r->set_last(usable_last);
  c.mutable_geometry()->set_page_size_bitmap(0x1000);
  return c;
}

inline StoreRecord Rec(const v1::Container& c) { return {kContainerKind, c.id(), c.SerializeAsString()}; }

inline StoreRecord WindowRec(const std::string& id, const std::string& container, const std::string& tenant,
                      uint64_t base, uint64_t size) {
  v1::Window w;
  w.set_id(id);
  w.set_container_id(container);
  w.set_tenant_id(tenant);
  w.set_base(base);
  w.set_size(size);
  return {kWindowKind, id, w.SerializeAsString()};
}

inline WriteBatch Puts(std::vector<StoreRecord> puts) {
  WriteBatch b;
  b.puts = std::move(puts);
  return b;
}

inline WriteBatch Deletes(std::vector<std::pair<std::string, std::string>> deletes) {
  WriteBatch b;
  b.deletes = std::move(deletes);
  return b;
}


// Everything observable through the public API, to prove a refused change
// changed nothing and that maintained indexes equal a recount.
inline std::string Dump(const FleetState& s) {
  std::string out;
  for (const auto& [id, t] : s.tenants()) {
    const TenantTotals x = s.Totals(id);
    absl::StrAppend(&out, "T ", t.ShortDebugString(), " c=", x.containers, " w=", x.windows,
                    " b=", x.budget_bytes, " wb=", x.window_bytes, ";");
  }
  for (const auto& [name, n] : s.nodes()) {
    absl::StrAppend(&out, "N ", name, " ", n.node.has_value() ? n.node->ShortDebugString() : "-",
                    " d=", n.devices.size(), " k=", n.grant_key, " cc=", s.ContainerCountOfNode(name),
                    " free=", s.placement().FreeCount(name, {0, 0}), ";");
  }
  for (const auto& [id, c] : s.containers()) {
    absl::StrAppend(&out, "C ", c.container.ShortDebugString(), " w=", c.window_ids.size(),
                    " alloc=", c.allocator.window_count(), "/", c.allocator.allocated_bytes(), ";");
  }
  for (const auto& [id, w] : s.windows()) absl::StrAppend(&out, "W ", w.ShortDebugString(), ";");
  const FleetCounts& k = s.counts();
  absl::StrAppend(&out, "K ", k.tenants, " ", k.nodes, " ", k.containers, " ", k.windows);
  return out;
}

// A random change over a small id space (3 tenants, 3 nodes, 6 containers,
// 10 windows), often invalid: for tests that check what the model accepts
// and refuses. With `one_write_per_key`, later writes of a key already in
// the change are dropped, as a store's txn requires.
inline WriteBatch RandomChange(std::mt19937* rng, bool one_write_per_key) {
  auto pick = [rng](int n) { return static_cast<int>((*rng)() % n); };
  WriteBatch b;
  for (int i = 0, ops = 1 + pick(3); i < ops; ++i) {
    const std::string tenant = absl::StrCat("t", pick(3));
    const std::string node = absl::StrCat("n", pick(3));
    const std::string cid = absl::StrCat("c", pick(6));
    switch (pick(8)) {
      case 0:
        b.puts.push_back(TenantRec(tenant));
        break;
      case 1:
        b.puts.push_back(NodeRec(node));
        b.puts.push_back(DevicesRec(node, 1 + pick(4), pick(2) ? 0x10de : 0x8086));
        break;
      case 2:
      case 3:
        b.puts.push_back(Rec(Container(cid, tenant, node, {Dev(pick(4))}, pick(5) * 4096)));
        break;
      case 4:
      case 5:
        b.puts.push_back(WindowRec(absl::StrCat("w", pick(10)), cid, tenant,
                                   uint64_t(pick(16)) * 0x10000, uint64_t(1 + pick(3)) * 0x8000));
        break;
      case 6:
        b.deletes.push_back({kWindowKind, absl::StrCat("w", pick(10))});
        break;
      default:
        b.deletes.push_back({pick(2) ? kContainerKind : kTenantKind, pick(2) ? cid : tenant});
    }
  }
  if (!one_write_per_key) return b;
  std::set<std::pair<std::string, std::string>> seen;
  WriteBatch unique;
  for (const StoreRecord& r : b.puts) {
    if (seen.insert({r.kind, r.id}).second) unique.puts.push_back(r);
  }
  for (const auto& d : b.deletes) {
    if (seen.insert(d).second) unique.deletes.push_back(d);
  }
  return unique;
}

}  // namespace model
}  // namespace iommu

#endif  // SERVER_MODEL_TEST_RECORDS_H_
