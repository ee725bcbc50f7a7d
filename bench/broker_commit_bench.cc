// A closed-loop benchmark of the broker's durable mutations, in process: a
// Broker on a real SqliteStore (WAL, synchronous=FULL, so every commit is an
// fsync) in a temporary directory, a do-nothing agent client, and --threads
// client threads each issuing its next request as soon as the last one was
// answered. No gRPC: this measures the broker and its store only (see
// bench/loadgen for the whole server).
//
//   bazel run -c opt //bench:broker_commit_bench -- --threads=32 --seconds=5
//   ... --op=window       AllocateWindow / ReleaseWindow, alternating (default)
//   ... --op=budget       SetContainerBudget
//   ... --op=read         GetContainer (no store access)
//   ... --op=stats        Stats(), what each Prometheus scrape of the broker
//                         costs (and holds the broker's lock for)
//   ... --wal_restart_mb=4  the WAL size past which the checkpointer pauses
//                         commits for one RESTART checkpoint
//   ... --prefill=100000  that many other containers (each with one window)
//                         written to the store before the broker starts, so
//                         that per-mutation costs linear in the state show
//
// Prints one line: op, threads, prefill, ops, ops/s, p50/p90/p99/max in ms,
// the largest size the -wal file reached (sampled every 10 ms; it shows
// whether checkpoints keep up) and errors (with the first error's message).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/broker.h"
#include "server/sqlite_store.h"

ABSL_FLAG(int, threads, 32, "concurrent closed-loop clients");
ABSL_FLAG(double, seconds, 5, "measured duration");
ABSL_FLAG(std::string, op, "window", "window | budget | read | stats");
ABSL_FLAG(int, prefill, 0, "other containers (one window each) loaded from the store at start");
ABSL_FLAG(std::string, dir, "", "directory for the database (default: a new one under $TMPDIR)");
ABSL_FLAG(bool, request_ids, true, "send a request_id with every mutation");
ABSL_FLAG(int64_t, wal_restart_mb, 0,
          "if > 0, the store's WAL restart threshold in MiB (default: the store's own)");

