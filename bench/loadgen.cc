// Broker load generator: a closed loop of N outstanding RPCs (one async gRPC
// CompletionQueue) per mix, for a fixed time, reporting QPS and p50/p99/p999.
//
// Mixes (each a cycle of RPCs that one slot runs in order, over and over):
//   noop    grpc.health.v1.Health/Check: the floor. It goes through the same
//           server, transport and threads as everything else and does no
//           broker work, so "x / noop" is the cost the broker adds.
//   read    GetContainer (a random one of the read containers), ListContainers
//           (the tenant's, page_size 10), GetUsage (the tenant).
//   mutate  AllocateWindow (64 KiB) + ReleaseWindow of it in one of the window
//           containers, then CreateContainer (placed by selector, one device)
//           + DeleteContainer of it. Every mutation carries a fresh request_id,
//           so none is answered from the idempotency cache; each is a durable
//           store commit.
//   place   CreateContainer by selector + DeleteContainer (the scale test's
//           placement latency at size).
//   list    ListContainers of everything (page_size 100), of one random node,
//           of one random tenant (first page each).
//
// For each concurrency in --concurrency, the mixes run in the order given
// against the same broker process; when noop is among them each row also
// shows its QPS and latency as a ratio to noop's at the same concurrency.
// Only RPCs that complete inside the measured window (after --warmup_s)
// count. Latencies are exact: every sample is kept and sorted.
//
// --fill=N first creates N containers by selector (spread over --fill_tenants
// tenants) and keeps them: the scale test's 100,000.
//
// Output: a human table on stdout; with --csv, one row per (mix, op,
// concurrency) appended to that file (header written when it is empty):
//   label,mix,op,concurrency,ops,seconds,qps,p50_us,p99_us,p999_us,errors,
//   qps_vs_noop,p50_vs_noop,p99_vs_noop
// op "all" is the whole mix; the others are its single RPCs.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "bench/broker_setup.h"
#include "bench/load_table.h"
#include "bench/server_cpu.h"
#include "common/broker_target.h"
#include "common/tls.h"
#include "grpcpp/grpcpp.h"
#include "proto/broker.grpc.pb.h"
#include "tests/health.grpc.pb.h"

ABSL_FLAG(std::string, broker, "",
          "Required. The broker's host:port, or every replica's as host:port,host:port,... "
          "(common/broker_target.h: the channel reaches whichever replica leads).");
ABSL_FLAG(std::vector<std::string>, mixes, std::vector<std::string>({"noop", "read", "mutate"}),
          "Comma-separated mixes, run in this order at each concurrency: noop, read, mutate, "
          "place, list.");
ABSL_FLAG(std::vector<std::string>, concurrency,
          std::vector<std::string>({"1", "2", "4", "8", "16", "32", "64"}),
          "Comma-separated numbers of outstanding RPCs.");
ABSL_FLAG(double, duration_s, 5, "Measured seconds per (mix, concurrency).");
ABSL_FLAG(double, warmup_s, 1, "Unmeasured seconds before each measurement.");
ABSL_FLAG(std::string, tenant, "bench", "Tenant the read and mutate mixes use (created if missing).");
ABSL_FLAG(int, read_containers, 16, "Containers created for the read mix.");
ABSL_FLAG(int, window_containers, 8, "Containers the mutate mix allocates windows in.");
ABSL_FLAG(uint32_t, vendor_id, 0x1234, "Selector vendor id for containers this tool creates.");
ABSL_FLAG(uint32_t, device_id, 0x11e8, "Selector device id for containers this tool creates.");
ABSL_FLAG(int64_t, fill, 0, "Create this many containers (kept) before measuring.");
ABSL_FLAG(bool, fill_explicit, false,
          "--fill names node and device (round-robin over every READY node's free devices) "
          "instead of placing by selector: the fill measures the store, not placement.");
