// AgentCore: the node agent's state and logic, free of gRPC and sockets. It
// holds the containers (address spaces) the broker asked for, keyed by the
// broker's container id, on top of a Backend; the guest memory launcher
// sessions registered; every DMA mapping; and the pinned-page ledger that
// bills each pinned host page once, to the tenant owning the memory, within
// the pin budgets the broker granted (DESIGN.md invariants 2, 3, 4).
//
// Thread-safe. One mutex (mu_) guards every table. A map holds it across its
// backend call, because a map must be atomic with the quota check and the
// ledger update: two concurrent maps must not both fit under a budget that has
// room for one. Teardown does not: unmaps (CloseSession, Unmap, SetWindows
// revocation) and DestroyContainer take what they remove out of the live
// tables under mu_ (reserving its IOVA ranges so nothing new can be mapped
// there), release mu_ for the backend's ioctls, and re-take it to release the
// ledger's pins. Heartbeats (Usage, Stats, Inventory) and other sessions never
// wait for a kernel unmap, and billing only drops after the kernel unpinned.
// A session's mappings are unmapped in as few backend calls as possible: one
// per maximal IOVA run holding only that session's mappings.
#ifndef AGENT_AGENT_CORE_H_
#define AGENT_AGENT_CORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/random/random.h"
#include "agent/agent_stats.h"
#include "agent/backend.h"
#include "agent/fd_store.h"
#include "agent/kernel_pin_account.h"
#include "agent/ledger.h"
#include "agent/state_journal.h"
#include "common/log_limiter.h"
#include "proto/agent.pb.h"
#include "proto/broker.pb.h"

namespace iommu {
namespace agent {

// What Reconcile did.
struct ReconcileResult {
  // Every container the agent holds afterwards, sorted by id.
  std::vector<v1::AgentContainer> held;
  // Desired containers that could not be created, with the reason (same
  // order, same length).
  std::vector<std::string> failed_ids;
  std::vector<std::string> failure_reasons;
};

// Guest memory a launcher handed the agent, already mapped into the agent's
// address space (guest_memory.h makes these from a memfd). `keepalive` owns
// the mapping and the fd; the core holds it while the memory is registered.
struct GuestMemoryRegion {
  ObjectKey key;     // (st_dev, st_ino): the same memory arriving twice.
  uint64_t size = 0; // Bytes, a multiple of 4096.
  uint64_t vaddr = 0;  // Where the agent mapped it; 0 when its fd was lost.
  std::shared_ptr<void> keepalive;
  // The object's fd, owned by `keepalive`; -1 when unknown. Handed to the fd
  // store so that a restarted agent can map the memory again.
  int fd = -1;
};

// What ResumeSession answers: the session as it was before the restart.
struct ResumedSession {
  std::string container_id;
  std::string tenant;
  std::vector<IovaRange> usable_windows;  // As OpenSession returns them.
  size_t memory_objects = 0;
  uint64_t memory_bytes = 0;
};

// What Restore did, for the start-up log and the tests.
struct RestoreReport {
  size_t containers_adopted = 0;
  // Containers whose kernel objects were not in the fd store: their mappings
  // stay billed until the kernel is seen to have released them.
  size_t containers_orphaned = 0;
  size_t sessions_restored = 0;
  size_t mappings_restored = 0;
  size_t memory_restored = 0;
  size_t memory_fds_lost = 0;
  // Fds in the store nothing in the journal names (closed and removed).
  size_t stray_fds_removed = 0;
  std::vector<std::string> problems;  // One line per container or memory not adopted.
};

// What RegisterMemory answers.
struct MemoryInfo {
  std::string memory_id;   // "m-" + 16 hex digits, valid in its session only.
  uint64_t size = 0;
  std::string owner_tenant;  // Who its pinned pages are billed to.
  bool shared = false;       // The object was already registered before.
};

// The geometry as the agent API reports it.
v1::ContainerGeometry GeometryToProto(const Geometry& g);

// A new resume token: 64 hex digits from the CSPRNG.
std::string NewResumeToken();
// SHA-256 of `token`, hex: what the journal keeps instead of the token.
std::string ResumeDigest(absl::string_view token);

// The default of --max-mappings-per-tenant: a full vfio type1 container's
// worth (its default dma_entry_limit is 65535).
inline constexpr size_t kDefaultMaxMappingsPerTenant = 65536;

class AgentCore final {
 public:
  // `node` is this agent's node name; `backend` must outlive the AgentCore
  // and is not owned. `observer`, when set, is told how long each map and
  // unmap took (metrics); not owned, must outlive the AgentCore.
  AgentCore(std::string node, Backend* backend, AgentCoreObserver* observer = nullptr);

