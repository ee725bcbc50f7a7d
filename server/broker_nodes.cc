// The Broker's node operations for operators: list, get, cordon, drain,
// delete, devices.
#include "server/broker.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/broker_internal.h"

namespace iommu {

using broker_internal::Fingerprint;
using broker_internal::kDevices;
using broker_internal::kNode;
using broker_internal::kNodeKey;
using broker_internal::kNormal;
using broker_internal::NewEvent;
using broker_internal::NodeRef;
using broker_internal::Page;
using broker_internal::Record;
using broker_internal::RequestKey;

// ------------------------------------------------------------ nodes

absl::Status Broker::ListNodes(const v1::ListNodesRequest& req, v1::ListNodesResponse* out,
                               const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  absl::MutexLock l(&mu_);
  std::string next;
  Page(
      nodes_, req.page_token(), limit, [](const NodeEntry&) { return true; },
      [&](const NodeEntry& n) {
        mu_.AssertHeld();  // Page runs under the caller's lock.
        *out->add_nodes() = NodeViewLocked(n);
      },
      &next);
  out->set_next_page_token(next);
  out->set_resource_version(watch_.CurrentVersion());
  return AwaitDurableLocked();
}

absl::Status Broker::GetNode(const v1::GetNodeRequest& req, v1::Node* out, const Identity& caller) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
  *out = NodeViewLocked(*n);
  return AwaitDurableLocked();
}

v1::Node Broker::CordonPlanLocked(NodeEntry* n, bool cordoned, Plan* plan) {
  v1::Node persisted = n->node;
  persisted.set_cordoned(cordoned);
  plan->batch.puts.push_back(Record(kNode, persisted.name(), persisted));
  v1::Node view = NodeViewLocked(*n);
  view.set_cordoned(cordoned);
  return view;
}