ABSL_FLAG(int, fill_tenants, 100, "Tenants the --fill containers are spread over (t-0000...).");
ABSL_FLAG(int, fill_concurrency, 32, "Outstanding creates during --fill.");
ABSL_FLAG(double, fill_max_s, 600, "Stop --fill after this many seconds and report what it reached.");
ABSL_FLAG(int, wait_nodes, 0, "First wait (up to 60 s) until this many nodes are READY.");
ABSL_FLAG(std::string, csv, "", "Append result rows to this CSV file.");
ABSL_FLAG(int, server_pid, 0,
          "The broker's pid, when it runs on this machine: each mix's row then says the broker's "
          "CPU per completed call (bench/server_cpu.h).");
ABSL_FLAG(std::string, label, "", "Free text put in the CSV's label column (e.g. insecure, mtls).");
ABSL_FLAG(std::string, cert, "", "Client certificate (mTLS); empty: plaintext (broker --insecure).");
ABSL_FLAG(std::string, key, "", "Client key (mTLS).");
ABSL_FLAG(std::string, ca, "", "CA bundle (mTLS).");
ABSL_FLAG(bool, wait_for_ready, false,
          "Measured calls wait for a connection instead of failing at once while the channel "
          "has none (what a client of broker replicas does to ride out a change of leader).");

namespace iommu {
namespace {

namespace v1 = ::iommu::v1;
using Clock = std::chrono::steady_clock;

enum class Op {
  kNoop, kGet, kListTenant, kUsage, kAlloc, kRelease, kCreate, kDelete, kListAll, kListNode,
  kCreateKeep,
};

const char* OpName(Op op) {
  switch (op) {
    case Op::kNoop: return "health_check";
    case Op::kGet: return "get_container";
    case Op::kListTenant: return "list_containers_tenant";
    case Op::kUsage: return "get_usage";
    case Op::kAlloc: return "allocate_window";
    case Op::kRelease: return "release_window";
    case Op::kCreate: return "create_container";
    case Op::kDelete: return "delete_container";
    case Op::kListAll: return "list_containers_all";
    case Op::kListNode: return "list_containers_node";
    case Op::kCreateKeep: return "create_container";
  }
  return "?";
}

std::vector<Op> MixOps(const std::string& mix) {
  if (mix == "noop") return {Op::kNoop};
  if (mix == "read") return {Op::kGet, Op::kListTenant, Op::kUsage};
  if (mix == "mutate") return {Op::kAlloc, Op::kRelease, Op::kCreate, Op::kDelete};
  if (mix == "place") return {Op::kCreate, Op::kDelete};
  if (mix == "list") return {Op::kListAll, Op::kListNode, Op::kListTenant};
  if (mix == "fill") return {Op::kCreateKeep};
  return {};
}

struct Sample {
  Op op;
  uint32_t us;  // Latency in microseconds (exact to 1 us; p50s here are >= 50 us).
};

struct Slot {
  int index = 0;
  size_t step = 0;
  Op op = Op::kNoop;
  Clock::time_point start;
  std::unique_ptr<grpc::ClientContext> ctx;
  grpc::Status status;
  std::shared_ptr<void> reader;  // The call's ClientAsyncResponseReader, kept alive.
  std::string window_id, container_id;  // From the previous step of the cycle.
  // Responses (one per type; a slot has one call outstanding at a time).
  grpc::health::v1::HealthCheckResponse health;
  v1::Container container;
  v1::ListContainersResponse list;
  v1::GetUsageResponse usage;
  v1::Window window;
  v1::ReleaseWindowResponse released;
  v1::DeleteContainerResponse deleted;
};

// What a run needs from the broker's state: created by Setup().
struct World {
  std::string tenant;
  std::vector<std::string> read_containers;
  std::vector<std::string> window_containers;
  std::vector<std::string> nodes;
  std::vector<std::string> tenants;
};

class LoadGen {
 public:
  LoadGen(std::shared_ptr<grpc::Channel> channel)
      : broker_(v1::Broker::NewStub(channel)),
        health_(grpc::health::v1::Health::NewStub(channel)),
        rng_(getpid()) {}

  World& world() { return world_; }

  // Waits (up to 60 s) until `n` nodes are READY.
  bool WaitNodes(int n) {
    const int ready = bench::WaitNodesReady(broker_.get(), n, absl::Seconds(60));
    if (ready >= n) return true;
    std::fprintf(stderr, "loadgen: --wait_nodes: %d of %d nodes READY after 60 s\n", ready, n);
    return false;
  }

