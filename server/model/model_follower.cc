#include "server/model/model_follower.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace iommu {
namespace model {
namespace {

// Every key under the prefix: [prefix + "/", prefix + "0"), '0' being the
// byte after '/'.
std::string RangeStart(const std::string& prefix) { return prefix + "/"; }
std::string RangeEnd(const std::string& prefix) { return prefix + "0"; }

}  // namespace

kv::TxnRequest ChangeToTxn(const WriteBatch& change, const std::string& prefix,
                           std::vector<kv::Compare> guards) {
  kv::TxnRequest txn;
  txn.compares = std::move(guards);
  for (const StoreRecord& r : change.puts) {
    txn.then_ops.push_back(kv::PutOp{prefix + RecordKey(r.kind, r.id), r.value, 0, false});
  }
  for (const auto& [kind, id] : change.deletes) {
    txn.then_ops.push_back(kv::DeleteRangeOp{prefix + RecordKey(kind, id), "", false});
  }
  return txn;
}

absl::StatusOr<WriteBatch> ChangeFromEvents(const kv::WatchBatch& batch,
                                            const std::string& prefix) {
  WriteBatch change;
  const std::string start = RangeStart(prefix);
  for (const kv::Event& e : batch.events) {
    if (!absl::StartsWith(e.kv.key, start)) continue;
    absl::StatusOr<std::pair<std::string, std::string>> kind_id =
        ParseRecordKey(e.kv.key.substr(prefix.size()));
    if (!kind_id.ok()) {
      return absl::DataLossError(absl::StrCat("revision ", batch.revision, ": ",
                                              kind_id.status().message()));
    }
    if (e.type == kv::EventType::kPut) {
      change.puts.push_back({kind_id->first, kind_id->second, e.kv.value});
    } else {
      change.deletes.push_back(*std::move(kind_id));
    }
  }
  return change;
}

absl::StatusOr<std::unique_ptr<ModelFollower>> ModelFollower::Start(kv::KvStore* store,
                                                                    std::string prefix) {
  std::unique_ptr<ModelFollower> f(new ModelFollower(std::move(prefix)));
  kv::RangeRequest all;
  all.key = RangeStart(f->prefix_);
  all.range_end = RangeEnd(f->prefix_);
  ASSIGN_OR_RETURN(kv::RangeResponse listed, store->Range(all));
  kv::WatchBatch as_batch;
  as_batch.revision = listed.revision;
  for (kv::KeyValue& kv : listed.kvs) {
    as_batch.events.push_back(kv::Event{kv::EventType::kPut, std::move(kv), std::nullopt});
  }
  ASSIGN_OR_RETURN(WriteBatch records, ChangeFromEvents(as_batch, f->prefix_));
  {
    absl::MutexLock l(&f->mu_);
    if (absl::Status s = f->state_.Apply(records); !s.ok()) {
      return absl::DataLossError(
          absl::StrCat("records under ", f->prefix_, " at revision ", listed.revision,
                       " do not form a valid state: ", s.message()));
    }
    f->revision_ = listed.revision;
  }
  kv::WatchRequest w;
  w.key = all.key;
  w.range_end = all.range_end;
  w.start_revision = listed.revision + 1;
  ModelFollower* self = f.get();
  ASSIGN_OR_RETURN(f->watch_, store->Watch(w, [self](const absl::StatusOr<kv::WatchBatch>& b) {
                     self->OnBatch(b);
                   }));
  return f;
}

ModelFollower::~ModelFollower() { watch_.reset(); }  // Waits for a running callback.

void ModelFollower::OnBatch(const absl::StatusOr<kv::WatchBatch>& batch) {
  absl::MutexLock l(&mu_);
  if (!health_.ok()) return;
  if (!batch.ok()) {
    health_ = batch.status();
    return;
  }
  absl::StatusOr<WriteBatch> change = ChangeFromEvents(*batch, prefix_);
  absl::Status applied = change.ok() ? state_.Apply(*change) : change.status();
  if (!applied.ok()) {
    health_ = absl::DataLossError(absl::StrCat("the change at revision ", batch->revision,
                                               " does not apply to the model: ",
                                               applied.message()));
    return;
  }
  revision_ = batch->revision;
}

int64_t ModelFollower::revision() const {
  absl::MutexLock l(&mu_);
  return revision_;
}

absl::Status ModelFollower::health() const {
  absl::MutexLock l(&mu_);
  return health_;
}

absl::Status ModelFollower::WaitFor(int64_t revision, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto reached = [this, revision]() {
    mu_.AssertHeld();  // Await evaluates conditions under mu_.
    return revision_ >= revision || !health_.ok();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&reached), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("model: at revision ", revision_,
                                                    ", still waiting for ", revision));
  }
  return revision_ >= revision ? absl::OkStatus() : health_;
}

void ModelFollower::Read(
    const std::function<void(const FleetState&, int64_t revision)>& read) const {
  absl::ReaderMutexLock l(&mu_);
  read(state_, revision_);
}

}  // namespace model
}  // namespace iommu
