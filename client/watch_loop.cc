#include "client/watch_loop.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grpcpp/client_context.h"

namespace iommu {
namespace client {
namespace {

// Codes after which the same request may succeed later: the broker is away
// (restarting, a failover), or the stream was cut.
bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kOk ||
         code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kAborted ||
         code == absl::StatusCode::kCancelled || code == absl::StatusCode::kResourceExhausted;
}

// Waits, up to a few seconds, until the channel under `stub` is connected:
// a wait_for_ready GetVersion, which drives the connection and its
// handshake while it waits.
absl::Status AwaitConnection(v1::Broker::StubInterface* stub) {
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetVersionResponse version;
  return FromGrpcStatus(stub->GetVersion(&ctx, v1::GetVersionRequest(), &version));
}

}  // namespace

std::string ObjectId(const v1::WatchEvent& e) {
  switch (e.object_case()) {
    case v1::WatchEvent::kTenant:
      return e.tenant().id();
    case v1::WatchEvent::kNode:
      return e.node().name();
    case v1::WatchEvent::kContainer:
      return e.container().id();
    case v1::WatchEvent::kWindow:
      return e.window().id();
    default:
      return "";
  }
}

std::optional<v1::WatchEvent> ShownObjects::Next(const v1::WatchEvent& e) {
  const std::string id = ObjectId(e);
  if (e.type() == v1::WatchEvent::DELETE) {
    if (shown_.erase(id) == 0) return std::nullopt;  // Never shown: nothing to take back.
    return e;
  }
  if (e.type() != v1::WatchEvent::PUT) return std::nullopt;
  if (matches_(e)) {
    shown_.insert(id);
    return e;
  }
  if (shown_.erase(id) == 0) return std::nullopt;
  // Shown and no longer matching: the watcher must drop it, as when it left
  // the broker's own label selector.
  v1::WatchEvent leave = e;
  leave.set_type(v1::WatchEvent::DELETE);
  leave.set_left_selection(true);
  return leave;
}

absl::Status RunWatch(v1::Broker::StubInterface* stub, v1::WatchRequest request,
                      const WatchLoop& loop) {
  absl::StatusOr<std::string> version = loop.relist();
  if (!version.ok()) return version.status();
  request.set_resource_version(*version);
  absl::Duration backoff = absl::Milliseconds(250);
  while (true) {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderInterface<v1::WatchResponse>> reader =
        stub->Watch(&ctx, request);
    v1::WatchResponse response;
    while (reader->Read(&response)) {
      backoff = absl::Milliseconds(250);
      for (const v1::WatchEvent& e : response.events()) {
        request.set_resource_version(e.resource_version());
        if (e.type() == v1::WatchEvent::BOOKMARK) continue;
        if (absl::Status s = loop.on_event(e); !s.ok()) {
          ctx.TryCancel();
          reader->Finish();
          return s;
        }
      }
    }
    const absl::Status ended = FromGrpcStatus(reader->Finish());
    if (absl::IsOutOfRange(ended)) {
      loop.note(absl::StrCat("watch: ", ended.message(), "; listing again"));
      version = loop.relist();
      if (!version.ok()) return version.status();
      request.set_resource_version(*version);
      continue;
    }
    if (!Retryable(ended.code())) return ended;
    loop.note(absl::StrCat("watch: the stream ended (",
                           ended.ok() ? "closed by the broker" : std::string(ended.message()),
                           "); reconnecting"));
    if (!loop.wait(backoff)) return absl::OkStatus();
    backoff = std::min(backoff * 2, absl::Seconds(5));
    // The stream is a fail-fast call: on a channel that lost its broker it
    // fails at once without connecting, and a TLS handshake makes progress
    // only while some call waits on the channel. A bounded call that waits
    // for the connection makes it; its failure is just another retry.
    if (absl::Status ready = AwaitConnection(stub); !ready.ok()) {
      loop.note(
          absl::StrCat("watch: the broker is not reachable yet (", ready.message(), "); retrying"));
    }
  }
}

}  // namespace client
}  // namespace iommu