  AgentCore(const AgentCore&) = delete;
  AgentCore& operator=(const AgentCore&) = delete;

  // The destructor leaves the backend's address spaces alone: the owner of
  // the backend decides whether they outlive the agent's bookkeeping.
  ~AgentCore() = default;

  const std::string& node() const { return node_; }
  // This run of the agent: 32 random hex digits drawn once, when the
  // AgentCore is made (once per process). Registration sends it to the
  // broker, which binds every grant it signs to it
  // (LauncherGrant.agent_incarnation); a token bound to another run is
  // refused, so a token used before a restart (whose replay cache lived in
  // memory) cannot be used again after it.
  const std::string& incarnation() const { return incarnation_; }
  const Backend& backend() const { return *backend_; }

  // Creates container `id` ("c-" + 16 hex) for `tenant_id` with `devices`,
  // and returns it with the geometry the backend reported. If `id` exists
  // with the same tenant and the same set of devices, returns it unchanged
  // (the broker retries). Errors: INVALID_ARGUMENT naming the field
  // (container_id, tenant_id, devices[i]); ALREADY_EXISTS when `id` exists
  // with another tenant or other devices; the backend's error otherwise
  // (NOT_FOUND unknown device, FAILED_PRECONDITION device held or not
  // assignable, ...). A failure leaves nothing behind.
  absl::StatusOr<v1::AgentContainer> CreateContainer(
      absl::string_view id, absl::string_view tenant_id,
      const std::vector<std::string>& devices, uint64_t pin_budget_bytes = 0);

  // Destroys container `id`: the backend unmaps everything and releases the
  // devices. NOT_FOUND if the agent holds no such container;
  // FAILED_PRECONDITION "container_id: ..." when another destroy of it is in
  // progress; on a backend error the container stays held. The backend call
  // runs without mu_; meanwhile the container stays listed and billed, and
  // maps into it are refused (FAILED_PRECONDITION session).
  absl::Status DestroyContainer(absl::string_view id);

  // The container and all its current mappings (in-process callers and
  // tests; the RPC pages). NOT_FOUND if absent.
  absl::StatusOr<v1::AgentGetContainerResponse> GetContainer(
      absl::string_view id);
  // The container and one page of its mappings, by IOVA: at most
  // `page_size` (0 means 100, at most 1000) after `page_token`, with
  // next_page_token set when more remain. Errors: NOT_FOUND container_id;
  // INVALID_ARGUMENT page_size / page_token.
  absl::StatusOr<v1::AgentGetContainerResponse> GetContainerPage(
      absl::string_view id, uint32_t page_size, absl::string_view page_token);

  // Every device the backend lists, with Device.container_id set to the
  // holding container, every container held, the ledger's usage and what
  // launcher sessions hold (sessions, registered memory).
  absl::StatusOr<v1::GetInventoryResponse> Inventory();

  // Every container held, sorted by id.
  std::vector<v1::AgentContainer> Containers();
  size_t container_count();

  // Makes the held containers equal to `desired` (the broker store's view):
  // destroys every held container not desired (or desired with another
  // tenant or devices, which is then recreated), then creates every desired
  // container not held. Never stops at the first failure; failures to create
  // are reported in the result, failures to destroy are logged and the
  // container stays held (and so appears in `held`).
  ReconcileResult Reconcile(const std::vector<v1::AgentContainer>& desired);

  // ---- pin budgets and the ledger ----

  // Sets the budgets of held containers; unknown ids are ignored. Lowering a
  // budget below what is pinned takes nothing away.
  void SetBudgets(const std::vector<v1::ContainerBudget>& budgets);
  // Billed, mapped and kernel-counted bytes per tenant with non-zero usage,
  // sorted.
  std::vector<v1::PinUsage> Usage();

  // A summary for the metrics gauges (agent/agent_metrics.h): usage per
  // tenant, containers, mappings and their limit, open sessions.
  AgentStats Stats();

