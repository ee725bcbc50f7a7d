// The broker's logic, free of gRPC: tenants and quotas, nodes and their
// devices, containers and their placement, IOVA windows, usage, and the
// registry that node agents join. Every method takes a request proto and
// fills a response proto, returning an absl::Status whose message names the
// offending field and the rule it broke. broker_service.h adapts it to gRPC.
//
// Durability: a mutation is committed to the Store before it is
// acknowledged; a failed commit changes nothing. Mutations carrying a
// request_id remember their answer in the same commit, so a retry returns it
// and changes nothing twice.
//
// Group commit: concurrent mutations share one store commit (one fsync). A
// mutation plans its change as the store records it will commit (a
// WriteBatch) under the lock, applies those records to memory
// (ApplyChangeLocked), appends them to the open group and waits, without the
// lock, until a group
// containing it is durable; the first waiter finding no commit in progress
// commits the whole group (see CommitLocked). Later mutations plan against
// the applied-but-not-yet-durable state; groups commit in order, so a
// mutation is acknowledged only once everything it saw is durable too. When
// a group commit fails, every mutation in it and every one applied after it
// fails, and memory is rolled back by reloading the persisted state from the
// store (live sessions, heartbeats and reservations are kept). Reads wait
// for whatever they saw to be durable before answering, so no client is ever
// shown an object that a failed commit or a crash could still take back.
//
// Thread-safety: all methods are safe to call concurrently. State sits under
// one mutex; calls to agents (which may block for a deadline) are made
// without it, with the devices involved reserved in the meantime.
#ifndef SERVER_BROKER_H_
#define SERVER_BROKER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "proto/agent.pb.h"
#include "proto/broker.pb.h"
#include "server/agent_client.h"
#include "server/authz.h"
#include "server/broker_options.h"
#include "server/broker_state.h"
#include "server/broker_stats.h"
#include "server/event_log.h"
#include "server/model/placement_index.h"
#include "server/push_queue.h"
#include "server/request_index.h"
#include "server/store.h"
#include "server/turnstile.h"
#include "server/watch_log.h"
#include "server/window_allocator.h"

namespace iommu {

// The most windows one container holds. A launcher grant names every window
// of its container and must fit a token (kMaxGrantTokenBytes), which this
// many windows with the longest node and tenant names do with room to spare
// (broker_containers_test checks the worst case). A guest needs a few
// windows: its RAM below and above 4 GiB, and hot-plugged memory.
inline constexpr size_t kMaxWindowsPerContainer = 48;

class Broker final : public OwnershipView {
 public:
  // Loads the state from `store` (containers come back with their windows).
  // `store` and `agents` must outlive the broker. Errors: INVALID_ARGUMENT
  // for options ValidateBrokerOptions refuses, the store's, or DATA_LOSS
  // when a record cannot be parsed.
  static absl::StatusOr<std::unique_ptr<Broker>> Create(Store* store, AgentClient* agents,
                                                        BrokerOptions options);

  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // ---- Broker API (see proto/broker.proto for each RPC's contract) ----
  // `caller` is who asked, as the service identified it: request ids are
  // remembered per caller. The default (anonymous) is for in-process callers
  // such as tests and benchmarks.
  absl::Status CreateTenant(const v1::CreateTenantRequest& req, v1::Tenant* out,
                            const Identity& caller = Identity{});
  absl::Status GetTenant(const v1::GetTenantRequest& req, v1::Tenant* out,
                         const Identity& caller = Identity{});
  absl::Status ListTenants(const v1::ListTenantsRequest& req, v1::ListTenantsResponse* out,
                           const Identity& caller = Identity{});
  absl::Status SetTenantQuota(const v1::SetTenantQuotaRequest& req, v1::Tenant* out,
                              const Identity& caller = Identity{});
  absl::Status DeleteTenant(const v1::DeleteTenantRequest& req, v1::DeleteTenantResponse* out,
                            const Identity& caller = Identity{});
  absl::Status SetTenantLabels(const v1::SetTenantLabelsRequest& req, v1::Tenant* out,
                               const Identity& caller = Identity{});

