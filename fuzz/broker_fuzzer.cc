// Fuzz target: the broker's logic. Each input is a sequence of calls on a
// Broker over a FakeStore and agents that always succeed, with two READY
// nodes to start with:
//  * every mutation (tenants, quotas, labels, containers by node and devices
//    or by selector, budgets, windows at any size, alignment or fixed base,
//    cordon, node delete and registration) with fuzz-chosen fields: ids from
//    the objects made so far or arbitrary bytes, request ids reused or not;
//  * heartbeats, commits the store refuses (the group rolls back), and
//    broker restarts on the same store.
// Calls come from the operator or from a tenant, authorized by the
// Authorizer as the service does.
// Properties: no crash; every refusal has a message; after every call the
// indexes equal a recount and memory equals what the store's records make
// (Broker::CheckIndexes); a tenant's call never changes another tenant's
// record, containers or windows; and a restart serves the tenants,
// containers and windows it served before it (nothing acknowledged lost,
// nothing refused kept).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "fuzz/fuzz_input.h"
#include "google/protobuf/stubs/logging.h"
#include "proto/broker.pb.h"
#include "server/authz.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"
#include "server/test_nodes.h"

namespace iommu {
namespace fuzz {
namespace {

const char* const kTenants[] = {"acme", "zeta", "globex"};
const char* const kNodes[] = {"n1", "n2"};
const char* const kLabelKeys[] = {"env", "team", "tier"};
constexpr int kMaxCalls = 48;

v1::Device Dev(int i, uint32_t vendor) {
  v1::Device d;
  d.set_address(absl::StrCat("0000:00:0", i, ".0"));
  d.set_iommu_group(i);
  d.set_vendor_id(vendor);
  d.set_device_id(0x11e8);
  d.set_driver("vfio-pci");
  d.set_assignable(true);
  return d;
}

std::vector<v1::Device> Devices(FuzzInput* in) {
  std::vector<v1::Device> out;
  const int n = 1 + in->U8() % 4;
  for (int i = 0; i < n; ++i) out.push_back(Dev(i, in->Bool() ? 0x1234 : 0x8086));
  return out;
}

class Run {
 public:
  Run() { Start(); }

  void Start() {
    authz_.reset();
    broker_.reset();
    BrokerOptions o;
    o.now_ms = [this] { return now_ms_; };
    absl::StatusOr<std::unique_ptr<Broker>> b = Broker::Create(&store_, &agents_, o);
    FUZZ_CHECK(b.ok(), "start: " + b.status().ToString());
    broker_ = *std::move(b);
    authz_ = std::make_unique<Authorizer>(broker_.get(), nullptr);
  }

  void Setup() {
    for (const char* node : kNodes) {
      std::vector<v1::Device> devices;
      for (int i = 0; i < 4; ++i) devices.push_back(Dev(i, i < 2 ? 0x1234 : 0x8086));
      absl::StatusOr<v1::RegisterResponse> r = RegisterReadyNode(broker_.get(), node, devices);
      FUZZ_CHECK(r.ok(), "setup: " + r.status().ToString());
      sessions_.push_back(r->session_id());
    }
  }