  // ---- launcher sessions: memory and mappings (mapping them: agent_core_mappings.cc) ----

  // Opens launcher session `session_id` on container `container_id` of
  // `tenant`, which may map only inside `grant_windows` (the windows the
  // broker's token named) and, at the time of each map, inside the
  // container's current windows (SetWindows). The session is bound to this
  // incarnation of the container: if the container is destroyed (and maybe
  // created again under the same id, for another tenant) the session is dead
  // and every further call on it is FAILED_PRECONDITION. Errors: NOT_FOUND
  // container_id; UNAUTHENTICATED when the container belongs to another
  // tenant; ALREADY_EXISTS for a session id in use.
  // Returns the grant windows the container still holds (what the session
  // can actually map into).
  // With a journal, `resume_token` (when not null) receives the secret a
  // launcher presents to ResumeSession after an agent restart.
  absl::StatusOr<std::vector<IovaRange>> OpenSession(const std::string& session_id,
                                                     const std::string& container_id,
                                                     const std::string& tenant,
                                                     std::vector<IovaRange> grant_windows,
                                                     std::string* resume_token = nullptr);

  // The container's windows, as the broker last said (each an inclusive
  // range). Mappings no longer inside a window are revoked: unmapped and
  // their pins released. Returns how many were revoked; NOT_FOUND for an
  // unknown container.
  absl::StatusOr<size_t> SetWindows(const std::string& container_id,
                                    std::vector<IovaRange> windows);

  // Registers `memory` for `session_id` of `tenant`. The first tenant to
  // register a backing object owns it and is billed for it; a later
  // registration of the same object (by any session or tenant) shares it.
  // Errors: INVALID_ARGUMENT "fd: ..." for a size that is 0 or not a whole
  // number of pages; FAILED_PRECONDITION when the object is known with
  // another size.
  absl::StatusOr<MemoryInfo> RegisterMemory(const std::string& session_id,
                                            const std::string& tenant,
                                            GuestMemoryRegion memory, absl::string_view name);

  // Maps [offset, offset + length) of the session's memory `memory_id` at
  // [iova, iova + length) of `container_id`, which must be the session's
  // container. The range must lie inside one window the session's grant
  // named that the container still holds. Pins the pages and bills their
  // owner, unless that would take the owner's billed bytes on this node past
  // the sum of the owner's container budgets here: RESOURCE_EXHAUSTED with
  // the numbers. Errors name the field, in this order: NOT_FOUND session
  // (unknown) / FAILED_PRECONDITION session (its container was destroyed);
  // PERMISSION_DENIED container_id (not the session's); NOT_FOUND memory_id
  // (also for another session's memory); INVALID_ARGUMENT readable/writable
  // (neither set), offset, length, iova (alignment to the container's IOMMU
  // page size, zero, past the memory's end, overflow); PERMISSION_DENIED iova
  // (outside the windows); RESOURCE_EXHAUSTED (mappings per tenant, budget,
  // then the kernel pin bounds of SetKernelPinLimits); the backend's error
  // (ALREADY_EXISTS overlap, RESOURCE_EXHAUSTED mapping limit, ...). A
  // failure changes nothing: not the backend's mappings, not the ledger.
  absl::Status MapMemory(const std::string& session_id, const std::string& container_id,
                         const std::string& memory_id, uint64_t offset, uint64_t length,
                         uint64_t iova, bool readable, bool writable);

  // Unmaps every mapping inside [iova, iova + length) of `container_id` and
  // returns the bytes unmapped, in one backend call made without mu_. With a
  // non-empty `session_id` only that session's mappings may be in the range.
  // Errors: INVALID_ARGUMENT when the range cuts a mapping or is
  // empty/overflows; FAILED_PRECONDITION iova when it overlaps a range still
  // being unmapped by another call; NOT_FOUND when it holds none;
  // PERMISSION_DENIED when it holds another session's mapping; the backend's
  // error (then nothing was unmapped).
  absl::StatusOr<uint64_t> Unmap(const std::string& container_id, uint64_t iova,
                                 uint64_t length, const std::string& session_id);

  // The session's mappings, by container then IOVA.
  std::vector<v1::Mapping> SessionMappings(const std::string& session_id);

