#include "server/broker.h"

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/grant_token.h"
#include "common/label_selector.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "common/version.h"

namespace iommu {
namespace {

constexpr char kTenant[] = "tenant";
constexpr char kNode[] = "node";
constexpr char kDevices[] = "devices";
constexpr char kContainer[] = "container";
constexpr char kWindow[] = "window";
constexpr char kNodeKey[] = "nodekey";

std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

bool IsLowerHex(const std::string& s, size_t length) {
  if (s.size() != length) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The key a request's answer is remembered under: its id scoped by who sent
// it, so one caller's ids never collide with another's, nor tell it which ids
// the other used. Empty for a request without an id.
// SetTenantQuota's partial update (AIP-134): `current` with the fields
// `mask` names taken from `given`; an empty mask takes `given` whole.
// INVALID_ARGUMENT naming the first unknown path.
absl::StatusOr<v1::Quota> MaskedQuota(const v1::Quota& current, const v1::Quota& given,
                                      const google::protobuf::FieldMask& mask) {
  if (mask.paths_size() == 0) return given;
  v1::Quota out = current;
  for (const std::string& path : mask.paths()) {
    if (path == "quota" || path == "*") {
      out = given;
    } else if (path == "quota.pinned_bytes") {
      out.set_pinned_bytes(given.pinned_bytes());
    } else if (path == "quota.max_containers") {
      out.set_max_containers(given.max_containers());
    } else if (path == "quota.window_bytes") {
      out.set_window_bytes(given.window_bytes());
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "update_mask: unknown path ", Quoted(path),
          " (known: quota.pinned_bytes, quota.max_containers, quota.window_bytes, quota, *)"));
    }
  }
  return out;
}

std::string RequestKey(const Identity& caller, const std::string& request_id) {
  if (request_id.empty()) return "";
  return absl::StrCat(caller.ToString(), "|", request_id);
}

// The fingerprint of a request: its method and its exact content. Serialized
// deterministically, so a retry carrying the same labels (a map, whose wire
// order is otherwise unspecified) has the same fingerprint; for messages
// without maps the bytes are the usual ones.
template <typename Req>
std::string Fingerprint(const char* method, const Req& req) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    req.SerializeToCodedStream(&coded);
  }
  return absl::StrCat(method, "\n", bytes);
}

StoreRecord Record(const char* kind, const std::string& id,
                   const google::protobuf::Message& msg) {
  return StoreRecord{kind, id, msg.SerializeAsString()};
}

// ---- events (server/event_log.h): one RecordEvent next to each event= line.
constexpr v1::EventType kNormal = v1::EVENT_TYPE_NORMAL;
constexpr v1::EventType kWarning = v1::EVENT_TYPE_WARNING;

v1::ObjectRef Ref(v1::ObjectKind kind, const std::string& id) {
  v1::ObjectRef r;
  r.set_kind(kind);
  r.set_id(id);
  return r;
}
v1::ObjectRef TenantRef(const std::string& id) { return Ref(v1::OBJECT_KIND_TENANT, id); }
v1::ObjectRef NodeRef(const std::string& name) { return Ref(v1::OBJECT_KIND_NODE, name); }
v1::ObjectRef ContainerRef(const std::string& id) { return Ref(v1::OBJECT_KIND_CONTAINER, id); }
v1::ObjectRef WindowRef(const std::string& id) { return Ref(v1::OBJECT_KIND_WINDOW, id); }

// A quota for event messages: "pinned 4GiB, max containers 8, window bytes no limit".
std::string QuotaText(const v1::Quota& q) {
  return absl::StrCat("pinned ", EventBytes(q.pinned_bytes()), ", max containers ",
                      q.max_containers() == 0 ? "no limit" : absl::StrCat(q.max_containers()),
                      ", window bytes ",
                      q.window_bytes() == 0 ? "no limit" : EventBytes(q.window_bytes()));
}

// An event about `object`, of `tenant` (empty: a fleet event, for operators
// only), caused by `request_id` (may be empty). `related` names the objects
// whose events include it; those with an empty id are left out.
v1::Event NewEvent(v1::EventType type, const char* reason, v1::ObjectRef object,
                   const std::string& tenant, const std::string& request_id, std::string message,
                   std::initializer_list<v1::ObjectRef> related = {}) {
  v1::Event e;
  e.set_type(type);
  e.set_reason(reason);
  *e.mutable_object() = std::move(object);
  e.set_tenant_id(tenant);
  e.set_request_id(request_id);
  e.set_message(std::move(message));
  for (const v1::ObjectRef& r : related) {
    if (!r.id().empty()) *e.add_related() = r;
  }
  return e;
}

// Pages through an ordered map: entries after `token` that pass `keep`, at
// most `limit`; sets *next to the last id returned when more may follow.
template <typename Map, typename Keep, typename Emit>
void Page(const Map& map, const std::string& token, uint32_t limit, Keep keep, Emit emit,
          std::string* next) {
  auto it = token.empty() ? map.begin() : map.upper_bound(token);
  uint32_t n = 0;
  for (; it != map.end(); ++it) {
    if (!keep(it->second)) continue;
    if (n == limit) {
      return;  // *next already names the last one emitted.
    }
    emit(it->second);
    *next = it->first;
    ++n;
  }
  next->clear();  // Reached the end: no more pages.
}

// An agent's refusal as the broker's caller sees it: UNAVAILABLE when the
// agent could not be reached (`address`, when known, says where it was
// tried), else the agent's own code with the node named.
absl::Status AgentCallError(const std::string& node, const std::string& address,
                            const absl::Status& s) {
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) {
    return absl::UnavailableError(absl::StrCat("node: agent of node ", Quoted(node),
                                               address.empty() ? "" : " at ", address,
                                               " did not answer: ", s.message()));
  }
  return absl::Status(s.code(), absl::StrCat("node ", Quoted(node), ": ", s.message()));
}

}  // namespace

// ------------------------------------------------------------ construction

namespace {

// An index of every answer `store` remembers (Store::ListRequests). The
// store's error (DATA_LOSS for a damaged answer) otherwise.
absl::StatusOr<RequestIndex> LoadRequestIndex(Store* store) {
  ASSIGN_OR_RETURN(std::vector<RequestSummary> listed, store->ListRequests());
  RequestIndex index;
  for (const RequestSummary& r : listed) {
    index.Insert(r.request_id, r.fingerprint_digest, r.time_ms);
  }
  return index;
}

}  // namespace

Broker::Broker(Store* store, AgentClient* agents, BrokerOptions options)
    : store_(store),
      agents_(agents),
      options_(std::move(options)),
      watch_(absl::StrFormat("%016x", absl::Uniform<uint64_t>(absl::BitGen()))) {}

absl::StatusOr<std::unique_ptr<Broker>> Broker::Create(Store* store, AgentClient* agents,
                                                       BrokerOptions options) {
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
  RETURN_IF_ERROR(RestoreLocked(records));
  requests_ = std::move(requests);
  LogEvent(LogLevel::kInfo, "loaded",
           {{"tenants", tenants_.size()},
            {"nodes", nodes_.size()},
            {"containers", containers_.size()},
            {"windows", windows_.size()},
            {"remembered_answers", requests_.size()}});
  return absl::OkStatus();
}

absl::Status Broker::RestoreLocked(const std::vector<StoreRecord>& records) {
  auto corrupt = [](const StoreRecord& r) {
    return absl::DataLossError(absl::StrCat("store: record ", r.kind, "/", r.id,
                                            " does not parse"));
  };
  // Built aside and swapped in at the end, so an error changes nothing.
  std::map<std::string, v1::Tenant> tenants;
  std::map<std::string, NodeEntry> nodes;
  std::map<std::string, ContainerEntry> containers;
  std::map<std::string, v1::Window> windows;
  std::map<std::pair<std::string, std::string>, std::string> device_holder;
  std::map<std::pair<std::string, std::string>, std::string> container_names;
  std::vector<v1::Window> window_records;
  for (const StoreRecord& r : records) {
    if (r.kind == kTenant) {
      v1::Tenant t;
      if (!t.ParseFromString(r.value)) return corrupt(r);
      tenants[t.id()] = t;
    } else if (r.kind == kNode) {
      v1::Node n;
      if (!n.ParseFromString(r.value)) return corrupt(r);
      nodes[n.name()].node = n;
    } else if (r.kind == kDevices) {
      v1::ListDevicesResponse d;
      if (!d.ParseFromString(r.value)) return corrupt(r);
      nodes[r.id].devices.assign(d.devices().begin(), d.devices().end());
    } else if (r.kind == kNodeKey) {
      nodes[r.id].grant_key = r.value;
    } else if (r.kind == kContainer) {
      v1::Container c;
      if (!c.ParseFromString(r.value)) return corrupt(r);
      std::vector<IovaInterval> usable;
      for (const auto& range : c.geometry().usable_ranges()) {
        usable.push_back({range.start(), range.last()});
      }
      ASSIGN_OR_RETURN(WindowAllocator alloc,
                       WindowAllocator::Create(usable, MinPageSize(c.geometry().page_size_bitmap())));
      for (const std::string& d : c.devices()) device_holder[{c.node(), d}] = c.id();
      if (!c.name().empty()) container_names[{c.name(), c.tenant_id()}] = c.id();
      containers.emplace(c.id(), ContainerEntry{c, std::move(alloc), {}});
    } else if (r.kind == kWindow) {
      v1::Window w;
      if (!w.ParseFromString(r.value)) return corrupt(r);
      window_records.push_back(w);
    } else {
      return absl::DataLossError(absl::StrCat("store: unknown record kind ", Quoted(r.kind)));
    }
  }
  for (const v1::Window& w : window_records) {
    auto it = containers.find(w.container_id());
    if (it == containers.end()) {
      return absl::DataLossError(absl::StrCat("store: window ", w.id(), " names missing container ",
                                              w.container_id()));
    }
    absl::Status s = it->second.allocator.AllocateAt(w.base(), w.size());
    if (!s.ok()) {
      return absl::DataLossError(absl::StrCat("store: window ", w.id(), " does not fit: ",
                                              s.message()));
    }
    it->second.window_ids.insert(w.id());
    windows[w.id()] = w;
  }
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
  tenants_ = std::move(tenants);
  nodes_ = std::move(nodes);
  containers_ = std::move(containers);
  windows_ = std::move(windows);
  device_holder_ = std::move(device_holder);
  container_names_ = std::move(container_names);
  index_ = RecountLocked();
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
      requests_.Insert(r.request_id, FingerprintDigest(r.fingerprint), r.time_ms);
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

// ------------------------------------------------------------ indexes

namespace {

template <typename Totals>
void Subtract(std::map<std::string, Totals>* m, const std::string& tenant, uint64_t budget,
              uint64_t window) {
  auto it = m->find(tenant);
  if (it == m->end()) return;
  it->second.budget_bytes -= budget;
  it->second.window_bytes -= window;
  if (it->second.budget_bytes == 0 && it->second.window_bytes == 0) m->erase(it);
}

template <typename Totals>
void Add(std::map<std::string, Totals>* m, const std::string& tenant, uint64_t budget,
         uint64_t window) {
  if (budget == 0 && window == 0) return;
  Totals& t = (*m)[tenant];
  t.budget_bytes += budget;
  t.window_bytes += window;
}

void EraseFromSet(std::map<std::string, std::set<std::string>>* m, const std::string& key,
                  const std::string& id) {
  auto it = m->find(key);
  if (it == m->end()) return;
  it->second.erase(id);
  if (it->second.empty()) m->erase(it);
}

}  // namespace

void Broker::AddContainerLocked(ContainerEntry entry) {
  entry.changed_seq = ApplyingSeqLocked();
  const v1::Container& c = entry.container;
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c.id());
  MarkAppliedLocked(v1::OBJECT_KIND_NODE, c.node());
  for (const std::string& d : c.devices()) device_holder_[{c.node(), d}] = c.id();
  if (!c.name().empty()) container_names_[{c.name(), c.tenant_id()}] = c.id();
  index_.tenant_containers[c.tenant_id()].insert(c.id());
  index_.node_containers[c.node()].insert(c.id());
  Add(&index_.tenants, c.tenant_id(), c.pin_budget_bytes(), 0);
  const std::string id = c.id();
  containers_.emplace(id, std::move(entry));
}

