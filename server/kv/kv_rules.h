// The pure rules of the key-value model (kv_store.h): which requests are
// well formed, which keys a range covers, how a compare is evaluated. No
// state, no I/O: every implementation (SQLite, in-memory, the etcd client's
// pre-checks) applies the same rules.
//
// Thread-safe (no state).
#ifndef SERVER_KV_KV_RULES_H_
#define SERVER_KV_KV_RULES_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

// True when `range_end` is the "every key >= key" marker ("\0").
bool IsOpenEnded(absl::string_view range_end);

// Whether `k` lies in the range (key, range_end) as kv_store.h defines it.
bool InRange(absl::string_view k, absl::string_view key, absl::string_view range_end);

// OK when `key` and `range_end` form a valid range. INVALID_ARGUMENT naming
// `field` (e.g. "then_ops[2].range_end") when the key is empty, longer than
// the limit, or range_end is below key.
absl::Status ValidateRange(absl::string_view field, absl::string_view key,
                           absl::string_view range_end, const KvLimits& limits);

// Checks, in this order: op count, each compare's key, each op's key, range
// and value size, and that no branch writes one key twice (a put and a
// delete range covering it count as two writes). INVALID_ARGUMENT naming
// the field and the rule on the first violation.
absl::Status ValidateTxn(const TxnRequest& txn, const KvLimits& limits);

absl::Status ValidateRangeRequest(const RangeRequest& request, const KvLimits& limits);
absl::Status ValidateWatchRequest(const WatchRequest& request, const KvLimits& limits);

// OUT_OF_RANGE "compacted" for a read or watch at `revision` below the
// compaction point `compacted`: the client must relist.
absl::Status CompactedError(int64_t revision, int64_t compacted);

// The compare's outcome given the key's current state (nullptr: missing),
// with etcd's semantics (kv_store.h, Compare).
bool EvaluateCompare(const Compare& compare, const KeyValue* current);

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_KV_RULES_H_
