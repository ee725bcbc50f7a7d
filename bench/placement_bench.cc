// Placement by selector and the cost of applying a container's change, as
// the fleet grows: the placement index (server/model) alone, the linear scan
// over every device of every node that it replaced, and the broker's whole
// CreateContainer-by-selector + DeleteContainer on an in-memory store (so
// the index's upkeep is counted, fsync is not). Issue goal: placement at
// 5,000 nodes within 1.5x of its cost at 100 nodes. And GetUsage of one
// tenant, whose cost must not grow with the fleet either.
//
//   bazel run -c opt //bench:placement_bench
//
// Each node has 8 devices in single-device groups, of one of 4 vendors
// (node i: vendor i % 4); every other node has half of its devices held.
// All nodes are eligible. Placement asks for one device of a random vendor.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/model/fleet_state.h"
#include "server/model/placement.h"
#include "server/ok_agents.h"
#include "server/test_nodes.h"

namespace iommu {
namespace bench {
namespace {

constexpr int kDevicesPerNode = 8;
constexpr uint32_t kVendors[] = {0x10de, 0x8086, 0x1002, 0x15b3};

std::string Address(int i) { return absl::StrFormat("0000:00:%02x.0", i); }

// The benchmark's own records are valid; a refusal means the model changed
// under it, and the numbers would measure something else.
void ApplyOrDie(model::FleetState* s, const WriteBatch& change) {
  if (absl::Status st = s->Apply(change); !st.ok()) {
    std::fprintf(stderr, "placement_bench: the model refused the fleet: %s\n",
                 st.ToString().c_str());
    std::exit(1);
  }
}

std::unique_ptr<model::FleetState> Fleet(int nodes) {
  auto s = std::make_unique<model::FleetState>();
  WriteBatch b;
  v1::Tenant t;
  t.set_id("t");
  b.puts.push_back({model::kTenantKind, "t", t.SerializeAsString()});
  int containers = 0;
  for (int i = 0; i < nodes; ++i) {
    const std::string name = absl::StrFormat("node-%05d", i);
    v1::Node n;
    n.set_name(name);
    b.puts.push_back({model::kNodeKind, name, n.SerializeAsString()});
    v1::ListDevicesResponse devices;
    for (int d = 0; d < kDevicesPerNode; ++d) {
      v1::Device* dev = devices.add_devices();
      dev->set_address(Address(d));
      dev->set_iommu_group(d);
      dev->set_vendor_id(kVendors[i % 4]);
      dev->set_device_id(0x1);
      dev->set_assignable(true);
    }
    b.puts.push_back({model::kDevicesKind, name, devices.SerializeAsString()});
    for (int d = 0; i % 2 == 0 && d < kDevicesPerNode / 2; ++d) {
      v1::Container c;
      c.set_id(absl::StrCat("c-", containers++));
      c.set_tenant_id("t");
      c.set_node(name);
      c.add_devices(Address(d));
      v1::IovaRange* r = c.mutable_geometry()->add_usable_ranges();
      r->set_last(0xffffffff);
      c.mutable_geometry()->set_page_size_bitmap(0x1000);
      b.puts.push_back({model::kContainerKind, c.id(), c.SerializeAsString()});
    }
  }
  ApplyOrDie(s.get(), b);
  for (const auto& [name, n] : s->nodes()) s->SetPlacementEligible(name, true);
  return s;
}

const model::FleetState& CachedFleet(int nodes) {
  static std::map<int, std::unique_ptr<model::FleetState>>* cache =
      new std::map<int, std::unique_ptr<model::FleetState>>();
  auto& slot = (*cache)[nodes];
  if (slot == nullptr) slot = Fleet(nodes);
  return *slot;
}

void FleetSizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {100, 1000, 5000}) b->Arg(n);
}

void BM_PlaceBySelectorIndexed(benchmark::State& state) {
  const model::FleetState& s = CachedFleet(static_cast<int>(state.range(0)));
  FastRng rng(1);
  const model::BusyFn none = [](const std::string&, const std::string&) { return false; };
  for (auto _ : state) {
    v1::DeviceSelector sel;
    sel.set_vendor_id(kVendors[rng.Below(4)]);
    absl::StatusOr<model::Placement> p = model::PlaceBySelector(s, sel, none);
    benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(BM_PlaceBySelectorIndexed)->Apply(FleetSizes);

// What the broker did before it kept the index: every device of every node,
// for every request.
void BM_PlaceBySelectorLinearScan(benchmark::State& state) {
  const model::FleetState& s = CachedFleet(static_cast<int>(state.range(0)));
  FastRng rng(1);
  for (auto _ : state) {
    const uint32_t vendor = kVendors[rng.Below(4)];
    std::string best;
    size_t best_free = 0;
    for (const auto& [name, n] : s.nodes()) {
      std::map<uint32_t, std::vector<const v1::Device*>> groups;
      for (const v1::Device& d : n.devices) groups[d.iommu_group()].push_back(&d);
      size_t free = 0;
      for (const auto& [g, members] : groups) {
        bool ok = true;
        for (const v1::Device* d : members) {
          ok = ok && d->vendor_id() == vendor && d->assignable() &&
               s.DeviceHolder(name, d->address()) == nullptr;
        }
        if (ok) free += members.size();
      }
      if (free > best_free) {
        best_free = free;
        best = name;
      }
    }
    benchmark::DoNotOptimize(best);
  }
}
BENCHMARK(BM_PlaceBySelectorLinearScan)->Apply(FleetSizes);

// Applying one container create and its delete: O(records + the node's devices).
void BM_ApplyContainerCreateAndDelete(benchmark::State& state) {
  const int nodes = static_cast<int>(state.range(0));
  std::unique_ptr<model::FleetState> s = Fleet(nodes);
  v1::Container c;
  c.set_id("c-bench");
  c.set_tenant_id("t");
  c.add_devices(Address(kDevicesPerNode - 1));
  v1::IovaRange* r = c.mutable_geometry()->add_usable_ranges();
  r->set_last(0xffffffff);
  c.mutable_geometry()->set_page_size_bitmap(0x1000);
  FastRng rng(2);
  for (auto _ : state) {
    c.set_node(absl::StrFormat("node-%05d", static_cast<int>(rng.Below(nodes))));
    WriteBatch put;
    put.puts.push_back({model::kContainerKind, c.id(), c.SerializeAsString()});
    WriteBatch del;
    del.deletes.push_back({model::kContainerKind, c.id()});
    ApplyOrDie(s.get(), put);
    ApplyOrDie(s.get(), del);
  }
}
BENCHMARK(BM_ApplyContainerCreateAndDelete)->Apply(FleetSizes);

// The broker's own placement, through its API: the same fleet registered,
// even nodes with half their devices held, then per iteration one container
// placed by a random vendor and deleted again.
struct BrokerFleet {
  FakeStore store;
  OkAgents agents;
  std::unique_ptr<Broker> broker;
};

void DieUnless(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "placement_bench: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

// A broker on an in-memory store with a do-nothing agent, and no fleet yet.
std::unique_ptr<BrokerFleet> EmptyBroker() {
  auto f = std::make_unique<BrokerFleet>();
  BrokerOptions o;
  o.liveness_check_interval_ms = 0;  // No node times out mid-run.
  absl::StatusOr<std::unique_ptr<Broker>> b = Broker::Create(&f->store, &f->agents, o);
  DieUnless(b.status(), "broker");
  f->broker = *std::move(b);
  return f;
}

void AddTenant(Broker* broker, const std::string& id) {
  v1::CreateTenantRequest t;
  t.set_tenant_id(id);
  t.mutable_quota()->set_pinned_bytes(1ULL << 50);
  v1::Tenant tenant;
  DieUnless(broker->CreateTenant(t, &tenant), "tenant");
}

std::unique_ptr<BrokerFleet> MakeBrokerFleet(int nodes) {
  std::unique_ptr<BrokerFleet> f = EmptyBroker();
  AddTenant(f->broker.get(), "t");
  for (int i = 0; i < nodes; ++i) {
    const std::string name = absl::StrFormat("node-%05d", i);
    std::vector<v1::Device> devices;
    for (int d = 0; d < kDevicesPerNode; ++d) {
      v1::Device dev;
      dev.set_address(Address(d));
      dev.set_iommu_group(d);
      dev.set_vendor_id(kVendors[i % 4]);
      dev.set_device_id(0x1);
      dev.set_driver("vfio-pci");
      dev.set_assignable(true);
      devices.push_back(dev);
    }
    DieUnless(RegisterReadyNode(f->broker.get(), name, devices).status(), "register");
    for (int d = 0; i % 2 == 0 && d < kDevicesPerNode / 2; ++d) {
      v1::CreateContainerRequest req;
      req.set_tenant_id("t");
      req.set_node(name);
      req.add_devices(Address(d));
      v1::Container c;
      DieUnless(f->broker->CreateContainer(req, &c), "prefill container");
    }
  }
  return f;
}

void BM_BrokerPlaceAndDelete(benchmark::State& state) {
  std::unique_ptr<BrokerFleet> f = MakeBrokerFleet(static_cast<int>(state.range(0)));
  FastRng rng(3);
  for (auto _ : state) {
    v1::CreateContainerRequest req;
    req.set_tenant_id("t");
    req.mutable_selector()->set_vendor_id(kVendors[rng.Below(4)]);
    v1::Container c;
    DieUnless(f->broker->CreateContainer(req, &c), "create by selector");
    v1::DeleteContainerRequest del;
    del.set_container_id(c.id());
    v1::DeleteContainerResponse out;
    DieUnless(f->broker->DeleteContainer(del, &out), "delete");
  }
}
BENCHMARK(BM_BrokerPlaceAndDelete)->Apply(FleetSizes);

// A tenant's usage (GetUsage of one tenant) as the fleet grows, with each
// tenant on a fixed number of nodes: one tenant per 10 nodes, each node's
// agent reporting usage for 2 tenants, so every tenant is reported by about
// 20 nodes at every fleet size. Issue goal: costs independent of the fleet.
void BM_BrokerTenantUsage(benchmark::State& state) {
  const int nodes = static_cast<int>(state.range(0));
  const int tenants = nodes / 10;
  std::unique_ptr<BrokerFleet> f = EmptyBroker();
  Broker& broker = *f->broker;
  auto tenant = [](int i) { return absl::StrFormat("t-%05d", i); };
  for (int i = 0; i < tenants; ++i) AddTenant(&broker, tenant(i));
  for (int i = 0; i < nodes; ++i) {
    const std::string name = absl::StrFormat("node-%05d", i);
    v1::Device dev;
    dev.set_address(Address(0));
    dev.set_vendor_id(kVendors[0]);
    dev.set_assignable(true);
    absl::StatusOr<v1::RegisterResponse> r = RegisterReadyNode(&broker, name, {dev});
    DieUnless(r.status(), "register");
    v1::HeartbeatRequest hb;
    hb.set_node(name);
    hb.set_session_id(r->session_id());
    for (int k : {i % tenants, (i + 1) % tenants}) {
      v1::PinUsage* u = hb.add_usage();
      u->set_tenant_id(tenant(k));
      u->set_billed_bytes(0x10000);
      u->set_mapped_bytes(0x10000);
    }
    v1::HeartbeatResponse answer;
    DieUnless(broker.Heartbeat(hb, &answer), "heartbeat");
  }
  FastRng rng(4);
  for (auto _ : state) {
    v1::GetUsageRequest req;
    req.set_tenant_id(tenant(static_cast<int>(rng.Below(tenants))));
    v1::GetUsageResponse out;
    DieUnless(broker.GetUsage(req, &out), "usage");
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_BrokerTenantUsage)->Apply(FleetSizes);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
