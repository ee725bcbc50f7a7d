// The Broker's containers: placement, create (reserve, agent call, commit),
// read, list and delete.
#include "server/broker.h"

#include <algorithm>
#include <map>
#include <optional>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/label_selector.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/broker_internal.h"

namespace iommu {

using broker_internal::AgentCallError;
using broker_internal::ContainerRef;
using broker_internal::Fingerprint;
using broker_internal::kContainer;
using broker_internal::kNormal;
using broker_internal::kWarning;
using broker_internal::kWindow;
using broker_internal::NewEvent;
using broker_internal::NodeRef;
using broker_internal::Page;
using broker_internal::PageSubset;
using broker_internal::Record;
using broker_internal::RequestKey;
using broker_internal::TenantRef;

// ------------------------------------------------------------ containers

namespace {

// The request's placement is one of its two forms (node and devices, or a
// selector), and a selector's ids are PCI ids (16 bits).
absl::Status ValidatePlacementForm(const v1::CreateContainerRequest& req) {
  if (req.has_selector() && (!req.node().empty() || !req.devices().empty())) {
    return absl::InvalidArgumentError("selector: either node and devices, or a selector, not both");
  }
  if (req.selector().vendor_id() > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrFormat("selector.vendor_id: a PCI vendor id is at most 0xffff, got %#x",
                        req.selector().vendor_id()));
  }
  if (req.selector().device_id() > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrFormat("selector.device_id: a PCI device id is at most 0xffff, got %#x",
                        req.selector().device_id()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Broker::PlaceLocked(const v1::CreateContainerRequest& req, const Identity& caller,
                                 std::string* node, std::vector<std::string>* devices) {
  if (!req.node().empty()) return PlaceOnNodeLocked(req, caller, node, devices);
  return PlaceBySelectorLocked(req, node, devices);
}

absl::Status Broker::PlaceOnNodeLocked(const v1::CreateContainerRequest& req,
                                       const Identity& caller, std::string* node,
                                       std::vector<std::string>* devices) {
  // Explicit placement: the node and its devices, checked one by one.
  ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
  if (!NodeLiveLocked(*n)) {
    return absl::UnavailableError(
        absl::StrCat("node: node ", QuoteForMessage(req.node()), " is not heartbeating"));
  }
  if (!n->reconciled) {
    return absl::UnavailableError(
        absl::StrCat("node: node ", QuoteForMessage(req.node()),
                     " is reconciling after its agent registered; retry in a moment"));
  }
  if (n->node.cordoned()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node: node ", QuoteForMessage(req.node()), " is cordoned"));
  }
  if (req.devices().empty()) {
    return absl::InvalidArgumentError("devices: at least one device is required with node");
  }
  std::set<std::string> wanted;
  for (int i = 0; i < req.devices_size(); ++i) {
    const std::string field = absl::StrCat("devices[", i, "]");
    const std::string& addr = req.devices(i);
    RETURN_IF_ERROR(ValidatePciAddress(field, addr));
    if (!wanted.insert(addr).second) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", addr, " is listed twice"));
    }
    auto d = std::find_if(n->devices.begin(), n->devices.end(),
                          [&](const v1::Device& x) { return x.address() == addr; });
    if (d == n->devices.end()) {
      return absl::NotFoundError(
          absl::StrCat(field, ": node ", QuoteForMessage(req.node()), " has no device ", addr));
    }
    if (!d->assignable()) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ": device ", addr, " is not assignable: ", d->unassignable_reason()));
    }
    auto holder = device_holder_.find({req.node(), addr});
    if (holder != device_holder_.end()) {
      // Another tenant's container id is never shown to a tenant.
      const bool theirs = containers_.at(holder->second).container.tenant_id() == req.tenant_id();
      return absl::FailedPreconditionError(absl::StrCat(
          field, ": device ", addr, " is held by ",
          caller.role != Role::kTenant || theirs ? absl::StrCat("container ", holder->second)
                                                 : "another tenant's container"));
    }
    if (pending_devices_.count({req.node(), addr})) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ": device ", addr, " is being assigned to another container"));
    }
  }
  // A group is assigned whole or not at all.
  for (int i = 0; i < req.devices_size(); ++i) {
    const auto& d = *std::find_if(n->devices.begin(), n->devices.end(), [&](const v1::Device& x) {
      return x.address() == req.devices(i);
    });
    for (const v1::Device& peer : n->devices) {
      if (peer.iommu_group() == d.iommu_group() && !wanted.count(peer.address())) {
        return absl::FailedPreconditionError(
            absl::StrCat("devices[", i, "]: IOMMU group ", d.iommu_group(), " also holds ",
                         peer.address(), "; a group is assigned whole"));
      }
    }
  }
  *node = req.node();
  devices->assign(wanted.begin(), wanted.end());
  return absl::OkStatus();
}

