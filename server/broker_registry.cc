// The node registry: agents register, heartbeat and report reconciled; node
// liveness and the expiry of remembered answers.
#include "server/broker.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/grant_token.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/broker_internal.h"

namespace iommu {

using broker_internal::ContainerRef;
using broker_internal::IsLowerHex;
using broker_internal::kDevices;
using broker_internal::kNode;
using broker_internal::kNodeKey;
using broker_internal::kNormal;
using broker_internal::kWarning;
using broker_internal::NewEvent;
using broker_internal::NodeRef;
using broker_internal::Record;

// ------------------------------------------------------------ registry

namespace {

// What Register checks before it takes the lock; INVALID_ARGUMENT naming the
// field.
absl::Status ValidateRegisterRequest(const v1::RegisterRequest& req) {
  RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  if (req.agent_address().empty() || req.agent_address().size() > 255) {
    return absl::InvalidArgumentError("agent_address: required, host:port, at most 255 characters");
  }
  if (req.devices_size() > 4096) {
    return absl::InvalidArgumentError("devices: at most 4096 devices per node");
  }
  std::set<std::string> seen;
  for (int i = 0; i < req.devices_size(); ++i) {
    RETURN_IF_ERROR(ValidatePciAddress(absl::StrCat("devices[", i, "].address"),
                                       req.devices(i).address()));
    if (!seen.insert(req.devices(i).address()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("devices[", i, "].address: ", req.devices(i).address(), " is listed twice"));
    }
  }
  if (!req.agent_incarnation().empty() && !IsLowerHex(req.agent_incarnation(), 32)) {
    // Empty is an agent from before incarnations; its grants carry none.
    return absl::InvalidArgumentError("agent_incarnation: 32 lower-case hex digits when set");
  }
  return absl::OkStatus();
}

absl::Status RolledBack(const std::string& node) {
  return absl::UnavailableError(absl::StrCat("node: node ", QuoteForMessage(node),
                                             " was rolled back by a failed commit; retry"));
}

bool SameNodeRecord(const v1::Node& a, const v1::Node& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

bool SameDevices(const std::vector<v1::Device>& stored, const v1::ListDevicesResponse& reported) {
  if (static_cast<int>(stored.size()) != reported.devices_size()) return false;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (!google::protobuf::util::MessageDifferencer::Equals(stored[i], reported.devices(i))) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::Status Broker::Register(const v1::RegisterRequest& req, v1::RegisterResponse* out) {
  RETURN_IF_ERROR(ValidateRegisterRequest(req));
  Turnstile::Turn turn(&registrations_);
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(NodeEntry * found, PersistRegistrationLocked(req));
  std::set<std::string> held;
  for (const v1::AgentContainer& c : req.containers()) held.insert(c.id());
  ASSIGN_OR_RETURN(const bool finished, FinishDeletesAtRegistrationLocked(req.node(), held));
  if (finished) {
    auto again = nodes_.find(req.node());  // Looked up again: mu_ was released.
    if (again == nodes_.end()) return RolledBack(req.node());
    found = &again->second;
  }
  NodeEntry& n = *found;
  out->set_grant_key(n.grant_key);
  n.agent_incarnation = req.agent_incarnation();
  n.session_id = absl::StrFormat("s-%016x", absl::Uniform<uint64_t>(rng_));
  n.reconciled = false;
  MarkPlacementStaleLocked(req.node());
  NoteHeartbeatLocked(&n);
  SetNodeUsageLocked(req.node(), &n, {});
  n.failed.clear();
  out->set_session_id(n.session_id);
  out->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  const int to_create = DesiredContainersLocked(req.node(), &held, out);
  MarkObservedLocked(v1::OBJECT_KIND_NODE, req.node());
  MarkNodeContainersLocked(req.node());
  PublishLocked();
  std::vector<LogField> fields = {
      {"node", req.node()}, {"address", req.agent_address()}, {"backend", req.backend()}};
  if (req.simulated()) fields.push_back({"SIMULATED", true});
  fields.insert(fields.end(), {{"devices", req.devices_size()},
                               {"desired", out->desired_containers_size()},
                               {"to_create", to_create},
                               {"to_destroy", held.size()}});
  LogEvent(LogLevel::kInfo, "node_registered", fields);
  RecordEvent(NewEvent(
      kNormal, "NodeRegistered", NodeRef(req.node()), "", "",
      absl::StrCat("agent at ", req.agent_address(), ", backend ", req.backend(),
                   req.simulated() ? " (SIMULATED)" : "", ", ", req.devices_size(),
                   " device(s); it should hold ", out->desired_containers_size(),
                   " container(s): ", to_create, " to re-create, ", held.size(), " to destroy")));
  // The desired containers may include some not yet durable.
  return AwaitDurableLocked();
}

absl::StatusOr<Broker::NodeEntry*> Broker::PersistRegistrationLocked(
    const v1::RegisterRequest& req) {
  NodeEntry& before = nodes_[req.node()];
  v1::Node persisted = before.node;
  persisted.set_name(req.node());
  persisted.set_agent_address(req.agent_address());
  persisted.set_backend(req.backend());
  persisted.set_simulated(req.simulated());
  persisted.set_agent_version(req.agent_version());
  persisted.set_launcher_socket(req.launcher_socket());
  v1::ListDevicesResponse devices;
  for (const v1::Device& d : req.devices()) {
    v1::Device* copy = devices.add_devices();
    *copy = d;
    copy->clear_container_id();  // The broker's store decides who holds what.
  }
  // A node that comes back as it was (the agent or the broker restarted, or
  // the node timed out) changes nothing durable: no commit. After a broker
  // restart every node re-registers at once, and a commit each, under the
  // one commit pipeline, made a fleet of thousands take minutes to be READY.
  if (!before.grant_key.empty() && SameNodeRecord(before.node, persisted) &&
      SameDevices(before.devices, devices)) {
    return &before;
  }
  WriteBatch batch;
  batch.puts.push_back(Record(kNode, req.node(), persisted));
  batch.puts.push_back(Record(kDevices, req.node(), devices));
  std::string key = before.grant_key;
  if (key.empty()) {
    key = NewGrantKey();
    batch.puts.push_back(StoreRecord{kNodeKey, req.node(), key});
  }
  // The persisted part is applied now and committed with the group; a
  // failed commit rolls it back (and forgets a node never known). The
  // session starts only once the node's record is durable.
  RETURN_IF_ERROR(ApplyAndCommitLocked(std::move(batch)));
  auto found = nodes_.find(req.node());  // Looked up again: mu_ was released.
  if (found == nodes_.end()) return RolledBack(req.node());
  return &found->second;
}

absl::StatusOr<bool> Broker::FinishDeletesAtRegistrationLocked(const std::string& node,
                                                               const std::set<std::string>& held) {
  // A delete whose destroy happened but whose removal was never committed
  // (the broker crashed, or the store refused it) is finished here, before
  // the session starts, so that a failure leaves no session behind. One in
  // flight finishes itself.
  std::vector<std::string> finished;
  for (const std::string& id : NodeContainersLocked(node)) {
    const ContainerEntry& c = containers_.at(id);
    if (c.container.deleting() && !held.count(id) && !deleting_.count(id)) finished.push_back(id);
  }
  if (finished.empty()) return false;
  WriteBatch removal;
  for (const std::string& id : finished) {
    absl::StatusOr<Plan> plan = PlanDeleteContainerLocked(id);
    if (!plan.ok()) continue;
    for (auto& d : plan->batch.deletes) removal.deletes.push_back(std::move(d));
  }
  RETURN_IF_ERROR(ApplyAndCommitLocked(std::move(removal)));
  for (const std::string& id : finished) {
    LogEvent(LogLevel::kInfo, "container_deleted",
             {{"container", id}, {"node", node}, {"note", "finished_at_registration"}});
    RecordEvent(
        NewEvent(kNormal, "ContainerDeleted", ContainerRef(id), "", "",
                 absl::StrCat(id, " deleted: its agent on node ", node, " no longer holds it"),
                 {NodeRef(node)}));
  }
  return true;
}

int Broker::DesiredContainersLocked(const std::string& node, std::set<std::string>* held,
                                    v1::RegisterResponse* out) {
  int to_create = 0;
  for (const std::string& id : NodeContainersLocked(node)) {
    const ContainerEntry& c = containers_.at(id);
    // A DELETING one its agent no longer holds, whose delete is in flight,
    // is not wanted back.
    if (c.container.deleting() && !held->count(id)) continue;
    v1::AgentContainer* d = out->add_desired_containers();
    d->set_id(id);
    d->set_tenant_id(c.container.tenant_id());
    *d->mutable_devices() = c.container.devices();
    *d->mutable_geometry() = c.container.geometry();
    d->set_pin_budget_bytes(c.container.pin_budget_bytes());
    *d->mutable_windows() = WindowsLocked(c).windows();
    if (!held->erase(id)) ++to_create;
  }
  return to_create;
}

absl::Status Broker::Heartbeat(const v1::HeartbeatRequest& req, v1::HeartbeatResponse* out) {
  RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  absl::ReleasableMutexLock l(&mu_);
  auto it = nodes_.find(req.node());
  if (it == nodes_.end() || it->second.session_id.empty() ||
      it->second.session_id != req.session_id()) {
    return absl::FailedPreconditionError(
        absl::StrCat("session_id: node ", QuoteForMessage(req.node()), " has no session ",
                     QuoteForMessage(req.session_id()), "; register again"));
  }
  NodeEntry& n = it->second;
  NoteHeartbeatLocked(&n);
  std::map<std::string, v1::PinUsage> usage;
  for (const v1::PinUsage& u : req.usage()) {
    if (ValidateTenantId("usage.tenant_id", u.tenant_id()).ok()) usage[u.tenant_id()] = u;
  }
  SetNodeUsageLocked(req.node(), &n, std::move(usage));
  if (n.heartbeat_answer == nullptr) {
    n.heartbeat_answer = HeartbeatAnswerLocked(req.node());
    n.heartbeat_answer_seq = applied_seq_;
    ++heartbeat_answers_built_;
  }
  const std::shared_ptr<const v1::HeartbeatResponse> answer = n.heartbeat_answer;
  // Agents enforce what this answer carries: only durable budgets and windows.
  RETURN_IF_ERROR(AwaitDurableLocked(n.heartbeat_answer_seq));
  l.Release();
  // The copy, O(the node's containers), is made without mu_: at thousands of
  // nodes each heartbeating every second it would otherwise hold up every
  // other call.
  *out = *answer;
  return absl::OkStatus();
}

std::shared_ptr<const v1::HeartbeatResponse> Broker::HeartbeatAnswerLocked(
    const std::string& node) const {
  auto answer = std::make_shared<v1::HeartbeatResponse>();
  for (const std::string& id : NodeContainersLocked(node)) {
    const ContainerEntry& c = containers_.at(id);
    v1::ContainerBudget* b = answer->add_budgets();
    b->set_container_id(id);
    b->set_pin_budget_bytes(c.container.pin_budget_bytes());
    *answer->add_windows() = WindowsLocked(c);
  }
  return answer;
}

absl::Status Broker::Reconciled(const v1::ReconciledRequest& req, v1::ReconciledResponse*) {
  RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(req.node());
  if (it == nodes_.end() || it->second.session_id != req.session_id()) {
    return absl::FailedPreconditionError(
        absl::StrCat("session_id: node ", QuoteForMessage(req.node()), " has no session ",
                     QuoteForMessage(req.session_id()), "; register again"));
  }
  const std::map<std::string, std::string> failed_before = std::move(it->second.failed);
  it->second.failed.clear();
  it->second.reconciled = true;
  MarkPlacementStaleLocked(req.node());
  for (int i = 0; i < req.failed_container_ids_size(); ++i) {
    const std::string reason = i < req.failure_reasons_size() ? req.failure_reasons(i) : "";
    // Shown as CONTAINER_STATE_FAILED until the agent's retry succeeds: the
    // store must not claim the node holds what it does not (invariant 6).
    if (containers_.count(req.failed_container_ids(i))) {
      it->second.failed[req.failed_container_ids(i)] =
          absl::StrCat("the node's agent could not re-create it: ", reason.substr(0, 512));
    }
    LogEvent(
        LogLevel::kWarning, "reconcile_failed",
        {{"node", req.node()}, {"container", req.failed_container_ids(i)}, {"reason", reason}});
    RecordEvent(NewEvent(
        kWarning, "ContainerFailed", ContainerRef(req.failed_container_ids(i)),
        containers_.count(req.failed_container_ids(i))
            ? containers_.at(req.failed_container_ids(i)).container.tenant_id()
            : "",
        "",
        absl::StrCat("the agent of node ", req.node(),
                     " could not re-create it (it retries): ", reason.substr(0, 512)),
        {NodeRef(req.node())}));
  }
  MarkObservedLocked(v1::OBJECT_KIND_NODE, req.node());
  // Registration already showed every container of the node live; what a
  // reconcile changes is only which of them failed. A change for each
  // container here would send watchers O(fleet) events that change nothing
  // when a restarted broker's whole fleet reconciles.
  MarkFailuresChangedLocked(failed_before, it->second.failed);
  PublishLocked();
  LogEvent(LogLevel::kInfo, "node_reconciled",
           {{"node", req.node()},
            {"containers", req.containers_size()},
            {"failed", req.failed_container_ids_size()}});
  RecordEvent(NewEvent(kNormal, "NodeReconciled", NodeRef(req.node()), "", "",
                       absl::StrCat("the agent holds ", req.containers_size(), " container(s); ",
                                    req.failed_container_ids_size(),
                                    " could not be re-created")));
  return absl::OkStatus();
}

void Broker::NoteHeartbeatLocked(NodeEntry* n) {
  const int64_t now = Now();
  n->last_heartbeat_ms = now;
  n->deaf_ms_at_heartbeat = deaf_ms_;
  longest_quiet_ms_ = std::max(longest_quiet_ms_,
                               now - std::max(last_heartbeat_taken_ms_, last_liveness_check_ms_));
  last_heartbeat_taken_ms_ = now;
}

absl::Status Broker::Unrecoverable() const {
  absl::MutexLock l(&mu_);
  return unrecoverable_;
}

std::vector<std::string> Broker::CheckLiveness() {
  absl::MutexLock l(&mu_);
  std::vector<std::string> marked;
  const int64_t now = Now();
  // A check much later than the daemon's period means this process could
  // not run (stopped, starved, or this lock held): it could not take
  // heartbeats either, so that time does not count as the nodes' silence.
  const int64_t period = options_.liveness_check_interval_ms;
  if (period > 0) {
    const int64_t gap = now - last_liveness_check_ms_;
    // The longest time since the last check in which neither a heartbeat
    // (of any node) nor a check was taken: when the check is late because
    // the process was stopped, that is the pause; when only this thread was
    // starved while the handlers ran, heartbeats break it up and it stays
    // short, so a silent node is still noticed.
    const int64_t quiet = std::max(
        longest_quiet_ms_, now - std::max(last_heartbeat_taken_ms_, last_liveness_check_ms_));
    const int64_t late = std::max<int64_t>(4 * period, 1000);
    if (gap > late && quiet > late) {
      deaf_ms_ += quiet - period;
      LogEvent(LogLevel::kWarning, "broker_was_paused",
               {{"ms", gap}, {"note", "node_silence_during_it_is_not_counted"}});
    }
  }
  last_liveness_check_ms_ = now;
  longest_quiet_ms_ = 0;
  for (auto& [name, n] : nodes_) {
    const int64_t silent_ms = now - n.last_heartbeat_ms - (deaf_ms_ - n.deaf_ms_at_heartbeat);
    if (!n.session_id.empty() && silent_ms > options_.node_timeout_ms) {
      n.session_id.clear();
      SetNodeUsageLocked(name, &n, {});
      MarkPlacementStaleLocked(name);
      marked.push_back(name);
      MarkObservedLocked(v1::OBJECT_KIND_NODE, name);
      MarkNodeContainersLocked(name);
      LogEvent(LogLevel::kWarning, "node_unavailable",
               {{"node", name},
                {"last_heartbeat_ms_ago", now - n.last_heartbeat_ms},
                {"silent_ms", silent_ms}});
      RecordEvent(NewEvent(kWarning, "NodeUnavailable", NodeRef(name), "", "",
                           absl::StrCat("no heartbeat for more than ", options_.node_timeout_ms,
                                        "ms: nothing is placed or changed here until its agent "
                                        "registers again")));
    }
  }
  PublishLocked();
  return marked;
}

absl::Status Broker::ExpireRequests() {
  const int64_t before_ms = Now() - options_.request_ttl_ms;
  // On error the index keeps every entry: an answer it still lists but the
  // store forgot reads as fresh on a retry (FindAnswerLocked), while one
  // forgotten here but still in the store would run its request twice.
  ASSIGN_OR_RETURN(int64_t n, store_->ExpireRequests(before_ms));
  absl::MutexLock l(&mu_);
  // The same cutoff forgets here what the store forgot: answers committed
  // since it ran were acknowledged later than it.
  const int64_t forgotten = requests_.Expire(before_ms);
  if (n > 0 || forgotten > 0) {
    LogEvent(LogLevel::kInfo, "requests_expired", {{"count", n}, {"indexed", forgotten}});
  }
  return absl::OkStatus();
}

absl::Status Broker::CheckRememberedLocked(const std::string& key) const {
  const std::string scope = RequestScope(key);
  // Built only for a refusal: this runs for every mutation with a request id.
  auto refuse = [&](absl::string_view held, int64_t limit, absl::string_view flag) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request_id: ", scope, " has ", held, " remembered for retries (limit ", limit,
                     " per caller, --", flag,
                     "); send mutations without request_id or wait for older "
                     "answers to expire (after ",
                     options_.request_ttl_ms / 1000, " s)"));
  };
  const int64_t limit = options_.max_remembered_answers_per_caller;
  if (limit > 0) {
    const int64_t remembered = requests_.CountInScope(scope);
    if (remembered >= limit) {
      return refuse(absl::StrCat(remembered, " answers"), limit,
                    "max-remembered-answers-per-caller");
    }
  }
  const int64_t byte_limit = options_.max_remembered_answer_bytes_per_caller;
  if (byte_limit > 0) {
    const uint64_t bytes = requests_.BytesInScope(scope);
    if (bytes >= static_cast<uint64_t>(byte_limit)) {
      return refuse(absl::StrCat(bytes, " bytes of answers"), byte_limit,
                    "max-remembered-answer-bytes-per-caller");
    }
  }
  return absl::OkStatus();
}

}  // namespace iommu
