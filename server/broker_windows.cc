// The Broker's IOVA windows: allocate, release, list, and their pushes to
// agents; which tenant owns a container or window.
#include "server/broker.h"

#include "absl/strings/str_cat.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/broker_internal.h"

namespace iommu {

using broker_internal::ContainerRef;
using broker_internal::kNormal;
using broker_internal::kWarning;
using broker_internal::kWindow;
using broker_internal::NewEvent;
using broker_internal::NodeRef;
using broker_internal::Page;
using broker_internal::Record;
using broker_internal::TenantRef;
using broker_internal::WindowRef;

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
          return RecordRefusal(NewEvent(kWarning, "QuotaExceeded", ContainerRef(id), tenant,
                                        req.request_id(), "", {TenantRef(tenant)}),
                               absl::ResourceExhaustedError(absl::StrCat(
                                   "size: tenant ", QuoteForMessage(tenant), " has ", Hex(used),
                                   " of its ", Hex(limit), " window bytes reserved; ",
                                   Hex(req.size()), " more would pass quota.window_bytes")));
        }
        // Where the window goes, found on the allocator itself and given
        // back at once, so that planning changes nothing: its free ranges
        // are kept merged, so the release restores exactly the state before
        // (no copy of it is needed). The apply reserves the range from the
        // window's record.
        uint64_t base = req.base();
        if (req.fixed_base()) {
          RETURN_IF_ERROR(c->allocator.AllocateAt(base, req.size()));
        } else {
          ASSIGN_OR_RETURN(base, c->allocator.Allocate(req.size(), alignment));
        }
        RETURN_IF_ERROR(c->allocator.Release(base));
        answer->set_id(NewIdLocked("w-"));
        answer->set_container_id(id);
        answer->set_tenant_id(tenant);
        answer->set_base(base);
        answer->set_size(req.size());
        answer->set_alignment(alignment);
        answer->set_create_time_ms(Now());
        Plan plan;
        plan.batch.puts.push_back(Record(kWindow, answer->id(), *answer));
        plan.Log(LogLevel::kInfo, "window_allocated",
                 {{"window", answer->id()},
                  {"container", id},
                  {"tenant", tenant},
                  {"base", Hex(base)},
                  {"size", Hex(req.size())},
                  {"request_id", req.request_id()}});
        plan.Record(
            NewEvent(kNormal, "WindowAllocated", WindowRef(answer->id()), tenant, req.request_id(),
                     absl::StrCat(answer->id(), " at ", Hex(base), "-", Hex(base + req.size() - 1),
                                  " (", EventBytes(req.size()), ")"),
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
          return absl::NotFoundError(
              absl::StrCat("window_id: no window ", QuoteForMessage(req.window_id())));
        }
        *container_id = w->second.container_id();
        Plan plan;
        plan.batch.deletes.push_back({kWindow, req.window_id()});
        plan.Log(LogLevel::kInfo, "window_released",
                 {{"window", req.window_id()},
                  {"container", w->second.container_id()},
                  {"tenant", w->second.tenant_id()},
                  {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "WindowReleased", WindowRef(req.window_id()),
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

}  // namespace iommu
