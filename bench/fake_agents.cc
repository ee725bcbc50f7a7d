// Many simulated node agents in one process, for the broker's scale test.
//
// 1,000 iommu-agent processes do not fit on a 2-core machine, and the scale
// test measures the broker, not the agents. This process registers --nodes
// nodes (bench-0000, bench-0001, ...) over NodeRegistry, each with
// --devices_per_node assignable devices, all advertising ONE agent address:
// the broker keys its agent channels by (node, address), and with --insecure
// it checks no identity, so one gRPC server here answers the Agent API for
// every node. The Agent API keeps no per-container state: CreateContainer
// answers with the sim backend's geometry, the rest answer OK. That is all the
// broker needs to do its own work (placement, store, accounting), which is
// what is measured.
//
// Each node heartbeats at the interval the broker returns at registration,
// from --heartbeat_threads threads, its first beat one interval after its
// own registration; a node the broker forgot (it restarted or timed the node
// out) registers again and reconciles, reporting every desired container as
// held. Registrations run on --register_threads threads of their own, as a
// real agent re-registers on its own thread: a slow registration never
// delays another node's heartbeats (it did when the heartbeat thread
// re-registered inline, and after a broker restart that made nodes time out
// one after another, in a loop of the harness's own making).
//
// Every --report_s seconds a line on stdout says how many nodes are
// registered, heartbeats sent, their p50/p99 latency, failures and
// re-registrations since the last line: if heartbeats fall behind their
// interval, the broker times nodes out, and this shows it.
//
// --ready_file is written once every node has registered the first time.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "proto/agent.grpc.pb.h"
#include "proto/broker.grpc.pb.h"

ABSL_FLAG(std::string, broker, "", "Required. The broker's host:port (an --insecure broker).");
ABSL_FLAG(int, nodes, 1000, "Simulated nodes.");
ABSL_FLAG(int, devices_per_node, 110, "Assignable devices per node (vendor 1234:11e8).");
ABSL_FLAG(std::string, node_prefix, "bench-", "Node names are this and a 4-digit index.");
ABSL_FLAG(int, heartbeat_threads, 8, "Threads sending heartbeats (nodes split among them).");
ABSL_FLAG(int, register_threads, 4, "Threads registering nodes (at start and again).");
ABSL_FLAG(double, report_s, 10, "Seconds between the stats lines on stdout.");
ABSL_FLAG(std::string, ready_file, "", "Written (with the agent port) once all nodes registered.");

namespace iommu {
namespace {

namespace v1 = ::iommu::v1;
using Clock = std::chrono::steady_clock;

// The Agent API for every node at once; stateless (see the file comment).
class FakeAgentService final : public v1::Agent::Service {
 public:
  grpc::Status CreateContainer(grpc::ServerContext*, const v1::AgentCreateContainerRequest* req,
                               v1::AgentContainer* out) override {
    creates_.fetch_add(1, std::memory_order_relaxed);
    out->set_id(req->container_id());
    out->set_tenant_id(req->tenant_id());
    *out->mutable_devices() = req->devices();
    out->set_pin_budget_bytes(req->pin_budget_bytes());
    FillGeometry(out->mutable_geometry());
    return grpc::Status::OK;
  }
  grpc::Status DestroyContainer(grpc::ServerContext*, const v1::AgentDestroyContainerRequest*,
                                v1::AgentDestroyContainerResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status SetPinBudgets(grpc::ServerContext*, const v1::SetPinBudgetsRequest*,
                             v1::SetPinBudgetsResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status SetWindows(grpc::ServerContext*, const v1::SetWindowsRequest*,
                          v1::SetWindowsResponse*) override {
    return grpc::Status::OK;
  }

  // What agent/sim_backend.cc reports: usable below and above the x86 MSI
  // hole, 4K/2M/1G pages.
  static void FillGeometry(v1::ContainerGeometry* g) {
    auto* r = g->add_usable_ranges();
    r->set_start(0);
    r->set_last(0xfedfffff);
    r = g->add_usable_ranges();
    r->set_start(0xfef00000);
    r->set_last(0x7fffffffff);
    g->set_page_size_bitmap(0x40201000);
    g->set_max_mappings(65535);
  }

  int64_t creates() const { return creates_.load(); }

 private:
  std::atomic<int64_t> creates_{0};
};

// `session` and `next_heartbeat` belong to whoever holds the node: a
// register thread while `joined` is false, its heartbeat thread once a
// register thread set it (release/acquire hands them over).
struct SimNode {
  std::string name;
  std::string session;
  Clock::time_point next_heartbeat;
  std::atomic<bool> joined{false};
};

// Nodes waiting to (re-)register, in order.
class RegisterQueue {
 public:
  void Push(int node) {
    absl::MutexLock l(&mu_);
    pending_.push_back(node);
  }
  int Pop() {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](std::deque<int>* q) { return !q->empty(); }, &pending_));
    const int node = pending_.front();
    pending_.pop_front();
    return node;
  }

