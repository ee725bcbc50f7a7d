// The launcher path end to end: the broker, simulated agents and (for the
// kill -9 case) the iommu-launcher binary as real processes, the launcher
// client library over the agent's real unix socket. Proves on the running
// system that
//   * shared memory is billed once per page to its owner however many
//     containers or tenants map it (DESIGN.md invariant 3), and the broker's
//     usage follows the agent's ledger through heartbeats;
//   * a map past the tenant's pin budget is RESOURCE_EXHAUSTED and changes
//     nothing (invariant 4), also after the quota is lowered below usage;
//   * a launcher killed with SIGKILL leaves no mapping and no billing behind;
//   * mappings stay inside the caller's windows and unmap takes whole
//     mappings (invariant 2); no session reaches another's memory
//     (invariant 7); every bad input is refused with the field and the rule,
//     changes nothing, and leaks no fd in the agent.
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "common/unix_socket.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "launcher/client.h"
#include "proto/agent.grpc.pb.h"
#include "proto/broker.grpc.pb.h"
#include "proto/launcher.pb.h"
#include "tests/cluster.h"
#include "tests/launcher_process.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using launcher::LauncherClient;
using testing::Cluster;
using testing::LauncherProcess;

constexpr char kTwoEdus[] = "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6";
constexpr char kDevA[] = "0000:00:04.0";
constexpr char kDevB[] = "0000:00:05.0";
constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;

using testing::Call;
using testing::PollUntil;

// One tenant's billing on one node (agent PinUsage) or across the fleet
// (broker TenantUsage pinned/mapped).
struct Bill {
  uint64_t billed = 0;
  uint64_t mapped = 0;
  bool operator==(const Bill& o) const { return billed == o.billed && mapped == o.mapped; }
  bool operator!=(const Bill& o) const { return !(*this == o); }
};
void PrintTo(const Bill& b, std::ostream* os) {
  *os << absl::StrFormat("{billed=0x%x mapped=0x%x}", b.billed, b.mapped);
}

// An open launcher session: its connection and what OpenSession answered.
struct Session {
  std::unique_ptr<LauncherClient> client;
  v1::LauncherResponse::SessionOpened opened;
  LauncherClient* operator->() const { return client.get(); }
  uint64_t window_base(int i = 0) const { return opened.windows(i).base(); }
};

int CountFds(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n;
}

// The agent's answer to a raw request as a status (for requests the client
// library cannot make, e.g. a Map with an fd attached).
absl::Status RawCall(int fd, v1::LauncherRequest request, const std::vector<int>& fds,
                     uint64_t seq) {
  request.set_seq(seq);
  absl::Status sent = SendPacket(fd, request.SerializeAsString(), fds);
  if (!sent.ok()) return sent;
  absl::StatusOr<Packet> packet =
      RecvPacket(fd, kMaxLauncherPacketBytes, kMaxLauncherPacketFds);
  if (!packet.ok()) return packet.status();
  if (packet->eof) return absl::UnavailableError("raw: agent closed the connection");
  v1::LauncherResponse response;
  if (!response.ParseFromString(packet->bytes)) return absl::InternalError("raw: no parse");
  // seq 0: the transport refused the packet (over a limit, unparseable).
  if (response.seq() != seq && !(response.seq() == 0 && response.code() != 0)) {
    return absl::InternalError(absl::StrCat("raw: seq ", response.seq(), ", want ", seq));
  }
  return absl::Status(static_cast<absl::StatusCode>(response.code()), response.message());
}

