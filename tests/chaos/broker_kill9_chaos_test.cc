// Chaos scenario 1: the broker is killed with SIGKILL over and over while
// several clients mutate through it (tenants, containers on a simulated
// agent, windows allocated and released, containers deleted), every
// mutation with an explicit request id. Clients that lose an answer either
// retry the same request id until the broker answers (as a careful client
// does) or abandon it. After the last restart the test checks DESIGN.md
// invariant 5 and the API's idempotency promise on the running system:
//   * every acknowledged mutation is visible (created objects with the
//     acknowledged fields, deleted/released objects gone);
//   * retrying each acknowledged request id returns the first answer;
//   * nothing exists that no request asked for: objects nobody acknowledged
//     are at most the abandoned creates, and never half (a window without
//     its container, a container without its tenant);
//   * windows of a container never overlap; the counters the broker reports
//     (GetUsage, Container.window_*, Node.container_count) equal a recount;
//   * the agent holds exactly the containers the broker lists, all READY.
#include <signal.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"
#include "proto/broker.grpc.pb.h"
#include "tests/chaos/chaos_util.h"
#include "tests/cluster.h"

namespace iommu {
namespace {

using chaos::Note;
using google::protobuf::util::MessageDifferencer;

constexpr int kWorkers = 4;
constexpr int kCycles = 6;
constexpr int kDevices = 16;
constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;

std::string SimDevices() {
  std::vector<std::string> d;
  for (int i = 0; i < kDevices; ++i) {
    d.push_back(absl::StrFormat("0000:00:%02x.0=1234:11e8@%d", i + 4, i + 5));
  }
  return absl::StrJoin(d, ",");
}

enum class Op { kCreateTenant, kCreateContainer, kAllocateWindow, kReleaseWindow, kDeleteContainer };

const char* OpName(Op op) {
  switch (op) {
    case Op::kCreateTenant:
      return "CreateTenant";
    case Op::kCreateContainer:
      return "CreateContainer";
    case Op::kAllocateWindow:
      return "AllocateWindow";
    case Op::kReleaseWindow:
      return "ReleaseWindow";
    case Op::kDeleteContainer:
      return "DeleteContainer";
  }
  return "?";
}

// One acknowledged mutation: what was asked and the first answer.
struct Acked {
  Op op;
  std::string request;   // Serialized request (with its request_id).
  std::string response;  // Serialized first answer.
};

// What one client knows after its acknowledged answers.
struct WorkerState {
  std::vector<Acked> acked;
  std::map<std::string, v1::Container> containers;  // Live: acked create, no acked delete.
  std::map<std::string, v1::Window> windows;        // Live: acked allocate, no acked release.
  std::set<std::string> deleted_containers;         // Acked delete (or deleted with one).
  std::set<std::string> released_windows;           // Acked release.
  std::set<std::string> unknown;                    // Fate unknown (abandoned delete/release).
  int abandoned_creates = 0;   // Containers that may exist unacknowledged.
  int abandoned_windows = 0;   // Windows likewise.
  int abandoned_other = 0;
  int refused = 0;             // Definite refusals (changed nothing).
  std::map<std::string, int> refusals;  // "Op CODE: message prefix" -> count.
  int retried_to_answer = 0;   // Uncertain answers resolved by retrying the request id.
};

class Worker {
 public:
  Worker(int index, std::string address, std::atomic<bool>* stop)
      : index_(index), tenant_(absl::StrCat("chaos-", index)), address_(std::move(address)),
        stop_(stop), rng_(1000 + index) {}

  void Run() {
    stub_ = chaos::BrokerStubFor(address_);
    const absl::Time give_up = absl::Now() + absl::Seconds(90);  // Bound, whatever happens.
    // The tenant first: until it is acknowledged nothing else can be done.
    while (!stop_->load() && absl::Now() < give_up) {
      v1::CreateTenantRequest req;
      req.set_request_id(NextId("tenant"));
      req.set_tenant_id(tenant_);
      req.mutable_quota()->set_pinned_bytes(1024 * kMiB);
      v1::Tenant out;
      const Outcome o = Do(Op::kCreateTenant, &v1::Broker::Stub::CreateTenant, req, &out);
      if (o == Outcome::kAcked) break;
      // ALREADY_EXISTS after an abandoned create that did commit: it exists.
      if (o == Outcome::kRefused && last_code_ == grpc::StatusCode::ALREADY_EXISTS) break;
    }
    while (!stop_->load() && absl::Now() < give_up) Step();
  }