absl::Status Broker::PlaceBySelectorLocked(const v1::CreateContainerRequest& req, std::string* node,
                                           std::vector<std::string>* devices) {
  if (!req.devices().empty()) {
    return absl::InvalidArgumentError("devices: may only be given together with node");
  }
  const uint32_t count = req.selector().count() == 0 ? 1 : req.selector().count();
  if (count > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("selector.count: at most 64 devices per container, got ", count));
  }
  const model::SelectorKey key{req.selector().vendor_id(), req.selector().device_id()};
  RefreshPlacementLocked();
  std::string found;
  // The placeable node with the most free matching devices (ties: first by
  // name), skipping those whose groups do not add up to `count` or whose
  // devices are reserved by a create in flight: O(log nodes) plus the
  // devices of the nodes looked at, whatever the fleet's size.
  placement_.VisitBest(key, count, [&](const std::string& name, int64_t) {
    mu_.AssertHeld();  // VisitBest calls back synchronously, under mu_.
    auto n = nodes_.find(name);
    if (n == nodes_.end()) return true;
    std::optional<std::vector<std::string>> picked =
        model::PickWholeGroups(n->second.devices, key, count, [&](const std::string& address) {
          mu_.AssertHeld();  // Called synchronously, under mu_.
          return DeviceBusyLocked(name, address);
        });
    if (!picked.has_value()) return true;
    found = name;
    *devices = *std::move(picked);
    return false;
  });
  if (found.empty()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "selector: no ready, uncordoned node has %u free assignable device(s) matching "
        "vendor_id=0x%04x device_id=0x%04x",
        count, req.selector().vendor_id(), req.selector().device_id()));
  }
  *node = std::move(found);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Broker::AdmitCreateLocked(const v1::CreateContainerRequest& req) {
  RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  RETURN_IF_ERROR(ValidatePlacementForm(req));
  if (!req.name().empty()) RETURN_IF_ERROR(ValidateContainerName("name", req.name()));
  RETURN_IF_ERROR(ValidateLabels("labels", req.labels()));
  auto tenant = tenants_.find(req.tenant_id());
  if (tenant == tenants_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tenant_id: no tenant ", QuoteForMessage(req.tenant_id())));
  }
  if (!req.name().empty()) RETURN_IF_ERROR(NameFreeLocked(req.tenant_id(), req.name()));
  const uint32_t max = tenant->second.quota().max_containers();
  const int held = TenantContainerCountLocked(req.tenant_id());
  if (max != 0 && static_cast<uint32_t>(held) >= max) {
    return RecordRefusal(NewEvent(kWarning, "QuotaExceeded", TenantRef(req.tenant_id()),
                                  req.tenant_id(), req.request_id(), ""),
                         absl::ResourceExhaustedError(absl::StrCat(
                             "tenant_id: tenant ", QuoteForMessage(req.tenant_id()), " holds ",
                             held, " of its ", max, " containers (quota.max_containers)")));
  }
  if (req.pin_budget_bytes() % 4096 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pin_budget_bytes: must be a multiple of 4096 (a host page), got ",
                     req.pin_budget_bytes()));
  }
  const uint64_t quota = tenant->second.quota().pinned_bytes();
  const uint64_t budgeted = TenantBudgetLocked(req.tenant_id());
  const uint64_t unbudgeted = budgeted >= quota ? 0 : quota - budgeted;
  if (req.pin_budget_bytes() > unbudgeted) {
    return RecordRefusal(
        NewEvent(kWarning, "QuotaExceeded", TenantRef(req.tenant_id()), req.tenant_id(),
                 req.request_id(), ""),
        absl::ResourceExhaustedError(absl::StrCat(
            "pin_budget_bytes: tenant ", QuoteForMessage(req.tenant_id()), " has ", Hex(unbudgeted),
            " bytes of its pinned quota ", Hex(quota),
            " not yet budgeted to containers; asked for ", Hex(req.pin_budget_bytes()))));
  }
  return req.pin_budget_bytes() == 0 ? unbudgeted : req.pin_budget_bytes();
}