  void Step(FuzzInput* in) {
    const int op = in->U8() % 19;
    // Mostly the operator; else a tenant, authorized as the service does.
    const uint8_t who = in->U8();
    caller_ =
        who < 160 ? Identity{Role::kOperator, "ops"} : Identity{Role::kTenant, kTenants[who % 3]};
    const std::string others_before = caller_.role == Role::kTenant ? OthersState() : "";
    absl::Status s;
    switch (op) {
      case 0:
        s = CreateTenant(in);
        break;
      case 1:
        s = DeleteTenant(in);
        break;
      case 2:
        s = SetQuota(in);
        break;
      case 3:
        s = SetTenantLabels(in);
        break;
      case 4:
      case 5:
        s = CreateContainer(in);
        break;
      case 6:
        s = DeleteContainer(in);
        break;
      case 7:
        s = SetBudget(in);
        break;
      case 8:
        s = SetContainerLabels(in);
        break;
      case 9:
      case 10:
        s = AllocateWindow(in);
        break;
      case 11:
        s = ReleaseWindow(in);
        break;
      case 12:
        s = Cordon(in);
        break;
      case 13:
        s = DeleteNode(in);
        break;
      case 14:
        s = Register(in);
        break;
      case 15:
        s = Heartbeat(in);
        break;
      case 16:
        store_.set_next_commit_error(absl::UnavailableError("disk full"));
        break;
      case 17:
        Restart();
        break;
      case 18:
        now_ms_ += in->UInt(2);
        break;
    }
    FUZZ_CHECK(s.ok() || !s.message().empty(),
               "a refusal without a message: op " + std::to_string(op) + " " + s.ToString());
    // A planner whose change does not fit the state (INTERNAL), or state
    // that does not read back (DATA_LOSS), is a bug, whatever the input.
    FUZZ_CHECK(s.code() != absl::StatusCode::kInternal && s.code() != absl::StatusCode::kDataLoss &&
                   s.code() != absl::StatusCode::kUnknown,
               "op " + std::to_string(op) + ": " + s.ToString());
    const absl::Status check = broker_->CheckIndexes();
    FUZZ_CHECK(check.ok(), "after op " + std::to_string(op) + ": " + check.ToString());
    // Ops 0-13 are the caller's; the others are an agent's, the store's or
    // the clock's.
    if (caller_.role == Role::kTenant && op <= 13) {
      const std::string others_after = OthersState();
      FUZZ_CHECK(others_before == others_after,
                 caller_.ToString() + " changed another tenant's objects with op " +
                     std::to_string(op) + ":\n" + others_before + "---\n" + others_after);
    }
  }

 private:
  // An id from `made`, or an arbitrary string (maybe empty, maybe valid).
  std::string Pick(FuzzInput* in, const std::vector<std::string>& made) {
    const uint8_t b = in->U8();
    if (b < 200 && !made.empty()) return made[b % made.size()];
    return in->ShortString();
  }
  std::string Tenant(FuzzInput* in) {
    const uint8_t b = in->U8();
    if (b < 240) return kTenants[b % 3];
    return in->ShortString();
  }
  std::string Node(FuzzInput* in) {
    const uint8_t b = in->U8();
    if (b < 240) return kNodes[b % 2];
    return in->ShortString();
  }
  std::string RequestId(FuzzInput* in) {
    const uint8_t b = in->U8();
    if (b < 128) return "";
    if (b < 250) return absl::StrCat("req-", b % 8);  // Reused: retries and conflicts.
    return in->ShortString();
  }
  template <typename Map>
  void Labels(FuzzInput* in, Map* labels) {
    const int n = in->U8() % 3;
    for (int i = 0; i < n; ++i) {
      const uint8_t b = in->U8();
      (*labels)[b < 250 ? kLabelKeys[b % 3] : in->ShortString()] =
          in->Bool() ? "a" : in->ShortString();
    }
  }
  uint64_t Pages(FuzzInput* in) { return 4096 * (in->U8() % 64); }

