#include "server/kv/kv_backed_store.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/request_digest.h"

namespace iommu {
namespace kv {

std::string StateKey(absl::string_view kind, absl::string_view id) {
  return absl::StrCat(kStatePrefix, "/", kind, "/", id);
}

std::string RequestKey(absl::string_view request_id) {
  return absl::StrCat(kRequestsPrefix, request_id);
}

std::string EncodeRequest(const RequestRecord& r) {
  return absl::StrCat(r.time_ms, ":", r.fingerprint.size(), ":", r.fingerprint, r.response);
}

absl::StatusOr<RequestRecord> DecodeRequest(absl::string_view request_id,
                                            absl::string_view bytes) {
  auto damaged = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("store: the remembered answer of request \"",
                                            request_id, "\" is damaged: ", why));
  };
  const size_t first = bytes.find(':');
  const size_t second = first == absl::string_view::npos ? first : bytes.find(':', first + 1);
  if (second == absl::string_view::npos) return damaged("no \"<time>:<length>:\" header");
  RequestRecord r;
  uint64_t fp_size = 0;
  if (!absl::SimpleAtoi(bytes.substr(0, first), &r.time_ms) ||
      !absl::SimpleAtoi(bytes.substr(first + 1, second - first - 1), &fp_size)) {
    return damaged("the header's numbers do not parse");
  }
  const absl::string_view rest = bytes.substr(second + 1);
  if (fp_size > rest.size()) return damaged("the fingerprint runs past the end");
  r.request_id = std::string(request_id);
  r.fingerprint = std::string(rest.substr(0, fp_size));
  r.response = std::string(rest.substr(fp_size));
  return r;
}

absl::StatusOr<std::vector<KeyValue>> KvBackedStore::RangePrefix(const std::string& prefix) {
  std::vector<KeyValue> out;
  RangeRequest req;
  req.key = prefix;
  req.range_end = PrefixRangeEnd(prefix);
  req.limit = options_.page_size;
  while (true) {
    ASSIGN_OR_RETURN(RangeResponse resp, kv_->Range(req));
    // Every page at the first page's revision: one consistent snapshot.
    req.revision = resp.revision;
    for (KeyValue& kv : resp.kvs) out.push_back(std::move(kv));
    if (!resp.more || out.empty()) return out;
    req.key = out.back().key + std::string(1, '\0');
  }
}

absl::StatusOr<std::vector<StoreRecord>> KvBackedStore::LoadAll() {
  ASSIGN_OR_RETURN(std::vector<KeyValue> kvs, RangePrefix(absl::StrCat(kStatePrefix, "/")));
  std::vector<StoreRecord> out;
  out.reserve(kvs.size());
  const size_t skip = sizeof(kStatePrefix);  // The prefix and its '/'.
  for (KeyValue& kv : kvs) {
    const size_t slash = kv.key.find('/', skip);
    if (slash == std::string::npos || slash == skip || slash + 1 == kv.key.size()) {
      return absl::DataLossError(absl::StrCat("store: key \"", kv.key, "\" is not of the form ",
                                              kStatePrefix, "/<kind>/<id>"));
    }
    out.push_back({kv.key.substr(skip, slash - skip), kv.key.substr(slash + 1),
                   std::move(kv.value)});
  }
  // (kind, id) order, as the Store contract says; key order differs when one
  // kind is a prefix of another.
  std::sort(out.begin(), out.end(), [](const StoreRecord& a, const StoreRecord& b) {
    return std::tie(a.kind, a.id) < std::tie(b.kind, b.id);
  });
  return out;
}

absl::Status KvBackedStore::Commit(const WriteBatch& batch) {
  return CommitGroup(absl::MakeConstSpan(&batch, 1));
}

namespace {

int64_t OpCount(const WriteBatch& b) {
  return static_cast<int64_t>(b.puts.size() + b.deletes.size()) + (b.request ? 1 : 0);
}

}  // namespace

void KvBackedStore::Fence(TxnRequest* txn) const {
  if (options_.fence_key.empty()) return;
  txn->compares.push_back(
      Compare::CreateRevision(options_.fence_key, CompareOp::kEqual, options_.fence_revision));
}

