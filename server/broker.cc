#include "server/broker.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/broker_internal.h"
#include "server/model/stored_records.h"

namespace iommu {

using broker_internal::kContainer;
using broker_internal::kDevices;
using broker_internal::kNode;
using broker_internal::kNodeKey;
using broker_internal::kTenant;
using broker_internal::kWindow;

// ------------------------------------------------------------ construction

namespace {

// An index of every answer `store` remembers (Store::ListRequests). The
// store's error (DATA_LOSS for a damaged answer) otherwise.
absl::StatusOr<RequestIndex> LoadRequestIndex(Store* store) {
  ASSIGN_OR_RETURN(std::vector<RequestSummary> listed, store->ListRequests());
  RequestIndex index;
  for (const RequestSummary& r : listed) {
    index.Insert(r.request_id, r.fingerprint_digest, r.time_ms, r.bytes);
  }
  return index;
}

}  // namespace

Broker::Broker(Store* store, AgentClient* agents, BrokerOptions options)
    : store_(store),
      agents_(agents),
      options_(std::move(options)),
      watch_(absl::StrFormat("%016x", absl::Uniform<uint64_t>(absl::BitGen()))),
      registrations_(options_.max_concurrent_registrations) {}

absl::StatusOr<std::unique_ptr<Broker>> Broker::Create(Store* store, AgentClient* agents,
                                                       BrokerOptions options) {
  RETURN_IF_ERROR(ValidateBrokerOptions(options));
  if (!options.now_ms) {
    options.now_ms = [] { return absl::ToUnixMillis(absl::Now()); };
  }
  std::unique_ptr<Broker> broker(new Broker(store, agents, std::move(options)));
  RETURN_IF_ERROR(broker->Load());
  return broker;
}

absl::Status Broker::Load() {
  ASSIGN_OR_RETURN(std::vector<StoreRecord> records, store_->LoadAll());
  ASSIGN_OR_RETURN(RequestIndex requests, LoadRequestIndex(store_));
  absl::MutexLock l(&mu_);
  last_liveness_check_ms_ = Now();  // A pause before the first check counts too.
  std::vector<std::string> leftovers;
  if (absl::Status s = RestoreLocked(records, &leftovers); !s.ok()) {
    if (s.code() != absl::StatusCode::kDataLoss) return s;
    return absl::DataLossError(absl::StrCat(
        s.message(),
        "; the broker will not serve a state that breaks its invariants: restore the last "
        "backup (docs/OPERATIONS.md, Backups)"));
  }
  requests_ = std::move(requests);
  if (!leftovers.empty()) {
    // Deleted now, so that the store holds only what memory does. Harmless
    // if this fails: they are ignored at every load.
    WriteBatch cleanup;
    for (const std::string& node : leftovers) {
      cleanup.deletes.push_back({kDevices, node});
      cleanup.deletes.push_back({kNodeKey, node});
    }
    const absl::Status s = ApplyAndCommitLocked(std::move(cleanup));
    std::vector<LogField> fields = {{"nodes", leftovers.size()}};
    if (!s.ok()) fields.push_back({"error", s.message()});
    LogEvent(s.ok() ? LogLevel::kInfo : LogLevel::kWarning, "deleted_nodes_records_removed",
             fields);
  }
  LogEvent(LogLevel::kInfo, "loaded",
           {{"tenants", tenants_.size()},
            {"nodes", nodes_.size()},
            {"containers", containers_.size()},
            {"windows", windows_.size()},
            {"remembered_answers", requests_.size()}});
  return absl::OkStatus();
}

absl::Status Broker::RestoreLocked(const std::vector<StoreRecord>& records,
                                   std::vector<std::string>* leftovers) {
  // What the store holds is checked like any input before it is served: a
  // device held twice would be handed out twice (server/model/stored_records.h).
  ASSIGN_OR_RETURN(model::StoredState stored, model::ParseStoredRecords(records));
  // Built aside and swapped in at the end, so an error changes nothing.
  std::map<std::string, NodeEntry> nodes;
  for (auto& [name, n] : stored.nodes) {
    NodeEntry& e = nodes[name];
    e.node = std::move(n);
    if (auto d = stored.devices.find(name); d != stored.devices.end()) {
      e.devices = std::move(d->second);
    }
    if (auto k = stored.node_keys.find(name); k != stored.node_keys.end()) {
      e.grant_key = std::move(k->second);
    }
  }
  std::map<std::string, ContainerEntry> containers;
  std::map<std::pair<std::string, std::string>, std::string> device_holder;
  std::map<std::pair<std::string, std::string>, std::string> container_names;
  for (auto& [id, sc] : stored.containers) {
    const v1::Container& c = sc.container;
    for (const std::string& d : c.devices()) device_holder[{c.node(), d}] = id;
    if (!c.name().empty()) container_names[{c.name(), c.tenant_id()}] = id;
    containers.emplace(id, ContainerEntry{std::move(sc.container), std::move(sc.allocator),
                                          std::move(sc.window_ids)});
  }
  if (leftovers != nullptr) *leftovers = std::move(stored.leftover_nodes);
  // What the store does not hold survives a rollback: a node's live
  // session, what its agent last reported, and every other field that is
  // not persisted. Only node, devices and grant_key come from the store.
  for (auto& [name, n] : nodes) {
    auto old = nodes_.find(name);
    if (old == nodes_.end()) continue;
    NodeEntry kept = std::move(old->second);
    kept.node = std::move(n.node);
    kept.devices = std::move(n.devices);
    kept.grant_key = std::move(n.grant_key);
    n = std::move(kept);
  }
  tenants_ = std::move(stored.tenants);
  nodes_ = std::move(nodes);
  containers_ = std::move(containers);
  windows_ = std::move(stored.windows);
  device_holder_ = std::move(device_holder);
  container_names_ = std::move(container_names);
  index_ = RecountLocked();
  placement_ = BuildPlacementLocked();
  placement_stale_.clear();
  for (auto& [name, n] : nodes_) n.heartbeat_answer.reset();
  return absl::OkStatus();
}

// ------------------------------------------------------------ group commit

absl::Status Broker::CommitLocked(WriteBatch batch) {
  // Memory no longer matches the store: nothing planned on it may commit.
  if (!unrecoverable_.ok()) return unrecoverable_;
  if (open_group_ == nullptr) open_group_ = std::make_shared<PendingGroup>();
  std::shared_ptr<PendingGroup> mine = open_group_;
  mine->batches.push_back(std::move(batch));
  mine->last_seq = ++applied_seq_;
  for (;;) {
    if (mine->done) return mine->status;
    if (!committing_) {
      // No commit in progress, so `mine` is still the open group (a leader
      // that took it would either be committing or have marked it done):
      // this thread commits it, while later mutations start the next group.
      LeadCommitLocked();
      continue;
    }
    auto ready = [this, &mine]() {
      mu_.AssertHeld();  // Await evaluates conditions under mu_.
      return mine->done || !committing_;
    };
    mu_.Await(absl::Condition(&ready));
  }
}

void Broker::LeadCommitLocked() {
  std::shared_ptr<PendingGroup> group = std::move(open_group_);
  open_group_ = nullptr;
  committing_ = true;
  // The store call (an fsync) runs without mu_, so that other mutations can
  // plan, apply and join the next group, and reads can be served, meanwhile.
  mu_.Unlock();
  absl::Status s = store_->CommitGroup(group->batches);
  mu_.Lock();
  committing_ = false;
  group->done = true;
  group->status = s;
  if (s.ok()) {
    resolved_seq_ = group->last_seq;
    // Indexed only now that the answers are durable; until here their
    // requests were in inflight_ (and still are until their callers wake),
    // so no retry ran meanwhile.
    for (const WriteBatch& b : group->batches) {
      if (!b.request.has_value()) continue;
      const RequestRecord& r = *b.request;
      requests_.Insert(r.request_id, FingerprintDigest(r.fingerprint), r.time_ms, RequestBytes(r));
    }
    PublishLocked();
    return;
  }
  // Every mutation applied after this group planned against its state, so it
  // fails too; none of them was acknowledged.
  if (open_group_ != nullptr) {
    open_group_->done = true;
    open_group_->status = absl::Status(
        s.code(), absl::StrCat("store: not committed, an earlier change committed with it failed: ",
                               s.message()));
    open_group_ = nullptr;
  }
  const uint64_t rolled_back = applied_seq_ - resolved_seq_;
  ForgetRolledBackLocked(resolved_seq_);
  resolved_seq_ = rolled_back_seq_ = applied_seq_;
  // Roll memory back to exactly what the store holds. Nothing else writes
  // the store now: only a leader commits, and the next one needs mu_.
  absl::StatusOr<std::vector<StoreRecord>> records = store_->LoadAll();
  absl::Status restored = records.ok() ? RestoreLocked(*records) : records.status();
  if (restored.ok()) {
    // A store that splits a group into several transactions may have kept
    // the first ones, answers included (kv_backed_store.h): a retry of those
    // must replay them, so the index is rebuilt from what the store holds.
    absl::StatusOr<RequestIndex> requests = LoadRequestIndex(store_);
    if (requests.ok()) {
      requests_ = *std::move(requests);
    } else {
      restored = requests.status();
    }
  }
  // What the failed group changed is back as the store holds it, as last
  // published; marks of earlier durable changes are published now.
  PublishLocked();
  LogEvent(LogLevel::kError, "commit_failed",
           {{"batches", group->batches.size()},
            {"rolled_back", rolled_back},
            {"error", s.message()},
            {"reload", restored.ok() ? "ok" : std::string(restored.message())}});
  if (!restored.ok()) {
    // Memory now holds changes the store refused and cannot be put back to
    // the store's state; serving on could show objects that do not exist.
    // Fail closed: every answer and commit is refused from now on, and the
    // daemon stops (Unrecoverable) so its supervisor restarts it from the
    // store.
    unrecoverable_ = absl::UnavailableError(absl::StrCat(
        "broker: its state could not be reloaded from the store after a failed commit (",
        restored.message(), "); it is restarting"));
  }
}

absl::Status Broker::AwaitDurableLocked(uint64_t seen) {
  if (!unrecoverable_.ok()) return unrecoverable_;
  if (resolved_seq_ >= seen) return absl::OkStatus();
  const uint64_t durable_before = resolved_seq_;
  auto resolved = [this, seen]() {
    mu_.AssertHeld();  // Await evaluates conditions under mu_.
    return resolved_seq_ >= seen;
  };
  mu_.Await(absl::Condition(&resolved));
  if (rolled_back_seq_ > durable_before) {
    return absl::UnavailableError(
        "store: a commit failed and was rolled back while this answer was being made; retry");
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------ helpers

absl::StatusOr<std::optional<RequestRecord>> Broker::FindAnswerLocked(
    const std::string& request_id, const std::string& key, const std::string& fingerprint) {
  // The index answers a fresh id, the common case, without a store read
  // (under mu_, that read would hold back every other call: on etcd it is a
  // round trip). Only a likely retry reads its answer, to compare the whole
  // fingerprint (digests may collide) and replay it.
  auto reused = [&request_id] {
    return absl::FailedPreconditionError(
        absl::StrCat("request_id: ", QuoteForMessage(request_id),
                     " was already used for a different request; use a new id"));
  };
  const uint64_t digest = FingerprintDigest(fingerprint);
  switch (requests_.Find(key, digest)) {
    case RequestIndex::Match::kOtherDigest:
      return reused();
    case RequestIndex::Match::kSameDigest: {
      ASSIGN_OR_RETURN(std::optional<RequestRecord> prior, store_->FindRequest(key));
      if (prior.has_value() && prior->fingerprint != fingerprint) return reused();
      if (prior.has_value()) return prior;
      // Forgotten by the store but not yet here (an expiry that failed part
      // way): as fresh as it is to the store.
      break;
    }
    case RequestIndex::Match::kAbsent:
      break;
  }
  // An answer remembered before ids were scoped by caller is keyed by the
  // bare id (which cannot contain the scope's '|'). Only the same request
  // replays it: anything else may be another caller's and is not this
  // caller's business.
  if (requests_.Find(request_id, digest) != RequestIndex::Match::kSameDigest) {
    return std::optional<RequestRecord>();
  }
  ASSIGN_OR_RETURN(std::optional<RequestRecord> legacy, store_->FindRequest(request_id));
  if (!legacy.has_value() || legacy->fingerprint != fingerprint) {
    return std::optional<RequestRecord>();
  }
  return legacy;
}

absl::StatusOr<Broker::NodeEntry*> Broker::FindNodeLocked(const std::string& field,
                                                          const std::string& name) {
  RETURN_IF_ERROR(ValidateNodeName(field, name));
  auto it = nodes_.find(name);
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat(field, ": no node ", QuoteForMessage(name)));
  }
  return &it->second;
}

absl::StatusOr<Broker::ContainerEntry*> Broker::FindContainerLocked(const std::string& id) {
  RETURN_IF_ERROR(ValidateObjectId("container_id", id, "c-"));
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(absl::StrCat("container_id: no container ", QuoteForMessage(id)));
  }
  return &it->second;
}