  absl::Status ListNodes(const v1::ListNodesRequest& req, v1::ListNodesResponse* out,
                         const Identity& caller = Identity{});
  absl::Status GetNode(const v1::GetNodeRequest& req, v1::Node* out,
                       const Identity& caller = Identity{});
  absl::Status CordonNode(const v1::CordonNodeRequest& req, v1::Node* out,
                          const Identity& caller = Identity{});
  absl::Status UncordonNode(const v1::UncordonNodeRequest& req, v1::Node* out,
                            const Identity& caller = Identity{});
  absl::Status DrainNode(const v1::DrainNodeRequest& req, v1::DrainNodeResponse* out,
                         const Identity& caller = Identity{});
  // See DeleteNodeRequest in proto/broker.proto.
  absl::Status DeleteNode(const v1::DeleteNodeRequest& req, v1::DeleteNodeResponse* out,
                          const Identity& caller = Identity{});
  absl::Status ListDevices(const v1::ListDevicesRequest& req, v1::ListDevicesResponse* out,
                           const Identity& caller = Identity{});

  absl::Status CreateContainer(const v1::CreateContainerRequest& req, v1::Container* out,
                               const Identity& caller = Identity{});
  absl::Status GetContainer(const v1::GetContainerRequest& req, v1::Container* out,
                            const Identity& caller = Identity{});
  absl::Status ListContainers(const v1::ListContainersRequest& req, v1::ListContainersResponse* out,
                              const Identity& caller = Identity{});
  absl::Status DeleteContainer(const v1::DeleteContainerRequest& req,
                               v1::DeleteContainerResponse* out,
                               const Identity& caller = Identity{});
  absl::Status SetContainerBudget(const v1::SetContainerBudgetRequest& req, v1::Container* out,
                                  const Identity& caller = Identity{});
  absl::Status SetContainerLabels(const v1::SetContainerLabelsRequest& req, v1::Container* out,
                                  const Identity& caller = Identity{});
  absl::Status GrantLauncher(const v1::GrantLauncherRequest& req, v1::GrantLauncherResponse* out,
                             const Identity& caller = Identity{});

  absl::Status AllocateWindow(const v1::AllocateWindowRequest& req, v1::Window* out,
                              const Identity& caller = Identity{});
  absl::Status ReleaseWindow(const v1::ReleaseWindowRequest& req, v1::ReleaseWindowResponse* out,
                             const Identity& caller = Identity{});
  absl::Status AllocateWindowInternal(const v1::AllocateWindowRequest& req, v1::Window* out,
                                      const Identity& caller);
  absl::Status ReleaseWindowInternal(const v1::ReleaseWindowRequest& req,
                                     v1::ReleaseWindowResponse* out, std::string* container_id,
                                     const Identity& caller);
  absl::Status ListWindows(const v1::ListWindowsRequest& req, v1::ListWindowsResponse* out,
                           const Identity& caller = Identity{});

  absl::Status GetUsage(const v1::GetUsageRequest& req, v1::GetUsageResponse* out,
                        const Identity& caller = Identity{});

  absl::Status ListEvents(const v1::ListEventsRequest& req, v1::ListEventsResponse* out,
                          const Identity& caller = Identity{});
  // This build's kVersion and BuildCommit() (common/version.h). Always OK.
  absl::Status GetVersion(const v1::GetVersionRequest& req, v1::GetVersionResponse* out,
                          const Identity& caller = Identity{});

  // ---- Watch (proto WatchRequest; the stream itself is server/watch_stream.h) ----
  // What a validated WatchRequest asks for: where to start, the one tenant it
  // is limited to (empty: all) and which changes it wants.
  struct WatchPlan {
    std::string version;
    std::string scope;
    WatchLog::Filter filter;
  };
  // Validates `req` (kinds, tenant_id, label_selector, resource_version) and
  // resolves "from now" to the current version. INVALID_ARGUMENT naming the
  // field; OUT_OF_RANGE for a version this broker cannot continue from.
  absl::StatusOr<WatchPlan> PrepareWatch(const v1::WatchRequest& req) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The durable changes, in order. Thread-safe; outlives every stream.
  const WatchLog& watch_log() const { return watch_; }

