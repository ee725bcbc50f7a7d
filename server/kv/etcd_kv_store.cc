#include "server/kv/etcd_kv_store.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/reconnect.h"
#include "common/status_macros.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/kv/etcd_channel.h"
#include "server/kv/etcd_internal.h"
#include "server/kv/etcd_watch.h"
#include "server/kv/kv_rules.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {
namespace {

namespace pb = ::etcdserverpb;

// Reports one call's round trip (sent to answered, failed or timed out) to
// EtcdKvOptions::observe_call when it goes out of scope.
class RoundTrip {
 public:
  RoundTrip(const EtcdKvOptions::CallObserver& observe, absl::string_view op)
      : observe_(observe), op_(op), start_(absl::Now()) {}
  ~RoundTrip() {
    if (observe_) observe_(op_, absl::Now() - start_);
  }
  RoundTrip(const RoundTrip&) = delete;
  RoundTrip& operator=(const RoundTrip&) = delete;

 private:
  const EtcdKvOptions::CallObserver& observe_;
  const absl::string_view op_;
  const absl::Time start_;
};

// etcd's messages that mean "compacted" / "future revision" come as
// OUT_OF_RANGE with these texts (mvcc.ErrCompacted, mvcc.ErrFutureRev).
bool IsCompacted(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::OUT_OF_RANGE &&
         s.error_message().find("compacted") != std::string::npos;
}

pb::Compare::CompareResult ToPbResult(CompareOp op) {
  switch (op) {
    case CompareOp::kEqual:
      return pb::Compare::EQUAL;
    case CompareOp::kNotEqual:
      return pb::Compare::NOT_EQUAL;
    case CompareOp::kLess:
      return pb::Compare::LESS;
    case CompareOp::kGreater:
      return pb::Compare::GREATER;
  }
  return pb::Compare::EQUAL;
}

class EtcdKvStore final : public KvStore {
 public:
  EtcdKvStore(EtcdKvOptions options, std::vector<std::shared_ptr<Endpoint>> endpoints,
              size_t current)
      : options_(std::move(options)), endpoints_(std::move(endpoints)), current_(current) {}
  EtcdKvStore(const EtcdKvStore&) = delete;
  EtcdKvStore& operator=(const EtcdKvStore&) = delete;

  ~EtcdKvStore() override {
    if (!options_.revoke_leases_on_close) return;
    std::set<int64_t> leases;
    {
      absl::MutexLock l(&mu_);
      leases.swap(granted_);
    }
    for (int64_t id : leases) (void)LeaseRevoke(id);  // Best effort: it expires anyway.
  }