bool Broker::NodeLiveLocked(const NodeEntry& n) const { return !n.session_id.empty(); }

bool Broker::DeviceBusyLocked(const std::string& node, const std::string& address) const {
  return device_holder_.count({node, address}) || pending_devices_.count({node, address});
}

std::vector<absl::string_view> Broker::PendingDevicesLocked(const std::string& node) const {
  std::vector<absl::string_view> out;
  for (auto it = pending_devices_.lower_bound({node, ""});
       it != pending_devices_.end() && it->first == node; ++it) {
    out.push_back(it->second);
  }
  return out;
}

std::vector<absl::string_view> Broker::BusyDevicesLocked(const std::string& node) const {
  std::vector<absl::string_view> busy = PendingDevicesLocked(node);
  for (auto it = device_holder_.lower_bound({node, ""});
       it != device_holder_.end() && it->first.first == node; ++it) {
    busy.push_back(it->first.second);
  }
  std::sort(busy.begin(), busy.end());
  return busy;
}

std::vector<v1::Device> Broker::DeviceViewLocked(const NodeEntry& n) const {
  std::vector<v1::Device> out = n.devices;
  for (v1::Device& d : out) {
    auto it = device_holder_.find({n.node.name(), d.address()});
    d.set_container_id(it == device_holder_.end() ? "" : it->second);
  }
  return out;
}

