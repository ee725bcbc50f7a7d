#include "server/kv/kv_state.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/kv/kv_rules.h"

namespace iommu {
namespace kv {
namespace {

// Iterates a btree_map keyed by string over (key, range_end) in key order.
template <typename Map, typename Fn>
void ForEachIn(const Map& map, absl::string_view key, absl::string_view range_end, Fn fn) {
  if (range_end.empty()) {
    auto it = map.find(key);
    if (it != map.end()) fn(*it);
    return;
  }
  for (auto it = map.lower_bound(key); it != map.end(); ++it) {
    if (!IsOpenEnded(range_end) && it->first >= range_end) break;
    if (!fn(*it)) break;
  }
}

}  // namespace

// --- KvState -----------------------------------------------------------------

const KeyValue* KvState::Find(absl::string_view key) const {
  auto it = kvs_.find(key);
  return it == kvs_.end() ? nullptr : &it->second;
}

const KvState::Lease* KvState::FindLease(int64_t id) const {
  auto it = leases_.find(id);
  return it == leases_.end() ? nullptr : &it->second;
}

void KvState::ForEach(absl::string_view key, absl::string_view range_end,
                      const std::function<bool(const KeyValue&)>& fn) const {
  ForEachIn(kvs_, key, range_end, [&](const auto& entry) { return fn(entry.second); });
}

void KvState::Attach(const KeyValue& kv) {
  if (kv.lease == 0) return;
  auto it = leases_.find(kv.lease);
  // The planner refuses puts with unknown leases, and a revoke deletes the
  // lease's keys first: a committed change naming a missing lease is a bug.
  if (it == leases_.end()) {
    std::abort();
  }
  it->second.keys.insert(kv.key);
}

void KvState::Detach(const KeyValue& kv) {
  if (kv.lease == 0) return;
  auto it = leases_.find(kv.lease);
  if (it != leases_.end()) it->second.keys.erase(kv.key);
}

void KvState::Apply(const ChangeSet& changes, absl::Time now) {
  for (const LeaseRecord& l : changes.granted) {
    leases_[l.id] = Lease{l.ttl_seconds, now + absl::Seconds(l.ttl_seconds), {}};
  }
  for (const WatchBatch& txn : changes.txns) {
    for (const Event& e : txn.events) {
      auto it = kvs_.find(e.kv.key);
      if (it != kvs_.end()) Detach(it->second);
      if (e.type == EventType::kPut) {
        Attach(e.kv);
        if (it != kvs_.end()) {
          it->second = e.kv;
        } else {
          kvs_.emplace(e.kv.key, e.kv);
        }
      } else if (it != kvs_.end()) {
        kvs_.erase(it);
      }
    }
  }
  for (int64_t id : changes.revoked) leases_.erase(id);
  revision_ = changes.revision;
  next_lease_id_ = changes.next_lease_id;
}

void KvState::LoadKey(KeyValue kv) {
  if (kv.lease != 0 && leases_.count(kv.lease) == 0) {
    // A key whose lease row is missing (only a damaged file has one): keep
    // the key rather than drop data, detached.
    kv.lease = 0;
  }
  Attach(kv);
  std::string key = kv.key;
  kvs_[std::move(key)] = std::move(kv);
}

void KvState::LoadLease(const LeaseRecord& lease, absl::Time now) {
  leases_[lease.id] = Lease{lease.ttl_seconds, now + absl::Seconds(lease.ttl_seconds), {}};
}

void KvState::SetCounters(int64_t revision, int64_t next_lease_id) {
  revision_ = revision;
  next_lease_id_ = next_lease_id;
}

bool KvState::Renew(int64_t id, absl::Time now) {
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.expiry <= now) return false;
  it->second.expiry = now + absl::Seconds(it->second.ttl_seconds);
  return true;
}

std::vector<int64_t> KvState::Expired(absl::Time now) const {
  std::vector<int64_t> out;
  for (const auto& [id, lease] : leases_) {
    if (lease.expiry <= now) out.push_back(id);
  }
  return out;
}

// --- BatchPlanner ------------------------------------------------------------

BatchPlanner::BatchPlanner(const KvState& state, const KvLimits& limits)
    : state_(state), limits_(limits) {
  changes_.revision = state.revision();
  changes_.next_lease_id = state.next_lease_id();
}

const KeyValue* BatchPlanner::Get(absl::string_view key) const {
  auto it = overlay_.find(key);
  if (it != overlay_.end()) return it->second.has_value() ? &*it->second : nullptr;
  return state_.Find(key);
}

bool BatchPlanner::LeaseExists(int64_t id) const {
  auto it = lease_overlay_.find(id);
  if (it != lease_overlay_.end()) return it->second;
  return state_.FindLease(id) != nullptr;
}

// Merges the committed state and the overlay in key order; the overlay wins.
void BatchPlanner::ForEach(absl::string_view key, absl::string_view range_end,
                           const std::function<bool(const KeyValue&)>& fn) const {
  std::vector<const KeyValue*> base;
  state_.ForEach(key, range_end, [&](const KeyValue& kv) {
    base.push_back(&kv);
    return true;
  });
  std::vector<std::pair<absl::string_view, const std::optional<KeyValue>*>> over;
  ForEachIn(overlay_, key, range_end, [&](const auto& entry) {
    over.emplace_back(entry.first, &entry.second);
    return true;
  });
  size_t b = 0, o = 0;
  while (b < base.size() || o < over.size()) {
    const KeyValue* next = nullptr;
    if (o == over.size() || (b < base.size() && base[b]->key < over[o].first)) {
      next = base[b++];
    } else {
      if (b < base.size() && base[b]->key == over[o].first) ++b;  // Shadowed.
      const std::optional<KeyValue>* v = over[o++].second;
      if (!v->has_value()) continue;
      next = &**v;
    }
    if (!fn(*next)) return;
  }
}

RangeResponse BatchPlanner::DoRange(const RangeOp& op) const {
  RangeResponse r;
  ForEach(op.key, op.range_end, [&](const KeyValue& kv) {
    ++r.count;
    if (op.limit == 0 || static_cast<int64_t>(r.kvs.size()) < op.limit) r.kvs.push_back(kv);
    return true;
  });
  r.more = r.count > static_cast<int64_t>(r.kvs.size());
  return r;
}

PutResponse BatchPlanner::DoPut(const PutOp& op, WatchBatch* batch) {
  PutResponse r;
  const KeyValue* prev = Get(op.key);
  Event e;
  e.type = EventType::kPut;
  e.kv.key = op.key;
  e.kv.value = op.value;
  e.kv.mod_revision = WriteRevision();
  e.kv.create_revision = prev != nullptr ? prev->create_revision : WriteRevision();
  e.kv.version = prev != nullptr ? prev->version + 1 : 1;
  e.kv.lease = op.lease;
  if (prev != nullptr) e.prev_kv = *prev;
  if (op.prev_kv) r.prev_kv = e.prev_kv;
  overlay_[op.key] = e.kv;
  batch->events.push_back(std::move(e));
  return r;
}

DeleteRangeResponse BatchPlanner::DoDelete(const DeleteRangeOp& op, WatchBatch* batch) {
  DeleteRangeResponse r;
  std::vector<KeyValue> victims;
  ForEach(op.key, op.range_end, [&](const KeyValue& kv) {
    victims.push_back(kv);
    return true;
  });
  for (KeyValue& prev : victims) {
    Event e;
    e.type = EventType::kDelete;
    e.kv.key = prev.key;
    e.kv.mod_revision = WriteRevision();
    overlay_[prev.key] = std::nullopt;
    ++r.deleted;
    if (op.prev_kv) r.prev_kvs.push_back(prev);
    e.prev_kv = std::move(prev);
    batch->events.push_back(std::move(e));
  }
  return r;
}

void BatchPlanner::Finish(WatchBatch batch) {
  if (batch.events.empty()) return;
  changes_.revision = batch.revision;
  changes_.txns.push_back(std::move(batch));
}

absl::StatusOr<TxnResponse> BatchPlanner::PlanTxn(const TxnRequest& txn) {
  TxnResponse resp;
  resp.succeeded = true;
  for (const Compare& c : txn.compares) {
    if (!EvaluateCompare(c, Get(c.key))) {
      resp.succeeded = false;
      break;
    }
  }
  const std::vector<Op>& ops = resp.succeeded ? txn.then_ops : txn.else_ops;
  // Checked before any op runs, so that a refused txn plans nothing.
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto* put = std::get_if<PutOp>(&ops[i]);
    if (put != nullptr && put->lease != 0 && !LeaseExists(put->lease)) {
      return absl::NotFoundError(absl::StrCat(resp.succeeded ? "then_ops[" : "else_ops[", i,
                                              "].lease: lease ", put->lease, " not found"));
    }
  }
  WatchBatch batch;
  batch.revision = WriteRevision();
  for (const Op& op : ops) {
    if (const auto* put = std::get_if<PutOp>(&op)) {
      resp.responses.emplace_back(DoPut(*put, &batch));
    } else if (const auto* del = std::get_if<DeleteRangeOp>(&op)) {
      resp.responses.emplace_back(DoDelete(*del, &batch));
    } else {
      resp.responses.emplace_back(DoRange(std::get<RangeOp>(op)));
    }
  }
  Finish(std::move(batch));
  resp.revision = changes_.revision;
  for (OpResponse& r : resp.responses) {
    if (auto* range = std::get_if<RangeResponse>(&r)) range->revision = resp.revision;
  }
  return resp;
}

