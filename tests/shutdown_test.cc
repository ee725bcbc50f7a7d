// SIGTERM, the graceful stop (issue 6): the broker stops taking new calls,
// lets the calls in flight finish within --shutdown-grace-ms, closes its store
// cleanly (the WAL checkpointed into the database), and exits 0; everything it
// acknowledged is there after a restart. While it drains, it answers every
// call that comes in with UNAVAILABLE "stopping" (which clients retry), not
// gRPC's CANCELLED. The agent, on SIGTERM, ends every launcher session
// (mappings unmapped, billing released) and exits 0.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/cluster.h"
#include "tests/daemon.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using testing::Daemon;
using ::testing::HasSubstr;

off_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

TEST(ShutdownTest, SigtermDrainsInFlightCallsClosesTheStoreAndLosesNothing) {
  const std::string dir = testing::NewTempDir("shutdown");
  const std::string broker = testing::RunfilePath("server/iommu-broker");
  const std::vector<std::string> args = {"--listen=127.0.0.1:0", "--db=" + dir + "/broker.db",
                                         "--shutdown-grace-ms=3000", "--insecure"};
  Daemon d;
  ASSERT_TRUE(d.Start(broker, args, dir, "broker").ok()) << d.Log();
  const std::string address = d.address();

  // Four clients create tenants as fast as they can; SIGTERM lands among them.
  std::mutex mu;
  std::map<std::string, bool> acked;  // Acknowledged creates.
  std::vector<grpc::StatusCode> refusals;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      auto stub = testing::InsecureBrokerStub(address);
      for (int i = 0; !stop.load(); ++i) {
        v1::CreateTenantRequest req;
        req.set_tenant_id(absl::StrCat("t", c, "-", i));
        req.set_request_id(req.tenant_id());
        req.mutable_quota()->set_pinned_bytes(4096);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        v1::Tenant out;
        grpc::Status s = stub->CreateTenant(&ctx, req, &out);
        std::lock_guard<std::mutex> l(mu);
        if (s.ok()) {
          acked[out.id()] = true;
        } else {
          refusals.push_back(s.error_code());
          if (refusals.size() > 50) return;  // The broker is gone.
        }
      }
    });
  }
  // Let some work be acknowledged first.
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (acked.size() >= 50) break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(d.Stop(), 0) << d.Log();  // SIGTERM and wait.
  const absl::Duration took = absl::Now() - t0;
  stop = true;
  for (auto& t : clients) t.join();

  const std::string log = d.Log();
  EXPECT_THAT(log, HasSubstr("event=stopping"));
  EXPECT_THAT(log, HasSubstr("event=drained"));
  EXPECT_THAT(log, HasSubstr("event=stopped"));
  // The grace period bounds the stop (with room for a slow machine).
  EXPECT_LT(took, absl::Seconds(20));
  // Refused calls are refused cleanly, never half-done: only codes that mean
  // "not served" (the client may retry them with the same request id).
  for (grpc::StatusCode code : refusals) {
    EXPECT_TRUE(code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED ||
                code == grpc::StatusCode::DEADLINE_EXCEEDED)
        << code;
  }
  // Closed cleanly: SQLite checkpointed the WAL into the database on close.
  EXPECT_EQ(FileSize(dir + "/broker.db-wal"), 0);

  // Everything acknowledged is there after a restart.
  Daemon again;
  ASSERT_TRUE(again.Start(broker, args, dir, "broker").ok()) << again.Log();
  auto stub = testing::InsecureBrokerStub(again.address());
  std::map<std::string, bool> seen;
  v1::ListTenantsRequest req;
  req.set_page_size(1000);
  for (;;) {
    grpc::ClientContext ctx;
    v1::ListTenantsResponse resp;
    ASSERT_TRUE(stub->ListTenants(&ctx, req, &resp).ok());
    for (const auto& t : resp.tenants()) seen[t.id()] = true;
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  for (const auto& [id, unused] : acked) EXPECT_TRUE(seen.count(id)) << id << " was lost";
  EXPECT_GE(acked.size(), 50u);
  stub.reset();
  EXPECT_EQ(again.Stop(), 0);
}