v1::Node Broker::NodeViewLocked(const NodeEntry& n) const {
  v1::Node v = n.node;
  v.set_state(!NodeLiveLocked(n) ? v1::NODE_STATE_UNAVAILABLE
              : n.reconciled     ? v1::NODE_STATE_READY
                                 : v1::NODE_STATE_RECONCILING);
  v.set_last_heartbeat_ms(n.last_heartbeat_ms);
  v.set_device_count(n.devices.size());
  // One walk of the node's busy devices, not a lookup per device in maps of
  // the whole fleet's devices, which made a page of 1,000 nodes cost ~45,000
  // string-keyed searches of 200,000 entries under mu_.
  const std::vector<absl::string_view> busy = BusyDevicesLocked(n.node.name());
  uint32_t free_count = 0;
  for (const v1::Device& d : n.devices) {
    if (d.assignable() && !std::binary_search(busy.begin(), busy.end(), d.address())) {
      ++free_count;
    }
  }
  v.set_free_device_count(free_count);
  v.set_container_count(NodeContainersLocked(n.node.name()).size());
  return v;
}

v1::ContainerState Broker::ContainerStateLocked(const ContainerEntry& c,
                                                const std::string** failure) const {
  v1::ContainerState state = v1::CONTAINER_STATE_NODE_UNAVAILABLE;
  auto node = nodes_.find(c.container.node());
  if (node != nodes_.end() && NodeLiveLocked(node->second)) {
    state = v1::CONTAINER_STATE_READY;
    auto f = node->second.failed.find(c.container.id());
    if (f != node->second.failed.end()) {
      state = v1::CONTAINER_STATE_FAILED;
      // Kept while it is being deleted too: why it failed still matters.
      if (failure != nullptr) *failure = &f->second;
    }
  }
  return c.container.deleting() ? v1::CONTAINER_STATE_DELETING : state;
}