int64_t BatchPlanner::PlanGrant(int64_t ttl_seconds) {
  const int64_t id = changes_.next_lease_id++;
  changes_.granted.push_back({id, ttl_seconds});
  lease_overlay_[id] = true;
  return id;
}

absl::StatusOr<int64_t> BatchPlanner::PlanRevoke(int64_t id) {
  if (!LeaseExists(id)) return absl::NotFoundError(absl::StrCat("lease ", id, " not found"));
  // Its keys as planned so far: committed ones still on it, and planned ones.
  absl::btree_set<std::string> keys;
  if (const KvState::Lease* lease = state_.FindLease(id)) {
    for (const std::string& k : lease->keys) {
      const KeyValue* kv = Get(k);
      if (kv != nullptr && kv->lease == id) keys.insert(k);
    }
  }
  for (const auto& [k, v] : overlay_) {
    if (v.has_value() && v->lease == id) keys.insert(k);
  }
  WatchBatch batch;
  batch.revision = WriteRevision();
  for (const std::string& k : keys) DoDelete(DeleteRangeOp{k, "", false}, &batch);
  Finish(std::move(batch));
  changes_.revoked.push_back(id);
  lease_overlay_[id] = false;
  return changes_.revision;
}

}  // namespace kv
}  // namespace iommu