// Whether bytes sent to `port` on loopback wait unread in a receive queue:
// a call reached a process that is stopped. gRPC listens on IPv6 sockets
// (IPv4 clients appear v4-mapped), so both tables are read.
bool UnreadBytesTo(int port) {
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    const std::string table((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipEmpty())) {
      // "sl local_address rem_address st tx_queue:rx_queue ...", addresses
      // as hex "ADDR:PORT".
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() < 5) continue;
      std::vector<absl::string_view> local = absl::StrSplit(f[1], ':');
      std::vector<absl::string_view> queues = absl::StrSplit(f[4], ':');
      uint32_t local_port = 0;
      uint32_t rx = 0;
      if (local.size() != 2 || queues.size() != 2 || !absl::SimpleHexAtoi(local[1], &local_port) ||
          !absl::SimpleHexAtoi(queues[1], &rx)) {
        continue;
      }
      if (static_cast<int>(local_port) == port && rx > 0) return true;
    }
  }
  return false;
}

TEST(ShutdownTest, WhileDrainingNewCallsAreRefusedAsRetryableAndTheCallInFlightIsAnswered) {
  // A grace long enough that only the call in flight ends the drain.
  testing::ClusterOptions options;
  options.broker_args = {"--shutdown-grace-ms=120000", "--agent-timeout-ms=120000",
                         "--node-timeout-ms=600000"};
  testing::Cluster cluster(options);
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  ASSERT_TRUE(cluster.StartAgent("n1", "0000:00:04.0=1234:11e8@4").ok()) << cluster.broker().Log();
  Daemon& b = cluster.broker();
  Daemon& agent = cluster.agent("n1");
  auto stub = cluster.BrokerStub();
  {
    grpc::ClientContext ctx;
    v1::CreateTenantRequest req;
    req.set_tenant_id("t");
    req.mutable_quota()->set_pinned_bytes(1 << 20);
    v1::Tenant out;
    ASSERT_TRUE(stub->CreateTenant(&ctx, req, &out).ok());
  }

  // The agent stops: the broker's CreateContainer waits on it, in flight.
  ASSERT_EQ(kill(agent.pid(), SIGSTOP), 0);
  grpc::Status created;
  v1::Container container;
  std::thread create([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    v1::CreateContainerRequest req;
    req.set_request_id("in-flight");
    req.set_tenant_id("t");
    req.set_node("n1");
    req.add_devices("0000:00:04.0");
    created = stub->CreateContainer(&ctx, req, &container);
  });
  ASSERT_TRUE(testing::PollUntil([&] { return UnreadBytesTo(agent.port()); }, absl::Seconds(60)))
      << b.Log();
  ASSERT_EQ(kill(b.pid(), SIGTERM), 0);

  // Draining: a call is refused, as retryable, by the broker itself (the
  // connection stays up while the call in flight runs).
  grpc::Status refused;
  ASSERT_TRUE(testing::PollUntil(
      [&] {
        grpc::ClientContext ctx;
        v1::ListTenantsRequest req;
        v1::ListTenantsResponse resp;
        refused = stub->ListTenants(&ctx, req, &resp);
        return !refused.ok();
      },
      absl::Seconds(60)));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("is stopping; retry"));

  // The call in flight gets its answer, and the broker then exits cleanly.
  ASSERT_EQ(kill(agent.pid(), SIGCONT), 0);
  create.join();
  EXPECT_TRUE(created.ok()) << created.error_code() << " " << created.error_message();
  EXPECT_EQ(b.Wait(), 0) << b.Log();
  EXPECT_THAT(b.Log(), HasSubstr("event=drained"));

  // What it acknowledged is there after a restart.
  ASSERT_TRUE(cluster.StartBroker().ok()) << b.Log();
  auto after = cluster.BrokerStub();
  grpc::ClientContext ctx;
  v1::GetContainerRequest get;
  get.set_container_id(container.id());
  v1::Container stored;
  EXPECT_TRUE(after->GetContainer(&ctx, get, &stored).ok()) << container.id();
  after.reset();
  EXPECT_EQ(b.Stop(), 0);
  EXPECT_EQ(agent.Stop(), 0) << agent.Log();
}

}  // namespace
}  // namespace iommu