absl::Status Broker::CreateContainer(const v1::CreateContainerRequest& req, v1::Container* out,
                                     const Identity& caller) {
  const std::string fingerprint = Fingerprint("CreateContainer", req);
  const std::string rkey = RequestKey(caller, req.request_id());
  std::string node, id;
  AgentEndpoint agent_address;
  std::vector<std::string> devices;
  uint64_t budget = 0;
  {
    absl::MutexLock l(&mu_);
    bool replayed = false;
    RETURN_IF_ERROR(CheckReplayLocked(req.request_id(), rkey, fingerprint, out, &replayed));
    if (replayed) return absl::OkStatus();
    ASSIGN_OR_RETURN(budget, AdmitCreateLocked(req));
    absl::Status placed = PlaceLocked(req, caller, &node, &devices);
    // No room is worth telling people about; a malformed request is not.
    if (absl::IsResourceExhausted(placed)) {
      RecordRefusal(NewEvent(kWarning, "PlacementFailed", TenantRef(req.tenant_id()),
                             req.tenant_id(), req.request_id(), ""),
                    placed)
          .IgnoreError();
    }
    RETURN_IF_ERROR(placed);
    agent_address = Endpoint(nodes_[node]);
    id = NewIdLocked("c-");
    // Reserve while the agent works, so no concurrent create takes them.
    for (const std::string& d : devices) pending_devices_.insert({node, d});
    if (!req.name().empty()) pending_names_.insert({req.name(), req.tenant_id()});
    ++pending_creates_[req.tenant_id()];
    pending_budget_[req.tenant_id()] += budget;
    if (!req.request_id().empty()) inflight_.insert(rkey);
  }

  v1::AgentCreateContainerRequest agent_req;
  agent_req.set_container_id(id);
  agent_req.set_tenant_id(req.tenant_id());
  for (const std::string& d : devices) agent_req.add_devices(d);
  agent_req.set_pin_budget_bytes(budget);
  absl::StatusOr<v1::AgentContainer> created = agents_->CreateContainer(agent_address, agent_req);

  absl::Status s =
      CommitCreatedContainer(req, fingerprint, rkey, id, node, devices, budget, created, out);
  if (!s.ok() && created.ok()) {
    // Not acknowledged, so it must not exist: undo on the agent. If that
    // fails too, the agent drops it at its next reconcile, since the store
    // does not list it.
    agents_->DestroyContainer(agent_address, id).IgnoreError();
  }
  return s;
}

absl::Status Broker::CommitCreatedContainer(
    const v1::CreateContainerRequest& req, const std::string& fingerprint, const std::string& rkey,
    const std::string& id, const std::string& node, const std::vector<std::string>& devices,
    uint64_t budget, const absl::StatusOr<v1::AgentContainer>& created, v1::Container* out) {
  absl::MutexLock l(&mu_);
  for (const std::string& d : devices) pending_devices_.erase({node, d});
  pending_names_.erase({req.name(), req.tenant_id()});
  if (--pending_creates_[req.tenant_id()] == 0) pending_creates_.erase(req.tenant_id());
  if ((pending_budget_[req.tenant_id()] -= budget) == 0) pending_budget_.erase(req.tenant_id());
  // The request stays in flight until its answer is durable (or refused).
  absl::Cleanup forget_request = [this, &rkey] {
    mu_.AssertHeld();  // Runs before `l` unlocks.
    inflight_.erase(rkey);
  };
  if (!created.ok()) {
    const absl::Status& s = created.status();
    LogEvent(LogLevel::kWarning, "container_create_failed",
             {{"node", node},
              {"tenant", req.tenant_id()},
              {"code", absl::StatusCodeToString(s.code())},
              {"error", s.message()}});
    RecordEvent(NewEvent(kWarning, "ContainerCreateFailed", TenantRef(req.tenant_id()),
                         req.tenant_id(), req.request_id(),
                         absl::StrCat("on node ", node, " with devices ",
                                      absl::StrJoin(devices, ","), ": the agent answered ",
                                      absl::StatusCodeToString(s.code()), ": ", s.message()),
                         {NodeRef(node)}));
    return AgentCallError(node, "", s);
  }
  v1::Container c;
  c.set_id(id);
  c.set_tenant_id(req.tenant_id());
  c.set_node(node);
  for (const std::string& d : devices) c.add_devices(d);
  *c.mutable_geometry() = created->geometry();
  c.set_create_time_ms(Now());
  c.set_pin_budget_bytes(budget);
  c.set_name(req.name());
  *c.mutable_labels() = req.labels();
  // The agent's geometry must make an allocator (a page size, usable
  // ranges): checked before anything is committed.
  ASSIGN_OR_RETURN(WindowAllocator alloc, AllocatorFor(c));
  v1::Container answer = ContainerViewLocked(ContainerEntry{c, std::move(alloc), {}});
  WriteBatch batch;
  batch.puts.push_back(Record(kContainer, id, c));
  if (!req.request_id().empty()) {
    batch.request = RequestRecord{rkey, fingerprint, answer.SerializeAsString(), Now()};
  }
  RETURN_IF_ERROR(ApplyAndCommitLocked(std::move(batch)));  // Rolled back on error.
  LogEvent(LogLevel::kInfo, "container_created",
           {{"container", id},
            {"tenant", req.tenant_id()},
            {"name", req.name()},
            {"node", node},
            {"devices", absl::StrJoin(devices, ",")},
            {"request_id", req.request_id()}});
  RecordEvent(NewEvent(kNormal, "ContainerCreated", ContainerRef(id), req.tenant_id(),
                       req.request_id(),
                       absl::StrCat(id, req.name().empty() ? "" : " (" + req.name() + ")",
                                    " on node ", node, " with devices ",
                                    absl::StrJoin(devices, ","), "; pin budget ",
                                    EventBytes(budget)),
                       {TenantRef(req.tenant_id()), NodeRef(node)}));
  *out = std::move(answer);
  return absl::OkStatus();
}