void Broker::EraseContainerLocked(const std::string& id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) return;
  const v1::Container& c = it->second.container;
  MarkGoneLocked(v1::OBJECT_KIND_CONTAINER, id, *CurrentLocked(v1::OBJECT_KIND_CONTAINER, id));
  MarkAppliedLocked(v1::OBJECT_KIND_NODE, c.node());
  for (const std::string& w : it->second.window_ids) {
    auto wit = windows_.find(w);
    if (wit == windows_.end()) continue;
    MarkGoneLocked(v1::OBJECT_KIND_WINDOW, w, *CurrentLocked(v1::OBJECT_KIND_WINDOW, w));
    Subtract(&index_.tenants, wit->second.tenant_id(), 0, wit->second.size());
    windows_.erase(wit);
  }
  for (const std::string& d : c.devices()) device_holder_.erase({c.node(), d});
  if (!c.name().empty()) container_names_.erase({c.name(), c.tenant_id()});
  EraseFromSet(&index_.tenant_containers, c.tenant_id(), id);
  EraseFromSet(&index_.node_containers, c.node(), id);
  Subtract(&index_.tenants, c.tenant_id(), c.pin_budget_bytes(), 0);
  containers_.erase(it);
  push_order_.erase(id);  // A push in flight keeps its own reference.
}

void Broker::SetBudgetLocked(ContainerEntry* c, uint64_t budget) {
  c->changed_seq = ApplyingSeqLocked();
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
  Subtract(&index_.tenants, c->container.tenant_id(), c->container.pin_budget_bytes(), 0);
  c->container.set_pin_budget_bytes(budget);
  Add(&index_.tenants, c->container.tenant_id(), budget, 0);
}

void Broker::AddWindowLocked(ContainerEntry* c, const v1::Window& w) {
  c->changed_seq = ApplyingSeqLocked();
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
  MarkAppliedLocked(v1::OBJECT_KIND_WINDOW, w.id());
  c->window_ids.insert(w.id());
  windows_[w.id()] = w;
  Add(&index_.tenants, w.tenant_id(), 0, w.size());
}

void Broker::EraseWindowLocked(ContainerEntry* c, const std::string& id) {
  c->changed_seq = ApplyingSeqLocked();
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
  c->window_ids.erase(id);
  auto it = windows_.find(id);
  if (it == windows_.end()) return;
  MarkGoneLocked(v1::OBJECT_KIND_WINDOW, id, *CurrentLocked(v1::OBJECT_KIND_WINDOW, id));
  Subtract(&index_.tenants, it->second.tenant_id(), 0, it->second.size());
  windows_.erase(it);
}

Broker::Indexes Broker::RecountLocked() const {
  Indexes x;
  for (const auto& [id, c] : containers_) {
    x.tenant_containers[c.container.tenant_id()].insert(id);
    x.node_containers[c.container.node()].insert(id);
    Add(&x.tenants, c.container.tenant_id(), c.container.pin_budget_bytes(), 0);
  }
  for (const auto& [id, w] : windows_) Add(&x.tenants, w.tenant_id(), 0, w.size());
  return x;
}

const std::set<std::string>& Broker::NodeContainersLocked(const std::string& node) const {
  static const std::set<std::string>* const kNone = new std::set<std::string>();
  auto it = index_.node_containers.find(node);
  return it == index_.node_containers.end() ? *kNone : it->second;
}

const std::set<std::string>& Broker::TenantContainersLocked(const std::string& tenant) const {
  static const std::set<std::string>* const kNone = new std::set<std::string>();
  auto it = index_.tenant_containers.find(tenant);
  return it == index_.tenant_containers.end() ? *kNone : it->second;
}

absl::Status Broker::CheckIndexes() const {
  absl::MutexLock l(&mu_);
  const Indexes want = RecountLocked();
  if (want == index_) return absl::OkStatus();
  auto differ = [](const char* what, const auto& want, const auto& have) -> std::string {
    for (const auto& [key, value] : want) {
      auto it = have.find(key);
      if (it == have.end() || !(it->second == value)) return absl::StrCat(what, " of ", key);
    }
    for (const auto& [key, value] : have) {
      if (!want.count(key)) return absl::StrCat(what, " of ", key, " (stale entry)");
    }
    return "";
  };
  std::string where = differ("tenant totals", want.tenants, index_.tenants);
  if (where.empty()) where = differ("containers", want.tenant_containers, index_.tenant_containers);
  if (where.empty()) where = differ("node containers", want.node_containers, index_.node_containers);
  return absl::InternalError(absl::StrCat("indexes differ from a recount: ", where));
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
        absl::StrCat("request_id: ", Quoted(request_id),
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

template <typename Resp>
absl::Status Broker::CheckReplayLocked(const std::string& request_id, const std::string& key,
                                       const std::string& fingerprint, Resp* out, bool* replayed) {
  *replayed = false;
  RETURN_IF_ERROR(ValidateRequestId("request_id", request_id));
  if (request_id.empty()) return absl::OkStatus();
  if (inflight_.count(key)) {
    return absl::AbortedError(absl::StrCat("request_id: a request with id ", Quoted(request_id),
                                           " is in flight; retry after it finishes"));
  }
  ASSIGN_OR_RETURN(std::optional<RequestRecord> prior,
                   FindAnswerLocked(request_id, key, fingerprint));
  if (!prior.has_value()) return CheckRememberedLocked(key);
  if (!out->ParseFromString(prior->response)) {
    return absl::DataLossError(absl::StrCat("store: answer to request ", request_id,
                                            " does not parse"));
  }
  *replayed = true;
  return absl::OkStatus();
}

template <typename Req, typename Resp>
absl::Status Broker::Mutate(const char* method, const Identity& caller, const Req& req, Resp* out,
                            const std::function<absl::StatusOr<Plan>(Resp*)>& plan_fn) {
  absl::MutexLock l(&mu_);
  const std::string fingerprint = Fingerprint(method, req);
  const std::string rkey = RequestKey(caller, req.request_id());
  bool replayed = false;
  RETURN_IF_ERROR(CheckReplayLocked(req.request_id(), rkey, fingerprint, out, &replayed));
  if (replayed) return absl::OkStatus();
  Resp answer;
  absl::StatusOr<Plan> plan = plan_fn(&answer);
  if (!plan.ok()) {
    // A refusal is an answer about the state too: send it only once what it
    // was judged against is durable.
    RETURN_IF_ERROR(AwaitDurableLocked());
    return plan.status();
  }
  if (!req.request_id().empty()) {
    plan->batch.request = RequestRecord{rkey, fingerprint, answer.SerializeAsString(), Now()};
    // Until the group commit, the answer is not in the store for a retry to
    // find; a retry meanwhile is told the request is in flight.
    inflight_.insert(rkey);
  }
  if (plan->apply) plan->apply();
  absl::Status committed = CommitLocked(std::move(plan->batch));
  if (!req.request_id().empty()) inflight_.erase(rkey);
  RETURN_IF_ERROR(committed);
  *out = std::move(answer);
  return absl::OkStatus();
}

absl::StatusOr<Broker::NodeEntry*> Broker::FindNodeLocked(const std::string& field,
                                                          const std::string& name) {
  RETURN_IF_ERROR(ValidateNodeName(field, name));
  auto it = nodes_.find(name);
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat(field, ": no node ", Quoted(name)));
  }
  return &it->second;
}

absl::StatusOr<Broker::ContainerEntry*> Broker::FindContainerLocked(const std::string& id) {
  RETURN_IF_ERROR(ValidateObjectId("container_id", id, "c-"));
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(absl::StrCat("container_id: no container ", Quoted(id)));
  }
  return &it->second;
}

bool Broker::NodeLiveLocked(const NodeEntry& n) const { return !n.session_id.empty(); }

bool Broker::DeviceBusyLocked(const std::string& node, const std::string& address) const {
  return device_holder_.count({node, address}) || pending_devices_.count({node, address});
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
  uint32_t free_count = 0;
  for (const v1::Device& d : n.devices) {
    if (d.assignable() && !DeviceBusyLocked(n.node.name(), d.address())) ++free_count;
  }
  v.set_free_device_count(free_count);
  v.set_container_count(NodeContainersLocked(n.node.name()).size());
  return v;
}