absl::Status KvBackedStore::Fenced() const {
  if (options_.on_fenced) options_.on_fenced();
  // UNAVAILABLE: nothing was written and the caller's retry (same request
  // id) lands at the replica that leads now.
  return absl::UnavailableError(absl::StrCat(
      "store: fenced: ", options_.fence_key, " is no longer held at revision ",
      options_.fence_revision, " (another broker leads now); nothing was written, retry"));
}

int64_t KvBackedStore::OpBudget() const {
  return options_.max_txn_ops - (options_.fence_key.empty() ? 0 : 1);
}

absl::Status KvBackedStore::CommitGroup(absl::Span<const WriteBatch> batches) {
  const int64_t budget = OpBudget();
  size_t start = 0;
  int64_t ops = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    const int64_t n = OpCount(batches[i]);
    if (n > budget) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store: one change writes ", n, " keys, more than the store's limit of ", budget,
          " per transaction (etcd's --max-txn-ops)"));
    }
    if (ops + n > budget) {
      RETURN_IF_ERROR(CommitOps(batches.subspan(start, i - start)));
      start = i;
      ops = 0;
    }
    ops += n;
  }
  if (start < batches.size()) RETURN_IF_ERROR(CommitOps(batches.subspan(start)));
  return absl::OkStatus();
}

TxnRequest KvBackedStore::BuildTxn(absl::Span<const WriteBatch> batches,
                                   int64_t answer_lease) const {
  // A txn may write a key once: fold the batches in order, each batch's
  // puts before its deletes (the Store's order).
  struct Write {
    std::optional<std::string> value;  // nullopt: a delete.
    int64_t lease = 0;
  };
  std::map<std::string, Write> writes;
  for (const WriteBatch& b : batches) {
    for (const StoreRecord& r : b.puts) writes[StateKey(r.kind, r.id)] = {r.value, 0};
    for (const auto& [kind, id] : b.deletes) writes[StateKey(kind, id)] = {std::nullopt, 0};
    if (b.request) {
      writes[RequestKey(b.request->request_id)] = {EncodeRequest(*b.request), answer_lease};
    }
  }
  TxnRequest txn;
  if (writes.empty()) return txn;
  Fence(&txn);
  txn.then_ops.reserve(writes.size());
  for (auto& [key, w] : writes) {
    if (w.value.has_value()) {
      txn.then_ops.push_back(PutOp{key, std::move(*w.value), w.lease});
    } else {
      txn.then_ops.push_back(DeleteRangeOp{key});
    }
  }
  return txn;
}

int64_t KvBackedStore::answer_lease() const {
  absl::MutexLock l(&lease_mu_);
  return lease_id_;
}

absl::StatusOr<int64_t> KvBackedStore::AnswerLease(int64_t stale) {
  absl::MutexLock l(&lease_mu_);
  const absl::Time now = options_.now();
  if (lease_id_ != 0 && lease_id_ != stale && now - lease_granted_ < options_.answer_lease_span) {
    return lease_id_;
  }
  // Long enough for an answer written at the end of the span to be kept
  // answer_ttl; whole seconds, rounded up.
  const int64_t ttl = absl::ToInt64Seconds(
      absl::Ceil(options_.answer_ttl + options_.answer_lease_span, absl::Seconds(1)));
  ASSIGN_OR_RETURN(lease_id_, kv_->LeaseGrant(ttl));
  lease_granted_ = now;
  return lease_id_;
}

absl::Status KvBackedStore::CommitOps(absl::Span<const WriteBatch> batches) {
  const bool answers = options_.answer_ttl > absl::ZeroDuration() &&
                       std::any_of(batches.begin(), batches.end(),
                                   [](const WriteBatch& b) { return b.request.has_value(); });
  int64_t lease = 0;
  if (answers) {
    ASSIGN_OR_RETURN(lease, AnswerLease());
  }
  TxnRequest txn = BuildTxn(batches, lease);
  if (txn.then_ops.empty()) return absl::OkStatus();
  absl::StatusOr<TxnResponse> resp = kv_->Txn(txn);
  if (answers && absl::IsNotFound(resp.status())) {
    // The lease is gone before its time (revoked by hand, a store restored
    // from a backup): nothing was applied, so the same txn under a fresh
    // lease is the same commit.
    ASSIGN_OR_RETURN(lease, AnswerLease(/*stale=*/lease));
    resp = kv_->Txn(BuildTxn(batches, lease));
  }
  RETURN_IF_ERROR(resp.status());
  if (!resp->succeeded) return Fenced();
  MaybeCompact(resp->revision);
  return absl::OkStatus();
}