absl::Status Broker::GetContainer(const v1::GetContainerRequest& req, v1::Container* out,
                                  const Identity& caller) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(const std::string id,
                   ResolveContainerLocked(caller, "container_id", req.container_id()));
  ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
  *out = ContainerViewLocked(*c);
  return AwaitDurableLocked(c->changed_seq);  // Only its own changes show.
}

absl::Status Broker::ListContainers(const v1::ListContainersRequest& req,
                                    v1::ListContainersResponse* out, const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  if (!req.tenant_id().empty()) RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  if (!req.node().empty()) RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  if (!v1::ContainerState_IsValid(req.state())) {
    return absl::InvalidArgumentError(absl::StrCat("state: unknown state ", req.state()));
  }
  ASSIGN_OR_RETURN(LabelSelector selector,
                   LabelSelector::Parse("label_selector", req.label_selector()));
  absl::MutexLock l(&mu_);
  auto keep = [&](const ContainerEntry& c) {
    mu_.AssertHeld();  // Paging runs under the caller's lock.
    if (!req.tenant_id().empty() && c.container.tenant_id() != req.tenant_id()) return false;
    if (!selector.Matches(c.container.labels())) return false;
    if (!req.node().empty() && c.container.node() != req.node()) return false;
    if (req.state() != v1::CONTAINER_STATE_UNSPECIFIED && ContainerStateLocked(c) != req.state()) {
      return false;
    }
    return true;
  };
  auto emit = [&](const ContainerEntry& c) {
    mu_.AssertHeld();  // Paging runs under the caller's lock.
    *out->add_containers() = ContainerViewLocked(c);
  };
  // By node or tenant: walk that index (the smaller when both are given),
  // not every container, so a page costs O(page) whatever the fleet holds.
  const std::set<std::string>* ids = nullptr;
  if (!req.node().empty()) ids = &NodeContainersLocked(req.node());
  if (!req.tenant_id().empty()) {
    const std::set<std::string>& mine = TenantContainersLocked(req.tenant_id());
    if (ids == nullptr || mine.size() < ids->size()) ids = &mine;
  }
  std::string next;
  if (ids != nullptr) {
    PageSubset(*ids, containers_, req.page_token(), limit, keep, emit, &next);
  } else {
    Page(containers_, req.page_token(), limit, keep, emit, &next);
  }
  out->set_next_page_token(next);
  out->set_resource_version(watch_.CurrentVersion());
  return AwaitDurableLocked();
}

absl::StatusOr<Broker::Plan> Broker::PlanDeleteContainerLocked(const std::string& id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(absl::StrCat("container_id: no container ", QuoteForMessage(id)));
  }
  const ContainerEntry& c = it->second;
  Plan plan;
  plan.batch.deletes.push_back({kContainer, id});
  for (const std::string& w : c.window_ids) plan.batch.deletes.push_back({kWindow, w});
  return plan;
}