namespace iommu {
namespace {

constexpr int kDevicesPerNode = 4000;

void Die(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "broker_commit_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

v1::ContainerGeometry Geometry() {
  v1::ContainerGeometry g;
  auto* r1 = g.add_usable_ranges();
  r1->set_start(0);
  r1->set_last(0xfedfffff);
  auto* r2 = g.add_usable_ranges();
  r2->set_start(0xfef00000);
  r2->set_last(0x7fffffffffULL);
  g.set_page_size_bitmap(0x40201000);
  g.set_max_mappings(65535);
  return g;
}

// Answers every agent call at once, as a fast agent would.
class NullAgents final : public AgentClient {
 public:
  absl::StatusOr<v1::AgentContainer> CreateContainer(
      const AgentEndpoint&, const v1::AgentCreateContainerRequest& req) override {
    v1::AgentContainer c;
    c.set_id(req.container_id());
    c.set_tenant_id(req.tenant_id());
    *c.mutable_devices() = req.devices();
    *c.mutable_geometry() = Geometry();
    return c;
  }
  absl::Status DestroyContainer(const AgentEndpoint&, const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status SetPinBudgets(const AgentEndpoint&, const v1::SetPinBudgetsRequest&) override {
    return absl::OkStatus();
  }
  absl::Status SetWindows(const AgentEndpoint&, const v1::SetWindowsRequest&) override {
    return absl::OkStatus();
  }
};

std::string Address(int i) {
  return absl::StrFormat("0000:%02x:%02x.%x", i / 256, (i / 8) % 32, i % 8);
}

// Writes `n` containers of tenant "bulk", one window each, on nodes of
// kDevicesPerNode devices, straight into the store.
void Prefill(Store* store, int n) {
  WriteBatch b;
  v1::Tenant t;
  t.set_id("bulk");
  t.mutable_quota()->set_pinned_bytes(1ULL << 50);
  b.puts.push_back({"tenant", t.id(), t.SerializeAsString()});
  const int nodes = (n + kDevicesPerNode - 1) / kDevicesPerNode;
  for (int k = 0; k < nodes; ++k) {
    const std::string name = absl::StrCat("bulk-", k);
    v1::Node node;
    node.set_name(name);
    node.set_agent_address(name + ":1");
    b.puts.push_back({"node", name, node.SerializeAsString()});
    v1::ListDevicesResponse devices;
    for (int i = 0; i < kDevicesPerNode; ++i) {
      v1::Device* d = devices.add_devices();
      d->set_address(Address(i));
      d->set_iommu_group(i + 1);
      d->set_assignable(true);
    }
    b.puts.push_back({"devices", name, devices.SerializeAsString()});
  }
  for (int i = 0; i < n; ++i) {
    v1::Container c;
    c.set_id(absl::StrFormat("c-%016x", 0x1000000000000000ULL + i));
    c.set_tenant_id("bulk");
    c.set_node(absl::StrCat("bulk-", i / kDevicesPerNode));
    c.add_devices(Address(i % kDevicesPerNode));
    *c.mutable_geometry() = Geometry();
    c.set_pin_budget_bytes(4096);
    b.puts.push_back({"container", c.id(), c.SerializeAsString()});
    v1::Window w;
    w.set_id(absl::StrFormat("w-%016x", 0x1000000000000000ULL + i));
    w.set_container_id(c.id());
    w.set_tenant_id("bulk");
    w.set_base(0x100000);
    w.set_size(0x1000);
    w.set_alignment(0x1000);
    b.puts.push_back({"window", w.id(), w.SerializeAsString()});
  }
  absl::Status s = store->Commit(b);
  if (!s.ok()) Die("prefill", s);
}

int Main() {
  const int threads = absl::GetFlag(FLAGS_threads);
  const std::string op = absl::GetFlag(FLAGS_op);
  const int prefill = absl::GetFlag(FLAGS_prefill);
  const bool ids = absl::GetFlag(FLAGS_request_ids);
  std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = absl::StrCat(tmp ? tmp : "/tmp", "/broker_commit_bench.XXXXXX");
    if (mkdtemp(templ.data()) == nullptr) Die("mkdtemp", absl::InternalError(templ));
    dir = templ;
  }
  const std::string db = dir + "/broker.db";
  SqliteStoreOptions store_options;
  if (absl::GetFlag(FLAGS_wal_restart_mb) > 0) {
    store_options.checkpoint.restart_bytes = absl::GetFlag(FLAGS_wal_restart_mb) << 20;
  }
  auto store = OpenSqliteStore(db, store_options);
  if (!store.ok()) Die("open store", store.status());
  if (prefill > 0) Prefill(store->get(), prefill);
  NullAgents agents;
  auto broker_or = Broker::Create(store->get(), &agents, BrokerOptions{});
  if (!broker_or.ok()) Die("create broker", broker_or.status());
  Broker& broker = **broker_or;

  // One node with a device per thread; one tenant and one container per thread.
  v1::RegisterRequest reg;
  reg.set_node("n1");
  reg.set_agent_address("n1:1");
  reg.set_backend("sim");
  for (int i = 0; i < threads; ++i) {
    v1::Device* d = reg.add_devices();
    d->set_address(Address(i));
    d->set_iommu_group(i + 1);
    d->set_assignable(true);
  }
  v1::RegisterResponse reg_out;
  if (absl::Status s = broker.Register(reg, &reg_out); !s.ok()) Die("register", s);
  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg_out.session_id());
  v1::ReconciledResponse rec_out;
  if (absl::Status s = broker.Reconciled(rec, &rec_out); !s.ok()) Die("reconciled", s);
  std::vector<std::string> containers;
  for (int i = 0; i < threads; ++i) {
    v1::CreateTenantRequest tr;
    tr.set_tenant_id(absl::StrCat("t", i));
    tr.mutable_quota()->set_pinned_bytes(1ULL << 30);
    v1::Tenant t;
    if (absl::Status s = broker.CreateTenant(tr, &t); !s.ok()) Die("create tenant", s);
    v1::CreateContainerRequest cr;
    cr.set_tenant_id(tr.tenant_id());
    cr.set_node("n1");
    cr.add_devices(Address(i));
    cr.set_pin_budget_bytes(1 << 20);
    v1::Container c;
    if (absl::Status s = broker.CreateContainer(cr, &c); !s.ok()) Die("create container", s);
    containers.push_back(c.id());
  }

  std::atomic<bool> stop{false};
  absl::Mutex mu;
  std::vector<int64_t> latencies_ns;  // Guarded by mu.
  int64_t errors = 0;
  std::string first_error;
  std::vector<std::thread> workers;
  const int64_t run_id = absl::ToUnixNanos(absl::Now());
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&, i] {
      std::vector<int64_t> mine;
      int64_t my_errors = 0;
      std::string my_first;
      std::string window;  // Held by this thread, between allocate and release.
      uint64_t seq = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const std::string rid = ids ? absl::StrCat("b", run_id, "-", i, "-", seq++) : "";
        const absl::Time start = absl::Now();
        absl::Status s;
        if (op == "window") {
          if (window.empty()) {
            v1::AllocateWindowRequest r;
            r.set_request_id(rid);
            r.set_container_id(containers[i]);
            r.set_size(0x10000);
            v1::Window w;
            s = broker.AllocateWindow(r, &w);
            if (s.ok()) window = w.id();
          } else {
            v1::ReleaseWindowRequest r;
            r.set_request_id(rid);
            r.set_window_id(window);
            v1::ReleaseWindowResponse out;
            s = broker.ReleaseWindow(r, &out);
            if (s.ok()) window.clear();
          }
        } else if (op == "budget") {
          v1::SetContainerBudgetRequest r;
          r.set_request_id(rid);
          r.set_container_id(containers[i]);
          r.set_pin_budget_bytes(4096 * (1 + seq % 256));
          v1::Container out;
          s = broker.SetContainerBudget(r, &out);
        } else if (op == "read") {
          v1::GetContainerRequest r;
          r.set_container_id(containers[i]);
          v1::Container out;
          s = broker.GetContainer(r, &out);
        } else if (op == "stats") {
          const BrokerStats stats = broker.Stats();
          if (stats.tenants.empty()) s = absl::InternalError("Stats() saw no tenants");
        } else {
          Die("--op", absl::InvalidArgumentError(op));
        }
        mine.push_back(absl::ToInt64Nanoseconds(absl::Now() - start));
        if (!s.ok()) {
          if (my_errors++ == 0) my_first = s.ToString();
        }
      }
      absl::MutexLock l(&mu);
      latencies_ns.insert(latencies_ns.end(), mine.begin(), mine.end());
      errors += my_errors;
      if (first_error.empty()) first_error = my_first;
    });
  }
  std::atomic<int64_t> max_wal{0};
  std::thread wal_sampler([&] {
    const std::string wal = db + "-wal";
    while (!stop.load(std::memory_order_relaxed)) {
      struct stat st;
      if (stat(wal.c_str(), &st) == 0 && st.st_size > max_wal.load()) max_wal = st.st_size;
      absl::SleepFor(absl::Milliseconds(10));
    }
  });
  const absl::Time start = absl::Now();
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_seconds)));
  stop = true;
  for (std::thread& t : workers) t.join();
  wal_sampler.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  std::sort(latencies_ns.begin(), latencies_ns.end());
  auto pct = [&](double p) {
    if (latencies_ns.empty()) return 0.0;
    size_t k = std::min(latencies_ns.size() - 1, static_cast<size_t>(p * latencies_ns.size()));
    return latencies_ns[k] / 1e6;
  };
  std::printf(
      "op=%s threads=%d prefill=%d ops=%zu ops_per_s=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
      "max_ms=%.3f wal_max_mb=%.1f errors=%lld%s%s\n",
      op.c_str(), threads, prefill, latencies_ns.size(), latencies_ns.size() / elapsed, pct(0.5),
      pct(0.9), pct(0.99), latencies_ns.empty() ? 0.0 : latencies_ns.back() / 1e6,
      max_wal.load() / 1048576.0, static_cast<long long>(errors), first_error.empty() ? "" : " first_error=",
      first_error.c_str());
  return 0;
}

}  // namespace
}  // namespace iommu

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return iommu::Main();
}