void KvBackedStore::MaybeCompact(int64_t revision) {
  const int64_t keep = options_.keep_revisions;
  if (keep <= 0) return;
  const int64_t target = revision - keep;
  int64_t done = compacted_.load();
  // Compact in steps of half the kept history, so its cost is amortized
  // over many commits; one committer does it while the others go on.
  if (target - done < std::max<int64_t>(keep / 2, 1)) return;
  if (!compacted_.compare_exchange_strong(done, target)) return;
  // OUT_OF_RANGE: someone (another client of a shared etcd) compacted past
  // it already. Any failure only leaves history longer; the next step
  // retries.
  (void)kv_->Compact(target);
}

absl::StatusOr<std::optional<RequestRecord>> KvBackedStore::FindRequest(
    absl::string_view request_id) {
  ASSIGN_OR_RETURN(std::optional<KeyValue> kv, kv_->Get(RequestKey(request_id)));
  if (!kv.has_value()) return std::optional<RequestRecord>();
  ASSIGN_OR_RETURN(RequestRecord r, DecodeRequest(request_id, kv->value));
  return std::optional<RequestRecord>(std::move(r));
}

absl::StatusOr<int64_t> KvBackedStore::ExpireRequests(int64_t before_ms) {
  const bool leased = options_.answer_ttl > absl::ZeroDuration();
  // Answers under a lease are the store's to delete; once none without one
  // is left there is nothing to read.
  if (leased && unleased_swept_.load()) return 0;
  ASSIGN_OR_RETURN(std::vector<KeyValue> kvs, RangePrefix(kRequestsPrefix));
  const size_t skip = sizeof(kRequestsPrefix) - 1;
  int64_t expired = 0;
  int64_t unleased_kept = 0;
  TxnRequest txn;
  Fence(&txn);
  auto flush = [&]() -> absl::Status {
    if (txn.then_ops.empty()) return absl::OkStatus();
    ASSIGN_OR_RETURN(TxnResponse resp, kv_->Txn(txn));
    // Guarded by mod_revision (an answer re-written meanwhile is kept) and
    // by the fence.
    if (resp.succeeded) expired += static_cast<int64_t>(txn.then_ops.size());
    txn = TxnRequest();
    Fence(&txn);
    return absl::OkStatus();
  };
  for (const KeyValue& kv : kvs) {
    if (leased && kv.lease != 0) continue;
    ASSIGN_OR_RETURN(RequestRecord r, DecodeRequest(kv.key.substr(skip), kv.value));
    if (r.time_ms >= before_ms) {
      ++unleased_kept;
      continue;
    }
    txn.compares.push_back(Compare::ModRevision(kv.key, CompareOp::kEqual, kv.mod_revision));
    txn.then_ops.push_back(DeleteRangeOp{kv.key});
    // Each expiry is a compare and a delete; the next must still fit.
    if (static_cast<int64_t>(txn.then_ops.size() + 1) * 2 > OpBudget()) {
      RETURN_IF_ERROR(flush());
    }
  }
  RETURN_IF_ERROR(flush());
  if (leased && unleased_kept == 0) unleased_swept_ = true;
  return expired;
}

absl::StatusOr<std::vector<RequestSummary>> KvBackedStore::ListRequests() {
  // A KvStore range cannot leave the responses out of the values: they are
  // read and dropped, one consistent snapshot (RangePrefix).
  ASSIGN_OR_RETURN(std::vector<KeyValue> kvs, RangePrefix(kRequestsPrefix));
  const size_t skip = sizeof(kRequestsPrefix) - 1;
  std::vector<RequestSummary> out;
  out.reserve(kvs.size());
  for (const KeyValue& kv : kvs) {
    ASSIGN_OR_RETURN(RequestRecord r, DecodeRequest(kv.key.substr(skip), kv.value));
    out.push_back(SummarizeRequest(std::move(r)));
  }
  return out;
}

}  // namespace kv
}  // namespace iommu