 private:
  absl::Mutex mu_;
  std::deque<int> pending_ ABSL_GUARDED_BY(mu_);
};

struct Stats {
  absl::Mutex mu;
  std::vector<uint32_t> heartbeat_us ABSL_GUARDED_BY(mu);
  int64_t heartbeat_failures ABSL_GUARDED_BY(mu) = 0;
  int64_t registrations ABSL_GUARDED_BY(mu) = 0;
  int64_t late ABSL_GUARDED_BY(mu) = 0;  // Heartbeats sent > 1 interval after due.
};

class Fleet {
 public:
  Fleet(std::shared_ptr<grpc::Channel> channel, std::string agent_address)
      : registry_(v1::NodeRegistry::NewStub(channel)), agent_address_(std::move(agent_address)) {}

  grpc::Status Register(SimNode* node) {
    v1::RegisterRequest req;
    req.set_node(node->name);
    req.set_agent_address(agent_address_);
    req.set_backend("sim");
    req.set_simulated(true);
    req.set_agent_version("bench-fake-agents");
    req.set_launcher_socket("/nonexistent/" + node->name + ".sock");
    const int devices = absl::GetFlag(FLAGS_devices_per_node);
    for (int i = 0; i < devices; ++i) {
      v1::Device* d = req.add_devices();
      // Bus, device: 32 devices per bus, function 0.
      d->set_address(absl::StrFormat("0000:%02x:%02x.0", 1 + i / 32, i % 32));
      d->set_iommu_group(100 + i);
      d->set_vendor_id(0x1234);
      d->set_device_id(0x11e8);
      d->set_driver("vfio-pci");
      d->set_assignable(true);
    }
    v1::RegisterResponse resp;
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      grpc::Status s = registry_->Register(&ctx, req, &resp);
      if (!s.ok()) return s;
    }
    // Reconcile: we hold whatever the broker wants (stateless agent).
    v1::ReconciledRequest rec;
    rec.set_node(node->name);
    rec.set_session_id(resp.session_id());
    for (v1::AgentContainer& c : *resp.mutable_desired_containers()) {
      *rec.add_containers() = std::move(c);
    }
    v1::ReconciledResponse rec_resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    grpc::Status s = registry_->Reconciled(&ctx, rec, &rec_resp);
    if (!s.ok()) return s;
    node->session = resp.session_id();
    interval_ms_.store(std::max<uint32_t>(resp.heartbeat_interval_ms(), 10));
    node->next_heartbeat = Clock::now() + std::chrono::milliseconds(interval_ms_.load());
    node->joined.store(true, std::memory_order_release);
    absl::MutexLock l(&stats_.mu);
    ++stats_.registrations;
    return grpc::Status::OK;
  }