v1::Container Broker::ContainerViewLocked(const ContainerEntry& c) const {
  v1::Container v = c.container;
  const std::string* failure = nullptr;
  v.set_state(ContainerStateLocked(c, &failure));
  if (failure != nullptr) v.set_status_message(*failure);
  v.set_window_count(c.window_ids.size());
  v.set_window_bytes(c.allocator.allocated_bytes());
  return v;
}

int Broker::TenantContainerCountLocked(const std::string& tenant) const {
  int n = static_cast<int>(TenantContainersLocked(tenant).size());
  auto it = pending_creates_.find(tenant);
  if (it != pending_creates_.end()) n += it->second;
  return n;
}

uint64_t Broker::TenantBudgetLocked(const std::string& tenant) const {
  auto totals = index_.tenants.find(tenant);
  uint64_t n = totals == index_.tenants.end() ? 0 : totals->second.budget_bytes;
  auto it = pending_budget_.find(tenant);
  if (it != pending_budget_.end()) n += it->second;
  return n;
}

uint64_t Broker::TenantWindowBytesLocked(const std::string& tenant) const {
  auto totals = index_.tenants.find(tenant);
  return totals == index_.tenants.end() ? 0 : totals->second.window_bytes;
}

std::string Broker::NewIdLocked(const char* prefix) {
  for (;;) {
    std::string id = absl::StrFormat("%s%016x", prefix, absl::Uniform<uint64_t>(rng_));
    if (!containers_.count(id) && !windows_.count(id)) return id;
  }
}

