// The broker's side of the Watch RPC: which objects changed (marks set where
// the state changes), and publishing them to the WatchLog once durable. A
// mark carries the sequence number that must be resolved (committed or
// rolled back) before the object may be shown, so a watcher never sees a
// change that a failed commit takes back: it sees each object as it is when
// every change to it so far is durable. A container's mark also keeps its
// labels as published, for the enter/leave rule of label-selector watches.
#include <set>

#include "absl/strings/str_cat.h"
#include "common/label_selector.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/broker.h"

namespace iommu {
namespace {

std::pair<int, std::string> Key(v1::ObjectKind kind, const std::string& id) {
  return {static_cast<int>(kind), id};
}

v1::ObjectKind KindOf(const WatchLog::Change& c) {
  switch (c.event.object_case()) {
    case v1::WatchEvent::kTenant: return v1::OBJECT_KIND_TENANT;
    case v1::WatchEvent::kNode: return v1::OBJECT_KIND_NODE;
    case v1::WatchEvent::kContainer: return v1::OBJECT_KIND_CONTAINER;
    case v1::WatchEvent::kWindow: return v1::OBJECT_KIND_WINDOW;
    default: return v1::OBJECT_KIND_UNSPECIFIED;
  }
}

// Kubernetes' rule for a watch with a selector, by the container's labels
// before and after the change: a watcher holds exactly the containers that
// match, so one that stops matching must be removed from its view (it would
// otherwise keep a stale object) and one that starts matching is new to it.
WatchLog::Verdict BySelector(const LabelSelector& selector, const WatchLog::Change& c) {
  const bool was = c.prev_labels.has_value() && selector.Matches(*c.prev_labels);
  const bool is =
      c.event.type() == v1::WatchEvent::PUT && selector.Matches(c.event.container().labels());
  if (is) return WatchLog::Verdict::kSend;    // Entered, or changed within.
  if (!was) return WatchLog::Verdict::kSkip;  // Never shown to this watcher.
  return c.event.type() == v1::WatchEvent::DELETE ? WatchLog::Verdict::kSend
                                                  : WatchLog::Verdict::kSendAsLeave;
}

}  // namespace

Broker::DirtyMark& Broker::MarkLocked(v1::ObjectKind kind, const std::string& id) {
  auto [it, made] = dirty_.try_emplace(Key(kind, id));
  if (made && kind == v1::OBJECT_KIND_CONTAINER) {
    // The first change since the last publish, not applied yet: the labels
    // now are the ones watchers saw, which a label-selector watch needs to
    // tell a container entering its selection from one leaving it.
    auto c = containers_.find(id);
    if (c != containers_.end()) it->second.prev_labels = c->second.container.labels();
  }
  return it->second;
}

void Broker::MarkAppliedLocked(v1::ObjectKind kind, const std::string& id) {
  DirtyMark& mark = MarkLocked(kind, id);
  mark.seq = std::max(mark.seq, ApplyingSeqLocked());
  if (mark.first_applied == 0) mark.first_applied = ApplyingSeqLocked();
}

void Broker::MarkObservedLocked(v1::ObjectKind kind, const std::string& id) {
  DirtyMark& mark = MarkLocked(kind, id);
  mark.seq = std::max(mark.seq, applied_seq_);
  mark.observed = true;
}

void Broker::ForgetRolledBackLocked(uint64_t durable_seq) {
  for (auto it = dirty_.begin(); it != dirty_.end();) {
    if (!it->second.observed && it->second.first_applied > durable_seq) {
      gone_.erase(it->first);
      it = dirty_.erase(it);
    } else {
      ++it;
    }
  }
}

void Broker::MarkGoneLocked(v1::ObjectKind kind, const std::string& id, WatchLog::Change last) {
  last.event.set_type(v1::WatchEvent::DELETE);
  gone_[Key(kind, id)] = std::move(last);
  MarkAppliedLocked(kind, id);
}

void Broker::MarkNodeContainersLocked(const std::string& node) {
  for (const std::string& id : NodeContainersLocked(node)) {
    MarkObservedLocked(v1::OBJECT_KIND_CONTAINER, id);
  }
}

void Broker::MarkFailuresChangedLocked(const std::map<std::string, std::string>& before,
                                       const std::map<std::string, std::string>& after) {
  for (const auto& [id, reason] : before) {
    auto now = after.find(id);
    if (now == after.end() || now->second != reason) {
      MarkObservedLocked(v1::OBJECT_KIND_CONTAINER, id);
    }
  }
  for (const auto& [id, reason] : after) {
    if (!before.count(id)) MarkObservedLocked(v1::OBJECT_KIND_CONTAINER, id);
  }
}

std::optional<WatchLog::Change> Broker::CurrentLocked(v1::ObjectKind kind,
                                                      const std::string& id) const {
  WatchLog::Change c;
  c.event.set_type(v1::WatchEvent::PUT);
  switch (kind) {
    case v1::OBJECT_KIND_TENANT: {
      auto it = tenants_.find(id);
      if (it == tenants_.end()) return std::nullopt;
      *c.event.mutable_tenant() = it->second;
      c.tenant = id;
      return c;
    }
    case v1::OBJECT_KIND_NODE: {
      auto it = nodes_.find(id);
      if (it == nodes_.end()) return std::nullopt;
      *c.event.mutable_node() = NodeViewLocked(it->second);
      return c;
    }
    case v1::OBJECT_KIND_CONTAINER: {
      auto it = containers_.find(id);
      if (it == containers_.end()) return std::nullopt;
      *c.event.mutable_container() = ContainerViewLocked(it->second);
      c.tenant = it->second.container.tenant_id();
      return c;
    }
    case v1::OBJECT_KIND_WINDOW: {
      auto it = windows_.find(id);
      if (it == windows_.end()) return std::nullopt;
      *c.event.mutable_window() = it->second;
      c.tenant = it->second.tenant_id();
      return c;
    }
    default:
      return std::nullopt;
  }
}

void Broker::PublishLocked() {
  std::vector<WatchLog::Change> out;
  for (auto it = dirty_.begin(); it != dirty_.end();) {
    if (it->second.seq > resolved_seq_) {
      ++it;
      continue;
    }
    const auto kind = static_cast<v1::ObjectKind>(it->first.first);
    std::optional<WatchLog::Change> change = CurrentLocked(kind, it->first.second);
    auto gone = gone_.find(it->first);
    if (!change.has_value() && gone != gone_.end()) change = std::move(gone->second);
    // Neither there nor erased: created and rolled back, never shown.
    if (gone != gone_.end()) gone_.erase(gone);
    if (change.has_value()) {
      change->prev_labels = std::move(it->second.prev_labels);
      out.push_back(*std::move(change));
    }
    it = dirty_.erase(it);
  }
  watch_.Append(std::move(out));
}

absl::StatusOr<Broker::WatchPlan> Broker::PrepareWatch(const v1::WatchRequest& req) const {
  std::set<v1::ObjectKind> kinds;
  for (int i = 0; i < req.kinds_size(); ++i) {
    const auto kind = static_cast<v1::ObjectKind>(req.kinds(i));
    if (kind < v1::OBJECT_KIND_TENANT || kind > v1::OBJECT_KIND_WINDOW) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kinds[", i, "]: unknown kind ", req.kinds(i), " (tenant, node, container or window)"));
    }
    kinds.insert(kind);
  }
  if (!req.tenant_id().empty()) RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  ASSIGN_OR_RETURN(LabelSelector selector,
                   LabelSelector::Parse("label_selector", req.label_selector()));
  WatchPlan plan;
  plan.scope = req.tenant_id();
  plan.version = req.resource_version().empty() ? watch_.CurrentVersion() : req.resource_version();
  // An unusable version is refused now, not after the stream opened.
  RETURN_IF_ERROR(watch_.Since(plan.version, plan.scope, nullptr, 0).status());
  plan.filter = [kinds, tenant = req.tenant_id(), selector](const WatchLog::Change& c) {
    const v1::ObjectKind kind = KindOf(c);
    if (!kinds.empty() && !kinds.count(kind)) return WatchLog::Verdict::kSkip;
    if (!tenant.empty() && c.tenant != tenant) return WatchLog::Verdict::kSkip;
    if (kind != v1::OBJECT_KIND_CONTAINER || selector.empty()) return WatchLog::Verdict::kSend;
    return BySelector(selector, c);
  };
  return plan;
}

}  // namespace iommu