  absl::Status CreateTenant(FuzzInput* in) {
    v1::CreateTenantRequest req;
    req.set_request_id(RequestId(in));
    req.set_tenant_id(Tenant(in));
    req.mutable_quota()->set_pinned_bytes(in->Bool() ? (1ULL << 30) : in->U64());
    req.mutable_quota()->set_max_containers(in->U8() % 8);
    req.mutable_quota()->set_window_bytes(in->Bool() ? 0 : in->UInt(4));
    Labels(in, req.mutable_labels());
    v1::Tenant out;
    return Call(&Broker::CreateTenant, req, &out);
  }
  absl::Status DeleteTenant(FuzzInput* in) {
    v1::DeleteTenantRequest req;
    req.set_request_id(RequestId(in));
    req.set_tenant_id(Tenant(in));
    v1::DeleteTenantResponse out;
    return Call(&Broker::DeleteTenant, req, &out);
  }
  absl::Status SetQuota(FuzzInput* in) {
    v1::SetTenantQuotaRequest req;
    req.set_request_id(RequestId(in));
    req.set_tenant_id(Tenant(in));
    req.mutable_quota()->set_pinned_bytes(Pages(in) * (in->U8() % 4));
    req.mutable_quota()->set_max_containers(in->U8() % 8);
    req.mutable_quota()->set_window_bytes(in->Bool() ? 0 : in->UInt(4));
    v1::Tenant out;
    return Call(&Broker::SetTenantQuota, req, &out);
  }
  absl::Status SetTenantLabels(FuzzInput* in) {
    v1::SetTenantLabelsRequest req;
    req.set_request_id(RequestId(in));
    req.set_tenant_id(Tenant(in));
    Labels(in, req.mutable_labels());
    if (in->Bool()) req.add_remove_keys(kLabelKeys[in->U8() % 3]);
    v1::Tenant out;
    return Call(&Broker::SetTenantLabels, req, &out);
  }
  absl::Status CreateContainer(FuzzInput* in) {
    v1::CreateContainerRequest req;
    req.set_request_id(RequestId(in));
    req.set_tenant_id(Tenant(in));
    if (in->Bool()) {
      req.set_node(Node(in));
      const int n = in->U8() % 3;
      for (int i = 0; i < n; ++i) req.add_devices(absl::StrCat("0000:00:0", in->U8() % 5, ".0"));
    } else {
      req.mutable_selector()->set_vendor_id(in->Bool() ? 0x1234 : in->UInt(2));
      req.mutable_selector()->set_count(in->U8() % 4);
    }
    req.set_pin_budget_bytes(Pages(in));
    if (in->Bool())
      req.set_name(in->Bool() ? absl::StrCat("vm-", in->U8() % 4) : in->ShortString());
    Labels(in, req.mutable_labels());
    v1::Container out;
    absl::Status s = Call(&Broker::CreateContainer, req, &out);
    if (s.ok()) containers_.push_back(out.id());
    return s;
  }
  absl::Status DeleteContainer(FuzzInput* in) {
    v1::DeleteContainerRequest req;
    req.set_request_id(RequestId(in));
    req.set_container_id(Pick(in, containers_));
    v1::DeleteContainerResponse out;
    return Call(&Broker::DeleteContainer, req, &out);
  }
  absl::Status SetBudget(FuzzInput* in) {
    v1::SetContainerBudgetRequest req;
    req.set_request_id(RequestId(in));
    req.set_container_id(Pick(in, containers_));
    req.set_pin_budget_bytes(in->Bool() ? Pages(in) : in->U64());
    v1::Container out;
    return Call(&Broker::SetContainerBudget, req, &out);
  }
  absl::Status SetContainerLabels(FuzzInput* in) {
    v1::SetContainerLabelsRequest req;
    req.set_request_id(RequestId(in));
    req.set_container_id(Pick(in, containers_));
    Labels(in, req.mutable_labels());
    if (in->Bool()) req.add_remove_keys(kLabelKeys[in->U8() % 3]);
    v1::Container out;
    return Call(&Broker::SetContainerLabels, req, &out);
  }
  absl::Status AllocateWindow(FuzzInput* in) {
    v1::AllocateWindowRequest req;
    req.set_request_id(RequestId(in));
    req.set_container_id(Pick(in, containers_));
    req.set_size(in->Bool() ? Pages(in) : in->U64());
    if (in->Bool()) req.set_alignment(uint64_t{1} << (in->U8() % 64));
    if (in->Bool()) {
      req.set_fixed_base(true);
      req.set_base(in->Bool() ? Pages(in) * 16 : in->U64());
    }
    v1::Window out;
    absl::Status s = Call(&Broker::AllocateWindow, req, &out);
    if (s.ok()) windows_.push_back(out.id());
    return s;
  }
  absl::Status ReleaseWindow(FuzzInput* in) {
    v1::ReleaseWindowRequest req;
    req.set_request_id(RequestId(in));
    req.set_window_id(Pick(in, windows_));
    v1::ReleaseWindowResponse out;
    return Call(&Broker::ReleaseWindow, req, &out);
  }
  absl::Status Cordon(FuzzInput* in) {
    v1::Node out;
    if (in->Bool()) {
      v1::CordonNodeRequest req;
      req.set_request_id(RequestId(in));
      req.set_node(Node(in));
      return Call(&Broker::CordonNode, req, &out);
    }
    v1::UncordonNodeRequest req;
    req.set_request_id(RequestId(in));
    req.set_node(Node(in));
    return Call(&Broker::UncordonNode, req, &out);
  }
  absl::Status DeleteNode(FuzzInput* in) {
    v1::DeleteNodeRequest req;
    req.set_request_id(RequestId(in));
    req.set_node(Node(in));
    req.set_force(in->Bool());
    v1::DeleteNodeResponse out;
    return Call(&Broker::DeleteNode, req, &out);
  }
  absl::Status Register(FuzzInput* in) {
    const std::string node = Node(in);
    absl::StatusOr<v1::RegisterResponse> r = RegisterReadyNode(broker_.get(), node, Devices(in));
    return r.status();
  }
  absl::Status Heartbeat(FuzzInput* in) {
    v1::HeartbeatRequest req;
    const uint8_t b = in->U8();
    req.set_node(kNodes[b % 2]);
    req.set_session_id(b < 200 && !sessions_.empty() ? sessions_[b % sessions_.size()]
                                                     : in->ShortString());
    v1::PinUsage* u = req.add_usage();
    u->set_tenant_id(Tenant(in));
    u->set_billed_bytes(Pages(in));
    u->set_mapped_bytes(Pages(in));
    v1::HeartbeatResponse out;
    return broker_->Heartbeat(req, &out);
  }