  // One page of a live session's mappings, by IOVA: at most `page_size`
  // (0 means kDefaultLauncherMappingPage, at most kMaxLauncherMappingPage,
  // agent/mapping_page.h) after `page_token`. Errors: INVALID_ARGUMENT
  // page_size / page_token; those of LiveSessionLocked (session).
  struct MappingPage {
    std::vector<v1::Mapping> mappings;
    std::string next_page_token;  // Empty on the last page.
  };
  absl::StatusOr<MappingPage> SessionMappingsPage(const std::string& session_id,
                                                  uint32_t page_size,
                                                  absl::string_view page_token);

  // The session ended: unmaps everything it mapped, releases its memory.
  // The session and its memory ids stop existing at once; its mappings leave
  // the live tables at once but stay billed until the backend unmapped them,
  // one Backend::Unmap per maximal IOVA run holding only this session's
  // mappings, made without mu_. A mapping the backend fails to unmap stays
  // in its container (and billed) until the container is destroyed.
  void CloseSession(const std::string& session_id) ABSL_LOCKS_EXCLUDED(mu_);

  // Mappings the sessions of one tenant may hold on this node at once
  // (--max-mappings-per-tenant); MapMemory refuses past it with
  // RESOURCE_EXHAUSTED naming the tenant and the limit.
  void SetMaxMappingsPerTenant(size_t limit);

  // Bounds on the bytes the kernel counts for the agent's pins: the sum of
  // the mappings' sizes (the kernel charges every mapping in full, not each
  // page once as the ledger bills), per tenant of the mapping session and
  // for the node; KernelPinAccount::kUnlimited for none (the default; see
  // memlock_policy.h for where they come from). After every other check
  // and before the kernel is called, MapMemory refuses a map that would
  // pass either with RESOURCE_EXHAUSTED naming the tenant, the bytes the
  // kernel would count and the bound.
  void SetKernelPinLimits(uint64_t per_tenant_bytes, uint64_t node_bytes);

  // The key launcher tokens are checked with (from the broker at
  // registration); empty until the first registration.
  void SetGrantKey(std::string key);
  std::string grant_key();

  // ---- surviving a restart (agent_core_restart.cc) ----

  // Where the state goes so that a restarted agent finds it again: the
  // journal records every container, session, memory object and mapping
  // before the change is acknowledged; the fd store keeps the kernel objects
  // (container, group, device, iommufd and memory fds) alive across the
  // process. Neither is owned; both must outlive the core. Call once, before
  // serving; without it nothing survives a restart.
  void SetPersistence(StateJournal* journal, FdStore* fd_store);

  // Rebuilds what an earlier run journaled, before serving: adopts every
  // container whose kernel objects `fds` (from the fd store) holds, with its
  // mappings and their billing as they were; containers whose fds are gone
  // are kept as orphans, their mappings billed, until the kernel is seen to
  // have released them (a later create or destroy of the same id succeeds in
  // the backend). Sessions come back detached: a launcher resumes one with
  // ResumeSession until `resume_deadline`, after which
  // CloseUnresumedSessions ends it (unmapping what it mapped).
  // `map_memory` maps a memory fd back into the agent (MapGuestMemory).
  RestoreReport Restore(
      const JournalState& state, std::map<std::string, UniqueFd> fds, absl::Time resume_deadline,
      const std::function<absl::StatusOr<GuestMemoryRegion>(UniqueFd)>& map_memory);

  // Reattaches a session restored by Restore to a launcher that presents its
  // resume token. UNAUTHENTICATED "resume_token: ..." for an unknown session,
  // a wrong token, or a session already resumed (one message for all three:
  // the answer tells nothing about other launchers' sessions);
  // FAILED_PRECONDITION when its container was lost.
  absl::StatusOr<ResumedSession> ResumeSession(const std::string& session_id,
                                               const std::string& resume_token);

  // Ends every restored session not resumed by its deadline; returns how many.
  size_t CloseUnresumedSessions(absl::Time now);

  // The process is about to exit for a restart (SIGTERM): from now on
  // CloseSession keeps what it would release (the launchers' connections
  // close with the process, their sessions must survive it), and nothing is
  // destroyed.
  void KeepStateForRestart();