  // Only after the worker's thread has been joined.
  WorkerState& state() { return st_; }
  // Any time (progress reports).
  int acked_count() const { return acked_count_.load(std::memory_order_relaxed); }
  const std::string& tenant() const { return tenant_; }

 private:
  enum class Outcome { kAcked, kRefused, kAbandoned };

  std::string NextId(const char* what) {
    return absl::StrCat("w", index_, "-", what, "-", seq_++);
  }

  // Sends `req`; on an uncertain failure retries the same request id (three
  // times in four) until a definite answer, or abandons it.
  template <typename Req, typename Resp, typename Method>
  Outcome Do(Op op, Method method, const Req& req, Resp* out) {
    const bool persist = rng_() % 4 != 0;
    bool retried = false;
    for (int attempt = 0; attempt < 400; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
      grpc::Status s = (stub_.get()->*method)(&ctx, req, out);
      last_code_ = s.error_code();
      last_retried_ = retried;
      if (s.ok()) {
        st_.acked.push_back({op, req.SerializeAsString(), out->SerializeAsString()});
        acked_count_.fetch_add(1, std::memory_order_relaxed);
        if (retried) ++st_.retried_to_answer;
        return Outcome::kAcked;
      }
      if (!chaos::IsUncertain(s.error_code())) {
        ++st_.refused;
        const auto code = static_cast<absl::StatusCode>(s.error_code());
        ++st_.refusals[absl::StrCat(OpName(op), retried ? " (retried) " : " ",
                                    absl::StatusCodeToString(code), ": ",
                                    s.error_message().substr(0, 60))];
        return Outcome::kRefused;
      }
      if (!persist || stop_->load()) break;
      retried = true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return Outcome::kAbandoned;
  }

  void Step() {
    const int live = st_.containers.size();
    const int r = rng_() % 100;
    if (live < 2 || (live < 3 && r < 15)) return CreateContainer();
    if (r < 10) return DeleteContainer();
    if (r < 35 && !st_.windows.empty()) return ReleaseWindow();
    return AllocateWindow();
  }

  template <typename Map>
  auto Pick(Map& m) {
    auto it = m.begin();
    std::advance(it, rng_() % m.size());
    return it;
  }

  void CreateContainer() {
    v1::CreateContainerRequest req;
    req.set_request_id(NextId("container"));
    req.set_tenant_id(tenant_);
    req.mutable_selector()->set_count(1);
    req.set_pin_budget_bytes(kMiB);
    v1::Container out;
    switch (Do(Op::kCreateContainer, &v1::Broker::Stub::CreateContainer, req, &out)) {
      case Outcome::kAcked:
        st_.containers[out.id()] = out;
        break;
      case Outcome::kAbandoned:
        ++st_.abandoned_creates;
        break;
      case Outcome::kRefused:
        break;
    }
  }

  void DeleteContainer() {
    auto it = Pick(st_.containers);
    const std::string id = it->first;
    v1::DeleteContainerRequest req;
    req.set_request_id(NextId("delete"));
    req.set_container_id(id);
    v1::DeleteContainerResponse out;
    Outcome o = Do(Op::kDeleteContainer, &v1::Broker::Stub::DeleteContainer, req, &out);
    // A delete cut off by the kill after its intent was durable and the agent
    // destroyed the container is finished by the next broker when the agent
    // registers (the agent no longer holds it); the retry then finds no
    // container. NOT_FOUND after an uncertain first attempt says "gone",
    // not "refused".
    if (o == Outcome::kRefused && last_retried_ && last_code_ == grpc::StatusCode::NOT_FOUND) {
      o = Outcome::kAbandoned;
    }
    if (o == Outcome::kRefused) return;
    // Acknowledged: gone with its windows. Abandoned: unknown, with them.
    std::set<std::string>& to = o == Outcome::kAcked ? st_.deleted_containers : st_.unknown;
    if (o == Outcome::kAbandoned) ++st_.abandoned_other;
    to.insert(id);
    for (auto w = st_.windows.begin(); w != st_.windows.end();) {
      if (w->second.container_id() == id) {
        (o == Outcome::kAcked ? st_.released_windows : st_.unknown).insert(w->first);
        w = st_.windows.erase(w);
      } else {
        ++w;
      }
    }
    st_.containers.erase(id);
  }

  void AllocateWindow() {
    auto it = Pick(st_.containers);
    int held = 0;
    for (const auto& [id, w] : st_.windows) held += w.container_id() == it->first;
    if (held >= 6) return ReleaseWindow();
    static constexpr uint64_t kSizes[] = {4 * kKiB, 64 * kKiB, kMiB, 2 * kMiB};
    const uint64_t size = kSizes[rng_() % 4];
    v1::AllocateWindowRequest req;
    req.set_request_id(NextId("window"));
    req.set_container_id(it->first);
    req.set_size(size);
    req.set_alignment(rng_() % 2 ? size : 0);
    v1::Window out;
    switch (Do(Op::kAllocateWindow, &v1::Broker::Stub::AllocateWindow, req, &out)) {
      case Outcome::kAcked:
        st_.windows[out.id()] = out;
        break;
      case Outcome::kAbandoned:
        ++st_.abandoned_windows;
        break;
      case Outcome::kRefused:
        break;
    }
  }

  void ReleaseWindow() {
    if (st_.windows.empty()) return;
    auto it = Pick(st_.windows);
    const std::string id = it->first;
    v1::ReleaseWindowRequest req;
    req.set_request_id(NextId("release"));
    req.set_window_id(id);
    v1::ReleaseWindowResponse out;
    const Outcome o = Do(Op::kReleaseWindow, &v1::Broker::Stub::ReleaseWindow, req, &out);
    if (o == Outcome::kRefused) return;
    if (o == Outcome::kAcked) {
      st_.released_windows.insert(id);
    } else {
      st_.unknown.insert(id);
      ++st_.abandoned_other;
    }
    st_.windows.erase(id);
  }

  const int index_;
  const std::string tenant_;
  const std::string address_;
  std::atomic<bool>* const stop_;
  std::mt19937 rng_;
  std::unique_ptr<v1::Broker::Stub> stub_;
  grpc::StatusCode last_code_ = grpc::StatusCode::OK;
  bool last_retried_ = false;  // The last answer came to a retried request id.
  int seq_ = 0;
  std::atomic<int> acked_count_{0};
  WorkerState st_;
};

// Re-sends an acknowledged request; returns "" if the answer equals the first
// one, else what differs.
std::string Replay(v1::Broker::Stub* stub, const Acked& a) {
  auto call = [&](auto method, auto req, auto resp) -> std::string {
    req.ParseFromString(a.request);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::Status s = (stub->*method)(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::StrCat(req.request_id(), ": retry answered ", s.error_code(), " ",
                          s.error_message());
    }
    decltype(resp) first;
    first.ParseFromString(a.response);
    if (!MessageDifferencer::Equals(first, resp)) {
      return absl::StrCat(req.request_id(), ": first answer {", first.ShortDebugString(),
                          "}, retry answered {", resp.ShortDebugString(), "}");
    }
    return "";
  };
  switch (a.op) {
    case Op::kCreateTenant:
      return call(&v1::Broker::Stub::CreateTenant, v1::CreateTenantRequest(), v1::Tenant());
    case Op::kCreateContainer:
      return call(&v1::Broker::Stub::CreateContainer, v1::CreateContainerRequest(),
                  v1::Container());
    case Op::kAllocateWindow:
      return call(&v1::Broker::Stub::AllocateWindow, v1::AllocateWindowRequest(), v1::Window());
    case Op::kReleaseWindow:
      return call(&v1::Broker::Stub::ReleaseWindow, v1::ReleaseWindowRequest(),
                  v1::ReleaseWindowResponse());
    case Op::kDeleteContainer:
      return call(&v1::Broker::Stub::DeleteContainer, v1::DeleteContainerRequest(),
                  v1::DeleteContainerResponse());
  }
  return "unknown op";
}

std::set<std::string> AgentContainers(testing::Cluster& cluster, const std::string& node) {
  auto agent = cluster.AgentStub(node);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::GetInventoryResponse inv;
  std::set<std::string> ids;
  if (!agent->GetInventory(&ctx, v1::GetInventoryRequest(), &inv).ok()) return {"<unreachable>"};
  for (const auto& c : inv.containers()) ids.insert(c.id());
  return ids;
}

TEST(BrokerKill9ChaosTest, AcknowledgedMutationsSurviveRepeatedKill9UnderConcurrentClients) {
  const absl::Time start = absl::Now();
  testing::Cluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  absl::Status agent_up = cluster.StartAgent("n1", SimDevices());
  ASSERT_TRUE(agent_up.ok()) << agent_up << "\n" << cluster.agent("n1").Log();

  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) {
    workers.push_back(std::make_unique<Worker>(i, cluster.broker_address(), &stop));
  }
  for (auto& w : workers) threads.emplace_back([&w] { w->Run(); });

