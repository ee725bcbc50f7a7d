// Helpers shared by the files that implement Broker (broker.cc and
// broker_*.cc, one per resource), and the member templates every mutation
// instantiates. Not an API: nothing outside the Broker includes it.
#ifndef SERVER_BROKER_INTERNAL_H_
#define SERVER_BROKER_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/message_text.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "google/protobuf/field_mask.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message.h"
#include "server/broker.h"

namespace iommu {
namespace broker_internal {

// Record kinds in the store.
inline constexpr char kTenant[] = "tenant";
inline constexpr char kNode[] = "node";
inline constexpr char kDevices[] = "devices";
inline constexpr char kContainer[] = "container";
inline constexpr char kWindow[] = "window";
inline constexpr char kNodeKey[] = "nodekey";

bool IsLowerHex(const std::string& s, size_t length);

// SetTenantQuota's partial update (AIP-134): `current` with the fields
// `mask` names taken from `given`; an empty mask takes `given` whole.
// INVALID_ARGUMENT naming the first unknown path.
absl::StatusOr<v1::Quota> MaskedQuota(const v1::Quota& current, const v1::Quota& given,
                                      const google::protobuf::FieldMask& mask);

// The key a request's answer is remembered under: its id scoped by who sent
// it, so one caller's ids never collide with another's, nor tell it which ids
// the other used. Empty for a request without an id.
std::string RequestKey(const Identity& caller, const std::string& request_id);

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

StoreRecord Record(const char* kind, const std::string& id, const google::protobuf::Message& msg);

// ---- events (server/event_log.h): one RecordEvent next to each event= line.
inline constexpr v1::EventType kNormal = v1::EVENT_TYPE_NORMAL;
inline constexpr v1::EventType kWarning = v1::EVENT_TYPE_WARNING;

v1::ObjectRef Ref(v1::ObjectKind kind, const std::string& id);
v1::ObjectRef TenantRef(const std::string& id);
v1::ObjectRef NodeRef(const std::string& name);
v1::ObjectRef ContainerRef(const std::string& id);
v1::ObjectRef WindowRef(const std::string& id);

// A quota for event messages: "pinned 4GiB, max containers 8, window bytes no limit".
std::string QuotaText(const v1::Quota& q);

// An event about `object`, of `tenant` (empty: a fleet event, for operators
// only), caused by `request_id` (may be empty). `related` names the objects
// whose events include it; those with an empty id are left out.
v1::Event NewEvent(v1::EventType type, const char* reason, v1::ObjectRef object,
                   const std::string& tenant, const std::string& request_id, std::string message,
                   std::initializer_list<v1::ObjectRef> related = {});

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

// Page's walk over only the entries of `map` whose keys are in `ids` (an
// index of some of them, ordered as `map`): O(page) however big `map` is.
template <typename Map, typename Keep, typename Emit>
void PageSubset(const std::set<std::string>& ids, const Map& map, const std::string& token,
                uint32_t limit, Keep keep, Emit emit, std::string* next) {
  auto it = token.empty() ? ids.begin() : ids.upper_bound(token);
  uint32_t n = 0;
  for (; it != ids.end(); ++it) {
    auto entry = map.find(*it);
    if (entry == map.end() || !keep(entry->second)) continue;
    if (n == limit) return;  // *next already names the last one emitted.
    emit(entry->second);
    *next = *it;
    ++n;
  }
  next->clear();  // Reached the end: no more pages.
}

// An agent's refusal as the broker's caller sees it: UNAVAILABLE when the
// agent could not be reached or dropped the call as it stopped (`address`,
// when known, says where it was tried), else the agent's own code with the
// node named.
absl::Status AgentCallError(const std::string& node, const std::string& address,
                            const absl::Status& s);

}  // namespace broker_internal

template <typename Resp>
absl::Status Broker::CheckReplayLocked(const std::string& request_id, const std::string& key,
                                       const std::string& fingerprint, Resp* out, bool* replayed) {
  *replayed = false;
  RETURN_IF_ERROR(ValidateRequestId("request_id", request_id));
  if (request_id.empty()) return absl::OkStatus();
  if (inflight_.count(key)) {
    return absl::AbortedError(absl::StrCat("request_id: a request with id ",
                                           QuoteForMessage(request_id),
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
  const std::string fingerprint = broker_internal::Fingerprint(method, req);
  const std::string rkey = broker_internal::RequestKey(caller, req.request_id());
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
  absl::Status committed = ApplyAndCommitLocked(std::move(plan->batch));
  if (!req.request_id().empty()) inflight_.erase(rkey);
  RETURN_IF_ERROR(committed);
  for (const Plan::Line& line : plan->lines) LogEvent(line.level, line.event, line.fields);
  for (v1::Event& event : plan->events) RecordEvent(std::move(event));
  *out = std::move(answer);
  return absl::OkStatus();
}

}  // namespace iommu

#endif  // SERVER_BROKER_INTERNAL_H_