  // Registers the nodes `queue` hands out, forever; a failed attempt puts
  // the node back at the end after 200 ms. A node's first registration
  // failing 20 times in a row is counted in `failed` and not retried.
  void RegisterLoop(std::vector<SimNode>* nodes, RegisterQueue* queue,
                    std::vector<int>* first_failures, std::atomic<int>* first_done,
                    std::atomic<int>* failed) {
    for (;;) {
      const int i = queue->Pop();
      SimNode& n = (*nodes)[i];
      const bool first = n.session.empty();
      grpc::Status s = Register(&n);
      if (s.ok()) {
        if (first) first_done->fetch_add(1);
        continue;
      }
      std::fprintf(stderr, "fake_agents: register %s: %s\n", n.name.c_str(),
                   s.error_message().c_str());
      if (first && ++(*first_failures)[i] >= 20) {
        failed->fetch_add(1);
        first_done->fetch_add(1);
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      queue->Push(i);
    }
  }

  // Heartbeats the joined nodes[i] for i % threads == t, forever; a node the
  // broker forgot goes to `queue` to register again.
  void HeartbeatLoop(std::vector<SimNode>* nodes, int t, int threads, RegisterQueue* queue) {
    for (;;) {
      Clock::time_point soonest = Clock::now() + std::chrono::milliseconds(interval_ms_.load());
      for (size_t i = t; i < nodes->size(); i += threads) {
        SimNode& n = (*nodes)[i];
        if (!n.joined.load(std::memory_order_acquire)) continue;
        const auto now = Clock::now();
        if (n.next_heartbeat > now) {
          soonest = std::min(soonest, n.next_heartbeat);
          continue;
        }
        const auto interval = std::chrono::milliseconds(interval_ms_.load());
        const bool late = now - n.next_heartbeat > interval;
        if (!HeartbeatOne(&n, late)) {
          n.joined.store(false, std::memory_order_relaxed);
          queue->Push(static_cast<int>(i));
          continue;
        }
        n.next_heartbeat += interval;
        if (late) n.next_heartbeat = Clock::now() + interval;  // Do not burst to catch up.
        soonest = std::min(soonest, n.next_heartbeat);
      }
      std::this_thread::sleep_until(soonest);
    }
  }

  void ReportLoop(int nodes, const FakeAgentService& service) {
    const auto period =
        std::chrono::duration<double>(absl::GetFlag(FLAGS_report_s));
    int64_t last_creates = 0;
    for (;;) {
      std::this_thread::sleep_for(period);
      std::vector<uint32_t> us;
      int64_t failures, regs, late;
      {
        absl::MutexLock l(&stats_.mu);
        us.swap(stats_.heartbeat_us);
        failures = stats_.heartbeat_failures;
        regs = stats_.registrations;
        late = stats_.late;
        stats_.heartbeat_failures = stats_.registrations = stats_.late = 0;
      }
      std::sort(us.begin(), us.end());
      auto pct = [&](double q) -> uint32_t {
        return us.empty() ? 0 : us[static_cast<size_t>(q * (us.size() - 1))];
      };
      const int64_t creates = service.creates();
      std::printf(
          "fake_agents: nodes=%d heartbeats=%zu hb_p50_us=%u hb_p99_us=%u hb_max_us=%u "
          "hb_failures=%lld late=%lld registrations=%lld agent_creates=%lld\n",
          nodes, us.size(), pct(0.5), pct(0.99), us.empty() ? 0 : us.back(),
          static_cast<long long>(failures), static_cast<long long>(late),
          static_cast<long long>(regs), static_cast<long long>(creates - last_creates));
      std::fflush(stdout);
      last_creates = creates;
    }
  }

 private:
  // False when the broker forgot the node's session: it must register again.
  bool HeartbeatOne(SimNode* n, bool late) {
    v1::HeartbeatRequest req;
    req.set_node(n->name);
    req.set_session_id(n->session);
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const auto t0 = Clock::now();
    grpc::Status s = registry_->Heartbeat(&ctx, req, &resp);
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    {
      absl::MutexLock l(&stats_.mu);
      if (s.ok()) {
        stats_.heartbeat_us.push_back(static_cast<uint32_t>(us));
      } else {
        ++stats_.heartbeat_failures;
      }
      if (late) ++stats_.late;
    }
    // The broker forgot this session (restart or timeout): join again.
    return s.error_code() != grpc::StatusCode::FAILED_PRECONDITION;
  }

  std::unique_ptr<v1::NodeRegistry::Stub> registry_;
  const std::string agent_address_;
  std::atomic<uint32_t> interval_ms_{1000};
  Stats stats_;
};

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string broker = absl::GetFlag(FLAGS_broker);
  if (broker.empty()) {
    std::fprintf(stderr, "fake_agents: --broker: required (host:port of an --insecure broker)\n");
    return 2;
  }
  const int n = absl::GetFlag(FLAGS_nodes);
  if (n < 1 || n > 10000) {
    std::fprintf(stderr, "fake_agents: --nodes: must be 1..10000, got %d\n", n);
    return 2;
  }

  FakeAgentService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "fake_agents: could not listen on 127.0.0.1\n");
    return 1;
  }
  const std::string address = absl::StrFormat("127.0.0.1:%d", port);

  Fleet fleet(grpc::CreateChannel(broker, grpc::InsecureChannelCredentials()), address);
  std::vector<SimNode> nodes(n);
  for (int i = 0; i < n; ++i) {
    nodes[i].name = absl::StrFormat("%s%04d", absl::GetFlag(FLAGS_node_prefix), i);
  }
  const auto t0 = Clock::now();
  RegisterQueue queue;
  for (int i = 0; i < n; ++i) queue.Push(i);
  std::vector<int> first_failures(n, 0);  // Only its register thread touches a node's count.
  std::atomic<int> first_done{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, absl::GetFlag(FLAGS_register_threads)); ++t) {
    threads.emplace_back(
        [&] { fleet.RegisterLoop(&nodes, &queue, &first_failures, &first_done, &failed); });
  }
  const int hb_threads = std::max(1, absl::GetFlag(FLAGS_heartbeat_threads));
  for (int t = 0; t < hb_threads; ++t) {
    threads.emplace_back([&, t] { fleet.HeartbeatLoop(&nodes, t, hb_threads, &queue); });
  }
  while (first_done.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (failed.load() > 0) _exit(1);  // The threads above run forever.
  std::printf("fake_agents: registered %d nodes x %d devices in %.2f s; agent API at %s\n", n,
              absl::GetFlag(FLAGS_devices_per_node),
              std::chrono::duration<double>(Clock::now() - t0).count(), address.c_str());
  std::fflush(stdout);

  threads.emplace_back([&] { fleet.ReportLoop(n, service); });
  if (const std::string ready = absl::GetFlag(FLAGS_ready_file); !ready.empty()) {
    std::ofstream(ready + ".tmp") << port << "\n";
    std::rename((ready + ".tmp").c_str(), ready.c_str());
  }
  server->Wait();  // Until killed (SIGTERM's default action ends the process).
  return 0;
}

}  // namespace
}  // namespace iommu

int main(int argc, char** argv) { return iommu::Main(argc, argv); }