  std::mt19937 rng(7);
  auto acked_total = [&] {
    int n = 0;
    for (auto& w : workers) n += w->acked_count();
    return n;
  };
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    absl::Status ready = cluster.WaitForNodeState("n1", v1::NODE_STATE_READY);
    ASSERT_TRUE(ready.ok()) << ready << "\n" << cluster.agent("n1").Log();
    absl::SleepFor(absl::Milliseconds(300 + rng() % 600));
    cluster.broker().Kill();  // SIGKILL mid-stream.
    Note(absl::StrCat("cycle ", cycle, ": broker killed with SIGKILL (about ", acked_total(),
                      " acknowledged mutations so far)"));
    absl::SleepFor(absl::Milliseconds(rng() % 200));
    ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  }
  // Let the clients see the last broker, then stop them and kill it once
  // more, so every acknowledged answer came from a broker that was killed.
  absl::Status ready = cluster.WaitForNodeState("n1", v1::NODE_STATE_READY);
  ASSERT_TRUE(ready.ok()) << ready;
  absl::SleepFor(absl::Milliseconds(300));
  stop = true;
  for (auto& t : threads) t.join();
  cluster.broker().Kill();
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  ready = cluster.WaitForNodeState("n1", v1::NODE_STATE_READY);
  ASSERT_TRUE(ready.ok()) << ready << "\n" << cluster.agent("n1").Log();