class LauncherE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    broker_ = cluster_.BrokerStub();
    StartAgent("n1");
  }

  void StartAgent(const std::string& node) {
    absl::Status s = cluster_.StartAgent(node, kTwoEdus);
    ASSERT_TRUE(s.ok()) << s << "\n" << cluster_.agent(node).Log();
    agents_[node] = cluster_.AgentStub(node);
  }

  std::string Socket(const std::string& node) const {
    return absl::StrCat(cluster_.dir(), "/", node, ".sock");
  }

  void CreateTenant(const std::string& id, uint64_t pinned_bytes) {
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(pinned_bytes);
    v1::Tenant t;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::CreateTenant, req, &t);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  grpc::Status SetQuota(const std::string& tenant, uint64_t pinned_bytes) {
    v1::SetTenantQuotaRequest req;
    req.set_tenant_id(tenant);
    req.mutable_quota()->set_pinned_bytes(pinned_bytes);
    v1::Tenant t;
    return Call(broker_.get(), &v1::Broker::Stub::SetTenantQuota, req, &t);
  }

  // A container on `node` holding `device`, with one window of
  // `window_size` bytes. Records a failure and returns an empty id on error.
  std::string CreateContainer(const std::string& tenant, const std::string& node,
                              const std::string& device, uint64_t pin_budget = 0,
                              uint64_t window_size = kMiB) {
    return testing::CreateContainerWithWindow(broker_.get(), tenant, node, device, pin_budget,
                                              window_size);
  }

  std::string Grant(const std::string& container_id,
                    std::optional<uint32_t> launcher_uid = std::nullopt) {
    v1::GrantLauncherRequest req;
    req.set_container_id(container_id);
    req.set_ttl_seconds(300);
    if (launcher_uid.has_value()) req.set_launcher_uid(*launcher_uid);
    v1::GrantLauncherResponse out;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::GrantLauncher, req, &out);
    if (!s.ok()) ADD_FAILURE() << "GrantLauncher: " << s.error_message();
    return out.token();
  }

  // A new connection to `node`'s socket with a session opened on a fresh
  // grant for `container_id`.
  absl::StatusOr<Session> Open(const std::string& node, const std::string& container_id) {
    Session session;
    absl::StatusOr<std::unique_ptr<LauncherClient>> client = LauncherClient::Connect(Socket(node));
    if (!client.ok()) return client.status();
    session.client = *std::move(client);
    absl::StatusOr<v1::LauncherResponse::SessionOpened> opened =
        session->OpenSession(Grant(container_id));
    if (!opened.ok()) return opened.status();
    session.opened = *std::move(opened);
    if (session.opened.windows_size() == 0) return absl::InternalError("session has no window");
    return session;
  }

  // The agent ledger's billing per tenant (tenants with nothing pinned are
  // absent; Bill() for them).
  std::map<std::string, Bill> AgentUsage(const std::string& node) {
    v1::GetInventoryResponse inv;
    grpc::Status s =
        Call(agents_[node].get(), &v1::Agent::Stub::GetInventory, v1::GetInventoryRequest(), &inv);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::map<std::string, Bill> out;
    for (const v1::PinUsage& u : inv.usage()) {
      // A tenant that only maps memory another tenant owns is listed for its
      // kernel-counted bytes alone; the ledger bills it nothing.
      if (u.billed_bytes() == 0 && u.mapped_bytes() == 0) continue;
      out[u.tenant_id()] = {u.billed_bytes(), u.mapped_bytes()};
    }
    return out;
  }
  // What the kernel counts for the mappings `tenant`'s sessions made: every
  // mapping in full (0 when the tenant is not listed).
  uint64_t AgentKernelCounted(const std::string& node, const std::string& tenant) {
    v1::GetInventoryResponse inv;
    grpc::Status s =
        Call(agents_[node].get(), &v1::Agent::Stub::GetInventory, v1::GetInventoryRequest(), &inv);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const v1::PinUsage& u : inv.usage()) {
      if (u.tenant_id() == tenant) return u.kernel_counted_bytes();
    }
    return 0;
  }
  Bill AgentBill(const std::string& node, const std::string& tenant) {
    std::map<std::string, Bill> usage = AgentUsage(node);
    auto it = usage.find(tenant);
    return it == usage.end() ? Bill() : it->second;
  }

  v1::TenantUsage BrokerUsage(const std::string& tenant) {
    v1::GetUsageRequest req;
    req.set_tenant_id(tenant);
    v1::GetUsageResponse out;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::GetUsage, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.tenants_size() == 1 ? out.tenants(0) : v1::TenantUsage();
  }
  Bill BrokerBill(const std::string& tenant) {
    v1::TenantUsage u = BrokerUsage(tenant);
    return {u.pinned_bytes(), u.mapped_bytes()};
  }
  // Heartbeats carry the ledger to the broker every 100 ms.
  void ExpectBrokerBillSoon(const std::string& tenant, Bill want) {
    PollUntil([&] { return BrokerBill(tenant) == want; });
    EXPECT_EQ(BrokerBill(tenant), want) << "tenant " << tenant;
  }
  // Waits until the broker's per-node usage matches every agent's ledger.
  void WaitForBrokerToCatchUp() {
    const bool caught_up = PollUntil([&] {
      v1::GetUsageResponse all;
      if (!Call(broker_.get(), &v1::Broker::Stub::GetUsage, v1::GetUsageRequest(), &all).ok()) {
        return false;
      }
      std::map<std::pair<std::string, std::string>, Bill> broker, agents;
      for (const v1::NodeUsage& n : all.nodes()) {
        if (n.pinned_bytes() || n.mapped_bytes()) {
          broker[{n.node(), n.tenant_id()}] = {n.pinned_bytes(), n.mapped_bytes()};
        }
      }
      for (const auto& [node, stub] : agents_) {
        for (const auto& [tenant, bill] : AgentUsage(node)) agents[{node, tenant}] = bill;
      }
      return broker == agents;
    });
    EXPECT_TRUE(caught_up) << "the broker's usage never matched the agents' ledgers";
  }

  v1::AgentGetContainerResponse AgentContainer(const std::string& node,
                                               const std::string& container_id) {
    v1::AgentGetContainerRequest req;
    req.set_container_id(container_id);
    v1::AgentGetContainerResponse out;
    grpc::Status s = Call(agents_[node].get(), &v1::Agent::Stub::GetContainer, req, &out);
    EXPECT_TRUE(s.ok()) << container_id << ": " << s.error_message();
    return out;
  }

  // Everything a refused request must leave alone: every agent's containers
  // with their mappings and its ledger, and the broker's usage (after it has
  // caught up with the agents).
  std::string Snapshot() {
    WaitForBrokerToCatchUp();
    std::string out;
    for (const auto& [node, stub] : agents_) {
      v1::GetInventoryResponse inv;
      EXPECT_TRUE(
          Call(stub.get(), &v1::Agent::Stub::GetInventory, v1::GetInventoryRequest(), &inv).ok());
      absl::StrAppend(&out, "node ", node, ":\n", inv.DebugString());
      for (const v1::AgentContainer& c : inv.containers()) {
        absl::StrAppend(&out, AgentContainer(node, c.id()).DebugString());
      }
    }
    v1::GetUsageResponse usage;
    EXPECT_TRUE(
        Call(broker_.get(), &v1::Broker::Stub::GetUsage, v1::GetUsageRequest(), &usage).ok());
    absl::StrAppend(&out, "broker usage:\n", usage.DebugString());
    return out;
  }

  Cluster cluster_;
  std::unique_ptr<v1::Broker::Stub> broker_;
  std::map<std::string, std::unique_ptr<v1::Agent::Stub>> agents_;
};

// A grant bound to a launcher's uid opens a session only for that uid: a
// token that leaks to another user of the node is useless to it.
TEST_F(LauncherE2eTest, AGrantBoundToAUidIsRefusedFromAnyOther) {
  CreateTenant("acme", 64 * kMiB);
  const std::string c = CreateContainer("acme", "n1", kDevA);
  ASSERT_FALSE(c.empty());
  const uid_t me = getuid();
  absl::StatusOr<std::unique_ptr<LauncherClient>> client = LauncherClient::Connect(Socket("n1"));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<v1::LauncherResponse::SessionOpened> opened =
      (*client)->OpenSession(Grant(c, me + 1));
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kPermissionDenied) << opened.status();
  EXPECT_THAT(std::string(opened.status().message()),
              HasSubstr(absl::StrCat("issued for uid ", me + 1, ", presented by uid ", me)));
  client = LauncherClient::Connect(Socket("n1"));
  ASSERT_TRUE(client.ok()) << client.status();
  opened = (*client)->OpenSession(Grant(c, me));
  EXPECT_TRUE(opened.ok()) << opened.status();
}