  // The tenant of a held container, or NOT_FOUND.
  absl::StatusOr<std::string> ContainerTenant(absl::string_view id);
  // The devices of the session's container (FAILED_PRECONDITION when the
  // session is dead, NOT_FOUND when unknown).
  absl::StatusOr<std::vector<std::string>> SessionDevices(const std::string& session_id);
  // The session's device fds from the backend (dups the caller owns), one
  // per device in container order. Never the iommufd/container/group fds.
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> SessionDeviceFds(
      const std::string& session_id);

 private:
  // One DMA mapping, as the agent made it.
  struct MappingRecord {
    uint64_t iova = 0;
    uint64_t size = 0;
    bool readable = false;
    bool writable = false;
    std::string session_id;
    std::string memory_id;
    uint64_t offset = 0;
    ObjectKey key;
    std::string owner;
    std::string tenant;  // The tenant of the session that mapped it.
  };
  struct Held {
    std::string tenant_id;
    std::vector<std::string> devices;  // As requested.
    ContainerHandle handle = 0;
    v1::ContainerGeometry geometry;
    uint64_t pin_budget_bytes = 0;
    std::map<uint64_t, MappingRecord> mappings;  // By IOVA.
    std::vector<IovaRange> windows;  // Where mappings may go, from the broker.
    std::vector<std::string> fd_names;  // In the fd store.
    // Its kernel objects were lost across a restart: handle is 0, the
    // mappings are what the journal says the old address space still pins.
    bool orphaned = false;
    // IOVA ranges (start -> last, inclusive) whose mappings left `mappings`
    // and are being unmapped without mu_ (a DrainRun each). Invariant: no
    // live mapping overlaps one, and none may be made in one until it is
    // settled (a gap inside one is unmapped with it).
    std::map<uint64_t, uint64_t> draining;
    size_t draining_mappings = 0;  // Records inside `draining`.
    // DestroyContainer is in the backend without mu_.
    bool destroying = false;
  };
  // Mappings taken out of one container's live table, to be unmapped with
  // one Backend::Unmap of [start, last] without mu_, then settled.
  struct DrainRun {
    std::string container_id;
    ContainerHandle handle = 0;
    uint64_t start = 0;
    uint64_t last = 0;  // Inclusive.
    std::vector<MappingRecord> records;  // By IOVA.
  };
  struct Session {
    std::string container_id;
    ContainerHandle handle = 0;  // The container incarnation it was opened on.
    std::string tenant;
    std::vector<IovaRange> grant_windows;
    std::string resume_digest;  // SHA-256 of the resume token, hex.
    // Restored after a restart and not yet resumed by a launcher.
    bool detached = false;
    absl::Time resume_deadline = absl::InfiniteFuture();
  };
  struct Memory {
    std::string session_id;
    std::string tenant;
    std::string name;
    GuestMemoryRegion region;
    std::string fd_name;  // In the fd store; empty without one.
  };