  // Creates what the mixes use: the tenant, read and window containers.
  bool Setup(bool need_containers) {
    world_.tenant = absl::GetFlag(FLAGS_tenant);
    if (!EnsureTenant(world_.tenant)) return false;
    if (need_containers) {
      for (int i = 0; i < absl::GetFlag(FLAGS_read_containers); ++i) {
        std::string id;
        if (!CreateSync(world_.tenant, &id)) return false;
        world_.read_containers.push_back(id);
      }
      for (int i = 0; i < absl::GetFlag(FLAGS_window_containers); ++i) {
        std::string id;
        if (!CreateSync(world_.tenant, &id)) return false;
        world_.window_containers.push_back(id);
      }
    }
    // Nodes and tenants for the list mix (first 1000 of each suffice).
    {
      grpc::ClientContext ctx;
      v1::ListNodesRequest req;
      req.set_page_size(1000);
      v1::ListNodesResponse resp;
      grpc::Status s = broker_->ListNodes(&ctx, req, &resp);
      if (!s.ok()) return Fail("ListNodes", s);
      for (const auto& n : resp.nodes()) world_.nodes.push_back(n.name());
    }
    {
      grpc::ClientContext ctx;
      v1::ListTenantsRequest req;
      req.set_page_size(1000);
      v1::ListTenantsResponse resp;
      grpc::Status s = broker_->ListTenants(&ctx, req, &resp);
      if (!s.ok()) return Fail("ListTenants", s);
      for (const auto& t : resp.tenants()) world_.tenants.push_back(t.id());
    }
    return true;
  }

  bool EnsureTenant(const std::string& id) {
    grpc::Status s = bench::EnsureTenant(broker_.get(), id, NewRequestId());
    return s.ok() || Fail("CreateTenant " + id, s);
  }

  // Creates `n` containers by selector, spread over `tenants` tenants, with
  // `concurrency` outstanding, for at most `max_s`. Returns how many it made.
  int64_t Fill(int64_t n, int tenants, int concurrency, double max_s) {
    fill_tenants_.clear();
    for (int i = 0; i < tenants; ++i) {
      fill_tenants_.push_back(absl::StrFormat("t-%04d", i));
      if (!EnsureTenant(fill_tenants_.back())) return 0;
    }
    fill_left_ = n;
    fill_slots_.clear();
    if (absl::GetFlag(FLAGS_fill_explicit) && !ListFreeDevices()) return 0;
    const auto t0 = Clock::now();
    std::vector<Sample> samples;
    int64_t errors = 0;
    Run(MixOps("fill"), concurrency, 0, max_s, &samples, &errors, /*progress=*/true);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t made = static_cast<int64_t>(samples.size());
    std::printf("fill: created %lld of %lld containers in %.1f s (%.0f/s), %lld errors\n",
                static_cast<long long>(made), static_cast<long long>(n), secs, made / secs,
                static_cast<long long>(errors));
    return made;
  }

  // Every READY node's free devices, for --fill_explicit.
  bool ListFreeDevices() {
    grpc::Status s = bench::FreeDevicesInterleaved(broker_.get(), &fill_slots_);
    return s.ok() || Fail("--fill_explicit: free devices", s);
  }