// ------------------------------------------------------------- invariant 3

TEST_F(LauncherE2eTest, SameMemfdInTwoContainersIsBilledOnceAndMappedTwice) {
  CreateTenant("acme", 64 * kMiB);
  const std::string c1 = CreateContainer("acme", "n1", kDevA, 32 * kMiB);
  const std::string c2 = CreateContainer("acme", "n1", kDevB, 32 * kMiB);
  ASSERT_FALSE(HasFailure());

  ASSERT_OK_AND_ASSIGN(s1, Open("n1", c1));
  ASSERT_OK_AND_ASSIGN(s2, Open("n1", c2));
  ASSERT_OK_AND_ASSIGN(memfd, LauncherClient::CreateMemfd(kMiB, "guest"));
  ASSERT_OK_AND_ASSIGN(m1, s1->RegisterMemory(memfd.get(), "guest"));
  // The second session gets the same memory through its own fd.
  UniqueFd dup_fd(fcntl(memfd.get(), F_DUPFD_CLOEXEC, 0));
  ASSERT_TRUE(dup_fd.valid());
  ASSERT_OK_AND_ASSIGN(m2, s2->RegisterMemory(dup_fd.get(), "guest"));
  EXPECT_EQ(m1.owner_tenant(), "acme");
  EXPECT_FALSE(m1.shared());
  EXPECT_EQ(m2.owner_tenant(), "acme");
  EXPECT_TRUE(m2.shared());
  EXPECT_NE(m1.memory_id(), m2.memory_id());

  ASSERT_OK(s1->Map(m1.memory_id(), 0, kMiB, s1.window_base(), true, true));
  ASSERT_OK(s2->Map(m2.memory_id(), 0, kMiB, s2.window_base(), true, false));

  EXPECT_EQ(AgentBill("n1", "acme"), (Bill{kMiB, 2 * kMiB}));
  ExpectBrokerBillSoon("acme", {kMiB, 2 * kMiB});
  EXPECT_EQ(BrokerUsage("acme").dedup_saved_bytes(), kMiB);
  // Each container shows its own mapping, made by its own session.
  for (const auto& [c, s, m] : {std::make_tuple(c1, &s1, &m1), std::make_tuple(c2, &s2, &m2)}) {
    v1::AgentGetContainerResponse got = AgentContainer("n1", c);
    ASSERT_EQ(got.mappings_size(), 1) << got.DebugString();
    EXPECT_EQ(got.mappings(0).iova(), s->window_base());
    EXPECT_EQ(got.mappings(0).size(), kMiB);
    EXPECT_EQ(got.mappings(0).session_id(), s->opened.session_id());
    EXPECT_EQ(got.mappings(0).memory_id(), m->memory_id());
    EXPECT_EQ(got.mappings(0).owner_tenant(), "acme");
  }

  // One mapping gone: the pages are still pinned by the other.
  ASSERT_OK_AND_ASSIGN(unmapped1, s1->Unmap(s1.window_base(), kMiB));
  EXPECT_EQ(unmapped1, kMiB);
  EXPECT_EQ(AgentBill("n1", "acme"), (Bill{kMiB, kMiB}));
  ExpectBrokerBillSoon("acme", {kMiB, kMiB});
  EXPECT_EQ(BrokerUsage("acme").dedup_saved_bytes(), 0u);

  ASSERT_OK_AND_ASSIGN(unmapped2, s2->Unmap(s2.window_base(), kMiB));
  EXPECT_EQ(unmapped2, kMiB);
  EXPECT_EQ(AgentBill("n1", "acme"), Bill());
  EXPECT_TRUE(AgentUsage("n1").empty());
  ExpectBrokerBillSoon("acme", Bill());
  EXPECT_EQ(AgentContainer("n1", c1).mappings_size(), 0);
  EXPECT_EQ(AgentContainer("n1", c2).mappings_size(), 0);
}

