// What a broker's start costs as the store grows: the whole load
// (Broker::Create on a store of N containers, each with one window, over
// N/40 nodes of 45 devices and 100 tenants) and, within it, the check of the
// stored records against the state's invariants (model::CheckStoredRecords).
//
//   bazel run -c opt //bench:load_bench
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/model/stored_records.h"
#include "server/ok_agents.h"

namespace iommu {
namespace bench {
namespace {

constexpr int kDevicesPerNode = 45;
constexpr int kContainersPerNode = 40;
constexpr int kTenants = 100;

// The records of a fleet of `containers` containers, as a broker writes them.
std::vector<StoreRecord> Fleet(int containers) {
  std::vector<StoreRecord> out;
  for (int t = 0; t < kTenants; ++t) {
    v1::Tenant tenant;
    tenant.set_id(absl::StrFormat("t-%04d", t));
    tenant.mutable_quota()->set_pinned_bytes(uint64_t{1} << 40);
    out.push_back({"tenant", tenant.id(), tenant.SerializeAsString()});
  }
  const int nodes = (containers + kContainersPerNode - 1) / kContainersPerNode;
  for (int n = 0; n < nodes; ++n) {
    v1::Node node;
    node.set_name(absl::StrFormat("node-%05d", n));
    out.push_back({"node", node.name(), node.SerializeAsString()});
    v1::ListDevicesResponse devices;
    for (int d = 0; d < kDevicesPerNode; ++d) {
      v1::Device* dev = devices.add_devices();
      dev->set_address(absl::StrFormat("0000:%02x:00.0", d));
      dev->set_iommu_group(d);
      dev->set_vendor_id(0x10de);
      dev->set_device_id(0x2330);
      dev->set_driver("vfio-pci");
      dev->set_assignable(true);
    }
    out.push_back({"devices", node.name(), devices.SerializeAsString()});
    out.push_back({"nodekey", node.name(), std::string(32, 'k')});
  }
  for (int i = 0; i < containers; ++i) {
    v1::Container c;
    c.set_id(absl::StrFormat("c-%016x", i));
    c.set_tenant_id(absl::StrFormat("t-%04d", i % kTenants));
    c.set_node(absl::StrFormat("node-%05d", i / kContainersPerNode));
    c.add_devices(absl::StrFormat("0000:%02x:00.0", i % kContainersPerNode));
    c.set_name(absl::StrCat("vm-", i));
    v1::IovaRange* r = c.mutable_geometry()->add_usable_ranges();
    r->set_start(0);
    r->set_last((uint64_t{1} << 39) - 1);
    c.mutable_geometry()->set_page_size_bitmap(0x40201000);
    c.set_pin_budget_bytes(uint64_t{1} << 30);
    out.push_back({"container", c.id(), c.SerializeAsString()});
    v1::Window w;
    w.set_id(absl::StrFormat("w-%016x", i));
    w.set_container_id(c.id());
    w.set_tenant_id(c.tenant_id());
    w.set_base(0);
    w.set_size(uint64_t{1} << 30);
    out.push_back({"window", w.id(), w.SerializeAsString()});
  }
  return out;
}

void Sizes(benchmark::internal::Benchmark* b) {
  for (int n : {1000, 10000, 200000}) b->Arg(n);
  b->Unit(benchmark::kMillisecond);
}

void BM_CheckStoredRecords(benchmark::State& state) {
  const std::vector<StoreRecord> records = Fleet(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    absl::Status s = model::CheckStoredRecords(records);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
}
BENCHMARK(BM_CheckStoredRecords)->Apply(Sizes);

void BM_BrokerLoad(benchmark::State& state) {
  FakeStore store;
  WriteBatch all;
  all.puts = Fleet(static_cast<int>(state.range(0)));
  if (!store.Commit(all).ok()) state.SkipWithError("fill");
  OkAgents agents;
  for (auto _ : state) {
    absl::StatusOr<std::unique_ptr<Broker>> b = Broker::Create(&store, &agents, BrokerOptions());
    if (!b.ok()) state.SkipWithError(std::string(b.status().message()).c_str());
  }
}
BENCHMARK(BM_BrokerLoad)->Apply(Sizes);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