  auto stub = chaos::BrokerStubFor(cluster.broker_address());
  absl::StatusOr<chaos::Fleet> fleet = chaos::ReadSettledFleet(stub.get());
  ASSERT_TRUE(fleet.ok()) << fleet.status();

  // 1. Every acknowledged mutation is visible; nothing unasked exists.
  int acked = 0, live_containers = 0, live_windows = 0, gone = 0, abandoned = 0, refused = 0,
      retried = 0, orphan_containers = 0, orphan_windows = 0;
  for (auto& w : workers) {
    WorkerState& st = w->state();
    acked += st.acked.size();
    refused += st.refused;
    retried += st.retried_to_answer;
    abandoned += st.abandoned_creates + st.abandoned_windows + st.abandoned_other;
    ASSERT_TRUE(fleet->tenants.count(w->tenant())) << w->tenant();
    for (const auto& [id, want] : st.containers) {
      auto it = fleet->containers.find(id);
      if (it == fleet->containers.end()) {
        ADD_FAILURE() << "acknowledged container lost: " << want.ShortDebugString();
        continue;
      }
      EXPECT_EQ(it->second.tenant_id(), want.tenant_id()) << id;
      EXPECT_EQ(it->second.node(), want.node()) << id;
      EXPECT_EQ(absl::StrJoin(it->second.devices(), ","), absl::StrJoin(want.devices(), ","));
      EXPECT_EQ(it->second.pin_budget_bytes(), want.pin_budget_bytes()) << id;
      EXPECT_EQ(it->second.state(), v1::CONTAINER_STATE_READY) << it->second.ShortDebugString();
      ++live_containers;
    }
    for (const auto& [id, want] : st.windows) {
      auto it = fleet->windows.find(id);
      if (it == fleet->windows.end()) {
        ADD_FAILURE() << "acknowledged window lost: " << want.ShortDebugString();
        continue;
      }
      EXPECT_TRUE(MessageDifferencer::Equals(it->second, want))
          << "acknowledged " << want.ShortDebugString() << ", listed "
          << it->second.ShortDebugString();
      ++live_windows;
    }
    for (const std::string& id : st.deleted_containers) {
      EXPECT_FALSE(fleet->containers.count(id)) << "acknowledged delete undone: " << id;
      ++gone;
    }
    for (const std::string& id : st.released_windows) {
      EXPECT_FALSE(fleet->windows.count(id)) << "acknowledged release undone: " << id;
      ++gone;
    }
    // Objects of this tenant that no acknowledged answer named.
    int extra_containers = 0, extra_windows = 0;
    for (const auto& [id, c] : fleet->containers) {
      if (c.tenant_id() == w->tenant() && !st.containers.count(id) && !st.unknown.count(id)) {
        ++extra_containers;
      }
    }
    for (const auto& [id, win] : fleet->windows) {
      if (win.tenant_id() == w->tenant() && !st.windows.count(id) && !st.unknown.count(id)) {
        ++extra_windows;
      }
    }
    EXPECT_LE(extra_containers, st.abandoned_creates)
        << w->tenant() << ": containers nobody acknowledged beyond the abandoned creates";
    EXPECT_LE(extra_windows, st.abandoned_windows)
        << w->tenant() << ": windows nobody acknowledged beyond the abandoned allocations";
    orphan_containers += extra_containers;
    orphan_windows += extra_windows;
  }
  std::map<std::string, int> refusals;
  for (auto& w : workers) {
    for (const auto& [what, n] : w->state().refusals) refusals[what] += n;
  }
  for (const auto& [what, n] : refusals) {
    Note(absl::StrCat("refused ", n, "x: ", what));
    // A retry carries the same request id and content as the request whose
    // answer was lost: the broker must answer it as the first time, never
    // as a different request or as a duplicate of itself.
    EXPECT_EQ(what.find("(retried) FAILED_PRECONDITION"), std::string::npos) << what;
    EXPECT_EQ(what.find("(retried) ALREADY_EXISTS"), std::string::npos) << what;
  }
  // Every tenant is one of the workers'.
  EXPECT_EQ(fleet->tenants.size(), static_cast<size_t>(kWorkers));