TEST_F(LauncherE2eTest, MemoryHandedToAnotherTenantIsBilledToItsOwnerOnly) {
  CreateTenant("alpha", 16 * kMiB);
  CreateTenant("beta", 16 * kMiB);
  const std::string ca = CreateContainer("alpha", "n1", kDevA);
  const std::string cb = CreateContainer("beta", "n1", kDevB);
  ASSERT_FALSE(HasFailure());

  ASSERT_OK_AND_ASSIGN(sa, Open("n1", ca));
  ASSERT_OK_AND_ASSIGN(sb, Open("n1", cb));
  EXPECT_EQ(sb.opened.tenant_id(), "beta");
  ASSERT_OK_AND_ASSIGN(memfd, LauncherClient::CreateMemfd(512 * kKiB, "alpha-guest"));
  ASSERT_OK_AND_ASSIGN(ma, sa->RegisterMemory(memfd.get(), "alpha-guest"));
  UniqueFd dup_fd(fcntl(memfd.get(), F_DUPFD_CLOEXEC, 0));
  ASSERT_OK_AND_ASSIGN(mb, sb->RegisterMemory(dup_fd.get(), "from-alpha"));
  EXPECT_EQ(mb.owner_tenant(), "alpha");
  EXPECT_TRUE(mb.shared());

  // Beta maps it first: the pages are alpha's, so alpha pays.
  ASSERT_OK(sb->Map(mb.memory_id(), 0, 512 * kKiB, sb.window_base(), true, true));
  EXPECT_EQ(AgentBill("n1", "alpha"), (Bill{512 * kKiB, 512 * kKiB}));
  EXPECT_EQ(AgentBill("n1", "beta"), Bill());
  ASSERT_OK(sa->Map(ma.memory_id(), 0, 512 * kKiB, sa.window_base(), true, true));
  EXPECT_EQ(AgentBill("n1", "alpha"), (Bill{512 * kKiB, kMiB}));
  EXPECT_EQ(AgentBill("n1", "beta"), Bill());
  EXPECT_EQ(AgentUsage("n1").count("beta"), 0u);
  // Billed nothing, but the kernel counts beta's mapping (per mapping, for the
  // tenant of the session that made it), and alpha's own.
  EXPECT_EQ(AgentKernelCounted("n1", "beta"), 512 * kKiB);
  EXPECT_EQ(AgentKernelCounted("n1", "alpha"), 512 * kKiB);

  v1::AgentGetContainerResponse in_beta = AgentContainer("n1", cb);
  ASSERT_EQ(in_beta.mappings_size(), 1);
  EXPECT_EQ(in_beta.mappings(0).owner_tenant(), "alpha");
  EXPECT_EQ(in_beta.container().tenant_id(), "beta");

  ExpectBrokerBillSoon("alpha", {512 * kKiB, kMiB});
  EXPECT_EQ(BrokerBill("beta"), Bill());
  EXPECT_EQ(BrokerUsage("alpha").dedup_saved_bytes(), 512 * kKiB);

  // Beta's session closing takes its mapping (and nothing of alpha's) away.
  // The teardown takes the mapping out of the container before the kernel
  // unmap and settles the ledger after it (billed while still pinned), so wait
  // for both.
  sb.client.reset();
  EXPECT_TRUE(PollUntil([&] { return AgentContainer("n1", cb).mappings_size() == 0; }));
  EXPECT_TRUE(PollUntil(
      [&] { return AgentBill("n1", "alpha") == Bill{512 * kKiB, 512 * kKiB}; }));
  EXPECT_EQ(AgentBill("n1", "alpha"), (Bill{512 * kKiB, 512 * kKiB}));
  EXPECT_EQ(AgentContainer("n1", ca).mappings_size(), 1);
  ExpectBrokerBillSoon("alpha", {512 * kKiB, 512 * kKiB});
}

TEST_F(LauncherE2eTest, PartialOverlapsBillDistinctPages) {
  CreateTenant("acme", 64 * kMiB);
  const std::string c1 = CreateContainer("acme", "n1", kDevA, 32 * kMiB);
  const std::string c2 = CreateContainer("acme", "n1", kDevB, 32 * kMiB);
  ASSERT_FALSE(HasFailure());
  ASSERT_OK_AND_ASSIGN(s1, Open("n1", c1));
  ASSERT_OK_AND_ASSIGN(s2, Open("n1", c2));
  ASSERT_OK_AND_ASSIGN(memfd, LauncherClient::CreateMemfd(64 * kKiB, "guest"));
  ASSERT_OK_AND_ASSIGN(m1, s1->RegisterMemory(memfd.get(), "guest"));
  ASSERT_OK_AND_ASSIGN(m2, s2->RegisterMemory(memfd.get(), "guest"));
  const uint64_t w1 = s1.window_base(), w2 = s2.window_base();

  struct Step {
    Session* s;
    const std::string* memory;
    uint64_t offset, length, iova;
    Bill after;
  };
  // Pages (4 KiB): [0,4) then [2,6) then [5,8) in c1, [1,3) in c2, then a
  // disjoint [10,12): billed is always 4 KiB x the distinct pages.
  const std::vector<Step> steps = {
      {&s1, &m1.memory_id(), 0, 16 * kKiB, w1, {16 * kKiB, 16 * kKiB}},
      {&s1, &m1.memory_id(), 8 * kKiB, 16 * kKiB, w1 + 64 * kKiB, {24 * kKiB, 32 * kKiB}},
      {&s1, &m1.memory_id(), 20 * kKiB, 12 * kKiB, w1 + 128 * kKiB, {32 * kKiB, 44 * kKiB}},
      {&s2, &m2.memory_id(), 4 * kKiB, 8 * kKiB, w2, {32 * kKiB, 52 * kKiB}},
      {&s2, &m2.memory_id(), 40 * kKiB, 8 * kKiB, w2 + 64 * kKiB, {40 * kKiB, 60 * kKiB}},
  };
  for (const Step& st : steps) {
    ASSERT_OK((*st.s)->Map(*st.memory, st.offset, st.length, st.iova, true, true));
    EXPECT_EQ(AgentBill("n1", "acme"), st.after)
        << "after mapping " << st.offset << "+" << st.length;
  }
  ExpectBrokerBillSoon("acme", {40 * kKiB, 60 * kKiB});

  // Unmaps release only the pages no other mapping still pins.
  struct Undo {
    Session* s;
    uint64_t iova, length;
    Bill after;
  };
  const std::vector<Undo> undos = {
      // [2,6) goes: [0,4) keeps 2-3 and [5,8) keeps 5; page 4 is released.
      {&s1, w1 + 64 * kKiB, 16 * kKiB, {36 * kKiB, 44 * kKiB}},
      // [0,4) goes: [1,3) keeps 1-2; pages 0 and 3 are released.
      {&s1, w1, 16 * kKiB, {28 * kKiB, 28 * kKiB}},
      // c2's [1,3) goes: pages 1-2 released.
      {&s2, w2, 8 * kKiB, {20 * kKiB, 20 * kKiB}},
      {&s1, w1 + 128 * kKiB, 12 * kKiB, {8 * kKiB, 8 * kKiB}},
      {&s2, w2 + 64 * kKiB, 8 * kKiB, Bill()},
  };
  for (const Undo& u : undos) {
    ASSERT_OK_AND_ASSIGN(bytes, (*u.s)->Unmap(u.iova, u.length));
    EXPECT_EQ(bytes, u.length);
    EXPECT_EQ(AgentBill("n1", "acme"), u.after) << "after unmapping iova " << u.iova;
  }
  ExpectBrokerBillSoon("acme", Bill());
}

// ------------------------------------------------------------- invariant 4