  absl::StatusOr<v1::AgentContainer> CreateLocked(
      absl::string_view id, absl::string_view tenant_id,
      const std::vector<std::string>& devices, uint64_t pin_budget_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases the ledger's pins of `m` (the backend mapping is already gone).
  void ForgetMappingLocked(const MappingRecord& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sum of the budgets of `tenant`'s containers on this node.
  uint64_t NodeBudgetLocked(const std::string& tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static v1::Mapping MappingToProto(const MappingRecord& m);
  // Up to `limit` mappings of `mappings` after `after` (all when nullopt),
  // only `session_id`'s when it is non-empty, into `out`; returns the next
  // page's token ("" when none remain).
  static std::string PageOf(const std::map<uint64_t, MappingRecord>& mappings,
                            const std::string& session_id, std::optional<uint64_t> after,
                            size_t limit, std::vector<v1::Mapping>* out);
  std::vector<v1::PinUsage> UsageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tenants with ledger usage or kernel-counted bytes, sorted.
  std::vector<std::string> UsageTenantsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets the windows and takes the mappings now outside them into
  // `revoke` (see UnmapRuns); returns how many were taken.
  absl::StatusOr<size_t> SetWindowsLocked(const std::string& container_id,
                                          std::vector<IovaRange> windows,
                                          std::vector<DrainRun>* revoke)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- teardown without mu_ (agent_core_mappings.cc) ----
  // Moves the mappings of `held` that `pick` selects out of its live table
  // into runs: maximal IOVA ranges holding only picked mappings (gaps with no
  // mapping included, never a draining range) and reserves each range in
  // `held.draining`. Appends to `out`.
  void TakeRunsLocked(const std::string& container_id, Held& held,
                      absl::FunctionRef<bool(const MappingRecord&)> pick,
                      std::vector<DrainRun>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unmaps each run with one backend call made without mu_, then settles it
  // under mu_. Returns the mappings unmapped; failures are logged as `event`.
  size_t UnmapRuns(std::vector<DrainRun> runs, absl::string_view event,
                   absl::string_view reason) ABSL_LOCKS_EXCLUDED(mu_);
  // After the backend answered `unmapped` for `run`: lifts the reservation
  // and releases the pins when the kernel no longer holds the mappings (the
  // unmap succeeded, or the container's address space is gone); otherwise
  // puts the records back into their container, still billed.
  void SettleRunLocked(DrainRun& run, const absl::StatusOr<uint64_t>& unmapped,
                       absl::string_view event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FAILED_PRECONDITION "iova: ..." when [iova, last] overlaps a range of
  // `held` being unmapped; OK otherwise.
  static absl::Status CheckNotDraining(const Held& held, uint64_t iova, uint64_t last);
  // Drops the container (the backend already destroyed it) and the pins of
  // its live mappings.
  void FinishDestroyLocked(std::map<std::string, Held, std::less<>>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The session, if it exists and its container incarnation still does;
  // else NOT_FOUND / FAILED_PRECONDITION naming "session".
  absl::StatusOr<Session*> LiveSessionLocked(const std::string& session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DestroyLocked(absl::string_view id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<v1::AgentContainer> ContainersLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static v1::AgentContainer ToProto(const std::string& id, const Held& held);

  // ---- persistence (agent_core_restart.cc) ----
  // Puts the container's kernel objects in the fd store and journals it.
  // On failure nothing stays in the store; the caller destroys the container.
  absl::Status PersistContainerLocked(const std::string& id, Held& held)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets a destroyed container in the journal and the fd store.
  void ForgetContainerLocked(const std::string& id, const Held& held)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status JournalSessionLocked(const std::string& id, const Session& s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores the memory's fd and journals it; fills memory.fd_name.
  absl::Status PersistMemoryLocked(const std::string& id, Memory& memory)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status JournalMappingLocked(const std::string& container_id, const MappingRecord& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetMappingsLocked(const std::string& container_id, const std::vector<uint64_t>& iovas)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets a closed session (journal, memory fds in the store).
  void ForgetSessionLocked(const std::string& id, const std::vector<std::string>& memory_fd_names)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An orphaned container whose kernel objects are released: true when the
  // backend can create its devices' address space again (the probe is
  // destroyed at once). Releases the orphan's billing then.
  bool OrphanReleasedLocked(const std::string& id, Held& held) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::string node_;
  const std::string incarnation_;
  Backend* const backend_;
  AgentCoreObserver* const observer_;  // May be null.

  absl::Mutex mu_;
  std::map<std::string, Held, std::less<>> containers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Memory> memory_ ABSL_GUARDED_BY(mu_);  // By memory id.
  std::map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  Ledger ledger_ ABSL_GUARDED_BY(mu_);
  std::string grant_key_ ABSL_GUARDED_BY(mu_);
  size_t max_mappings_per_tenant_ ABSL_GUARDED_BY(mu_) = kDefaultMaxMappingsPerTenant;
  // Bytes the kernel counts for the mappings, by the mapping session's tenant.
  KernelPinAccount kernel_pins_ ABSL_GUARDED_BY(mu_);
  // Mappings by the tenant of the session that made them; only non-zero.
  std::map<std::string, size_t> mappings_per_tenant_ ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  // Refusal warnings, rate-limited per tenant.
  LogLimiter warnings_ ABSL_GUARDED_BY(mu_);
  StateJournal* journal_ ABSL_GUARDED_BY(mu_) = nullptr;  // Not owned; may be null.
  FdStore* fd_store_ ABSL_GUARDED_BY(mu_) = nullptr;      // Not owned; may be null.
  bool keep_for_restart_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_CORE_H_