  // One closed-loop run: `concurrency` slots cycling through `ops`; samples
  // of calls that completed inside [warmup, warmup + duration).
  void Run(const std::vector<Op>& ops, int concurrency, double warmup_s, double duration_s,
           std::vector<Sample>* samples, int64_t* errors, bool progress = false) {
    grpc::CompletionQueue cq;
    cq_ = &cq;
    ops_ = &ops;
    const auto t0 = Clock::now();
    measure_from_ = t0 + Secs(warmup_s);
    stop_at_ = measure_from_ + Secs(duration_s);
    std::vector<Slot> slots(concurrency);
    int outstanding = 0;
    for (int i = 0; i < concurrency; ++i) {
      slots[i].index = i;
      if (Issue(&slots[i])) ++outstanding;
    }
    int64_t next_progress = 10000;
    while (outstanding > 0) {
      void* tag;
      bool ok;
      if (!cq.Next(&tag, &ok)) break;
      --outstanding;
      Slot* s = static_cast<Slot*>(tag);
      const auto now = Clock::now();
      if (!ok || !s->status.ok()) {
        ++*errors;
        if (errors_printed_++ < 5) {
          std::fprintf(stderr, "loadgen: %s: %s\n", OpName(s->op),
                       s->status.error_message().c_str());
        }
        s->step = 0;  // Start the cycle over (its state is unknown).
      } else {
        if (s->start >= measure_from_ && now < stop_at_) {
          samples->push_back({s->op, static_cast<uint32_t>(std::chrono::duration_cast<
                                         std::chrono::microseconds>(now - s->start).count())});
          if (progress && static_cast<int64_t>(samples->size()) >= next_progress) {
            std::printf("  ... %lld after %.1f s\n", static_cast<long long>(samples->size()),
                        std::chrono::duration<double>(now - t0).count());
            std::fflush(stdout);
            next_progress += 10000;
          }
        }
        if (s->op == Op::kAlloc) s->window_id = s->window.id();
        if (s->op == Op::kCreate) s->container_id = s->container.id();
        s->step = (s->step + 1) % ops.size();
      }
      if (now < stop_at_ && Issue(s)) ++outstanding;
    }
    cq.Shutdown();
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
    }
    cq_ = nullptr;
  }