TEST_F(LauncherE2eTest, MapPastBudgetIsRefusedAndChangesNothing) {
  CreateTenant("small", 64 * kKiB);
  const std::string c = CreateContainer("small", "n1", kDevA);  // Budget: the whole quota.
  const std::string other = CreateContainer("small", "n1", kDevB);  // Budget 0.
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(AgentContainer("n1", c).container().pin_budget_bytes(), 64 * kKiB);
  EXPECT_EQ(AgentContainer("n1", other).container().pin_budget_bytes(), 0u);
  ASSERT_OK_AND_ASSIGN(s, Open("n1", c));
  ASSERT_OK_AND_ASSIGN(memfd, LauncherClient::CreateMemfd(256 * kKiB, "guest"));
  ASSERT_OK_AND_ASSIGN(m, s->RegisterMemory(memfd.get(), "guest"));
  const uint64_t w = s.window_base();
  ASSERT_OK(s->Map(m.memory_id(), 0, 48 * kKiB, w, true, true));
  // Pages already billed cost nothing more.
  ASSERT_OK(s->Map(m.memory_id(), 0, 16 * kKiB, w + 64 * kKiB, true, true));
  EXPECT_EQ(AgentBill("n1", "small"), (Bill{48 * kKiB, 64 * kKiB}));

  const std::string before = Snapshot();
  EXPECT_THAT(
      s->Map(m.memory_id(), 64 * kKiB, 32 * kKiB, w + 128 * kKiB, true, true),
      StatusIs(absl::StatusCode::kResourceExhausted,
               "length: mapping 0x8000 bytes would bill tenant \"small\" 0x8000 more bytes; it "
               "has 0xc000 billed of its 0x10000 byte pin budget on node n1"));
  // Half already billed, half new: only the new half counts, and it is too much.
  EXPECT_THAT(s->Map(m.memory_id(), 32 * kKiB, 48 * kKiB, w + 128 * kKiB, true, true),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "mapping 0xc000 bytes would bill tenant \"small\" 0x8000 more bytes"));
  EXPECT_EQ(Snapshot(), before);
  ASSERT_OK_AND_ASSIGN(list, s->ListMappings());
  EXPECT_EQ(list.size(), 2u);

  // Exactly up to the budget is allowed.
  ASSERT_OK(s->Map(m.memory_id(), 48 * kKiB, 16 * kKiB, w + 128 * kKiB, true, true));
  EXPECT_EQ(AgentBill("n1", "small"), (Bill{64 * kKiB, 80 * kKiB}));
  ExpectBrokerBillSoon("small", {64 * kKiB, 80 * kKiB});
}

TEST_F(LauncherE2eTest, LoweredQuotaKeepsMappingsAndRefusesNewPinsUntilUsageDrops) {
  CreateTenant("small", 64 * kKiB);
  const std::string c = CreateContainer("small", "n1", kDevA);
  ASSERT_FALSE(HasFailure());
  ASSERT_OK_AND_ASSIGN(s, Open("n1", c));
  ASSERT_OK_AND_ASSIGN(memfd, LauncherClient::CreateMemfd(256 * kKiB, "guest"));
  ASSERT_OK_AND_ASSIGN(m, s->RegisterMemory(memfd.get(), "guest"));
  const uint64_t w = s.window_base();
  ASSERT_OK(s->Map(m.memory_id(), 0, 48 * kKiB, w, true, true));
  const auto mappings_before = AgentContainer("n1", c).mappings();

  grpc::Status q = SetQuota("small", 32 * kKiB);
  ASSERT_TRUE(q.ok()) << q.error_message();
  // The shrunk budget reaches the agent by push or, at the latest, the next
  // heartbeat.
  EXPECT_TRUE(PollUntil(
      [&] { return AgentContainer("n1", c).container().pin_budget_bytes() == 32 * kKiB; }))
      << AgentContainer("n1", c).DebugString();
  v1::AgentGetContainerResponse now = AgentContainer("n1", c);
  ASSERT_EQ(now.mappings_size(), mappings_before.size());
  EXPECT_EQ(now.mappings(0).DebugString(), mappings_before.Get(0).DebugString());
  EXPECT_EQ(AgentBill("n1", "small"), (Bill{48 * kKiB, 48 * kKiB}));

  const std::string before = Snapshot();
  EXPECT_THAT(s->Map(m.memory_id(), 128 * kKiB, 4 * kKiB, w + 128 * kKiB, true, true),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "it has 0xc000 billed of its 0x8000 byte pin budget on node n1"));
  EXPECT_EQ(Snapshot(), before);

  ASSERT_OK_AND_ASSIGN(bytes, s->Unmap(w, kMiB));
  EXPECT_EQ(bytes, 48 * kKiB);
  EXPECT_EQ(AgentBill("n1", "small"), Bill());
  ASSERT_OK(s->Map(m.memory_id(), 0, 16 * kKiB, w, true, true));
  EXPECT_THAT(s->Map(m.memory_id(), 16 * kKiB, 20 * kKiB, w + 64 * kKiB, true, true),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "it has 0x4000 billed of its 0x8000 byte pin budget"));
  ASSERT_OK(s->Map(m.memory_id(), 16 * kKiB, 16 * kKiB, w + 64 * kKiB, true, true));
  EXPECT_EQ(AgentBill("n1", "small"), (Bill{32 * kKiB, 32 * kKiB}));
  ExpectBrokerBillSoon("small", {32 * kKiB, 32 * kKiB});
}

// ------------------------------------------------------------- kill -9