  // Authorizes `req` for the caller (which may narrow it), then calls the
  // broker as that caller: what BrokerService does after the handshake.
  template <typename Req, typename Resp>
  absl::Status Call(absl::Status (Broker::*method)(const Req&, Resp*, const Identity&), Req req,
                    Resp* out) {
    if (absl::Status s = authz_->Authorize(caller_, &req); !s.ok()) return s;
    return (broker_.get()->*method)(req, out, caller_);
  }

  // Everything of the tenants other than the caller: their records,
  // containers and windows.
  std::string OthersState() {
    std::string out;
    for (const char* t : kTenants) {
      if (t == caller_.name) continue;
      v1::GetTenantRequest get;
      get.set_tenant_id(t);
      v1::Tenant tenant;
      if (broker_->GetTenant(get, &tenant).ok()) absl::StrAppend(&out, tenant.ShortDebugString());
      v1::ListContainersRequest lc;
      lc.set_tenant_id(t);
      v1::ListContainersResponse c;
      v1::ListWindowsRequest lw;
      lw.set_tenant_id(t);
      v1::ListWindowsResponse w;
      for (const absl::Status& s :
           {broker_->ListContainers(lc, &c), broker_->ListWindows(lw, &w)}) {
        FUZZ_CHECK(s.ok(), "list: " + s.ToString());
      }
      for (const v1::Container& x : c.containers()) {
        absl::StrAppend(&out, x.id(), " ", x.pin_budget_bytes(), " ", x.labels_size(), " ",
                        x.deleting(), "\n");
      }
      for (const v1::Window& x : w.windows()) absl::StrAppend(&out, x.ShortDebugString(), "\n");
    }
    return out;
  }

  // What a restart must serve again: every tenant, container and window, as
  // the store holds them (states derived from liveness aside).
  std::string Served() {
    std::string out;
    v1::ListTenantsResponse t;
    v1::ListContainersResponse c;
    v1::ListWindowsResponse w;
    for (const absl::Status& s : {broker_->ListTenants({}, &t), broker_->ListContainers({}, &c),
                                  broker_->ListWindows({}, &w)}) {
      FUZZ_CHECK(s.ok(), "list: " + s.ToString());
    }
    for (const v1::Tenant& x : t.tenants()) absl::StrAppend(&out, x.ShortDebugString(), "\n");
    for (const v1::Container& x : c.containers()) {
      absl::StrAppend(&out, x.id(), " ", x.tenant_id(), " ", x.node(), " ", x.pin_budget_bytes(),
                      " ", x.name(), " ", x.labels_size(), "\n");
    }
    for (const v1::Window& x : w.windows()) absl::StrAppend(&out, x.ShortDebugString(), "\n");
    return out;
  }

  void Restart() {
    const std::string before = Served();
    Start();
    const std::string after = Served();
    FUZZ_CHECK(before == after, "a restart serves another state:\n" + before + "---\n" + after);
  }

  int64_t now_ms_ = 1'700'000'000'000;
  FakeStore store_;
  OkAgents agents_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<Authorizer> authz_;
  Identity caller_;
  std::vector<std::string> sessions_;
  std::vector<std::string> containers_;
  std::vector<std::string> windows_;
};

}  // namespace
}  // namespace fuzz
}  // namespace iommu

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  iommu::SetMinLogLevel(iommu::LogLevel::kError);  // Refusals are the point; keep stderr quiet.
  // Arbitrary bytes are not UTF-8; protobuf logs each serialization of them
  // (gRPC would have refused them at parse, the broker is fed them anyway).
  google::protobuf::SetLogHandler(nullptr);
  iommu::fuzz::FuzzInput in(data, size);
  iommu::fuzz::Run run;
  run.Setup();
  for (int i = 0; i < iommu::fuzz::kMaxCalls && !in.empty(); ++i) run.Step(&in);
  return 0;
}