  absl::StatusOr<TxnResponse> Txn(const TxnRequest& txn) override {
    RETURN_IF_ERROR(ValidateTxn(txn, options_.limits));
    pb::TxnRequest req;
    for (const Compare& c : txn.compares) {
      pb::Compare* pc = req.add_compare();
      pc->set_key(Full(c.key));
      pc->set_result(ToPbResult(c.op));
      switch (c.target) {
        case CompareTarget::kValue:
          pc->set_target(pb::Compare::VALUE);
          pc->set_value(c.value);
          break;
        case CompareTarget::kVersion:
          pc->set_target(pb::Compare::VERSION);
          pc->set_version(c.number);
          break;
        case CompareTarget::kCreate:
          pc->set_target(pb::Compare::CREATE);
          pc->set_create_revision(c.number);
          break;
        case CompareTarget::kMod:
          pc->set_target(pb::Compare::MOD);
          pc->set_mod_revision(c.number);
          break;
        case CompareTarget::kLease:
          pc->set_target(pb::Compare::LEASE);
          pc->set_lease(c.number);
          break;
      }
    }
    for (const Op& op : txn.then_ops) ToPb(op, req.add_success());
    for (const Op& op : txn.else_ops) ToPb(op, req.add_failure());

    pb::TxnResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "txn");
    const grpc::Status s = ep->kv->Txn(&ctx, req, &resp);
    if (!s.ok()) {
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) return LeaseNotFound(txn, s);
      return Failed(ep, s, "txn");
    }
    TxnResponse out;
    out.succeeded = resp.succeeded();
    out.revision = resp.header().revision();
    for (const pb::ResponseOp& r : resp.responses()) {
      if (r.has_response_put()) {
        PutResponse p;
        if (r.response_put().has_prev_kv()) p.prev_kv = Strip(r.response_put().prev_kv());
        out.responses.emplace_back(std::move(p));
      } else if (r.has_response_delete_range()) {
        DeleteRangeResponse d;
        d.deleted = r.response_delete_range().deleted();
        for (const mvccpb::KeyValue& kv : r.response_delete_range().prev_kvs()) {
          d.prev_kvs.push_back(Strip(kv));
        }
        out.responses.emplace_back(std::move(d));
      } else {
        RangeResponse rr = FromPb(r.response_range());
        rr.revision = out.revision;
        out.responses.emplace_back(std::move(rr));
      }
    }
    return out;
  }

  absl::StatusOr<RangeResponse> Range(const RangeRequest& request) override {
    RETURN_IF_ERROR(ValidateRangeRequest(request, options_.limits));
    pb::RangeRequest req;
    req.set_key(Full(request.key));
    req.set_range_end(FullEnd(request.range_end));
    req.set_revision(request.revision);
    req.set_limit(request.limit);
    pb::RangeResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "range");
    const grpc::Status s = ep->kv->Range(&ctx, req, &resp);
    if (!s.ok()) return Failed(ep, s, absl::StrCat("range at revision ", request.revision));
    RangeResponse out = FromPb(resp);
    out.revision = request.revision > 0 ? request.revision : resp.header().revision();
    return out;
  }

  absl::StatusOr<std::unique_ptr<WatchHandle>> Watch(const WatchRequest& request,
                                                     WatchCallback callback) override {
    RETURN_IF_ERROR(ValidateWatchRequest(request, options_.limits));
    // etcd reports a compacted start revision only asynchronously, after
    // confirming the watch; a read at that revision says it synchronously.
    if (request.start_revision > 0) {
      const absl::Status s = Probe(request.start_revision);
      if (absl::IsOutOfRange(s) && s.message().find("compacted") != absl::string_view::npos) {
        return absl::OutOfRangeError(
            absl::StrCat("watch.start_revision ", request.start_revision,
                         " is compacted; relist and watch from a newer revision (", s.message(),
                         ")"));
      }
      if (!s.ok() && !absl::IsOutOfRange(s)) return s;  // OUT_OF_RANGE: a future revision.
    }
    pb::WatchCreateRequest create;
    create.set_key(Full(request.key));
    create.set_range_end(FullEnd(request.range_end));
    create.set_start_revision(request.start_revision);
    create.set_prev_kv(true);
    auto watch = std::make_unique<EtcdWatch>(Current(), std::move(create), options_.prefix,
                                             options_.watch_max_pending_events,
                                             std::move(callback));
    RETURN_IF_ERROR(watch->Start(options_.call_timeout));
    return std::unique_ptr<WatchHandle>(std::move(watch));
  }

  absl::Status Compact(int64_t revision) override {
    if (revision <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("compact.revision: ", revision, " is not positive"));
    }
    pb::CompactionRequest req;
    req.set_revision(revision);
    pb::CompactionResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "compact");
    const grpc::Status s = ep->kv->Compact(&ctx, req, &resp);
    if (!s.ok()) return Failed(ep, s, absl::StrCat("compact at revision ", revision));
    absl::MutexLock l(&mu_);
    known_compacted_ = std::max(known_compacted_, revision);
    return absl::OkStatus();
  }

  // etcd has no call that returns the compaction point, so this finds the
  // lowest readable revision by bisection (reads are monotone: readable at r
  // means readable above r), starting from the highest point known here.
  int64_t CompactedRevision() override {
    int64_t lo = 1;
    {
      absl::MutexLock l(&mu_);
      lo = std::max<int64_t>(1, known_compacted_);
    }
    absl::StatusOr<int64_t> latest = CurrentRevision();
    if (!latest.ok()) return lo;
    int64_t hi = *latest;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      const absl::Status s = Probe(mid);
      if (s.ok()) {
        hi = mid;
      } else if (absl::IsOutOfRange(s)) {
        lo = mid + 1;
      } else {
        break;  // etcd failed: the best lower bound known.
      }
    }
    absl::MutexLock l(&mu_);
    known_compacted_ = std::max(known_compacted_, lo);
    return lo;
  }

  absl::StatusOr<int64_t> LeaseGrant(int64_t ttl_seconds) override {
    if (ttl_seconds <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("lease.ttl_seconds: ", ttl_seconds, " is not positive"));
    }
    pb::LeaseGrantRequest req;
    req.set_ttl(ttl_seconds);
    pb::LeaseGrantResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "lease_grant");
    const grpc::Status s = ep->lease->LeaseGrant(&ctx, req, &resp);
    if (!s.ok()) return Failed(ep, s, "lease grant");
    if (!resp.error().empty()) {
      return absl::InternalError(
          absl::StrCat("etcd at ", ep->address, " refused a lease grant: ", resp.error()));
    }
    absl::MutexLock l(&mu_);
    granted_.insert(resp.id());
    return resp.id();
  }

  absl::StatusOr<int64_t> LeaseKeepAlive(int64_t id) override {
    RETURN_IF_ERROR(CheckLeaseId(id));
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "lease_keep_alive");
    auto stream = ep->lease->LeaseKeepAlive(&ctx);
    pb::LeaseKeepAliveRequest req;
    req.set_id(id);
    pb::LeaseKeepAliveResponse resp;
    const bool ok = stream->Write(req) && stream->WritesDone() && stream->Read(&resp);
    if (!ok) {
      const grpc::Status s = stream->Finish();
      return Failed(ep, s.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream ended") : s,
                    absl::StrCat("keepalive of lease ", id));
    }
    ctx.TryCancel();  // Nothing more to read; do not wait for etcd to close.
    (void)stream->Finish();
    if (resp.ttl() <= 0) {
      return absl::NotFoundError(absl::StrCat("lease ", id, " not found (expired or revoked)"));
    }
    return resp.ttl();
  }

  absl::StatusOr<int64_t> LeaseRevoke(int64_t id) override {
    RETURN_IF_ERROR(CheckLeaseId(id));
    pb::LeaseRevokeRequest req;
    req.set_id(id);
    pb::LeaseRevokeResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "lease_revoke");
    const grpc::Status s = ep->lease->LeaseRevoke(&ctx, req, &resp);
    {
      absl::MutexLock l(&mu_);
      if (s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND) granted_.erase(id);
    }
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      return absl::NotFoundError(absl::StrCat("lease ", id, " not found (expired or revoked)"));
    }
    if (!s.ok()) return Failed(ep, s, absl::StrCat("revoke of lease ", id));
    return resp.header().revision();
  }

  absl::StatusOr<LeaseStatus> LeaseTimeToLive(int64_t id) override {
    RETURN_IF_ERROR(CheckLeaseId(id));
    pb::LeaseTimeToLiveRequest req;
    req.set_id(id);
    req.set_keys(true);
    pb::LeaseTimeToLiveResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "lease_time_to_live");
    const grpc::Status s = ep->lease->LeaseTimeToLive(&ctx, req, &resp);
    if (!s.ok()) return Failed(ep, s, absl::StrCat("time-to-live of lease ", id));
    if (resp.ttl() < 0) {
      return absl::NotFoundError(absl::StrCat("lease ", id, " not found (expired or revoked)"));
    }
    LeaseStatus out;
    out.id = resp.id();
    out.granted_ttl_seconds = resp.grantedttl();
    out.remaining = absl::Seconds(std::max<int64_t>(0, resp.ttl()));
    for (const std::string& k : resp.keys()) {
      // Another prefix's keys on a shared lease are not ours to show.
      if (absl::StartsWith(k, options_.prefix)) out.keys.push_back(k.substr(options_.prefix.size()));
    }
    std::sort(out.keys.begin(), out.keys.end());
    return out;
  }

 private:
  std::string Full(const std::string& key) const { return options_.prefix + key; }
  // A range_end in etcd's keyspace: empty stays empty (one key), "\0" (every
  // key >= key) becomes the end of the prefix.
  std::string FullEnd(const std::string& range_end) const {
    if (range_end.empty()) return "";
    if (IsOpenEnded(range_end)) return PrefixRangeEnd(options_.prefix);
    return options_.prefix + range_end;
  }
  KeyValue Strip(const mvccpb::KeyValue& in) const { return StripPrefix(in, options_.prefix); }
  RangeResponse FromPb(const pb::RangeResponse& resp) const {
    RangeResponse out;
    for (const mvccpb::KeyValue& kv : resp.kvs()) out.kvs.push_back(Strip(kv));
    out.more = resp.more();
    out.count = resp.count();
    return out;
  }
  void ToPb(const Op& op, pb::RequestOp* out) const {
    if (const auto* put = std::get_if<PutOp>(&op)) {
      pb::PutRequest* p = out->mutable_request_put();
      p->set_key(Full(put->key));
      p->set_value(put->value);
      p->set_lease(put->lease);
      p->set_prev_kv(put->prev_kv);
    } else if (const auto* del = std::get_if<DeleteRangeOp>(&op)) {
      pb::DeleteRangeRequest* d = out->mutable_request_delete_range();
      d->set_key(Full(del->key));
      d->set_range_end(FullEnd(del->range_end));
      d->set_prev_kv(del->prev_kv);
    } else {
      const auto& range = std::get<RangeOp>(op);
      pb::RangeRequest* r = out->mutable_request_range();
      r->set_key(Full(range.key));
      r->set_range_end(FullEnd(range.range_end));
      r->set_limit(range.limit);
    }
  }

  void SetDeadline(grpc::ClientContext* ctx) const {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
  }

  std::shared_ptr<Endpoint> Current() {
    absl::MutexLock l(&mu_);
    return endpoints_[current_];
  }

  // Maps the failure and, when the endpoint is unreachable, moves later calls
  // to the next endpoint.
  absl::Status Failed(const std::shared_ptr<Endpoint>& ep, const grpc::Status& s,
                      absl::string_view what) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      absl::MutexLock l(&mu_);
      if (endpoints_[current_] == ep) current_ = (current_ + 1) % endpoints_.size();
    }
    return FromGrpc(s, what, ep->address, options_.call_timeout);
  }

  // etcd's "requested lease not found" does not say which: name the leases
  // the txn's branches put with.
  absl::Status LeaseNotFound(const TxnRequest& txn, const grpc::Status& s) const {
    std::set<int64_t> ids;
    for (const auto* ops : {&txn.then_ops, &txn.else_ops}) {
      for (const Op& op : *ops) {
        if (const auto* put = std::get_if<PutOp>(&op); put != nullptr && put->lease != 0) {
          ids.insert(put->lease);
        }
      }
    }
    return absl::NotFoundError(absl::StrCat(ids.size() == 1 ? "lease " : "one of leases ",
                                            absl::StrJoin(ids, ", "), " not found (etcd: ",
                                            s.error_message(), ")"));
  }

  static absl::Status CheckLeaseId(int64_t id) {
    if (id <= 0) return absl::InvalidArgumentError(absl::StrCat("lease id: ", id, " is not positive"));
    return absl::OkStatus();
  }

  // The store's revision, from a one-key read (no counting of a range).
  absl::StatusOr<int64_t> CurrentRevision() {
    pb::RangeRequest req;
    req.set_key(options_.prefix.empty() ? std::string(1, '\0') : options_.prefix);
    pb::RangeResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "range");
    const grpc::Status s = ep->kv->Range(&ctx, req, &resp);
    if (!s.ok()) return Failed(ep, s, "range for the current revision");
    return resp.header().revision();
  }

  // A one-key read at `revision`: OK, or OUT_OF_RANGE compacted / future.
  absl::Status Probe(int64_t revision) {
    pb::RangeRequest req;
    req.set_key(options_.prefix.empty() ? std::string(1, '\0') : options_.prefix);
    req.set_revision(revision);
    req.set_count_only(true);
    pb::RangeResponse resp;
    const std::shared_ptr<Endpoint> ep = Current();
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    const RoundTrip round_trip(options_.observe_call, "range");
    const grpc::Status s = ep->kv->Range(&ctx, req, &resp);
    if (IsCompacted(s)) return absl::OutOfRangeError(s.error_message());
    return Failed(ep, s, absl::StrCat("range at revision ", revision));
  }

  // Constant after construction.
  const EtcdKvOptions options_;
  const std::vector<std::shared_ptr<Endpoint>> endpoints_;

  absl::Mutex mu_;
  size_t current_ ABSL_GUARDED_BY(mu_);
  int64_t known_compacted_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<int64_t> granted_ ABSL_GUARDED_BY(mu_);  // For revoke_leases_on_close.
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvStore>> OpenEtcdKvStore(const EtcdKvOptions& options) {
  std::vector<std::string> addresses;
  for (absl::string_view a : absl::StrSplit(options.endpoints, ',', absl::SkipWhitespace())) {
    addresses.emplace_back(absl::StripAsciiWhitespace(a));
  }
  if (addresses.empty()) {
    return absl::InvalidArgumentError("etcd endpoints: empty; want host:port[,host:port...]");
  }
  ASSIGN_OR_RETURN(ChannelSecurity security, MakeChannelSecurity(options));
  grpc::ChannelArguments args;
  // A watch's history replay may carry many revisions in one response.
  args.SetMaxReceiveMessageSize(-1);
  // Notice a silently dead etcd (a partition, a paused host) on an idle
  // watch stream. 10 s stays above etcd's --grpc-keepalive-min-time (5 s),
  // below which etcd answers pings with GOAWAY.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  // Fail calls promptly on a dead endpoint instead of retrying to connect
  // for the whole deadline, and give up on a paused one within seconds.
  SetReconnectBackoff(absl::Milliseconds(100), absl::Seconds(1), &args);

  std::vector<std::shared_ptr<Endpoint>> endpoints;
  for (const std::string& a : addresses) {
    auto ep = std::make_shared<Endpoint>();
    ep->tls = security.mirror;
    ep->address = a;
    ep->channel = grpc::CreateCustomChannel(a, security.creds, args);
    ep->kv = pb::KV::NewStub(ep->channel);
    ep->watch = pb::Watch::NewStub(ep->channel);
    ep->lease = pb::Lease::NewStub(ep->channel);
    endpoints.push_back(std::move(ep));
  }
  // The first endpoint that connects within dial_timeout serves the calls.
  const absl::Time deadline = absl::Now() + options.dial_timeout;
  for (auto& ep : endpoints) ep->channel->GetState(/*try_to_connect=*/true);
  while (true) {
    for (size_t i = 0; i < endpoints.size(); ++i) {
      if (endpoints[i]->channel->GetState(true) == GRPC_CHANNEL_READY) {
        return std::unique_ptr<KvStore>(new EtcdKvStore(options, std::move(endpoints), i));
      }
    }
    if (absl::Now() >= deadline) break;
    for (auto& ep : endpoints) {
      // Wakes on any state change of the first channel or after 20 ms.
      ep->channel->WaitForStateChange(ep->channel->GetState(false),
                                      absl::ToChronoTime(std::min(
                                          deadline, absl::Now() + absl::Milliseconds(20))));
    }
  }
  return absl::UnavailableError(absl::StrCat("etcd unreachable: no connection to ",
                                             absl::StrJoin(addresses, ", "), " within ",
                                             absl::FormatDuration(options.dial_timeout)));
}

}  // namespace kv
}  // namespace iommu