absl::Status Broker::CordonNode(const v1::CordonNodeRequest& req, v1::Node* out,
                                const Identity& caller) {
  return Mutate<v1::CordonNodeRequest, v1::Node>(
      "CordonNode", caller, req, out, [&](v1::Node* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
        Plan plan;
        *answer = CordonPlanLocked(n, true, &plan);
        plan.Log(LogLevel::kInfo, "node_cordoned",
                 {{"node", req.node()}, {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "NodeCordoned", NodeRef(req.node()), "", req.request_id(),
                             "cordoned: no new containers are placed here"));
        return plan;
      });
}

absl::Status Broker::UncordonNode(const v1::UncordonNodeRequest& req, v1::Node* out,
                                  const Identity& caller) {
  return Mutate<v1::UncordonNodeRequest, v1::Node>(
      "UncordonNode", caller, req, out, [&](v1::Node* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
        Plan plan;
        *answer = CordonPlanLocked(n, false, &plan);
        plan.Log(LogLevel::kInfo, "node_uncordoned",
                 {{"node", req.node()}, {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "NodeUncordoned", NodeRef(req.node()), "", req.request_id(),
                             "uncordoned: new containers may be placed here again"));
        return plan;
      });
}

absl::Status Broker::DrainNode(const v1::DrainNodeRequest& req, v1::DrainNodeResponse* out,
                               const Identity& caller) {
  const std::string fingerprint = Fingerprint("DrainNode", req);
  const std::string rkey = RequestKey(caller, req.request_id());
  std::vector<std::string> victims;
  {
    absl::MutexLock l(&mu_);
    bool replayed = false;
    RETURN_IF_ERROR(CheckReplayLocked(req.request_id(), rkey, fingerprint, out, &replayed));
    if (replayed) return absl::OkStatus();
    ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
    // Cordon first, durably, so nothing new lands while we delete.
    Plan plan;
    CordonPlanLocked(n, true, &plan);
    if (!req.request_id().empty()) inflight_.insert(rkey);
    // n is stale after this.
    absl::Status cordoned = ApplyAndCommitLocked(std::move(plan.batch));
    if (!cordoned.ok()) {
      inflight_.erase(rkey);
      return cordoned;
    }
    const std::set<std::string>& on_node = NodeContainersLocked(req.node());
    victims.assign(on_node.begin(), on_node.end());
  }
  LogEvent(LogLevel::kInfo, "node_draining",
           {{"node", req.node()},
            {"containers", victims.size()},
            {"delete", req.delete_containers()},
            {"request_id", req.request_id()}});
  RecordEvent(NewEvent(kNormal, "NodeDraining", NodeRef(req.node()), "", req.request_id(),
                       absl::StrCat("cordoned; ", victims.size(), " container(s) on it ",
                                    req.delete_containers() ? "are being deleted"
                                                            : "are left in place")));
  v1::DrainNodeResponse answer;
  absl::Status first_error;
  for (const std::string& id : victims) {
    if (!req.delete_containers()) {
      answer.add_remaining_container_ids(id);
      continue;
    }
    absl::Status s = DeleteContainerInternal(id, std::nullopt);
    if (s.ok() || absl::IsNotFound(s)) {
      answer.add_deleted_container_ids(id);
    } else {
      answer.add_remaining_container_ids(id);
      if (first_error.ok()) first_error = s;
    }
  }
  absl::MutexLock l(&mu_);
  if (!first_error.ok()) {
    inflight_.erase(rkey);
    // Not remembered: a retry deletes what is left.
    return absl::Status(first_error.code(),
                        absl::StrCat("node: drained ", answer.deleted_container_ids_size(),
                                     " container(s), then failed: ", first_error.message()));
  }
  auto it = nodes_.find(req.node());
  if (it != nodes_.end()) *answer.mutable_node() = NodeViewLocked(it->second);
  absl::Status s;
  if (!req.request_id().empty()) {
    WriteBatch b;
    b.request = RequestRecord{rkey, fingerprint, answer.SerializeAsString(), Now()};
    s = CommitLocked(std::move(b));  // Durable only after all the answer shows.
  } else {
    s = AwaitDurableLocked();
  }
  inflight_.erase(rkey);
  RETURN_IF_ERROR(s);
  *out = std::move(answer);
  return absl::OkStatus();
}

absl::Status Broker::DeleteNode(const v1::DeleteNodeRequest& req, v1::DeleteNodeResponse* out,
                                const Identity& caller) {
  return Mutate<v1::DeleteNodeRequest, v1::DeleteNodeResponse>(
      "DeleteNode", caller, req, out, [&](v1::DeleteNodeResponse*) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
        const size_t held =
            NodeContainersLocked(req.node()).size() + PendingDevicesLocked(req.node()).size();
        if (held > 0) {
          return absl::FailedPreconditionError(absl::StrCat(
              "node: node ", QuoteForMessage(req.node()), " still has ", held,
              " container(s) (or creates in flight); delete them first, e.g. iommuctl node "
              "drain ",
              req.node(), " --delete-containers"));
        }
        if (NodeLiveLocked(*n) && !req.force()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "node: node ", QuoteForMessage(req.node()),
              " is alive (its agent is registered and heartbeating); stop its agent first, or "
              "force the delete (the agent then registers the node again)"));
        }
        Plan plan;
        // All of the node's records: a part left behind would bring the node
        // back, nameless, at the next restart.
        plan.batch.deletes.push_back({kNode, req.node()});
        plan.batch.deletes.push_back({kDevices, req.node()});
        plan.batch.deletes.push_back({kNodeKey, req.node()});
        plan.Log(LogLevel::kInfo, "node_deleted",
                 {{"node", req.node()}, {"force", req.force()}, {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "NodeDeleted", NodeRef(req.node()), "", req.request_id(),
                             req.force() ? "deleted (forced)" : "deleted"));
        return plan;
      });
}

absl::Status Broker::ListDevices(const v1::ListDevicesRequest& req, v1::ListDevicesResponse* out,
                                 const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
  std::map<std::string, v1::Device> by_address;
  for (v1::Device& d : DeviceViewLocked(*n)) {
    std::string address = d.address();
    by_address.emplace(std::move(address), std::move(d));
  }
  std::string next;
  Page(
      by_address, req.page_token(), limit, [](const v1::Device&) { return true; },
      [&](const v1::Device& d) { *out->add_devices() = d; }, &next);
  out->set_next_page_token(next);
  return AwaitDurableLocked();
}

}  // namespace iommu