  // 2. Structure and counters.
  const std::vector<std::string> violations = chaos::CheckFleet(*fleet);
  EXPECT_TRUE(violations.empty()) << absl::StrJoin(violations, "\n");

  // 3. Retrying every acknowledged request returns the first answer.
  int replayed = 0;
  for (auto& w : workers) {
    for (const Acked& a : w->state().acked) {
      const std::string diff = Replay(stub.get(), a);
      EXPECT_EQ(diff, "");
      ++replayed;
    }
  }
  // The retries changed nothing.
  absl::StatusOr<chaos::Fleet> after = chaos::ReadSettledFleet(stub.get());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->containers.size(), fleet->containers.size());
  EXPECT_EQ(after->windows.size(), fleet->windows.size());

  // 4. The agent holds exactly what the broker lists (orphans of killed
  // creates were dropped at reconcile).
  std::set<std::string> listed;
  for (const auto& [id, c] : after->containers) listed.insert(id);
  std::set<std::string> held;
  for (int i = 0; i < 100; ++i) {
    held = AgentContainers(cluster, "n1");
    if (held == listed) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(held, listed) << "agent n1 vs the broker's list";

  Note(absl::StrFormat(
      "%d kill -9 cycles, %d clients: %d acknowledged mutations (%d answered only after retrying "
      "the request id), %d refused, %d abandoned unanswered",
      kCycles + 1, kWorkers, acked, retried, refused, abandoned));
  Note(absl::StrFormat(
      "verified after restart: %d live containers and %d live windows as acknowledged, %d "
      "acknowledged deletes/releases stay gone, %d unacknowledged containers and %d windows "
      "from abandoned requests (allowed, whole), %d retries returned the first answer",
      live_containers, live_windows, gone, orphan_containers, orphan_windows, replayed));
  Note(absl::StrFormat(
      "structure: %zu containers / %zu windows, no overlap, no orphan, GetUsage == recount for "
      "%zu tenants; agent holds the same %zu containers; wall time %s",
      after->containers.size(), after->windows.size(), after->tenants.size(), held.size(),
      absl::FormatDuration(absl::Now() - start)));
  // The run must have exercised something.
  EXPECT_GT(acked, 50);
}

}  // namespace
}  // namespace iommu