// ------------------------------------------------------------ metrics

BrokerStats Broker::Stats() const {
  BrokerStats s;
  s.registrations_waiting = registrations_.waiting();
  absl::MutexLock l(&mu_);
  std::map<std::string, BrokerStats::Tenant> tenants;
  for (const auto& [id, t] : tenants_) {
    BrokerStats::Tenant& row = tenants[id];
    row.id = id;
    row.quota_pinned_bytes = t.quota().pinned_bytes();
    row.quota_window_bytes = t.quota().window_bytes();
  }
  // From the maintained totals and without copying a container: a scrape
  // holds mu_, so its cost is every RPC's wait.
  for (auto& [id, row] : tenants) row.reserved_bytes = TenantWindowBytesLocked(id);
  for (const auto& [name, n] : nodes_) {
    const bool live = NodeLiveLocked(n);
    s.nodes.push_back({name, live});
    if (!live) {
      ++s.nodes_unavailable;
    } else if (!n.reconciled) {
      ++s.nodes_reconciling;
    } else if (n.node.cordoned()) {
      ++s.nodes_cordoned;
    } else {
      ++s.nodes_ready;
    }
    // Usage from heartbeats, as GetUsage reports it; only for tenants that
    // exist, so the label set stays the tenants defined.
    for (const auto& [tenant, u] : n.usage) {
      auto t = tenants.find(tenant);
      if (t == tenants.end()) continue;
      t->second.pinned_bytes += u.billed_bytes();
      t->second.mapped_bytes += u.mapped_bytes();
    }
  }
  // Container states per node, from the indexes (ContainerStateLocked's
  // rules): a scrape costs O(nodes + failed containers), not O(containers).
  for (const auto& [node, ids] : index_.node_containers) {
    auto d = index_.node_deleting.find(node);
    const int64_t deleting = d == index_.node_deleting.end() ? 0 : d->second.size();
    const int64_t others = static_cast<int64_t>(ids.size()) - deleting;
    s.containers_deleting += deleting;
    auto n = nodes_.find(node);
    if (n == nodes_.end() || !NodeLiveLocked(n->second)) {
      s.containers_node_unavailable += others;
      continue;
    }
    int64_t failed = 0;
    for (const auto& [id, why] : n->second.failed) {
      if (ids.count(id) && (d == index_.node_deleting.end() || !d->second.count(id))) ++failed;
    }
    s.containers_failed += failed;
    s.containers_ready += others - failed;
  }
  s.windows = static_cast<int64_t>(windows_.size());
  for (auto& [id, t] : tenants) s.tenants.push_back(std::move(t));
  return s;
}

}  // namespace iommu