  // ---- NodeRegistry (called by agents) ----
  absl::Status Register(const v1::RegisterRequest& req, v1::RegisterResponse* out);
  absl::Status Heartbeat(const v1::HeartbeatRequest& req, v1::HeartbeatResponse* out);
  absl::Status Reconciled(const v1::ReconciledRequest& req, v1::ReconciledResponse* out);

  // ---- OwnershipView, for the authorization layer ----
  // These answer from memory without waiting for pending commits: they are
  // not shown to callers, and a mutation authorized against a pending object
  // is ordered after it (and fails with it).
  std::optional<std::string> ContainerTenant(const std::string& container_id) const override;
  std::optional<std::string> WindowTenant(const std::string& window_id) const override;

  // ---- metrics ----
  // A summary of the state for the metrics gauges (server/broker_metrics.h),
  // taken under the lock; cost linear in tenants, nodes and containers. It
  // does not wait for pending commits: counts may include changes at most
  // one group commit from durable.
  BrokerStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // ---- housekeeping, called periodically by the daemon ----
  // Marks READY nodes whose last heartbeat is older than node_timeout_ms as
  // UNAVAILABLE and forgets their session, so they must register (and
  // reconcile) again. Returns the names of the nodes it marked.
  std::vector<std::string> CheckLiveness();
  // Forgets remembered answers older than request_ttl_ms.
  absl::Status ExpireRequests();
  // Not OK once memory could not be restored to the store's state after a
  // failed commit: every answer and commit is then refused with this status,
  // and the daemon must stop so that a restart loads the store afresh.
  absl::Status Unrecoverable() const ABSL_LOCKS_EXCLUDED(mu_);

  // ---- for tests ----
  // Applies and commits `change` as a mutation's planner would, so tests can
  // show what the apply refuses (INTERNAL, nothing changed).
  absl::Status ApplyAndCommitForTesting(WriteBatch change) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until every queued best-effort push to agents has been made.
  void WaitForPushes();
  // Recounts the per-tenant and per-node indexes from the containers and
  // windows (linear) and compares them with the ones every change keeps up
  // to date. INTERNAL naming the first difference.
  // The placement index too, against one built from every node, and each
  // node's cached heartbeat answer against a fresh one. And memory against
  // the store (CheckMatchesStoreLocked), after waiting for pending commits.
  absl::Status CheckIndexes() ABSL_LOCKS_EXCLUDED(mu_);
  // How many heartbeat answers were built (not copied from the cache).
  int64_t HeartbeatAnswersBuilt() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    return heartbeat_answers_built_;
  }

 private:
  using NodeEntry = broker_state::NodeEntry;
  using ContainerEntry = broker_state::ContainerEntry;
  using Plan = broker_state::Plan;
  using PendingGroup = broker_state::PendingGroup;
  using TenantTotals = broker_state::TenantTotals;
  using Indexes = broker_state::Indexes;
  using DirtyMark = broker_state::DirtyMark;
  using PushOrder = broker_state::PushOrder;