TEST_F(LauncherE2eTest, LauncherKilledWithSigkillLeavesNoMappingOrBilling) {
  CreateTenant("acme", 16 * kMiB);
  const std::string c = CreateContainer("acme", "n1", kDevA);
  ASSERT_FALSE(HasFailure());
  v1::ListWindowsRequest lw;
  lw.set_container_id(c);
  v1::ListWindowsResponse windows;
  ASSERT_TRUE(Call(broker_.get(), &v1::Broker::Stub::ListWindows, lw, &windows).ok());
  ASSERT_EQ(windows.windows_size(), 1);
  const uint64_t w = windows.windows(0).base();

  LauncherProcess launcher;
  ASSERT_OK(launcher.Start({"--socket=" + Socket("n1"), "--token-file=-", "--memfd=1Mi",
                            absl::StrFormat("--map=0:0x80000@0x%x", w),
                            absl::StrFormat("--map=0x40000:0x80000@0x%x:r", w + 0x80000),
                            "--hold"},
                           {}, cluster_.dir() + "/launcher.err", Grant(c) + "\n"));
  absl::Status ready = launcher.WaitForLine("ready", absl::Seconds(10));
  ASSERT_TRUE(ready.ok()) << ready << "\nstdout:\n"
                          << launcher.output() << "\nagent log:\n"
                          << cluster_.agent("n1").Log();

  v1::AgentGetContainerResponse held = AgentContainer("n1", c);
  ASSERT_EQ(held.mappings_size(), 2) << held.DebugString();
  EXPECT_EQ(held.mappings(0).iova(), w);
  EXPECT_EQ(held.mappings(1).iova(), w + 0x80000);
  EXPECT_EQ(AgentBill("n1", "acme"), (Bill{0xc0000, kMiB}));
  ExpectBrokerBillSoon("acme", {0xc0000, kMiB});

  const int status = launcher.Kill();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  EXPECT_TRUE(PollUntil([&] { return AgentContainer("n1", c).mappings_size() == 0; }))
      << AgentContainer("n1", c).DebugString();
  EXPECT_TRUE(PollUntil([&] { return AgentUsage("n1").empty(); }));
  EXPECT_EQ(AgentBill("n1", "acme"), Bill());
  ExpectBrokerBillSoon("acme", Bill());
  // The container itself is untouched and can be used by a new launcher.
  EXPECT_EQ(AgentContainer("n1", c).container().id(), c);
  ASSERT_OK_AND_ASSIGN(again, Open("n1", c));
  ASSERT_OK_AND_ASSIGN(memfd, LauncherClient::CreateMemfd(kMiB, "guest"));
  ASSERT_OK_AND_ASSIGN(mem, again->RegisterMemory(memfd.get(), "guest"));
  ASSERT_OK(again->Map(mem.memory_id(), 0, kMiB, w, true, true));
}

// ------------------------------------------------------------- invariant 2

// Regression: a released window stayed mappable, because the agent kept no
// window state and checked maps only against the windows copied from the
// grant. Now the broker pushes a container's windows to its agent (heartbeat
// answers repeat them), the agent revokes the mappings a released window held
// and refuses maps outside the container's current windows, whatever the
// token said (DESIGN.md invariant 2).
TEST_F(LauncherE2eTest, ReleasedWindowIsNoLongerMappable) {
  CreateTenant("acme", 16 * kMiB);
  const std::string c = CreateContainer("acme", "n1", kDevA);
  ASSERT_FALSE(HasFailure());
  ASSERT_OK_AND_ASSIGN(s, Open("n1", c));
  const std::string early_token = Grant(c);
  ASSERT_OK_AND_ASSIGN(memfd, LauncherClient::CreateMemfd(kMiB, "guest"));
  ASSERT_OK_AND_ASSIGN(m, s->RegisterMemory(memfd.get(), "guest"));
  const uint64_t w = s.window_base();
  // A mapping inside the window before the release.
  ASSERT_OK(s->Map(m.memory_id(), 0, 256 * kKiB, w, true, true));
  ASSERT_EQ(AgentBill("n1", "acme"), (Bill{256 * kKiB, 256 * kKiB}));

  v1::ReleaseWindowRequest rr;
  rr.set_window_id(s.opened.windows(0).window_id());
  v1::ReleaseWindowResponse rresp;
  grpc::Status released = Call(broker_.get(), &v1::Broker::Stub::ReleaseWindow, rr, &rresp);
  ASSERT_TRUE(released.ok()) << released.error_message();

  // The push is best effort (heartbeats are the backstop): wait for the
  // agent to revoke the mapping, which releases its billing.
  PollUntil([&] { return AgentContainer("n1", c).mappings_size() == 0; });
  EXPECT_EQ(AgentContainer("n1", c).mappings_size(), 0);
  EXPECT_EQ(AgentBill("n1", "acme"), Bill());
  ExpectBrokerBillSoon("acme", Bill());
  ASSERT_OK_AND_ASSIGN(listed, s->ListMappings());
  EXPECT_TRUE(listed.empty());

  // The session that was open at the release.
  EXPECT_THAT(
      s->Map(m.memory_id(), 0, 64 * kKiB, w, true, true),
      StatusIs(absl::StatusCode::kPermissionDenied, "is outside every window of the session"));
  // A session opened after the release with a token granted before it.
  ASSERT_OK_AND_ASSIGN(late, LauncherClient::Connect(Socket("n1")));
  absl::StatusOr<v1::LauncherResponse::SessionOpened> opened = late->OpenSession(early_token);
  if (opened.ok()) {
    ASSERT_OK_AND_ASSIGN(lm, late->RegisterMemory(memfd.get(), "guest"));
    EXPECT_THAT(late->Map(lm.memory_id(), 0, 64 * kKiB, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kPermissionDenied, "still holds []"));
  }
  EXPECT_EQ(AgentContainer("n1", c).mappings_size(), 0);
  EXPECT_EQ(AgentBill("n1", "acme"), Bill());
}

// --------------------------------------------------- invariants 2, 7, 8

