#include "server/kv/kv_rules.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace iommu {
namespace kv {
namespace {

template <typename T>
int Three(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

// A write one branch makes: a put's key, or a delete's range.
struct Write {
  bool is_put;
  std::string key;
  std::string range_end;
};

absl::Status ValidateBranch(absl::string_view branch, const std::vector<Op>& ops,
                            const KvLimits& limits) {
  std::vector<Write> writes;
  for (size_t i = 0; i < ops.size(); ++i) {
    const std::string field = absl::StrCat(branch, "[", i, "]");
    if (const auto* put = std::get_if<PutOp>(&ops[i])) {
      RETURN_IF_ERROR(ValidateRange(absl::StrCat(field, ".key"), put->key, "", limits));
      if (static_cast<int64_t>(put->value.size()) > limits.max_value_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".value: ", put->value.size(),
                                                       " bytes is over the limit of ",
                                                       limits.max_value_bytes));
      }
      if (put->lease < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".lease: ", put->lease, " is negative"));
      }
      writes.push_back({true, put->key, ""});
    } else if (const auto* del = std::get_if<DeleteRangeOp>(&ops[i])) {
      RETURN_IF_ERROR(ValidateRange(field, del->key, del->range_end, limits));
      writes.push_back({false, del->key, del->range_end});
    } else {
      const auto& range = std::get<RangeOp>(ops[i]);
      RETURN_IF_ERROR(ValidateRange(field, range.key, range.range_end, limits));
      if (range.limit < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".limit: ", range.limit, " is negative"));
      }
    }
  }
  // etcd refuses a txn that writes a key twice ("duplicate key given in txn
  // request"), so every implementation must: a txn the SQLite store took
  // would fail on etcd. Puts against each other and against deletes; two
  // deletes may overlap (the second simply finds nothing), as in etcd.
  for (size_t i = 0; i < writes.size(); ++i) {
    if (!writes[i].is_put) continue;
    for (size_t j = 0; j < writes.size(); ++j) {
      if (i == j || (writes[j].is_put && j < i)) continue;  // Put pairs are checked once.
      if (InRange(writes[i].key, writes[j].key, writes[j].range_end)) {
        return absl::InvalidArgumentError(
            absl::StrCat(branch, ": key \"", absl::CHexEscape(writes[i].key),
                         "\" is written twice in one txn; each key may "
                         "be written at most once per txn"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsOpenEnded(absl::string_view range_end) {
  return range_end.size() == 1 && range_end[0] == '\0';
}

bool InRange(absl::string_view k, absl::string_view key, absl::string_view range_end) {
  if (range_end.empty()) return k == key;
  if (IsOpenEnded(range_end)) return k >= key;
  return k >= key && k < range_end;
}

absl::Status ValidateRange(absl::string_view field, absl::string_view key,
                           absl::string_view range_end, const KvLimits& limits) {
  if (key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": key is empty; keys are non-empty"));
  }
  if (static_cast<int64_t>(key.size()) > limits.max_key_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": key of ", key.size(), " bytes is over the limit of ", limits.max_key_bytes));
  }
  if (!range_end.empty() && !IsOpenEnded(range_end) && range_end < key) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ": range_end is below key; a range is [key, range_end), range_end empty for "
                     "one key or \"\\0\" for every key >= key"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTxn(const TxnRequest& txn, const KvLimits& limits) {
  const int64_t ops = txn.compares.size() + std::max(txn.then_ops.size(), txn.else_ops.size());
  if (ops > limits.max_txn_ops) {
    return absl::InvalidArgumentError(
        absl::StrCat("txn: ", ops, " compares and ops is over the limit of ", limits.max_txn_ops));
  }
  for (size_t i = 0; i < txn.compares.size(); ++i) {
    RETURN_IF_ERROR(
        ValidateRange(absl::StrCat("compares[", i, "].key"), txn.compares[i].key, "", limits));
  }
  RETURN_IF_ERROR(ValidateBranch("then_ops", txn.then_ops, limits));
  return ValidateBranch("else_ops", txn.else_ops, limits);
}

absl::Status ValidateRangeRequest(const RangeRequest& request, const KvLimits& limits) {
  RETURN_IF_ERROR(ValidateRange("range", request.key, request.range_end, limits));
  if (request.revision < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("range.revision: ", request.revision, " is negative (0 means latest)"));
  }
  if (request.limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("range.limit: ", request.limit, " is negative (0 means no limit)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateWatchRequest(const WatchRequest& request, const KvLimits& limits) {
  RETURN_IF_ERROR(ValidateRange("watch", request.key, request.range_end, limits));
  if (request.start_revision < 0) {
    return absl::InvalidArgumentError(absl::StrCat("watch.start_revision: ", request.start_revision,
                                                   " is negative (0 means from now)"));
  }
  return absl::OkStatus();
}

absl::Status CompactedError(int64_t revision, int64_t compacted) {
  return absl::OutOfRangeError(absl::StrCat("revision ", revision,
                                            " has been compacted (compaction point ", compacted,
                                            "); relist and watch from the current revision"));
}

bool EvaluateCompare(const Compare& compare, const KeyValue* current) {
  if (current == nullptr && compare.target == CompareTarget::kValue) return false;
  const KeyValue missing;
  const KeyValue& kv = current != nullptr ? *current : missing;
  int c = 0;
  switch (compare.target) {
    case CompareTarget::kValue:
      c = kv.value.compare(compare.value);
      c = c < 0 ? -1 : (c > 0 ? 1 : 0);
      break;
    case CompareTarget::kVersion:
      c = Three(kv.version, compare.number);
      break;
    case CompareTarget::kCreate:
      c = Three(kv.create_revision, compare.number);
      break;
    case CompareTarget::kMod:
      c = Three(kv.mod_revision, compare.number);
      break;
    case CompareTarget::kLease:
      c = Three(kv.lease, compare.number);
      break;
  }
  switch (compare.op) {
    case CompareOp::kEqual:
      return c == 0;
    case CompareOp::kNotEqual:
      return c != 0;
    case CompareOp::kLess:
      return c < 0;
    case CompareOp::kGreater:
      return c > 0;
  }
  return false;
}

}  // namespace kv
}  // namespace iommu