  Broker(Store* store, AgentClient* agents, BrokerOptions options);
  absl::Status Load();
  // Replaces the persisted part of the state (tenants, nodes' records,
  // containers, windows) with `records`, keeping what is not persisted
  // (sessions, heartbeats, usage, reservations). Used at start and to roll
  // back after a failed group commit.
  // Devices and keys of nodes without a record (left by DeleteNode of an
  // earlier version) are ignored; their node names go to `leftovers`.
  absl::Status RestoreLocked(const std::vector<StoreRecord>& records,
                             std::vector<std::string>* leftovers = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- applying a change (broker_apply.cc) ----
  // Applies `change` to memory as the store will apply it (puts, then
  // deletes): maps, indexes, allocators and the marks that publish it to
  // watchers once durable. All or nothing: INTERNAL, changing nothing, for a
  // change that does not fit the state (a bug in its planner). Followed by
  // CommitLocked in the same critical section.
  absl::Status ApplyChangeLocked(const WriteBatch& change) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // INTERNAL when new container `c` (put by `change`, beside the new ones
  // in `created`, whose devices are in `claimed`) would break what a load
  // checks: its tenant and node exist (now or in `change`), its devices are
  // free and claimed once (added to `claimed`), its name is free in its
  // tenant.
  absl::Status CheckNewContainerLocked(const v1::Container& c, const WriteBatch& change,
                                       const std::map<std::string, WindowAllocator>& created,
                                       std::set<std::pair<std::string, std::string>>* claimed) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ApplyChangeLocked, then CommitLocked: how every mutation changes state.
  absl::Status ApplyAndCommitLocked(WriteBatch change) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A container's window allocator, from the geometry its agent reported.
  static absl::StatusOr<WindowAllocator> AllocatorFor(const v1::Container& c);

  // ---- group commit ----
  // Commits `batch`, whose change the caller has already applied to memory,
  // and returns when it is durable (OK) or rolled back (the error). Releases
  // mu_ while it waits or commits: pointers into the maps taken before the
  // call are invalid after it. Batches commit in the order of their calls.
  absl::Status CommitLocked(WriteBatch batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Commits the open group, with mu_ released during the store call; on
  // failure fails every group not yet durable and rolls memory back.
  void LeadCommitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For answers computed from memory: waits (releasing mu_) until every
  // change applied so far is durable. UNAVAILABLE if a commit failed and
  // rolled back part of what the answer may show; the caller must not send
  // it. Immediate when nothing is pending.
  absl::Status AwaitDurableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return AwaitDurableLocked(applied_seq_);
  }
  // The same for answers showing only what mutations up to `seq` changed.
  absl::Status AwaitDurableLocked(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The sequence number the mutation being applied now will commit under
  // (applies are followed by CommitLocked in the same critical section).
  uint64_t ApplyingSeqLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return applied_seq_ + 1;
  }

  // ---- index maintenance: every change to containers_ / windows_ ----
  void AddContainerLocked(ContainerEntry entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Erases the container, its windows and its devices' holder entries.
  void EraseContainerLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetBudgetLocked(ContainerEntry* c, uint64_t budget) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkDeletingLocked(ContainerEntry* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The window's record and ids only; the caller updates c->allocator.
  void AddWindowLocked(ContainerEntry* c, const v1::Window& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseWindowLocked(ContainerEntry* c, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The indexes as a full scan computes them.
  Indexes RecountLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The ids of the containers on `node` / of `tenant` (empty set if none).
  const std::set<std::string>& NodeContainersLocked(const std::string& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const std::set<std::string>& TenantContainersLocked(const std::string& tenant) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Replaces what node `name` (entry `n`) last reported of each tenant's
  // usage, keeping index_.usage_nodes in step; empty `usage` forgets it.
  void SetNodeUsageLocked(const std::string& name, NodeEntry* n,
                          std::map<std::string, v1::PinUsage> usage)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  int64_t Now() const { return options_.now_ms(); }

  // Idempotency. Looks up `req`'s request_id: OK + *replayed=true with `out`
  // filled when the same request was answered before; FAILED_PRECONDITION
  // when the id was used for a different request; ABORTED when a request
  // with that id is in flight.
  // `key` is RequestKey(caller, request_id). Reads the store only when
  // requests_ holds an answer for the same request (a real retry).
  template <typename Resp>
  absl::Status CheckReplayLocked(const std::string& request_id, const std::string& key,
                                 const std::string& fingerprint, Resp* out, bool* replayed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The answer to replay for a request of `fingerprint` under `key`, or under
  // the bare `request_id` (answers remembered before ids were scoped by
  // caller: only the identical request replays those); nullopt when there is
  // none (a fresh request). FAILED_PRECONDITION when `key` was used for
  // another request; the store's error when the answer cannot be read.
  absl::StatusOr<std::optional<RequestRecord>> FindAnswerLocked(const std::string& request_id,
                                                                const std::string& key,
                                                                const std::string& fingerprint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Runs a mutation that needs no agent call: validates request_id, replays
  // a remembered answer, or calls `plan` (which validates, fills `out` and
  // returns the change), commits the change with the answer and applies it.
  template <typename Req, typename Resp>
  absl::Status Mutate(const char* method, const Identity& caller, const Req& req, Resp* out,
                      const std::function<absl::StatusOr<Plan>(Resp*)>& plan)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Second half of CreateContainer, after the agent answered: releases the
  // reservation and, if the agent created the container, commits it.
  absl::Status CommitCreatedContainer(const v1::CreateContainerRequest& req,
                                      const std::string& fingerprint, const std::string& rkey,
                                      const std::string& id, const std::string& node,
                                      const std::vector<std::string>& devices, uint64_t budget,
                                      const absl::StatusOr<v1::AgentContainer>& created,
                                      v1::Container* out) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status SetTenantQuotaInternal(const v1::SetTenantQuotaRequest& req, v1::Tenant* out,
                                      const Identity& caller) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status SetContainerBudgetInternal(const v1::SetContainerBudgetRequest& req,
                                          v1::Container* out, const Identity& caller)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The windows of a container as the agent wants them.
  v1::ContainerWindows WindowsLocked(const ContainerEntry& c) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pushes a container's current windows to its (live) agent. Best effort
  // unless `required`: heartbeat answers repeat them.
  absl::Status PushWindows(const std::string& container_id, bool required) ABSL_LOCKS_EXCLUDED(mu_);
  // Pushes the current budgets of `tenant`'s containers on `node` to its
  // (live) agent, best effort: heartbeat answers repeat them anyway.
  void PushBudgets(const std::string& tenant, const std::string& node) ABSL_LOCKS_EXCLUDED(mu_);
  // Queue the best-effort pushes on pushes_, so the reply that caused them
  // does not wait on an agent (a stalled one would hold it for the agent
  // timeout).
  void QueuePushBudgets(const std::string& tenant) ABSL_LOCKS_EXCLUDED(mu_);
  void QueuePushWindows(const std::string& container_id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<Plan> PlanDeleteContainerLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes one container: destroys it on its agent (unless the node is
  // unavailable, in which case the agent drops it when it reconciles), then
  // commits. `request` is recorded in the same commit when set.
  absl::Status DeleteContainerInternal(const std::string& id,
                                       std::optional<RequestRecord> request)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Events (server/event_log.h), stamped with Now(); recorded where the
  // change is decided, next to its log line. RecordRefusal records `event`
  // with `refusal`'s message when `refusal` is not OK, and returns `refusal`.
  void RecordEvent(v1::Event event);
  absl::Status RecordRefusal(v1::Event event, absl::Status refusal);
  // Whether `object` exists now (and, when `tenant` is set, belongs to it).
  bool ObjectExistsLocked(const v1::ObjectRef& object, const std::string& tenant) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- watch: marks of changed objects, published once durable ----
  // An object changed by the mutation being applied (published when its
  // commit is durable), or by something the store does not hold, such as a
  // node's liveness (published once every mutation applied so far is).
  // Mark a container before changing its labels or adding it: the first
  // mark since its last publish keeps its labels as published (DirtyMark).
  void MarkAppliedLocked(v1::ObjectKind kind, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkObservedLocked(v1::ObjectKind kind, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An object about to be erased by the mutation being applied: `last` is
  // its DELETE event, sent unless the erase is rolled back.
  void MarkGoneLocked(v1::ObjectKind kind, const std::string& id, WatchLog::Change last)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every container on `node` (their state follows the node's).
  void MarkNodeContainersLocked(const std::string& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The containers whose failure (NodeEntry::failed) differs between
  // `before` and `after`: their state or message changed.
  void MarkFailuresChangedLocked(const std::map<std::string, std::string>& before,
                                 const std::map<std::string, std::string>& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends to watch_ every marked object whose changes are all durable (or
  // rolled back), as it is now.
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a rollback of the mutations after `durable_seq`: forgets the marks
  // only they set.
  void ForgetRolledBackLocked(uint64_t durable_seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The PUT of object (kind, id) as it is now, or nullopt when it is gone.
  std::optional<WatchLog::Change> CurrentLocked(v1::ObjectKind kind, const std::string& id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<NodeEntry*> FindNodeLocked(const std::string& field, const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<ContainerEntry*> FindContainerLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The id of the container that `ref` (an id, NAME or TENANT/NAME, see
  // Container.name) names for `caller`: a tenant's bare NAME is looked up in
  // its own tenant, an operator's in the one tenant holding that name.
  // INVALID_ARGUMENT for a malformed or ambiguous reference, NOT_FOUND for a
  // name no container has. An id is returned as given (FindContainerLocked
  // then says whether it exists).
  absl::StatusOr<std::string> ResolveContainerLocked(const Identity& caller,
                                                     const std::string& field,
                                                     const std::string& ref) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ALREADY_EXISTS when `tenant` has a container named `name`, or a create
  // of one is in flight.
  absl::Status NameFreeLocked(const std::string& tenant, const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FAILED_PRECONDITION when container `id` (that is `c`) has a delete in
  // flight or pending (DELETING).
  absl::Status NotBeingDeletedLocked(const std::string& id, const ContainerEntry& c) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The container a launcher grant may be issued for now: not being deleted,
  // on a READY node (live and reconciled), naming no more windows than a
  // token holds. UNAVAILABLE or FAILED_PRECONDITION saying which.
  absl::StatusOr<ContainerEntry*> GrantableLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NodeLiveLocked(const NodeEntry& n) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED when the caller of request key `key` has
  // max_remembered_answers_per_caller answers remembered.
  absl::Status CheckRememberedLocked(const std::string& key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Register's steps. Commits the node's record, devices and grant key;
  // the entry, or UNAVAILABLE when a failed commit rolled the node back.
  absl::StatusOr<NodeEntry*> PersistRegistrationLocked(const v1::RegisterRequest& req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Commits the removal of `node`'s DELETING containers that its agent no
  // longer holds (`held`) and no delete is finishing; true when it
  // committed any (mu_ was then released, so entries must be looked up
  // again).
  absl::StatusOr<bool> FinishDeletesAtRegistrationLocked(const std::string& node,
                                                         const std::set<std::string>& held)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fills out->desired_containers with what `node` must hold; removes those
  // from *held (what is left is for the agent to destroy) and returns how
  // many it must create.
  int DesiredContainersLocked(const std::string& node, std::set<std::string>* held,
                              v1::RegisterResponse* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `n` was heard from now (a heartbeat or a registration): its silence
  // starts over, and the fleet-wide quiet time CheckLiveness reads is kept.
  void NoteHeartbeatLocked(NodeEntry* n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Live, reconciled and not cordoned: new containers may go here.
  bool NodePlaceableLocked(const NodeEntry& n) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return NodeLiveLocked(n) && n.reconciled && !n.node.cordoned();
  }
  static AgentEndpoint Endpoint(const NodeEntry& n) {
    return AgentEndpoint{n.node.name(), n.node.agent_address()};
  }
  v1::Node NodeViewLocked(const NodeEntry& n) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Container ContainerViewLocked(const ContainerEntry& c) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The state the view shows. When the agent reported the container failed
  // (FAILED, or DELETING after it), *failure (when given) points at its
  // message.
  v1::ContainerState ContainerStateLocked(const ContainerEntry& c,
                                          const std::string** failure = nullptr) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<v1::Device> DeviceViewLocked(const NodeEntry& n) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A device no create may take: a container holds it, or a create in
  // flight has reserved it. DeviceBusyLocked asks it of one device;
  // BusyDevicesLocked lists a node's, sorted, in O(its busy devices) (both
  // maps are keyed by node first).
  bool DeviceBusyLocked(const std::string& node, const std::string& address) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<absl::string_view> BusyDevicesLocked(const std::string& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Devices of `node` reserved by creates in flight, in O(their number).
  std::vector<absl::string_view> PendingDevicesLocked(const std::string& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int TenantContainerCountLocked(const std::string& tenant) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t TenantWindowBytesLocked(const std::string& tenant) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sum of the pin budgets of the tenant's containers, including creates in
  // flight.
  uint64_t TenantBudgetLocked(const std::string& tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Picks the node and devices for a create request; see CreateContainerRequest.
  absl::Status PlaceLocked(const v1::CreateContainerRequest& req, const Identity& caller,
                           std::string* node, std::vector<std::string>* devices)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CreateContainer's checks of the request against its tenant: fields,
  // name, max_containers and the pinned quota not yet budgeted (refusals
  // recorded as events). The pin budget the container gets.
  absl::StatusOr<uint64_t> AdmitCreateLocked(const v1::CreateContainerRequest& req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PlaceLocked's two ways: the node and devices the request names, checked
  // one by one (a refusal names the container holding a device only to an
  // operator or its own tenant); or the free whole IOMMU groups matching its
  // selector on the placeable node with the most of them.
  absl::Status PlaceOnNodeLocked(const v1::CreateContainerRequest& req, const Identity& caller,
                                 std::string* node, std::vector<std::string>* devices)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PlaceBySelectorLocked(const v1::CreateContainerRequest& req, std::string* node,
                                     std::vector<std::string>* devices)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The placement index's upkeep: `node`'s devices, their holders, or
  // whether it is placeable (NodePlaceableLocked) changed, or it is gone.
  // Stale nodes are brought up to date at the next placement, so a burst of
  // changes to one node (a registration re-creating its containers) costs
  // one update of O(its devices).
  void MarkPlacementStaleLocked(const std::string& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    placement_stale_.insert(node);
  }
  void RefreshPlacementLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A budget or the windows of a container on `node` changed, or the set of
  // its containers did: its cached heartbeat answer is out of date.
  void HeartbeatAnswerStaleLocked(const std::string& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = nodes_.find(node);
    if (it != nodes_.end()) it->second.heartbeat_answer.reset();
  }
  std::shared_ptr<const v1::HeartbeatResponse> HeartbeatAnswerLocked(const std::string& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a container holds a device (device_holder_), for the index.
  model::PlacementIndex::HeldFn HeldFnLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A fresh index of every node, as RefreshPlacementLocked keeps it.
  model::PlacementIndex BuildPlacementLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CheckIndexes' part for the placement index.
  absl::Status CheckPlacementLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CheckIndexes' part for memory against the store: once every pending
  // change is durable, the state the broker serves equals the model
  // (model::FleetState) built from what the store holds, as a restart would
  // load it. Memory follows each change's records (ApplyChangeLocked) and a
  // load builds it from all of them (RestoreLocked): this is where the two
  // must agree.
  absl::Status CheckMatchesStoreLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewIdLocked(const char* prefix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Node CordonPlanLocked(NodeEntry* n, bool cordoned, Plan* plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  Store* const store_;
  AgentClient* const agents_;
  const BrokerOptions options_;
  // Thread-safe on its own, so not under mu_ (which may be held when
  // recording: mu_ is always taken first).
  EventLog events_;
  // The same, for the Watch RPC; its run id is random per broker object.
  WatchLog watch_;
  // Bounds registrations at once (BrokerOptions::max_concurrent_registrations);
  // taken before mu_, never while holding it.
  Turnstile registrations_;

  mutable absl::Mutex mu_;
  std::map<std::string, v1::Tenant> tenants_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, NodeEntry> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ContainerEntry> containers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::Window> windows_ ABSL_GUARDED_BY(mu_);
  // (node, device address) -> container id, for every device a container holds.
  std::map<std::pair<std::string, std::string>, std::string> device_holder_ ABSL_GUARDED_BY(mu_);
  // Devices reserved by creates waiting on their agent, and how many such
  // creates each tenant has (they count against max_containers).
  std::set<std::pair<std::string, std::string>> pending_devices_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> pending_creates_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> pending_budget_ ABSL_GUARDED_BY(mu_);
  // (name, tenant) -> container id for named containers, and the names
  // reserved by creates waiting on their agent. Ordered by name first, so an
  // operator's bare name finds every tenant using it in one range.
  std::map<std::pair<std::string, std::string>, std::string> container_names_
      ABSL_GUARDED_BY(mu_);
  std::set<std::pair<std::string, std::string>> pending_names_ ABSL_GUARDED_BY(mu_);
  // The mark of (kind, id), made if there is none.
  DirtyMark& MarkLocked(v1::ObjectKind kind, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::map<std::pair<int, std::string>, DirtyMark> dirty_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<int, std::string>, WatchLog::Change> gone_ ABSL_GUARDED_BY(mu_);
  // Containers being destroyed on their agent; other changes to them wait.
  std::set<std::string> deleting_ ABSL_GUARDED_BY(mu_);
  // Request ids of mutations in flight (including those applied and waiting
  // for their group commit, whose answer is not in the store yet), so a
  // concurrent retry cannot run twice.
  std::set<std::string> inflight_ ABSL_GUARDED_BY(mu_);
  Indexes index_ ABSL_GUARDED_BY(mu_);
  // Placement by selector in O(log nodes): free whole groups per node and
  // selector, ranked (server/model/placement_index.h), and the nodes whose
  // entry is out of date (MarkPlacementStaleLocked).
  model::PlacementIndex placement_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> placement_stale_ ABSL_GUARDED_BY(mu_);
  int64_t heartbeat_answers_built_ ABSL_GUARDED_BY(mu_) = 0;
  // Group commit. Every applied mutation takes the next sequence number.
  std::shared_ptr<PendingGroup> open_group_ ABSL_GUARDED_BY(mu_);  // Null: none.
  bool committing_ ABSL_GUARDED_BY(mu_) = false;  // A leader is in the store call.
  uint64_t applied_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // Every mutation up to this one is durable or rolled back.
  uint64_t resolved_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // The last mutation rolled back by a failed group commit (0: none yet).
  uint64_t rolled_back_seq_ ABSL_GUARDED_BY(mu_) = 0;
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  // See Unrecoverable().
  absl::Status unrecoverable_ ABSL_GUARDED_BY(mu_);
  // Every answer the store remembers for retries (at start, and again after
  // a failed commit, from Store::ListRequests), plus each one committed
  // since (LeadCommitLocked), minus expiries: a fresh request id is told
  // from a retry without a store read, and the answers per caller counted
  // (CheckRememberedLocked). Only committed answers: until its commit, a
  // request is in inflight_.
  RequestIndex requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<PushOrder>> push_order_ ABSL_GUARDED_BY(mu_);
  // Liveness (CheckLiveness): when it last ran, and the total time the
  // broker was found unable to take heartbeats.
  int64_t last_liveness_check_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t deaf_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // When a heartbeat or registration of any node was last taken, and the
  // longest time since the last check with neither a heartbeat nor a check.
  int64_t last_heartbeat_taken_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t longest_quiet_ms_ ABSL_GUARDED_BY(mu_) = 0;

  // Best-effort pushes to agents. Last, so it is destroyed first: its
  // workers call into the broker until they are joined.
  PushQueue pushes_{4};
};

}  // namespace iommu

#endif  // SERVER_BROKER_H_