TEST_F(LauncherE2eTest, EveryBadInputIsRefusedChangesNothingAndLeaksNoFd) {
  StartAgent("n2");
  ASSERT_FALSE(HasFailure());
  CreateTenant("acme", 64 * kMiB);
  const std::string c1 = CreateContainer("acme", "n1", kDevA, 16 * kMiB);
  const std::string c2 = CreateContainer("acme", "n2", kDevA, 16 * kMiB);
  ASSERT_FALSE(HasFailure());

  // Session A holds a mapping; session B, on the same container, its own
  // memory.
  ASSERT_OK_AND_ASSIGN(sa, Open("n1", c1));
  ASSERT_OK_AND_ASSIGN(sb, Open("n1", c1));
  ASSERT_OK_AND_ASSIGN(memfd_a, LauncherClient::CreateMemfd(256 * kKiB, "a"));
  ASSERT_OK_AND_ASSIGN(memfd_b, LauncherClient::CreateMemfd(256 * kKiB, "b"));
  ASSERT_OK_AND_ASSIGN(ma, sa->RegisterMemory(memfd_a.get(), "a"));
  ASSERT_OK_AND_ASSIGN(mb, sb->RegisterMemory(memfd_b.get(), "b"));
  const uint64_t w = sa.window_base();
  const uint64_t window_size = sa.opened.windows(0).size();
  ASSERT_OK(sa->Map(ma.memory_id(), 0, 64 * kKiB, w, true, true));

  const pid_t agent_pid = cluster_.agent("n1").pid();
  const std::string before = Snapshot();
  // The snapshot sees session A's mapping, so "unchanged" means something.
  ASSERT_THAT(before, HasSubstr(sa.opened.session_id()));
  const int fds_before = CountFds(agent_pid);
  ASSERT_GT(fds_before, 0);

  {
    // Tokens.
    ASSERT_OK_AND_ASSIGN(garbage, LauncherClient::Connect(Socket("n1")));
    EXPECT_THAT(garbage->OpenSession("garbage").status(),
                StatusIs(absl::StatusCode::kUnauthenticated, "token: malformed"));
    const std::string token = Grant(c1);
    std::string tampered = token;
    const size_t mid = tampered.find('.') + 8;  // Inside the payload.
    tampered[mid] = tampered[mid] == 'A' ? 'B' : 'A';
    ASSERT_OK_AND_ASSIGN(tamper, LauncherClient::Connect(Socket("n1")));
    EXPECT_THAT(tamper->OpenSession(tampered).status(),
                StatusIs(absl::StatusCode::kUnauthenticated, "token: bad signature"));
    // A refused tampered copy does not use the real token up; one use does.
    ASSERT_OK_AND_ASSIGN(first, LauncherClient::Connect(Socket("n1")));
    ASSERT_OK(first->OpenSession(token).status());
    ASSERT_OK_AND_ASSIGN(replay, LauncherClient::Connect(Socket("n1")));
    EXPECT_THAT(replay->OpenSession(token).status(),
                StatusIs(absl::StatusCode::kUnauthenticated, "token: already used"));
    // A second OpenSession on a connection that has one.
    EXPECT_THAT(first->OpenSession(Grant(c1)).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         "open_session: this connection already holds a session"));
    // n2's container presented at n1. Each node has its own grant key, so
    // the MAC check (which comes first, before anything in the payload is
    // trusted) refuses it; the "issued for node" rule behind it is only
    // reachable with a shared key.
    ASSERT_OK_AND_ASSIGN(wrong_node, LauncherClient::Connect(Socket("n1")));
    EXPECT_THAT(wrong_node->OpenSession(Grant(c2)).status(),
                StatusIs(absl::StatusCode::kUnauthenticated, "token: bad signature"));

    // Requests before OpenSession.
    ASSERT_OK_AND_ASSIGN(fresh, LauncherClient::Connect(Socket("n1")));
    EXPECT_THAT(fresh->Map(ma.memory_id(), 0, 4 * kKiB, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         "open_session: the first request on a connection must open a session"));
    EXPECT_THAT(fresh->RegisterMemory(memfd_a.get(), "early").status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, "open_session: the first request"));
    EXPECT_THAT(fresh->Unmap(w, 64 * kKiB).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, "open_session: the first request"));
    EXPECT_THAT(fresh->ListMappings().status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, "open_session: the first request"));

    // Another session's memory and mappings (same container, same tenant).
    EXPECT_THAT(
        sb->Map(ma.memory_id(), 0, 4 * kKiB, w + 512 * kKiB, true, true),
        StatusIs(absl::StatusCode::kNotFound,
                 absl::StrCat("memory_id: this session has no memory \"", ma.memory_id(), "\"")));
    EXPECT_THAT(sb->Map("m-0123456789abcdef", 0, 4 * kKiB, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kNotFound, "memory_id: this session has no memory"));
    EXPECT_THAT(sb->Unmap(w, 64 * kKiB).status(), StatusIs(absl::StatusCode::kPermissionDenied,
                                                           "holds a mapping of another session"));

    // Map shapes.
    EXPECT_THAT(
        sb->Map(mb.memory_id(), 0, 4 * kKiB, w + window_size, true, true),
        StatusIs(absl::StatusCode::kPermissionDenied, "is outside every window of the session"));
    EXPECT_THAT(
        sb->Map(mb.memory_id(), 0, 8 * kKiB, w + window_size - 4 * kKiB, true, true),
        StatusIs(absl::StatusCode::kPermissionDenied, "is outside every window of the session"));
    EXPECT_THAT(
        sb->Map(mb.memory_id(), 0, 4 * kKiB, 0xfee00000, true, true),
        StatusIs(absl::StatusCode::kPermissionDenied, "is outside every window of the session"));
    EXPECT_THAT(sb->Map(mb.memory_id(), 0x800, 4 * kKiB, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "offset: must be a multiple of the IOMMU page size 0x1000, got 0x800"));
    EXPECT_THAT(sb->Map(mb.memory_id(), 0, 0x1800, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "length: must be a multiple of the IOMMU page size 0x1000, got 0x1800"));
    EXPECT_THAT(sb->Map(mb.memory_id(), 0, 4 * kKiB, w + 512 * kKiB + 0x10, true, true),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "iova: must be a multiple of the IOMMU page size 0x1000"));
    EXPECT_THAT(sb->Map(mb.memory_id(), 0, 0, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kInvalidArgument, "length: must be greater than 0"));
    EXPECT_THAT(sb->Map(mb.memory_id(), 192 * kKiB, 128 * kKiB, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kInvalidArgument, "passes the end of memory"));
    EXPECT_THAT(sb->Map(mb.memory_id(), 512 * kKiB, 4 * kKiB, w + 512 * kKiB, true, true),
                StatusIs(absl::StatusCode::kInvalidArgument, "passes the end of memory"));
    EXPECT_THAT(sb->Map(mb.memory_id(), 0, 4 * kKiB, w + 512 * kKiB, false, false),
                StatusIs(absl::StatusCode::kInvalidArgument, "readable, writable: at least one"));
    // Over session A's mapping: the sim backend refuses like the kernel.
    EXPECT_THAT(sb->Map(mb.memory_id(), 0, 4 * kKiB, w + 16 * kKiB, true, true),
                StatusIs(absl::StatusCode::kAlreadyExists, "overlaps mapping"));

    // Fds that are not shareable memory.
    int pipe_fds[2];
    ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
    UniqueFd pipe_r(pipe_fds[0]), pipe_w(pipe_fds[1]);
    EXPECT_THAT(
        sb->RegisterMemory(pipe_r.get(), "pipe").status(),
        StatusIs(
            absl::StatusCode::kInvalidArgument,
            "fd: must be shareable memory (a memfd or a file on tmpfs/hugetlbfs), got a pipe"));
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    UniqueFd pair_a(pair[0]), pair_b(pair[1]);
    EXPECT_THAT(sb->RegisterMemory(pair_a.get(), "socket").status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "fd: must be shareable memory"));
    EXPECT_THAT(sb->RegisterMemory(pair_a.get(), "socket").status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "got a socket"));
    const char* tmpdir = std::getenv("TEST_TMPDIR");
    ASSERT_NE(tmpdir, nullptr);
    struct statfs fs;
    ASSERT_EQ(statfs(tmpdir, &fs), 0);
    if (fs.f_type == TMPFS_MAGIC) {
      GTEST_LOG_(INFO) << "TEST_TMPDIR is tmpfs: skipping the disk-file case";
    } else {
      const std::string path = absl::StrCat(tmpdir, "/disk-file");
      UniqueFd disk(open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      ASSERT_TRUE(disk.valid());
      ASSERT_EQ(ftruncate(disk.get(), 64 * kKiB), 0);
      EXPECT_THAT(
          sb->RegisterMemory(disk.get(), "disk").status(),
          StatusIs(absl::StatusCode::kInvalidArgument,
                   "fd: must be a memfd or a file on tmpfs/hugetlbfs, got a file on filesystem"));
    }
    EXPECT_THAT(sb->RegisterMemory(memfd_b.get(), std::string(65, 'x')).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "name: at most 64 characters"));

    // Fds attached where none belong, on a raw connection.
    ASSERT_OK_AND_ASSIGN(raw, ConnectUnix(Socket("n1")));
    v1::LauncherRequest open_req;
    open_req.mutable_open_session()->set_token(Grant(c1));
    EXPECT_THAT(
        RawCall(raw.get(), open_req, {memfd_b.get()}, 1),
        StatusIs(absl::StatusCode::kInvalidArgument, "fd: this request takes no fd, got 1"));
    // The refusal did not consume the token.
    ASSERT_OK(RawCall(raw.get(), open_req, {}, 2));
    v1::LauncherRequest map_req;
    map_req.mutable_map()->set_memory_id(mb.memory_id());
    map_req.mutable_map()->set_length(4 * kKiB);
    map_req.mutable_map()->set_iova(w + 512 * kKiB);
    map_req.mutable_map()->set_readable(true);
    EXPECT_THAT(
        RawCall(raw.get(), map_req, {pipe_w.get()}, 3),
        StatusIs(absl::StatusCode::kInvalidArgument, "fd: this request takes no fd, got 1"));
    // More fds than a packet may carry: refused by the transport, which
    // closes them all and keeps the connection.
    EXPECT_THAT(RawCall(raw.get(), map_req, {memfd_b.get(), pipe_w.get()}, 4),
                StatusIs(absl::StatusCode::kInvalidArgument, "packet: more than 1 fd attached"));
    v1::LauncherRequest register_req;
    register_req.mutable_register_memory()->set_name("none");
    EXPECT_THAT(RawCall(raw.get(), register_req, {}, 5),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "fd: register_memory takes exactly one fd, got 0"));
    EXPECT_THAT(RawCall(raw.get(), v1::LauncherRequest(), {}, 6),
                StatusIs(absl::StatusCode::kInvalidArgument, "request: no operation set"));

    // Unmaps that cut a mapping or find none.
    EXPECT_THAT(sa->Unmap(w, 4 * kKiB).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "cuts mapping"));
    EXPECT_THAT(sa->Unmap(w + 32 * kKiB, 64 * kKiB).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "cuts mapping"));
    EXPECT_THAT(sa->Unmap(w + 512 * kKiB, 4 * kKiB).status(),
                StatusIs(absl::StatusCode::kNotFound, "iova: no mapping inside"));
    EXPECT_THAT(sa->Unmap(w, 0).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "length: must be greater than 0"));
    // Every barrage connection closes at the end of this scope.
  }

  // The agent notices the closed connections on its own thread: wait for it
  // (the sessions they held end), then everything must be as before.
  PollUntil([&] { return Snapshot() == before; });
  EXPECT_EQ(Snapshot(), before);
  ASSERT_OK_AND_ASSIGN(still, sa->ListMappings());
  ASSERT_EQ(still.size(), 1u);
  EXPECT_EQ(still[0].iova(), w);
  EXPECT_EQ(still[0].length(), 64 * kKiB);
  // The agent closed every fd it was sent and every connection it served.
  PollUntil([&] { return CountFds(agent_pid) == fds_before; });
  EXPECT_EQ(CountFds(agent_pid), fds_before);
}

}  // namespace
}  // namespace iommu