v1::Container Broker::ContainerViewLocked(const ContainerEntry& c) const {
  v1::Container v = c.container;
  auto node = nodes_.find(c.container.node());
  const bool live = node != nodes_.end() && NodeLiveLocked(node->second);
  v.set_state(live ? v1::CONTAINER_STATE_READY : v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  if (live) {
    auto f = node->second.failed.find(c.container.id());
    if (f != node->second.failed.end()) {
      v.set_state(v1::CONTAINER_STATE_FAILED);
      v.set_status_message(f->second);
    }
  }
  if (c.container.deleting()) v.set_state(v1::CONTAINER_STATE_DELETING);
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

// ------------------------------------------------------------ tenants

absl::Status Broker::CreateTenant(const v1::CreateTenantRequest& req, v1::Tenant* out,
                                  const Identity& caller) {
  return Mutate<v1::CreateTenantRequest, v1::Tenant>(
      "CreateTenant", caller, req, out, [&](v1::Tenant* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        if (!req.has_quota()) return absl::InvalidArgumentError("quota: required");
        RETURN_IF_ERROR(ValidateQuota(req.quota().pinned_bytes(), req.quota().window_bytes()));
        RETURN_IF_ERROR(ValidateLabels("labels", req.labels()));
        if (tenants_.count(req.tenant_id())) {
          return absl::AlreadyExistsError(
              absl::StrCat("tenant_id: tenant ", Quoted(req.tenant_id()), " already exists"));
        }
        answer->set_id(req.tenant_id());
        *answer->mutable_quota() = req.quota();
        answer->set_create_time_ms(Now());
        *answer->mutable_labels() = req.labels();
        Plan plan;
        plan.batch.puts.push_back(Record(kTenant, answer->id(), *answer));
        plan.apply = [this, t = *answer]() {
          mu_.AssertHeld();  // Applied under mu_.
          tenants_[t.id()] = t;
          MarkAppliedLocked(v1::OBJECT_KIND_TENANT, t.id());
        };
        LogEvent(LogLevel::kInfo, "tenant_created",
                 {{"tenant", req.tenant_id()}, {"request_id", req.request_id()}});
        RecordEvent(NewEvent(
            kNormal, "TenantCreated", TenantRef(req.tenant_id()), req.tenant_id(), req.request_id(),
            absl::StrCat("quota: ", QuotaText(req.quota()))));
        return plan;
      });
}

absl::Status Broker::GetTenant(const v1::GetTenantRequest& req, v1::Tenant* out,
                               const Identity& caller) {
  RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  absl::MutexLock l(&mu_);
  auto it = tenants_.find(req.tenant_id());
  if (it == tenants_.end()) {
    return absl::NotFoundError(absl::StrCat("tenant_id: no tenant ", Quoted(req.tenant_id())));
  }
  *out = it->second;
  return AwaitDurableLocked();
}

absl::Status Broker::ListTenants(const v1::ListTenantsRequest& req, v1::ListTenantsResponse* out,
                                 const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  ASSIGN_OR_RETURN(LabelSelector selector,
                   LabelSelector::Parse("label_selector", req.label_selector()));
  absl::MutexLock l(&mu_);
  std::string next;
  Page(
      tenants_, req.page_token(), limit,
      [&](const v1::Tenant& t) { return selector.Matches(t.labels()); },
      [&](const v1::Tenant& t) { *out->add_tenants() = t; }, &next);
  out->set_next_page_token(next);
  out->set_resource_version(watch_.CurrentVersion());
  return AwaitDurableLocked();
}

void Broker::PushBudgets(const std::string& tenant, const std::string& node) {
  std::map<AgentEndpoint, v1::SetPinBudgetsRequest> by_address;
  {
    absl::MutexLock l(&mu_);
    uint64_t changed_seq = 0;
    for (const std::string& id : TenantContainersLocked(tenant)) {
      const ContainerEntry& c = containers_.at(id);
      if (c.container.node() != node) continue;
      changed_seq = std::max(changed_seq, c.changed_seq);
      auto n = nodes_.find(c.container.node());
      if (n == nodes_.end() || !NodeLiveLocked(n->second)) continue;
      v1::ContainerBudget* b = by_address[Endpoint(n->second)].add_budgets();
      b->set_container_id(id);
      b->set_pin_budget_bytes(c.container.pin_budget_bytes());
    }
    // Only durable budgets reach agents: a raise that a failed commit takes
    // back must not have let pins past the quota.
    if (!AwaitDurableLocked(changed_seq).ok()) return;  // The heartbeat answers carry them.
  }
  for (const auto& [address, req] : by_address) {
    absl::Status s = agents_->SetPinBudgets(address, req);
    if (!s.ok()) {
      LogEvent(LogLevel::kWarning, "budget_push_failed",
               {{"node", address.node},
                {"tenant", tenant},
                {"error", s.message()},
                {"note", "heartbeat_will_carry_it"}});
      RecordEvent(NewEvent(kWarning, "BudgetPushFailed", NodeRef(address.node), "", "",
                           absl::StrCat("the agent did not take the budgets of tenant ", tenant,
                                        " (its next heartbeat answer carries them): ", s.message()),
                           {TenantRef(tenant)}));
    }
  }
}

void Broker::QueuePushBudgets(const std::string& tenant) {
  std::set<std::string> nodes;
  {
    absl::MutexLock l(&mu_);
    for (const std::string& id : TenantContainersLocked(tenant)) {
      nodes.insert(containers_.at(id).container.node());
    }
  }
  for (const std::string& node : nodes) {
    pushes_.Enqueue(node, absl::StrCat("budgets/", tenant),
                    [this, tenant, node] { PushBudgets(tenant, node); });
  }
}

void Broker::QueuePushWindows(const std::string& container_id) {
  std::string node;
  {
    absl::MutexLock l(&mu_);
    auto c = containers_.find(container_id);
    if (c == containers_.end()) return;
    node = c->second.container.node();
  }
  pushes_.Enqueue(node, absl::StrCat("windows/", container_id), [this, container_id] {
    PushWindows(container_id, /*required=*/false).IgnoreError();
  });
}

void Broker::WaitForPushes() { pushes_.WaitIdle(); }

absl::Status Broker::SetTenantQuota(const v1::SetTenantQuotaRequest& req, v1::Tenant* out,
                                    const Identity& caller) {
  absl::Status s = SetTenantQuotaInternal(req, out, caller);
  if (s.ok()) QueuePushBudgets(req.tenant_id());
  return s;
}

absl::Status Broker::SetTenantQuotaInternal(const v1::SetTenantQuotaRequest& req, v1::Tenant* out,
                                            const Identity& caller) {
  return Mutate<v1::SetTenantQuotaRequest, v1::Tenant>(
      "SetTenantQuota", caller, req, out, [&](v1::Tenant* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        if (!req.has_quota()) return absl::InvalidArgumentError("quota: required");
        auto it = tenants_.find(req.tenant_id());
        if (it == tenants_.end()) {
          return absl::NotFoundError(absl::StrCat("tenant_id: no tenant ", Quoted(req.tenant_id())));
        }
        ASSIGN_OR_RETURN(const v1::Quota quota,
                         MaskedQuota(it->second.quota(), req.quota(), req.update_mask()));
        RETURN_IF_ERROR(ValidateQuota(quota.pinned_bytes(), quota.window_bytes()));
        *answer = it->second;
        *answer->mutable_quota() = quota;
        Plan plan;
        plan.batch.puts.push_back(Record(kTenant, answer->id(), *answer));
        // Budgets never sum past the quota: shrink the newest first. Pins
        // already made stay; the agents refuse new ones past the budgets.
        uint64_t budgeted = TenantBudgetLocked(req.tenant_id());
        std::vector<std::pair<std::string, uint64_t>> shrunk;  // id, new budget
        if (budgeted > quota.pinned_bytes()) {
          std::vector<const ContainerEntry*> mine;
          for (const std::string& id : TenantContainersLocked(req.tenant_id())) {
            mine.push_back(&containers_.at(id));
          }
          std::sort(mine.begin(), mine.end(), [](const ContainerEntry* a, const ContainerEntry* b) {
            return std::make_pair(a->container.create_time_ms(), a->container.id()) >
                   std::make_pair(b->container.create_time_ms(), b->container.id());
          });
          for (const ContainerEntry* c : mine) {
            if (budgeted <= quota.pinned_bytes()) break;
            const uint64_t excess = budgeted - quota.pinned_bytes();
            const uint64_t cut = std::min(excess, c->container.pin_budget_bytes());
            if (cut == 0) continue;
            v1::Container changed = c->container;
            changed.set_pin_budget_bytes(changed.pin_budget_bytes() - cut);
            plan.batch.puts.push_back(Record(kContainer, changed.id(), changed));
            shrunk.push_back({changed.id(), changed.pin_budget_bytes()});
            budgeted -= cut;
          }
        }
        plan.apply = [this, t = *answer, shrunk]() {
          mu_.AssertHeld();  // Applied under mu_.
          tenants_[t.id()] = t;
          MarkAppliedLocked(v1::OBJECT_KIND_TENANT, t.id());
          for (const auto& [id, budget] : shrunk) SetBudgetLocked(&containers_.at(id), budget);
        };
        LogEvent(LogLevel::kInfo, "tenant_quota_set",
                 {{"tenant", req.tenant_id()},
                  {"pinned_bytes", quota.pinned_bytes()},
                  {"request_id", req.request_id()}});
        RecordEvent(NewEvent(
            kNormal, "QuotaChanged", TenantRef(req.tenant_id()), req.tenant_id(), req.request_id(),
            absl::StrCat("quota: ", QuotaText(quota), " (was: ",
                         QuotaText(it->second.quota()), ")",
                         shrunk.empty() ? "" : "; budgets shrunk to fit, newest first: ",
                         absl::StrJoin(shrunk, ", ", [](std::string* o, const auto& c) {
                           absl::StrAppend(o, c.first, " to ", EventBytes(c.second));
                         }))));
        return plan;
      });
}

absl::Status Broker::DeleteTenant(const v1::DeleteTenantRequest& req, v1::DeleteTenantResponse* out,
                                  const Identity& caller) {
  return Mutate<v1::DeleteTenantRequest, v1::DeleteTenantResponse>(
      "DeleteTenant", caller, req, out, [&](v1::DeleteTenantResponse*) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        if (!tenants_.count(req.tenant_id())) {
          return absl::NotFoundError(absl::StrCat("tenant_id: no tenant ", Quoted(req.tenant_id())));
        }
        const int held = TenantContainerCountLocked(req.tenant_id());
        if (held > 0) {
          return absl::FailedPreconditionError(
              absl::StrCat("tenant_id: tenant ", Quoted(req.tenant_id()), " still owns ", held,
                           " container(s); delete them first"));
        }
        Plan plan;
        plan.batch.deletes.push_back({kTenant, req.tenant_id()});
        plan.apply = [this, id = req.tenant_id()]() {
          mu_.AssertHeld();  // Applied under mu_.
          MarkGoneLocked(v1::OBJECT_KIND_TENANT, id, *CurrentLocked(v1::OBJECT_KIND_TENANT, id));
          tenants_.erase(id);
        };
        LogEvent(LogLevel::kInfo, "tenant_deleted",
                 {{"tenant", req.tenant_id()}, {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "TenantDeleted", TenantRef(req.tenant_id()), req.tenant_id(),
                             req.request_id(), "deleted"));
        return plan;
      });
}

absl::Status Broker::SetTenantLabels(const v1::SetTenantLabelsRequest& req, v1::Tenant* out,
                                     const Identity& caller) {
  return Mutate<v1::SetTenantLabelsRequest, v1::Tenant>(
      "SetTenantLabels", caller, req, out, [&](v1::Tenant* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        auto it = tenants_.find(req.tenant_id());
        if (it == tenants_.end()) {
          return absl::NotFoundError(absl::StrCat("tenant_id: no tenant ", Quoted(req.tenant_id())));
        }
        v1::Tenant changed = it->second;
        RETURN_IF_ERROR(EditLabels(req.labels(), req.remove_keys(), changed.mutable_labels()));
        Plan plan;
        plan.batch.puts.push_back(Record(kTenant, changed.id(), changed));
        plan.apply = [this, changed] {
          mu_.AssertHeld();  // Applied under mu_.
          tenants_[changed.id()] = changed;
          MarkAppliedLocked(v1::OBJECT_KIND_TENANT, changed.id());
        };
        *answer = changed;
        const std::string text = LabelsText(changed.labels());
        LogEvent(LogLevel::kInfo, "tenant_labels_set",
                 {{"tenant", changed.id()}, {"labels", text}, {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "LabelsChanged", TenantRef(changed.id()), changed.id(),
                             req.request_id(), absl::StrCat("labels: ", text)));
        return plan;
      });
}

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
  plan->apply = [this, n, cordoned] {  // n is stable in nodes_.
    mu_.AssertHeld();  // Applied under mu_.
    n->node.set_cordoned(cordoned);
    MarkAppliedLocked(v1::OBJECT_KIND_NODE, n->node.name());
  };
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
        LogEvent(LogLevel::kInfo, "node_cordoned",
                 {{"node", req.node()}, {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "NodeCordoned", NodeRef(req.node()), "", req.request_id(),
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
        LogEvent(LogLevel::kInfo, "node_uncordoned",
                 {{"node", req.node()}, {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "NodeUncordoned", NodeRef(req.node()), "", req.request_id(),
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
    plan.apply();
    absl::Status cordoned = CommitLocked(std::move(plan.batch));  // n is stale after this.
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
        size_t held = NodeContainersLocked(req.node()).size();
        for (const auto& [node, address] : pending_devices_) held += node == req.node();
        if (held > 0) {
          return absl::FailedPreconditionError(absl::StrCat(
              "node: node ", Quoted(req.node()), " still has ", held,
              " container(s) (or creates in flight); delete them first, e.g. iommuctl node "
              "drain ", req.node(), " --delete-containers"));
        }
        if (NodeLiveLocked(*n) && !req.force()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "node: node ", Quoted(req.node()),
              " is alive (its agent is registered and heartbeating); stop its agent first, or "
              "force the delete (the agent then registers the node again)"));
        }
        Plan plan;
        plan.batch.deletes.push_back({kNode, req.node()});
        plan.apply = [this, name = req.node()]() {
          mu_.AssertHeld();  // Applied under mu_.
          MarkGoneLocked(v1::OBJECT_KIND_NODE, name, *CurrentLocked(v1::OBJECT_KIND_NODE, name));
          nodes_.erase(name);
        };
        LogEvent(LogLevel::kInfo, "node_deleted",
                 {{"node", req.node()}, {"force", req.force()}, {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "NodeDeleted", NodeRef(req.node()), "", req.request_id(),
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

// ------------------------------------------------------------ containers

absl::Status Broker::PlaceLocked(const v1::CreateContainerRequest& req, std::string* node,
                                 std::vector<std::string>* devices) {
  if (!req.node().empty()) {
    // Explicit placement: the node and its devices, checked one by one.
    ASSIGN_OR_RETURN(NodeEntry * n, FindNodeLocked("node", req.node()));
    if (!NodeLiveLocked(*n)) {
      return absl::UnavailableError(
          absl::StrCat("node: node ", Quoted(req.node()), " is not heartbeating"));
    }
    if (!n->reconciled) {
      return absl::UnavailableError(absl::StrCat(
          "node: node ", Quoted(req.node()),
          " is reconciling after its agent registered; retry in a moment"));
    }
    if (n->node.cordoned()) {
      return absl::FailedPreconditionError(
          absl::StrCat("node: node ", Quoted(req.node()), " is cordoned"));
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
            absl::StrCat(field, ": node ", Quoted(req.node()), " has no device ", addr));
      }
      if (!d->assignable()) {
        return absl::FailedPreconditionError(
            absl::StrCat(field, ": device ", addr, " is not assignable: ", d->unassignable_reason()));
      }
      auto holder = device_holder_.find({req.node(), addr});
      if (holder != device_holder_.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat(field, ": device ", addr, " is held by container ", holder->second));
      }
      if (pending_devices_.count({req.node(), addr})) {
        return absl::FailedPreconditionError(
            absl::StrCat(field, ": device ", addr, " is being assigned to another container"));
      }
    }
    // A group is assigned whole or not at all.
    for (int i = 0; i < req.devices_size(); ++i) {
      const auto& d = *std::find_if(n->devices.begin(), n->devices.end(),
                                    [&](const v1::Device& x) { return x.address() == req.devices(i); });
      for (const v1::Device& peer : n->devices) {
        if (peer.iommu_group() == d.iommu_group() && !wanted.count(peer.address())) {
          return absl::FailedPreconditionError(absl::StrCat(
              "devices[", i, "]: IOMMU group ", d.iommu_group(), " also holds ", peer.address(),
              "; a group is assigned whole"));
        }
      }
    }
    *node = req.node();
    devices->assign(wanted.begin(), wanted.end());
    return absl::OkStatus();
  }

  // Placement by selector.
  if (!req.devices().empty()) {
    return absl::InvalidArgumentError("devices: may only be given together with node");
  }
  const uint32_t count = req.selector().count() == 0 ? 1 : req.selector().count();
  if (count > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("selector.count: at most 64 devices per container, got ", count));
  }
  auto matches = [&](const v1::Device& d) {
    return (req.selector().vendor_id() == 0 || d.vendor_id() == req.selector().vendor_id()) &&
           (req.selector().device_id() == 0 || d.device_id() == req.selector().device_id());
  };
  std::string best_node;
  std::vector<std::string> best_devices;
  size_t best_free = 0;
  for (const auto& [name, n] : nodes_) {
    if (!NodePlaceableLocked(n)) continue;
    // Whole groups only: a group qualifies when every member matches, is
    // assignable and is free.
    std::map<uint32_t, std::vector<const v1::Device*>> groups;
    for (const v1::Device& d : n.devices) groups[d.iommu_group()].push_back(&d);
    std::vector<std::string> picked;
    size_t free_matching = 0;
    for (const auto& [group, members] : groups) {
      bool ok = true;
      for (const v1::Device* d : members) {
        ok = ok && matches(*d) && d->assignable() && !DeviceBusyLocked(name, d->address());
      }
      if (!ok) continue;
      free_matching += members.size();
      if (picked.size() + members.size() <= count) {
        for (const v1::Device* d : members) picked.push_back(d->address());
      }
    }
    if (picked.size() == count && free_matching > best_free) {
      best_free = free_matching;
      best_node = name;
      best_devices = picked;
    }
  }
  if (best_node.empty()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "selector: no ready, uncordoned node has %u free assignable device(s) matching "
        "vendor_id=0x%04x device_id=0x%04x",
        count, req.selector().vendor_id(), req.selector().device_id()));
  }
  std::sort(best_devices.begin(), best_devices.end());
  *node = best_node;
  *devices = best_devices;
  return absl::OkStatus();
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
    RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
    if (!req.name().empty()) RETURN_IF_ERROR(ValidateContainerName("name", req.name()));
    RETURN_IF_ERROR(ValidateLabels("labels", req.labels()));
    auto tenant = tenants_.find(req.tenant_id());
    if (tenant == tenants_.end()) {
      return absl::NotFoundError(absl::StrCat("tenant_id: no tenant ", Quoted(req.tenant_id())));
    }
    if (!req.name().empty()) RETURN_IF_ERROR(NameFreeLocked(req.tenant_id(), req.name()));
    const uint32_t max = tenant->second.quota().max_containers();
    const int held = TenantContainerCountLocked(req.tenant_id());
    if (max != 0 && static_cast<uint32_t>(held) >= max) {
      return RecordRefusal(
          NewEvent(kWarning, "QuotaExceeded", TenantRef(req.tenant_id()), req.tenant_id(),
                   req.request_id(), ""),
          absl::ResourceExhaustedError(
              absl::StrCat("tenant_id: tenant ", Quoted(req.tenant_id()), " holds ", held,
                           " of its ", max, " containers (quota.max_containers)")));
    }
    if (req.pin_budget_bytes() % 4096 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pin_budget_bytes: must be a multiple of 4096 (a host page), got ", req.pin_budget_bytes()));
    }
    const uint64_t quota = tenant->second.quota().pinned_bytes();
    const uint64_t budgeted = TenantBudgetLocked(req.tenant_id());
    const uint64_t unbudgeted = budgeted >= quota ? 0 : quota - budgeted;
    if (req.pin_budget_bytes() > unbudgeted) {
      return RecordRefusal(
          NewEvent(kWarning, "QuotaExceeded", TenantRef(req.tenant_id()), req.tenant_id(),
                   req.request_id(), ""),
          absl::ResourceExhaustedError(absl::StrCat(
              "pin_budget_bytes: tenant ", Quoted(req.tenant_id()), " has ", Hex(unbudgeted),
              " bytes of its pinned quota ", Hex(quota),
              " not yet budgeted to containers; asked for ", Hex(req.pin_budget_bytes()))));
    }
    budget = req.pin_budget_bytes() == 0 ? unbudgeted : req.pin_budget_bytes();
    absl::Status placed = PlaceLocked(req, &node, &devices);
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
  std::vector<IovaInterval> usable;
  for (const auto& r : c.geometry().usable_ranges()) usable.push_back({r.start(), r.last()});
  const uint64_t page = MinPageSize(c.geometry().page_size_bitmap());
  if (page == 0) {
    return absl::InternalError(absl::StrCat("node ", Quoted(node), ": agent reported container ",
                                            id, " with no IOMMU page size"));
  }
  ASSIGN_OR_RETURN(WindowAllocator alloc, WindowAllocator::Create(usable, page));
  ContainerEntry entry{c, std::move(alloc), {}};
  v1::Container answer = ContainerViewLocked(entry);
  WriteBatch batch;
  batch.puts.push_back(Record(kContainer, id, c));
  if (!req.request_id().empty()) {
    batch.request = RequestRecord{rkey, fingerprint, answer.SerializeAsString(), Now()};
  }
  AddContainerLocked(std::move(entry));
  RETURN_IF_ERROR(CommitLocked(std::move(batch)));  // Rolled back on error.
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
  std::string next;
  Page(
      containers_, req.page_token(), limit,
      [&](const ContainerEntry& c) {
        mu_.AssertHeld();  // Page runs under the caller's lock.
        if (!req.tenant_id().empty() && c.container.tenant_id() != req.tenant_id()) return false;
        if (!selector.Matches(c.container.labels())) return false;
        if (!req.node().empty() && c.container.node() != req.node()) return false;
        if (req.state() != v1::CONTAINER_STATE_UNSPECIFIED &&
            ContainerViewLocked(c).state() != req.state()) {
          return false;
        }
        return true;
      },
      [&](const ContainerEntry& c) {
        mu_.AssertHeld();  // Page runs under the caller's lock.
        *out->add_containers() = ContainerViewLocked(c);
      },
      &next);
  out->set_next_page_token(next);
  out->set_resource_version(watch_.CurrentVersion());
  return AwaitDurableLocked();
}

absl::StatusOr<Broker::Plan> Broker::PlanDeleteContainerLocked(const std::string& id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) {
    return absl::NotFoundError(absl::StrCat("container_id: no container ", Quoted(id)));
  }
  const ContainerEntry& c = it->second;
  Plan plan;
  plan.batch.deletes.push_back({kContainer, id});
  for (const std::string& w : c.window_ids) plan.batch.deletes.push_back({kWindow, w});
  plan.apply = [this, id]() {
    mu_.AssertHeld();  // Applied under mu_.
    EraseContainerLocked(id);
  };
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
      c->container.set_deleting(true);
      c->changed_seq = ApplyingSeqLocked();
      MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, id);
      absl::Status s = CommitLocked(std::move(intent));  // Rolled back on error; c is stale.
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
  plan.apply();
  absl::Status removed = CommitLocked(std::move(plan.batch));  // Rolled back on error.
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

absl::Status Broker::SetContainerBudget(const v1::SetContainerBudgetRequest& req,
                                        v1::Container* out, const Identity& caller) {
  absl::Status s = SetContainerBudgetInternal(req, out, caller);
  if (s.ok()) QueuePushBudgets(out->tenant_id());
  return s;
}

absl::Status Broker::SetContainerBudgetInternal(const v1::SetContainerBudgetRequest& req,
                                                v1::Container* out, const Identity& caller) {
  return Mutate<v1::SetContainerBudgetRequest, v1::Container>(
      "SetContainerBudget", caller, req, out, [&](v1::Container* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(const std::string id,
                         ResolveContainerLocked(caller, "container_id", req.container_id()));
        ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
        if (req.pin_budget_bytes() % 4096 != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("pin_budget_bytes: must be a multiple of 4096 (a host page), got ",
                           req.pin_budget_bytes()));
        }
        const std::string& tenant = c->container.tenant_id();
        const uint64_t quota = tenants_.at(tenant).quota().pinned_bytes();
        const uint64_t others = TenantBudgetLocked(tenant) - c->container.pin_budget_bytes();
        if (req.pin_budget_bytes() > c->container.pin_budget_bytes() &&
            (others > quota || req.pin_budget_bytes() > quota - others)) {
          return RecordRefusal(
              NewEvent(kWarning, "QuotaExceeded", ContainerRef(id), tenant,
                       req.request_id(), "", {TenantRef(tenant)}),
              absl::ResourceExhaustedError(absl::StrCat(
                  "pin_budget_bytes: tenant ", Quoted(tenant), " has ",
                  Hex(others > quota ? 0 : quota - others),
                  " bytes of its pinned quota available for this container; asked for ",
                  Hex(req.pin_budget_bytes()))));
        }
        v1::Container changed = c->container;
        changed.set_pin_budget_bytes(req.pin_budget_bytes());
        Plan plan;
        plan.batch.puts.push_back(Record(kContainer, changed.id(), changed));
        plan.apply = [this, c, changed] {
          mu_.AssertHeld();  // Applied under mu_.
          SetBudgetLocked(c, changed.pin_budget_bytes());
          c->container = changed;
        };
        ContainerEntry view{changed, c->allocator, c->window_ids};
        *answer = ContainerViewLocked(view);
        LogEvent(LogLevel::kInfo, "container_budget_set",
                 {{"container", changed.id()},
                  {"tenant", changed.tenant_id()},
                  {"node", changed.node()},
                  {"pin_budget_bytes", req.pin_budget_bytes()},
                  {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "BudgetChanged", ContainerRef(changed.id()),
                             changed.tenant_id(), req.request_id(),
                             absl::StrCat("pin budget ", EventBytes(req.pin_budget_bytes()),
                                          " (was ", EventBytes(c->container.pin_budget_bytes()),
                                          ")")));
        return plan;
      });
}

absl::Status Broker::SetContainerLabels(const v1::SetContainerLabelsRequest& req,
                                        v1::Container* out, const Identity& caller) {
  return Mutate<v1::SetContainerLabelsRequest, v1::Container>(
      "SetContainerLabels", caller, req, out, [&](v1::Container* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(const std::string id,
                         ResolveContainerLocked(caller, "container_id", req.container_id()));
        ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
        RETURN_IF_ERROR(NotBeingDeletedLocked(id, *c));
        v1::Container changed = c->container;
        RETURN_IF_ERROR(EditLabels(req.labels(), req.remove_keys(), changed.mutable_labels()));
        Plan plan;
        plan.batch.puts.push_back(Record(kContainer, id, changed));
        plan.apply = [this, c, changed] {
          mu_.AssertHeld();  // Applied under mu_.
          c->changed_seq = ApplyingSeqLocked();
          *c->container.mutable_labels() = changed.labels();
          MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
        };
        *answer = ContainerViewLocked(*c);
        *answer->mutable_labels() = changed.labels();
        const std::string text = LabelsText(changed.labels());
        LogEvent(LogLevel::kInfo, "container_labels_set",
                 {{"container", id},
                  {"tenant", changed.tenant_id()},
                  {"labels", text},
                  {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "LabelsChanged", ContainerRef(id), changed.tenant_id(),
                             req.request_id(), absl::StrCat("labels: ", text)));
        return plan;
      });
}

absl::StatusOr<std::string> Broker::ResolveContainerLocked(const Identity& caller,
                                                           const std::string& field,
                                                           const std::string& ref) const {
  ASSIGN_OR_RETURN(ParsedContainerRef parsed, ParseContainerRef(field, ref));
  if (!parsed.id.empty()) return parsed.id;
  // A tenant's names are its own: another tenant's TENANT/NAME is answered
  // as a name nobody has, like another tenant's id.
  const bool tenant_caller = caller.role == Role::kTenant;
  std::string tenant = parsed.tenant;
  if (tenant_caller && tenant.empty()) tenant = caller.name;
  const absl::Status none = absl::NotFoundError(
      absl::StrCat(field, ": no container named ", Quoted(ref),
                   tenant.empty() ? "" : absl::StrCat(" in tenant ", Quoted(tenant))));
  if (tenant_caller && tenant != caller.name) return none;
  if (!tenant.empty()) {
    auto it = container_names_.find({parsed.name, tenant});
    if (it == container_names_.end()) return none;
    return it->second;
  }
  std::vector<std::string> tenants;
  std::string id;
  for (auto it = container_names_.lower_bound({parsed.name, ""});
       it != container_names_.end() && it->first.first == parsed.name; ++it) {
    tenants.push_back(it->first.second);
    id = it->second;
  }
  if (tenants.empty()) return none;
  if (tenants.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": tenants ", absl::StrJoin(tenants, ", "), " each have a container named ",
        Quoted(ref), "; write TENANT/NAME"));
  }
  return id;
}

absl::Status Broker::NameFreeLocked(const std::string& tenant, const std::string& name) const {
  if (container_names_.count({name, tenant}) || pending_names_.count({name, tenant})) {
    return absl::AlreadyExistsError(absl::StrCat("name: tenant ", Quoted(tenant),
                                                 " already has a container named ", Quoted(name)));
  }
  return absl::OkStatus();
}

absl::Status Broker::NotBeingDeletedLocked(const std::string& id,
                                           const ContainerEntry& c) const {
  if (c.container.deleting() || deleting_.count(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("container_id: container ", id, " is being deleted"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Broker::ContainerEntry*> Broker::GrantableLocked(const std::string& id) {
  ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
  RETURN_IF_ERROR(NotBeingDeletedLocked(id, *c));
  const std::string& node = c->container.node();
  auto n = nodes_.find(node);
  if (n == nodes_.end() || !NodeLiveLocked(n->second)) {
    return absl::UnavailableError(absl::StrCat("container_id: node ", Quoted(node),
                                               " of container ", id, " is not heartbeating"));
  }
  if (!n->second.reconciled) {
    return absl::UnavailableError(absl::StrCat("container_id: node ", Quoted(node),
                                               " of container ", id,
                                               " is reconciling after registering; retry"));
  }
  if (c->window_ids.size() > kMaxWindowsPerContainer) {
    // Only a store written before the limit can hold more.
    return absl::FailedPreconditionError(
        absl::StrCat("container_id: container ", id, " holds ", c->window_ids.size(),
                     " windows; a launcher grant names at most ", kMaxWindowsPerContainer,
                     ": release windows first"));
  }
  return c;
}

absl::Status Broker::GrantLauncher(const v1::GrantLauncherRequest& req,
                                   v1::GrantLauncherResponse* out, const Identity& caller) {
  if (req.ttl_seconds() > 3600) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_seconds: at most 3600, got ", req.ttl_seconds()));
  }
  RETURN_IF_ERROR(ParseContainerRef("container_id", req.container_id()).status());
  // The agent must know the windows the token names before the launcher
  // arrives with it. That needs the agent: refuse at once when the node is
  // not READY rather than wait for the agent's timeout; and again after the
  // push, which released mu_.
  // A name is resolved once: the id it names stays the same object for its
  // lifetime, even if the name is freed and taken again meanwhile.
  std::string id;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(id, ResolveContainerLocked(caller, "container_id", req.container_id()));
    RETURN_IF_ERROR(GrantableLocked(id).status());
  }
  RETURN_IF_ERROR(PushWindows(id, /*required=*/true));
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(ContainerEntry * c, GrantableLocked(id));
  auto n = nodes_.find(c->container.node());  // GrantableLocked found it.
  if (n->second.grant_key.empty()) {
    return absl::InternalError(absl::StrCat("node ", Quoted(c->container.node()), " has no key"));
  }
  const int64_t now = Now();
  v1::LauncherGrant grant;
  grant.set_token_id(NewGrantTokenId());
  grant.set_node(c->container.node());
  grant.set_container_id(id);
  grant.set_tenant_id(c->container.tenant_id());
  grant.set_issued_ms(now);
  grant.set_expires_ms(now + 1000LL * (req.ttl_seconds() == 0 ? 60 : req.ttl_seconds()));
  grant.set_agent_incarnation(n->second.agent_incarnation);
  for (const std::string& wid : c->window_ids) {
    const v1::Window& w = windows_.at(wid);
    v1::GrantWindow* gw = grant.add_windows();
    gw->set_window_id(w.id());
    gw->set_base(w.base());
    gw->set_size(w.size());
    *out->add_windows() = w;
  }
  absl::StatusOr<std::string> token = SignGrant(grant, n->second.grant_key);
  if (!token.ok()) {
    // Not the caller's doing: the node's stored key or this grant is wrong.
    return absl::InternalError(absl::StrCat("container_id: could not sign a launcher grant for ",
                                            id, ": ", token.status().message()));
  }
  out->set_token(*std::move(token));
  out->set_node(grant.node());
  out->set_launcher_socket(n->second.node.launcher_socket());
  out->set_container_id(grant.container_id());
  out->set_tenant_id(grant.tenant_id());
  out->set_expires_ms(grant.expires_ms());
  RETURN_IF_ERROR(AwaitDurableLocked());  // The token names only durable windows.
  LogEvent(LogLevel::kInfo, "launcher_granted",
           {{"container", id},
            {"tenant", grant.tenant_id()},
            {"node", grant.node()},
            {"windows", grant.windows_size()},
            {"expires_ms", grant.expires_ms()}});
  RecordEvent(NewEvent(kNormal, "LauncherGranted", ContainerRef(id),
                       grant.tenant_id(), "",
                       absl::StrCat("single-use launcher token for node ", grant.node(), " with ",
                                    grant.windows_size(), " window(s), valid for ",
                                    (grant.expires_ms() - grant.issued_ms()) / 1000, "s")));
  return absl::OkStatus();
}

// ------------------------------------------------------------ windows

v1::ContainerWindows Broker::WindowsLocked(const ContainerEntry& c) const {
  v1::ContainerWindows out;
  out.set_container_id(c.container.id());
  for (const IovaInterval& w : c.allocator.Windows()) {
    v1::IovaRange* r = out.add_windows();
    r->set_start(w.start);
    r->set_last(w.last);
  }
  return out;
}

absl::Status Broker::PushWindows(const std::string& container_id, bool required) {
  std::shared_ptr<PushOrder> order;
  uint64_t wanted = 0;  // The container's state this caller needs sent.
  {
    absl::MutexLock l(&mu_);
    auto c = containers_.find(container_id);
    if (c == containers_.end()) return absl::OkStatus();
    auto n = nodes_.find(c->second.container.node());
    // Nothing to send, so nothing to wait for behind a push to a stalled agent.
    if (n == nodes_.end() || !NodeLiveLocked(n->second)) return absl::OkStatus();
    std::shared_ptr<PushOrder>& o = push_order_[container_id];
    if (o == nullptr) o = std::make_shared<PushOrder>();
    order = o;
    wanted = c->second.changed_seq;
  }
  // One push of a container at a time, each reading what it sends after the
  // one before was sent: an older push (say, a queued one read before a
  // release) can never land after a newer one and re-open a window. A push
  // that read the state after this caller's change already carried it.
  absl::MutexLock ordered(&order->mu);
  if (wanted != 0 && order->pushed_seq >= wanted) return absl::OkStatus();
  AgentEndpoint address;
  v1::SetWindowsRequest req;
  uint64_t sending = 0;
  {
    absl::MutexLock l(&mu_);
    auto c = containers_.find(container_id);
    if (c == containers_.end()) return absl::OkStatus();
    auto n = nodes_.find(c->second.container.node());
    if (n == nodes_.end() || !NodeLiveLocked(n->second)) return absl::OkStatus();
    address = Endpoint(n->second);
    *req.mutable_windows() = WindowsLocked(c->second);
    sending = c->second.changed_seq;
    // Agents enforce windows: push only durable ones.
    absl::Status durable = AwaitDurableLocked(sending);
    if (!durable.ok()) return required ? durable : absl::OkStatus();
  }
  absl::Status s = agents_->SetWindows(address, req);
  if (s.ok()) order->pushed_seq = std::max(order->pushed_seq, sending);
  if (!s.ok()) {
    LogEvent(LogLevel::kWarning, "windows_push_failed",
             {{"container", container_id},
              {"node", address.node},
              {"error", s.message()},
              {"note", "heartbeat_will_carry_it"}});
    RecordEvent(NewEvent(kWarning, "WindowsPushFailed", ContainerRef(container_id), "", "",
                         absl::StrCat("the agent of node ", address.node,
                                      " did not take the windows (its next heartbeat answer "
                                      "carries them): ",
                                      s.message()),
                         {NodeRef(address.node)}));
    if (required) {
      return absl::UnavailableError(absl::StrCat("container_id: the agent at ", address.address,
                                                 " did not take the container's windows: ",
                                                 s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Broker::AllocateWindow(const v1::AllocateWindowRequest& req, v1::Window* out,
                                    const Identity& caller) {
  absl::Status s = AllocateWindowInternal(req, out, caller);
  if (s.ok()) QueuePushWindows(out->container_id());
  return s;
}

absl::Status Broker::ReleaseWindow(const v1::ReleaseWindowRequest& req,
                                   v1::ReleaseWindowResponse* out, const Identity& caller) {
  std::string container_id;
  absl::Status s = ReleaseWindowInternal(req, out, &container_id, caller);
  // The agent revokes what the window held; if it cannot be told now, its
  // next heartbeat answer tells it.
  // Releasing revokes: the reply waits until the agent has cut the window's
  // mappings (or its node is not live, and the next heartbeat answer tells
  // it), unlike an allocation, whose push only adds room.
  if (s.ok() && !container_id.empty()) PushWindows(container_id, /*required=*/false).IgnoreError();
  return s;
}

absl::Status Broker::AllocateWindowInternal(const v1::AllocateWindowRequest& req, v1::Window* out,
                                            const Identity& caller) {
  return Mutate<v1::AllocateWindowRequest, v1::Window>(
      "AllocateWindow", caller, req, out, [&](v1::Window* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(const std::string id,
                         ResolveContainerLocked(caller, "container_id", req.container_id()));
        ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
        RETURN_IF_ERROR(NotBeingDeletedLocked(id, *c));
        if (c->window_ids.size() >= kMaxWindowsPerContainer) {
          return absl::ResourceExhaustedError(
              absl::StrCat("container_id: container ", id, " already holds ",
                           c->window_ids.size(), " windows, the most a container may hold (",
                           kMaxWindowsPerContainer, "); release one or use larger windows"));
        }
        const uint64_t page = c->allocator.page_size();
        ASSIGN_OR_RETURN(uint64_t alignment,
                         ValidateWindowRequest(req.size(), req.alignment(), req.fixed_base(),
                                               req.base(), page));
        if (!req.fixed_base() && req.base() != 0) {
          return absl::InvalidArgumentError("base: only allowed with fixed_base");
        }
        const std::string& tenant = c->container.tenant_id();
        auto t = tenants_.find(tenant);
        const uint64_t limit = t == tenants_.end() ? 0 : t->second.quota().window_bytes();
        const uint64_t used = TenantWindowBytesLocked(tenant);
        if (limit != 0 && (used > limit || req.size() > limit - used)) {
          return RecordRefusal(
              NewEvent(kWarning, "QuotaExceeded", ContainerRef(id), tenant,
                       req.request_id(), "", {TenantRef(tenant)}),
              absl::ResourceExhaustedError(absl::StrCat(
                  "size: tenant ", Quoted(tenant), " has ", Hex(used), " of its ", Hex(limit),
                  " window bytes reserved; ", Hex(req.size()),
                  " more would pass quota.window_bytes")));
        }
        // Reserve in place, as the plan's last step that can fail (a failed
        // Allocate changes nothing). Mutate applies every successful plan at
        // once, and a failed group commit is rolled back by reloading the
        // allocators from the store, so no staging copy (linear in the
        // container's windows) is needed.
        uint64_t base = req.base();
        if (req.fixed_base()) {
          RETURN_IF_ERROR(c->allocator.AllocateAt(base, req.size()));
        } else {
          ASSIGN_OR_RETURN(base, c->allocator.Allocate(req.size(), alignment));
        }
        answer->set_id(NewIdLocked("w-"));
        answer->set_container_id(id);
        answer->set_tenant_id(tenant);
        answer->set_base(base);
        answer->set_size(req.size());
        answer->set_alignment(alignment);
        answer->set_create_time_ms(Now());
        Plan plan;
        plan.batch.puts.push_back(Record(kWindow, answer->id(), *answer));
        plan.apply = [this, c, w = *answer] {
          mu_.AssertHeld();  // Applied under mu_.
          AddWindowLocked(c, w);
        };
        LogEvent(LogLevel::kInfo, "window_allocated",
                 {{"window", answer->id()},
                  {"container", id},
                  {"tenant", tenant},
                  {"base", Hex(base)},
                  {"size", Hex(req.size())},
                  {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "WindowAllocated", WindowRef(answer->id()), tenant,
                             req.request_id(),
                             absl::StrCat(answer->id(), " at ", Hex(base), "-",
                                          Hex(base + req.size() - 1), " (",
                                          EventBytes(req.size()), ")"),
                             {ContainerRef(id)}));
        return plan;
      });
}

absl::Status Broker::ReleaseWindowInternal(const v1::ReleaseWindowRequest& req,
                                           v1::ReleaseWindowResponse* out,
                                           std::string* container_id, const Identity& caller) {
  return Mutate<v1::ReleaseWindowRequest, v1::ReleaseWindowResponse>(
      "ReleaseWindow", caller, req, out, [&](v1::ReleaseWindowResponse*) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateObjectId("window_id", req.window_id(), "w-"));
        auto w = windows_.find(req.window_id());
        if (w == windows_.end()) {
          return absl::NotFoundError(absl::StrCat("window_id: no window ", Quoted(req.window_id())));
        }
        *container_id = w->second.container_id();
        ContainerEntry* c = &containers_.at(w->second.container_id());
        // Released in place, as the plan's last step that can fail; see
        // AllocateWindowInternal for why no staging copy is needed.
        RETURN_IF_ERROR(c->allocator.Release(w->second.base()));
        Plan plan;
        plan.batch.deletes.push_back({kWindow, req.window_id()});
        plan.apply = [this, c, id = req.window_id()] {
          mu_.AssertHeld();  // Applied under mu_.
          EraseWindowLocked(c, id);
        };
        LogEvent(LogLevel::kInfo, "window_released",
                 {{"window", req.window_id()},
                  {"container", w->second.container_id()},
                  {"tenant", w->second.tenant_id()},
                  {"request_id", req.request_id()}});
        RecordEvent(NewEvent(kNormal, "WindowReleased", WindowRef(req.window_id()),
                             w->second.tenant_id(), req.request_id(),
                             absl::StrCat(req.window_id(), " at ", Hex(w->second.base()), "-",
                                          Hex(w->second.base() + w->second.size() - 1), " (",
                                          EventBytes(w->second.size()), ")"),
                             {ContainerRef(w->second.container_id())}));
        return plan;
      });
}

absl::Status Broker::ListWindows(const v1::ListWindowsRequest& req, v1::ListWindowsResponse* out,
                                 const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  if (!req.container_id().empty()) {
    RETURN_IF_ERROR(ParseContainerRef("container_id", req.container_id()).status());
  }
  if (!req.tenant_id().empty()) RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  absl::MutexLock l(&mu_);
  std::string container_id;
  if (!req.container_id().empty()) {
    ASSIGN_OR_RETURN(container_id,
                     ResolveContainerLocked(caller, "container_id", req.container_id()));
  }
  std::string next;
  Page(
      windows_, req.page_token(), limit,
      [&](const v1::Window& w) {
        return (container_id.empty() || w.container_id() == container_id) &&
               (req.tenant_id().empty() || w.tenant_id() == req.tenant_id());
      },
      [&](const v1::Window& w) { *out->add_windows() = w; }, &next);
  out->set_next_page_token(next);
  out->set_resource_version(watch_.CurrentVersion());
  return AwaitDurableLocked();
}

// ------------------------------------------------------------ ownership

std::optional<std::string> Broker::ContainerTenant(const std::string& container_id) const {
  absl::MutexLock l(&mu_);
  auto it = containers_.find(container_id);
  if (it == containers_.end()) return std::nullopt;
  return it->second.container.tenant_id();
}

std::optional<std::string> Broker::WindowTenant(const std::string& window_id) const {
  absl::MutexLock l(&mu_);
  auto it = windows_.find(window_id);
  if (it == windows_.end()) return std::nullopt;
  return it->second.tenant_id();
}

// ------------------------------------------------------------ usage

absl::Status Broker::GetUsage(const v1::GetUsageRequest& req, v1::GetUsageResponse* out,
                              const Identity& caller) {
  if (!req.tenant_id().empty()) RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  if (!req.node().empty()) RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  absl::MutexLock l(&mu_);
  if (!req.tenant_id().empty() && !tenants_.count(req.tenant_id())) {
    return absl::NotFoundError(absl::StrCat("tenant_id: no tenant ", Quoted(req.tenant_id())));
  }
  if (!req.node().empty() && !nodes_.count(req.node())) {
    return absl::NotFoundError(absl::StrCat("node: no node ", Quoted(req.node())));
  }
  std::map<std::pair<std::string, std::string>, v1::NodeUsage> rows;  // (tenant, node)
  auto row = [&](const std::string& tenant, const std::string& node) -> v1::NodeUsage& {
    v1::NodeUsage& r = rows[{tenant, node}];
    r.set_tenant_id(tenant);
    r.set_node(node);
    return r;
  };
  // This page's tenants: the filter, then at most `limit` ids after the token.
  std::set<std::string> page;
  std::string next;
  Page(
      tenants_, req.page_token(), limit,
      [&](const v1::Tenant& t) { return req.tenant_id().empty() || t.id() == req.tenant_id(); },
      [&](const v1::Tenant& t) { page.insert(t.id()); }, &next);
  out->set_next_page_token(next);
  auto wanted = [&](const std::string& tenant, const std::string& node) {
    return page.count(tenant) && (req.node().empty() || node == req.node());
  };
  std::vector<const ContainerEntry*> theirs;  // Only this page's tenants' containers.
  for (const std::string& t : page) {
    for (const std::string& id : TenantContainersLocked(t)) theirs.push_back(&containers_.at(id));
  }
  for (const ContainerEntry* entry : theirs) {
    const ContainerEntry& c = *entry;
    const std::string& t = c.container.tenant_id();
    const std::string& n = c.container.node();
    if (!wanted(t, n)) continue;
    v1::NodeUsage& r = row(t, n);
    r.set_containers(r.containers() + 1);
    r.set_windows(r.windows() + c.window_ids.size());
    r.set_window_bytes(r.window_bytes() + c.allocator.allocated_bytes());
  }
  for (const auto& [name, n] : nodes_) {
    for (const auto& [tenant, u] : n.usage) {
      if (!wanted(tenant, name)) continue;
      v1::NodeUsage& r = row(tenant, name);
      r.set_pinned_bytes(u.billed_bytes());
      r.set_mapped_bytes(u.mapped_bytes());
    }
  }
  std::map<std::string, v1::TenantUsage> totals;
  for (const auto& [id, t] : tenants_) {
    if (!page.count(id)) continue;
    v1::TenantUsage& u = totals[id];
    u.set_tenant_id(id);
    *u.mutable_quota() = t.quota();
  }
  for (const auto& [key, r] : rows) {
    *out->add_nodes() = r;
    v1::TenantUsage& u = totals[r.tenant_id()];
    u.set_tenant_id(r.tenant_id());
    u.set_containers(u.containers() + r.containers());
    u.set_windows(u.windows() + r.windows());
    u.set_window_bytes(u.window_bytes() + r.window_bytes());
    u.set_pinned_bytes(u.pinned_bytes() + r.pinned_bytes());
    u.set_mapped_bytes(u.mapped_bytes() + r.mapped_bytes());
  }
  for (auto& [id, u] : totals) {
    u.set_dedup_saved_bytes(u.mapped_bytes() > u.pinned_bytes() ? u.mapped_bytes() - u.pinned_bytes()
                                                                 : 0);
    *out->add_tenants() = u;
  }
  return AwaitDurableLocked();
}

// ------------------------------------------------------------ events

void Broker::RecordEvent(v1::Event event) {
  event.set_last_time_ms(Now());
  events_.Record(std::move(event));
}

absl::Status Broker::RecordRefusal(v1::Event event, absl::Status refusal) {
  if (!refusal.ok()) {
    event.set_message(std::string(refusal.message()));
    RecordEvent(std::move(event));
  }
  return refusal;
}

bool Broker::ObjectExistsLocked(const v1::ObjectRef& object, const std::string& tenant) const {
  switch (object.kind()) {
    case v1::OBJECT_KIND_TENANT:
      return tenants_.count(object.id()) > 0 && (tenant.empty() || tenant == object.id());
    case v1::OBJECT_KIND_NODE:
      return nodes_.count(object.id()) > 0;
    case v1::OBJECT_KIND_CONTAINER: {
      auto it = containers_.find(object.id());
      return it != containers_.end() &&
             (tenant.empty() || it->second.container.tenant_id() == tenant);
    }
    case v1::OBJECT_KIND_WINDOW: {
      auto it = windows_.find(object.id());
      return it != windows_.end() && (tenant.empty() || it->second.tenant_id() == tenant);
    }
    default:
      return false;
  }
}

absl::Status Broker::GetVersion(const v1::GetVersionRequest&, v1::GetVersionResponse* out,
                                const Identity& caller) {
  out->set_version(kVersion);
  out->set_commit(BuildCommit());
  // Hosts, paths and endpoints are the operator's business, not a tenant's.
  if (caller.role == Role::kOperator) {
    out->set_replica(options_.replica);
    out->set_leader_since_ms(options_.leader_since_ms);
    out->set_store(options_.store);
  }
  return absl::OkStatus();
}

absl::Status Broker::ListEvents(const v1::ListEventsRequest& req, v1::ListEventsResponse* out,
                                const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  uint64_t after = 0;
  if (!req.page_token().empty() && (!absl::SimpleAtoi(req.page_token(), &after) || after == 0)) {
    return absl::InvalidArgumentError(
        "page_token: not a page token of ListEvents (pass next_page_token unchanged)");
  }
  if (!req.tenant_id().empty()) RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  const v1::ObjectRef& object = req.object();
  const char* what = nullptr;  // The kind, for NOT_FOUND; null: every event.
  switch (object.kind()) {
    case v1::OBJECT_KIND_UNSPECIFIED:
      if (!object.id().empty()) {
        return absl::InvalidArgumentError("object.kind: required with object.id");
      }
      break;
    case v1::OBJECT_KIND_TENANT:
      RETURN_IF_ERROR(ValidateTenantId("object.id", object.id()));
      what = "tenant";
      break;
    case v1::OBJECT_KIND_NODE:
      RETURN_IF_ERROR(ValidateNodeName("object.id", object.id()));
      what = "node";
      break;
    case v1::OBJECT_KIND_CONTAINER:
      RETURN_IF_ERROR(ParseContainerRef("object.id", object.id()).status());
      what = "container";
      break;
    case v1::OBJECT_KIND_WINDOW:
      RETURN_IF_ERROR(ValidateObjectId("object.id", object.id(), "w-"));
      what = "window";
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("object.kind: unknown kind ", object.kind(),
                       " (tenant, node, container or window; unset for every event)"));
  }
  absl::MutexLock l(&mu_);
  // A container's name stands for the container holding it now; the events
  // of a deleted one are asked for by id.
  v1::ObjectRef resolved = object;
  if (object.kind() == v1::OBJECT_KIND_CONTAINER) {
    ASSIGN_OR_RETURN(*resolved.mutable_id(),
                     ResolveContainerLocked(caller, "object.id", object.id()));
  }
  // Events outlive their object (until they age out), so that one can still
  // ask what happened to a deleted container. The words are the
  // authorization layer's for another tenant's object.
  if (what != nullptr && !ObjectExistsLocked(resolved, req.tenant_id()) &&
      !events_.Holds(resolved, req.tenant_id())) {
    return absl::NotFoundError(absl::StrCat("object.id: no ", what, " ", Quoted(object.id())));
  }
  EventLog::Page page = events_.List(resolved, req.tenant_id(), after, limit);
  for (v1::Event& e : page.events) *out->add_events() = std::move(e);
  out->set_next_page_token(page.next_after == 0 ? "" : absl::StrCat(page.next_after));
  // The events may tell of changes not yet durable.
  return AwaitDurableLocked();
}

// ------------------------------------------------------------ registry

absl::Status Broker::Register(const v1::RegisterRequest& req, v1::RegisterResponse* out) {
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
  absl::MutexLock l(&mu_);
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
  before.node = persisted;
  before.grant_key = key;
  before.devices.assign(devices.devices().begin(), devices.devices().end());
  RETURN_IF_ERROR(CommitLocked(std::move(batch)));
  auto found = nodes_.find(req.node());  // Looked up again: mu_ was released.
  if (found == nodes_.end()) {
    return absl::UnavailableError(absl::StrCat("node: node ", Quoted(req.node()),
                                               " was rolled back by a failed commit; retry"));
  }
  std::set<std::string> held;
  for (const v1::AgentContainer& c : req.containers()) held.insert(c.id());
  // A delete whose destroy happened but whose removal was never committed
  // (the broker crashed, or the store refused it) is finished here, before
  // the session starts, so that a failure leaves no session behind. One in
  // flight finishes itself.
  std::vector<std::string> finished;
  for (const std::string& id : NodeContainersLocked(req.node())) {
    const ContainerEntry& c = containers_.at(id);
    if (c.container.deleting() && !held.count(id) && !deleting_.count(id)) finished.push_back(id);
  }
  if (!finished.empty()) {
    WriteBatch removal;
    for (const std::string& id : finished) {
      absl::StatusOr<Plan> plan = PlanDeleteContainerLocked(id);
      if (!plan.ok()) continue;
      for (auto& d : plan->batch.deletes) removal.deletes.push_back(std::move(d));
      plan->apply();
    }
    RETURN_IF_ERROR(CommitLocked(std::move(removal)));
    for (const std::string& id : finished) {
      LogEvent(LogLevel::kInfo, "container_deleted",
               {{"container", id}, {"node", req.node()}, {"note", "finished_at_registration"}});
      RecordEvent(NewEvent(
          kNormal, "ContainerDeleted", ContainerRef(id), "", "",
          absl::StrCat(id, " deleted: its agent on node ", req.node(), " no longer holds it"),
          {NodeRef(req.node())}));
    }
    found = nodes_.find(req.node());
    if (found == nodes_.end()) {
      return absl::UnavailableError(absl::StrCat("node: node ", Quoted(req.node()),
                                                 " was rolled back by a failed commit; retry"));
    }
  }
  NodeEntry& n = found->second;
  out->set_grant_key(n.grant_key);
  n.agent_incarnation = req.agent_incarnation();
  n.session_id = absl::StrFormat("s-%016x", absl::Uniform<uint64_t>(rng_));
  n.reconciled = false;
  NoteHeartbeatLocked(&n);
  n.usage.clear();
  n.failed.clear();
  out->set_session_id(n.session_id);
  out->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  int to_create = 0;
  for (const std::string& id : NodeContainersLocked(req.node())) {
    const ContainerEntry& c = containers_.at(id);
    // A DELETING one its agent no longer holds, whose delete is in flight,
    // is not wanted back.
    if (c.container.deleting() && !held.count(id)) continue;
    v1::AgentContainer* d = out->add_desired_containers();
    d->set_id(id);
    d->set_tenant_id(c.container.tenant_id());
    *d->mutable_devices() = c.container.devices();
    *d->mutable_geometry() = c.container.geometry();
    d->set_pin_budget_bytes(c.container.pin_budget_bytes());
    *d->mutable_windows() = WindowsLocked(c).windows();
    if (!held.erase(id)) ++to_create;
  }
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

absl::Status Broker::Heartbeat(const v1::HeartbeatRequest& req, v1::HeartbeatResponse* out) {
  RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(req.node());
  if (it == nodes_.end() || it->second.session_id.empty() ||
      it->second.session_id != req.session_id()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session_id: node ", Quoted(req.node()), " has no session ", Quoted(req.session_id()),
        "; register again"));
  }
  NodeEntry& n = it->second;
  NoteHeartbeatLocked(&n);
  n.usage.clear();
  for (const v1::PinUsage& u : req.usage()) {
    if (ValidateTenantId("usage.tenant_id", u.tenant_id()).ok()) n.usage[u.tenant_id()] = u;
  }
  for (const std::string& id : NodeContainersLocked(req.node())) {
    const ContainerEntry& c = containers_.at(id);
    v1::ContainerBudget* b = out->add_budgets();
    b->set_container_id(id);
    b->set_pin_budget_bytes(c.container.pin_budget_bytes());
    *out->add_windows() = WindowsLocked(c);
  }
  // Agents enforce what this answer carries: only durable budgets and windows.
  return AwaitDurableLocked();
}

absl::Status Broker::Reconciled(const v1::ReconciledRequest& req, v1::ReconciledResponse*) {
  RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(req.node());
  if (it == nodes_.end() || it->second.session_id != req.session_id()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session_id: node ", Quoted(req.node()), " has no session ", Quoted(req.session_id()),
        "; register again"));
  }
  it->second.failed.clear();
  it->second.reconciled = true;
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
  MarkNodeContainersLocked(req.node());
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
      n.usage.clear();
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
  const int64_t limit = options_.max_remembered_answers_per_caller;
  if (limit <= 0) return absl::OkStatus();
  const std::string scope = RequestScope(key);
  const int64_t remembered = requests_.CountInScope(scope);
  if (remembered < limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "request_id: ", scope, " has ", remembered, " answers remembered for retries (limit ", limit,
      " per caller, --max-remembered-answers-per-caller); send mutations without request_id "
      "or wait for older answers to expire (after ", options_.request_ttl_ms / 1000, " s)"));
}

// ------------------------------------------------------------ metrics

BrokerStats Broker::Stats() const {
  absl::MutexLock l(&mu_);
  BrokerStats s;
  std::map<std::string, BrokerStats::Tenant> tenants;
  for (const auto& [id, t] : tenants_) {
    BrokerStats::Tenant& row = tenants[id];
    row.id = id;
    row.quota_pinned_bytes = t.quota().pinned_bytes();
    row.quota_window_bytes = t.quota().window_bytes();
  }
  for (const auto& [id, w] : windows_) {
    auto t = tenants.find(w.tenant_id());
    if (t != tenants.end()) t->second.reserved_bytes += w.size();
  }
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
  for (const auto& [id, c] : containers_) {
    switch (ContainerViewLocked(c).state()) {
      case v1::CONTAINER_STATE_READY:
        ++s.containers_ready;
        break;
      case v1::CONTAINER_STATE_FAILED:
        ++s.containers_failed;
        break;
      case v1::CONTAINER_STATE_DELETING:
        ++s.containers_deleting;
        break;
      default:
        ++s.containers_node_unavailable;
        break;
    }
  }
  s.windows = static_cast<int64_t>(windows_.size());
  for (auto& [id, t] : tenants) s.tenants.push_back(std::move(t));
  return s;
}

}  // namespace iommu