 private:
  static Clock::duration Secs(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  bool Fail(const std::string& what, const grpc::Status& s) {
    std::fprintf(stderr, "loadgen: %s: %s\n", what.c_str(), s.error_message().c_str());
    return false;
  }

  std::string NewRequestId() {
    return absl::StrFormat("lg-%d-%016x-%d", getpid(), static_cast<uint64_t>(rng_()), ++seq_);
  }

  bool CreateSync(const std::string& tenant, std::string* id) {
    grpc::ClientContext ctx;
    v1::Container out;
    grpc::Status s = broker_->CreateContainer(&ctx, CreateRequest(tenant), &out);
    if (!s.ok()) return Fail("CreateContainer", s);
    *id = out.id();
    return true;
  }

  v1::CreateContainerRequest CreateRequest(const std::string& tenant) {
    v1::CreateContainerRequest req;
    req.set_request_id(NewRequestId());
    req.set_tenant_id(tenant);
    req.mutable_selector()->set_vendor_id(absl::GetFlag(FLAGS_vendor_id));
    req.mutable_selector()->set_device_id(absl::GetFlag(FLAGS_device_id));
    req.mutable_selector()->set_count(1);
    req.set_pin_budget_bytes(1 << 20);
    return req;
  }

  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng_)];
  }

  template <typename Resp, typename Reader>
  void Start(Slot* s, std::unique_ptr<Reader> reader, Resp* resp) {
    reader->StartCall();
    reader->Finish(resp, &s->status, s);
    s->reader = std::shared_ptr<Reader>(std::move(reader));
  }

  // Starts the slot's next call; false when there is nothing left to do.
  bool Issue(Slot* s) {
    const Op op = (*ops_)[s->step];
    if (op == Op::kCreateKeep) {
      if (fill_left_ <= 0) return false;
      --fill_left_;
    }
    s->op = op;
    s->ctx = std::make_unique<grpc::ClientContext>();
    s->ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    s->ctx->set_wait_for_ready(wait_for_ready_);
    s->status = grpc::Status();
    grpc::ClientContext* ctx = s->ctx.get();
    grpc::CompletionQueue* cq = cq_;
    s->start = Clock::now();
    switch (op) {
      case Op::kNoop: {
        grpc::health::v1::HealthCheckRequest req;
        Start(s, health_->PrepareAsyncCheck(ctx, req, cq), &s->health);
        break;
      }
      case Op::kGet: {
        v1::GetContainerRequest req;
        req.set_container_id(Pick(world_.read_containers));
        Start(s, broker_->PrepareAsyncGetContainer(ctx, req, cq), &s->container);
        break;
      }
      case Op::kListTenant: {
        v1::ListContainersRequest req;
        req.set_tenant_id(world_.tenants.empty() || !world_.read_containers.empty()
                              ? world_.tenant
                              : Pick(world_.tenants));
        req.set_page_size(10);
        Start(s, broker_->PrepareAsyncListContainers(ctx, req, cq), &s->list);
        break;
      }
      case Op::kUsage: {
        v1::GetUsageRequest req;
        req.set_tenant_id(world_.tenant);
        Start(s, broker_->PrepareAsyncGetUsage(ctx, req, cq), &s->usage);
        break;
      }
      case Op::kAlloc: {
        v1::AllocateWindowRequest req;
        req.set_request_id(NewRequestId());
        req.set_container_id(
            world_.window_containers[s->index % world_.window_containers.size()]);
        req.set_size(64 << 10);
        Start(s, broker_->PrepareAsyncAllocateWindow(ctx, req, cq), &s->window);
        break;
      }
      case Op::kRelease: {
        v1::ReleaseWindowRequest req;
        req.set_request_id(NewRequestId());
        req.set_window_id(s->window_id);
        Start(s, broker_->PrepareAsyncReleaseWindow(ctx, req, cq), &s->released);
        break;
      }
      case Op::kCreate:
        Start(s, broker_->PrepareAsyncCreateContainer(ctx, CreateRequest(world_.tenant), cq),
              &s->container);
        break;
      case Op::kCreateKeep: {
        v1::CreateContainerRequest req = CreateRequest(fill_tenants_[fill_next_ % fill_tenants_.size()]);
        if (!fill_slots_.empty()) {
          if (fill_next_ >= fill_slots_.size()) return false;
          req.clear_selector();
          req.set_node(fill_slots_[fill_next_].first);
          req.add_devices(fill_slots_[fill_next_].second);
        }
        ++fill_next_;
        Start(s, broker_->PrepareAsyncCreateContainer(ctx, req, cq), &s->container);
        break;
      }
      case Op::kDelete: {
        v1::DeleteContainerRequest req;
        req.set_request_id(NewRequestId());
        req.set_container_id(s->container_id);
        Start(s, broker_->PrepareAsyncDeleteContainer(ctx, req, cq), &s->deleted);
        break;
      }
      case Op::kListAll:
      case Op::kListNode: {
        v1::ListContainersRequest req;
        if (op == Op::kListNode && !world_.nodes.empty()) req.set_node(Pick(world_.nodes));
        req.set_page_size(100);
        Start(s, broker_->PrepareAsyncListContainers(ctx, req, cq), &s->list);
        break;
      }
    }
    return true;
  }

  std::unique_ptr<v1::Broker::Stub> broker_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::mt19937_64 rng_;
  int seq_ = 0;
  World world_;
  std::vector<std::string> fill_tenants_;
  std::vector<std::pair<std::string, std::string>> fill_slots_;  // (node, device)
  int64_t fill_left_ = 0;
  size_t fill_next_ = 0;
  int errors_printed_ = 0;
  const bool wait_for_ready_ = absl::GetFlag(FLAGS_wait_for_ready);
  grpc::CompletionQueue* cq_ = nullptr;
  const std::vector<Op>* ops_ = nullptr;
  Clock::time_point measure_from_, stop_at_;
};