absl::Status Broker::DeleteContainerInternal(const std::string& id,
                                             std::optional<RequestRecord> request) {
  std::string node, tenant;
  AgentEndpoint address;
  bool live = false;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
    if (deleting_.count(id)) {
      return absl::AbortedError(
          absl::StrCat("container_id: container ", id, " is already being deleted"));
    }
    node = c->container.node();
    tenant = c->container.tenant_id();
    auto n = nodes_.find(node);
    live = n != nodes_.end() && NodeLiveLocked(n->second);
    if (n != nodes_.end()) address = Endpoint(n->second);
    deleting_.insert(id);
    if (live && !c->container.deleting()) {
      // The intent first, durably, and only then the agent's destroy: a
      // delete refused by the store (say, a full disk) must leave the
      // container on its agent, and a crash after the destroy must not show
      // the container READY or have the agent re-create it (Register
      // finishes a DELETING container its agent no longer holds).
      v1::Container marked = c->container;
      marked.set_deleting(true);
      WriteBatch intent;
      intent.puts.push_back(Record(kContainer, id, marked));
      // Rolled back on error; c is stale after it.
      absl::Status s = ApplyAndCommitLocked(std::move(intent));
      if (!s.ok()) {
        deleting_.erase(id);
        return s;
      }
    }
  }
  if (live) {
    absl::Status s = agents_->DestroyContainer(address, id);
    // NOT_FOUND: the agent lost it already (e.g. it restarted); that is the
    // state we want.
    if (!s.ok() && !absl::IsNotFound(s)) {
      absl::MutexLock l(&mu_);
      deleting_.erase(id);
      absl::Status failed = AgentCallError(node, address.address, s);
      return absl::Status(failed.code(),
                          absl::StrCat(failed.message(), "; container ", id,
                                       " stays DELETING: repeat the delete to finish it"));
    }
  }
  absl::MutexLock l(&mu_);
  deleting_.erase(id);
  ASSIGN_OR_RETURN(Plan plan, PlanDeleteContainerLocked(id));
  if (request.has_value()) plan.batch.request = request;
  absl::Status removed = ApplyAndCommitLocked(std::move(plan.batch));  // Rolled back on error.
  if (!removed.ok()) {
    if (!live) return removed;
    // Destroyed on the node, but not forgotten: the container stays
    // DELETING (never READY without its agent) until a repeated delete or
    // the agent's next registration finishes it.
    return absl::Status(removed.code(),
                        absl::StrCat(removed.message(), "; container ", id,
                                     " was destroyed on its node and stays DELETING: repeat "
                                     "the delete to finish it"));
  }
  LogEvent(LogLevel::kInfo, "container_deleted",
           {{"container", id},
            {"tenant", tenant},
            {"node", node},
            {"node_live", live},
            {"request_id", request ? request->request_id : ""}});
  RecordEvent(NewEvent(kNormal, "ContainerDeleted", ContainerRef(id), tenant,
                       request ? request->request_id : "",
                       live ? absl::StrCat(id, " deleted from node ", node)
                            : absl::StrCat(id, " forgotten; node ", node,
                                           " is unavailable and its agent destroys it when it "
                                           "reconciles"),
                       {TenantRef(tenant), NodeRef(node)}));
  return absl::OkStatus();
}

absl::Status Broker::DeleteContainer(const v1::DeleteContainerRequest& req,
                                     v1::DeleteContainerResponse* out, const Identity& caller) {
  const std::string fingerprint = Fingerprint("DeleteContainer", req);
  const std::string rkey = RequestKey(caller, req.request_id());
  std::string id;
  {
    absl::MutexLock l(&mu_);
    bool replayed = false;
    RETURN_IF_ERROR(CheckReplayLocked(req.request_id(), rkey, fingerprint, out, &replayed));
    if (replayed) return absl::OkStatus();
    ASSIGN_OR_RETURN(id, ResolveContainerLocked(caller, "container_id", req.container_id()));
    RETURN_IF_ERROR(FindContainerLocked(id).status());
    if (!req.request_id().empty()) inflight_.insert(rkey);
  }
  std::optional<RequestRecord> record;
  if (!req.request_id().empty()) {
    record =
        RequestRecord{rkey, fingerprint, v1::DeleteContainerResponse().SerializeAsString(), Now()};
  }
  absl::Status s = DeleteContainerInternal(id, std::move(record));
  absl::MutexLock l(&mu_);
  inflight_.erase(rkey);
  return s;
}

}  // namespace iommu