using bench::LoadRow;

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "bench/loadgen --broker=HOST:PORT[,HOST:PORT...] [--mixes=noop,read,mutate]\n"
      "              [--concurrency=1,2,...]\n"
      "closed-loop load on a broker; see bench/loadgen.cc for the mixes");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_broker).empty()) {
    std::fprintf(stderr, "loadgen: --broker: required (host:port)\n");
    return 2;
  }
  // A list of replicas becomes one target; anything else is passed to gRPC
  // as before (host:port, or any target gRPC takes, e.g. unix:PATH).
  const std::string broker = absl::GetFlag(FLAGS_broker);
  absl::StatusOr<std::string> address =
      broker.find(',') == std::string::npos ? broker : BrokerTarget("--broker", broker);
  if (!address.ok()) {
    std::fprintf(stderr, "loadgen: %s\n", std::string(address.status().message()).c_str());
    return 2;
  }
  std::vector<std::string> mixes = absl::GetFlag(FLAGS_mixes);
  for (const std::string& m : mixes) {
    if (MixOps(m).empty() || m == "fill") {
      std::fprintf(stderr, "loadgen: --mixes: unknown mix \"%s\" (noop, read, mutate, place, list)\n",
                   m.c_str());
      return 2;
    }
  }
  std::vector<int> levels;
  for (const std::string& c : absl::GetFlag(FLAGS_concurrency)) {
    int n;
    if (!absl::SimpleAtoi(c, &n) || n < 1 || n > 4096) {
      std::fprintf(stderr, "loadgen: --concurrency: \"%s\" is not a number in 1..4096\n",
                   c.c_str());
      return 2;
    }
    levels.push_back(n);
  }

  TransportConfig transport;
  transport.insecure = absl::GetFlag(FLAGS_cert).empty();
  transport.cert_file = absl::GetFlag(FLAGS_cert);
  transport.key_file = absl::GetFlag(FLAGS_key);
  transport.ca_file = absl::GetFlag(FLAGS_ca);
  if (absl::Status s = ValidateTransportConfig(transport, {"--cert", "--key", "--ca"}); !s.ok()) {
    std::fprintf(stderr, "loadgen: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  grpc::ChannelArguments args;
  // One channel, one HTTP/2 connection: what a real client library does.
  auto channel = grpc::CreateCustomChannel(
      *address, MakeChannelCredentials(transport, Identity{Role::kBroker, ""}), args);
  LoadGen gen(channel);

  if (absl::GetFlag(FLAGS_wait_nodes) > 0 && !gen.WaitNodes(absl::GetFlag(FLAGS_wait_nodes))) {
    return 1;
  }
  if (absl::GetFlag(FLAGS_fill) > 0) {
    gen.Fill(absl::GetFlag(FLAGS_fill), absl::GetFlag(FLAGS_fill_tenants),
             absl::GetFlag(FLAGS_fill_concurrency), absl::GetFlag(FLAGS_fill_max_s));
  }
  if (mixes.empty()) return 0;  // --wait_nodes / --fill only.
  bool need_containers = false;
  for (const std::string& m : mixes) need_containers |= (m == "read" || m == "mutate");
  if (!gen.Setup(need_containers)) return 1;

  const std::string csv_path = absl::GetFlag(FLAGS_csv);
  bench::LoadCsv csv;
  if (!csv_path.empty() && !csv.Open(csv_path)) return 1;
  const std::string label = absl::GetFlag(FLAGS_label);
  const double duration = absl::GetFlag(FLAGS_duration_s);
  const double warmup = absl::GetFlag(FLAGS_warmup_s);

  bench::PrintLoadHeader(stdout);
  for (int c : levels) {
    LoadRow floor;
    for (const std::string& mix : mixes) {
      std::vector<Sample> samples;
      int64_t errors = 0;
      bench::ServerCpuWindow cpu(absl::GetFlag(FLAGS_server_pid), warmup, duration);
      gen.Run(MixOps(mix), c, warmup, duration, &samples, &errors);
      std::map<std::string, std::vector<uint32_t>> by_op;
      std::vector<uint32_t> all;
      for (const Sample& s : samples) {
        by_op[OpName(s.op)].push_back(s.us);
        all.push_back(s.us);
      }
      std::vector<LoadRow> rows;
      rows.push_back(bench::SummarizeLoad(mix, "all", c, duration, all, errors));
      if (by_op.size() > 1) {
        for (auto& [op, us] : by_op) {
          rows.push_back(bench::SummarizeLoad(mix, op, c, duration, us, 0));
        }
      }
      rows[0].server_cpu_us_per_op = bench::MicrosPerOp(cpu.Seconds(), rows[0].ops);
      if (mix == "noop") floor = rows[0];
      for (const LoadRow& r : rows) {
        bench::PrintLoadRow(stdout, r, floor);
        if (csv.is_open()) csv.Append(label, r, floor);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace iommu

int main(int argc, char** argv) { return iommu::Main(argc, argv); }
