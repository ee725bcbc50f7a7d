// Randomized model test of AgentCore's map path over the real SimBackend
// (DESIGN.md invariants 2, 3, 4, 7, 8).
//
// Each seed runs a few thousand random operations across three tenants, four
// containers (with pin budgets, some small so that quota refusals happen),
// four launcher sessions and six guest memory objects: RegisterMemory (with
// right and wrong sizes), MapMemory (valid and invalid offsets, lengths and
// IOVAs, overlaps, ranges straddling the MSI window, another session's
// memory), Unmap (whole mappings, ranges cutting one, empty ranges, another
// session's mappings), CloseSession, SetBudgets, DestroyContainer + recreate,
// SetWindows (growing and shrinking each container's windows, revoking the
// mappings left outside), and backend faults injected with
// SimBackend::set_next_error.
//
// Each session is opened on one container incarnation (OpenSession) with the
// windows its grant names; a map must lie wholly inside one of those and one
// of the container's current windows. Once its container is destroyed (even
// if recreated under the same id) a session is dead: every call on it is
// FAILED_PRECONDITION until the launcher reconnects (a new session).
//
// A small reference model predicts the exact status code (and a substring of
// its message) of every operation. After EVERY step the test compares, with
// the model:
//   * AgentCore::Usage() (billed and mapped bytes per tenant);
//   * AgentCore::GetContainer() of every container (tenant, budget, mappings);
//   * the backend's own SimBackend::ListMappings() of every held container's
//     handle (the sim numbers handles 1, 2, ... in creation order, so the test
//     knows each container's handle without any API change), including the
//     host address each mapping pins;
//   * billed bytes recomputed from the backend's mappings alone (distinct
//     pinned pages per owning tenant: invariant 3 on the "kernel" state);
//   * AgentCore::SessionMappings() of every open session;
//   * AgentCore::SessionDevices() of every session (live, dead or refused).
// A refused operation must leave all of that unchanged (the model does not
// change), and a map refused for quota must be refused exactly when the model
// says billed + newly billed > the owner's node budget (invariant 4).
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/agent_core.h"
#include "agent/log.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "common/validation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using Code = absl::StatusCode;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMax = ~uint64_t{0};

// Groups: 5 = {04.0}, 6 = {05.0, 05.1}, 8 = {07.0}, 9 = {08.0}.
constexpr char kDevices[] =
    "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,"
    "0000:00:05.1=1234:11e9@6,0000:00:07.0=1af4:1041@8,"
    "0000:00:08.0=1af4:1041@9";

const char* const kTenants[] = {"acme", "globex", "initech"};
constexpr int kNumTenants = 3;

struct ContainerSpec {
  const char* id;
  std::vector<std::string> devices;
};
const ContainerSpec kContainers[] = {
    {"c-0000000000000001", {"0000:00:04.0"}},
    {"c-0000000000000002", {"0000:00:07.0"}},
    {"c-0000000000000003", {"0000:00:08.0"}},
    {"c-0000000000000004", {"0000:00:05.0", "0000:00:05.1"}},
};
constexpr int kNumContainers = 4;
constexpr char kUnknownContainer[] = "c-00000000000000ff";

// Guest memory objects: sizes in pages. Small, so that pages collide often.
const uint64_t kObjectPages[] = {16, 32, 8, 64, 24, 48};
constexpr int kNumObjects = 6;
ObjectKey KeyOf(int obj) { return ObjectKey{7, 100 + static_cast<uint64_t>(obj)}; }
// The sim never touches the bytes: any page-aligned address stands in for the
// agent's own mapping of the memfd (as in MapPathTest).
uint64_t VaddrOf(int obj) { return 0x7f0000000000ULL + static_cast<uint64_t>(obj) * (1ULL << 32); }

constexpr int kNumSessions = 4;

// Pin budgets to pick from: zero, tiny (refusals), medium, plenty.
const uint64_t kBudgets[] = {0, 4 * kPage, 16 * kPage, 48 * kPage, 160 * kPage, 1ULL << 30};

// x86 defaults of the sim: usable [0, 0xfedfffff] and [0xfef00000, 2^39 - 1].
bool InsideUsable(uint64_t iova, uint64_t last) {
  return (last <= 0xfedfffffULL) || (iova >= 0xfef00000ULL && last <= 0x7fffffffffULL);
}

// Windows the broker may give a container (inclusive): two adjacent ones over
// the low IOVAs RandomIova mostly picks (so ranges straddle them), one around
// the MSI window and one over the top of the usable range (so the backend
// still refuses what the windows let through).
const IovaRange kWindows[] = {
    {0x0, 0x3ffff}, {0x40000, 0x7ffff}, {0xfed00000, 0xfeffffff}, {0x7fffff0000, 0x800000ffff}};

bool InsideOne(const std::vector<IovaRange>& windows, uint64_t iova, uint64_t last) {
  for (const IovaRange& w : windows) {
    if (iova >= w.start && last <= w.last) return true;
  }
  return false;
}

// ------------------------------------------------------------------ model

struct MMapping {
  uint64_t size = 0;
  std::string session;
  std::string memory_id;
  int obj = -1;
  uint64_t offset = 0;
  bool readable = false;
  bool writable = false;
  std::string owner;
};

struct MContainer {
  bool held = false;
  std::string tenant;
  uint64_t budget = 0;
  ContainerHandle handle = 0;
  std::map<uint64_t, MMapping> mappings;  // By IOVA.
  std::vector<IovaRange> windows;         // None until SetWindows.
};

struct MObject {
  bool known = false;  // The ledger knows it (registered or still mapped).
  std::string owner;
  uint64_t size = 0;
  int refs = 0;
  int live = 0;           // Live mappings.
  std::vector<int> pins;  // Per-page pin counts.
};

struct MMemory {
  std::string session;
  int obj = -1;
  uint64_t size = 0;
};

struct MSession {
  std::string id;
  std::string tenant;
  std::vector<std::string> memory_ids;
  bool open = false;  // OpenSession succeeded (the core knows the id).
  int container = -1;
  ContainerHandle handle = 0;  // The incarnation it was opened on.
  std::vector<IovaRange> grants;
};

struct Expected {
  Code code = Code::kOk;
  std::string substr;
};

std::string Describe(const absl::Status& s) { return s.ToString(); }

class Harness {
 public:
  explicit Harness(uint32_t seed) : rng_(seed) {
    absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
    EXPECT_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> backend = SimBackend::Create(*std::move(specs));
    EXPECT_OK(backend);
    backend_ = *std::move(backend);
    core_ = std::make_unique<AgentCore>("n1", backend_.get());
    objects_.resize(kNumObjects);
    sessions_.resize(kNumSessions);
  }

  // ---------------------------------------------------------------- setup

  // Creates every container with a random tenant, budget and windows, then
  // opens the sessions. Returns "" or the first mismatch.
  std::string CreateAll() {
    for (int c = 0; c < kNumContainers; ++c) {
      const std::string tenant = kTenants[Uniform(kNumTenants)];
      const uint64_t budget = kBudgets[Uniform(std::size(kBudgets))];
      absl::StatusOr<v1::AgentContainer> got =
          core_->CreateContainer(kContainers[c].id, tenant, kContainers[c].devices, budget);
      EXPECT_OK(got);
      MContainer& m = model_[c];
      m.held = true;
      m.tenant = tenant;
      m.budget = budget;
      m.handle = next_handle_++;
      std::string err = SetRandomWindows(c);
      if (!err.empty()) return err;
    }
    for (int s = 0; s < kNumSessions; ++s) {
      std::string err = NewSession(s);
      if (!err.empty()) return err;
    }
    return "";
  }

  // One random operation. Returns "" or a description of the first mismatch
  // between AgentCore and the model.
  std::string Step() {
    const int pick = Uniform(100);
    if (pick < 10) return OpRegister();
    if (pick < 58) return OpMap();
    if (pick < 81) return OpUnmap();
    if (pick < 83) return OpCloseSession();
    if (pick < 87) return OpSetBudgets();
    if (pick < 91) return OpSetWindows();
    if (pick < 94) return OpDestroyAndRecreate();
    if (pick < 96) return OpCreateExisting();
    return OpInjectedFault();
  }

  // Everything observable against the model.
  std::string CheckState() {
    std::ostringstream err;
    // Usage.
    std::map<std::string, std::pair<uint64_t, uint64_t>> want = ModelUsage();
    std::map<std::string, std::pair<uint64_t, uint64_t>> got;
    // What the kernel counts: every mapping in full, for the tenant of the
    // session (= the container's tenant) that made it.
    std::map<std::string, uint64_t> want_kernel;
    for (const MContainer& c : model_) {
      for (const auto& [iova, m] : c.mappings) want_kernel[c.tenant] += m.size;
    }
    std::map<std::string, uint64_t> got_kernel;
    for (const v1::PinUsage& u : core_->Usage()) {
      if (got.count(u.tenant_id()) || got_kernel.count(u.tenant_id())) {
        err << "Usage lists " << u.tenant_id() << " twice; ";
      }
      if (u.kernel_counted_bytes() != 0) got_kernel[u.tenant_id()] = u.kernel_counted_bytes();
      if (u.billed_bytes() == 0 && u.mapped_bytes() == 0) {
        // Listed for mapping memory another tenant owns: kernel-counted only.
        if (u.kernel_counted_bytes() == 0) {
          err << "Usage lists " << u.tenant_id() << " with zero usage; ";
        }
        continue;
      }
      got[u.tenant_id()] = {u.billed_bytes(), u.mapped_bytes()};
    }
    if (got != want) {
      err << "Usage: got " << UsageText(got) << " want " << UsageText(want) << "; ";
    }
    if (got_kernel != want_kernel) err << "Usage: kernel-counted bytes differ from the model; ";
    // Containers, their mappings, and the backend's view of them.
    std::map<int, std::vector<std::pair<uint64_t, uint64_t>>> backend_pins;  // obj -> ranges
    for (int c = 0; c < kNumContainers; ++c) {
      const MContainer& m = model_[c];
      absl::StatusOr<v1::AgentGetContainerResponse> gc = core_->GetContainer(kContainers[c].id);
      if (!m.held) {
        if (gc.status().code() != Code::kNotFound) {
          err << kContainers[c].id << ": want NOT_FOUND, got " << Describe(gc.status()) << "; ";
        }
        continue;
      }
      if (!gc.ok()) {
        err << kContainers[c].id << ": " << Describe(gc.status()) << "; ";
        continue;
      }
      if (gc->container().tenant_id() != m.tenant) {
        err << kContainers[c].id << " tenant " << gc->container().tenant_id() << " want "
            << m.tenant << "; ";
      }
      if (gc->container().pin_budget_bytes() != m.budget) {
        err << kContainers[c].id << " budget " << gc->container().pin_budget_bytes() << " want "
            << m.budget << "; ";
      }
      if (static_cast<size_t>(gc->mappings_size()) != m.mappings.size()) {
        err << kContainers[c].id << " has " << gc->mappings_size() << " mappings, want "
            << m.mappings.size() << "; ";
      } else {
        auto it = m.mappings.begin();
        for (const v1::Mapping& g : gc->mappings()) {
          const MMapping& w = it->second;
          if (g.iova() != it->first || g.size() != w.size || g.session_id() != w.session ||
              g.memory_id() != w.memory_id || g.offset() != w.offset ||
              g.readable() != w.readable || g.writable() != w.writable ||
              g.owner_tenant() != w.owner) {
            err << kContainers[c].id << " mapping " << g.ShortDebugString() << " want iova "
                << Hex(it->first) << " " << MappingText(w) << "; ";
          }
          ++it;
        }
      }
      // The backend's own list for this container's handle.
      absl::StatusOr<std::vector<BackendMapping>> bm = backend_->ListMappings(m.handle);
      if (!bm.ok()) {
        err << kContainers[c].id << " handle " << m.handle
            << " ListMappings: " << Describe(bm.status()) << "; ";
        continue;
      }
      if (bm->size() != m.mappings.size()) {
        err << kContainers[c].id << " backend has " << bm->size() << " mappings, want "
            << m.mappings.size() << "; ";
      } else {
        auto it = m.mappings.begin();
        for (const BackendMapping& b : *bm) {
          const MMapping& w = it->second;
          if (b.iova != it->first || b.size != w.size || b.vaddr != VaddrOf(w.obj) + w.offset ||
              b.readable != w.readable || b.writable != w.writable) {
            err << kContainers[c].id << " backend mapping iova " << Hex(b.iova) << " size "
                << Hex(b.size) << " vaddr " << Hex(b.vaddr) << " want iova " << Hex(it->first)
                << " " << MappingText(w) << "; ";
          }
          ++it;
        }
      }
      for (const BackendMapping& b : *bm) {
        for (int o = 0; o < kNumObjects; ++o) {
          if (b.vaddr >= VaddrOf(o) && b.vaddr < VaddrOf(o) + (1ULL << 32)) {
            backend_pins[o].push_back({b.vaddr - VaddrOf(o), b.size});
          }
        }
      }
    }
    // Invariant 3 on the backend's state: billed = distinct pinned pages of
    // the memory each tenant owns.
    std::map<std::string, uint64_t> billed_from_backend;
    for (const auto& [o, ranges] : backend_pins) {
      std::set<uint64_t> pages;
      for (const auto& [off, size] : ranges) {
        for (uint64_t p = off / kPage; p < (off + size) / kPage; ++p) pages.insert(p);
      }
      if (!objects_[o].known) {
        err << "backend pins unknown object " << o << "; ";
        continue;
      }
      billed_from_backend[objects_[o].owner] += pages.size() * kPage;
    }
    for (int t = 0; t < kNumTenants; ++t) {
      const uint64_t from_backend = billed_from_backend[kTenants[t]];
      const uint64_t reported = got.count(kTenants[t]) ? got[kTenants[t]].first : 0;
      if (from_backend != reported) {
        err << "tenant " << kTenants[t] << " billed " << reported
            << " but the backend pins " << from_backend << " bytes of its memory; ";
      }
    }
    // Session mappings, by container then IOVA.
    for (const MSession& s : sessions_) {
      std::vector<v1::Mapping> sm = core_->SessionMappings(s.id);
      std::vector<std::string> want_list, got_list;
      for (int c = 0; c < kNumContainers; ++c) {
        for (const auto& [iova, m] : model_[c].mappings) {
          if (m.session == s.id) want_list.push_back(absl::StrCat(Hex(iova), "+", Hex(m.size)));
        }
      }
      for (const v1::Mapping& g : sm) got_list.push_back(absl::StrCat(Hex(g.iova()), "+", Hex(g.size())));
      if (got_list != want_list) {
        err << "SessionMappings(" << s.id << ") got " << got_list.size() << " want "
            << want_list.size() << "; ";
      }
      // Its container's devices while it lives; FAILED_PRECONDITION once the
      // container incarnation is gone; NOT_FOUND if it never opened.
      absl::StatusOr<std::vector<std::string>> devices = core_->SessionDevices(s.id);
      const Expected want_devices = PredictSession(s.id);
      if (const std::string m = Match(devices.status(), want_devices); !m.empty()) {
        err << "SessionDevices(" << s.id << ") " << m;
      } else if (devices.ok() && *devices != kContainers[s.container].devices) {
        err << "SessionDevices(" << s.id << ") lists other devices; ";
      }
    }
    return err.str();
  }

  // Every handle the sim ever issued: held containers' handles list their
  // mappings, every other one is gone (nothing leaked in the "kernel").
  std::string CheckAllHandles() {
    std::ostringstream err;
    std::map<ContainerHandle, int> held;
    for (int c = 0; c < kNumContainers; ++c) {
      if (model_[c].held) held[model_[c].handle] = c;
    }
    for (ContainerHandle h = 1; h < next_handle_ + 3; ++h) {
      absl::StatusOr<std::vector<BackendMapping>> bm = backend_->ListMappings(h);
      if (held.count(h)) {
        if (!bm.ok() || bm->size() != model_[held[h]].mappings.size()) {
          err << "handle " << h << ": " << (bm.ok() ? "wrong count" : Describe(bm.status()))
              << "; ";
        }
      } else if (bm.status().code() != Code::kNotFound) {
        err << "handle " << h << " should not exist, got " << Describe(bm.status()) << "; ";
      }
    }
    return err.str();
  }

  const std::string& last_op() const { return last_op_; }
  std::map<std::string, int>& outcomes() { return outcomes_; }

  // Tears every session down, then every container; the ledger must end
  // empty.
  std::string Drain() {
    for (int s = 0; s < kNumSessions; ++s) {
      core_->CloseSession(sessions_[s].id);
      ModelCloseSession(s, /*fail_first=*/false);
      if (std::string err = NewSession(s); !err.empty()) return absl::StrCat("drain: ", err);
    }
    for (int c = 0; c < kNumContainers; ++c) {
      if (!model_[c].held) continue;
      if (absl::Status s = core_->DestroyContainer(kContainers[c].id); !s.ok()) {
        return absl::StrCat("drain destroy: ", Describe(s));
      }
      ModelDestroy(c);
    }
    std::string err = CheckState();
    if (!core_->Usage().empty()) err += "Usage not empty after drain; ";
    for (int o = 0; o < kNumObjects; ++o) {
      if (objects_[o].known) err += absl::StrCat("model still knows object ", o, "; ");
    }
    return err + CheckAllHandles();
  }

 private:
  // -------------------------------------------------------------- helpers

  int Uniform(size_t n) { return static_cast<int>(std::uniform_int_distribution<size_t>(0, n - 1)(rng_)); }
  uint64_t UniformU64(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }
  bool Chance(int percent) { return Uniform(100) < percent; }

  // A launcher connects with a token for a random container: usually of the
  // container's tenant and naming the container's current windows; sometimes
  // another tenant's (refused), another window set (the grant predates a
  // change), or a container not held (refused).
  std::string NewSession(int s) {
    MSession& sess = sessions_[s];
    sess = MSession{};
    sess.id = absl::StrCat("s-", s, "-", ++session_gen_);
    sess.container = Uniform(kNumContainers);
    const MContainer& mc = model_[sess.container];
    sess.tenant = mc.held && Chance(92) ? mc.tenant : kTenants[Uniform(kNumTenants)];
    sess.grants = Chance(75) ? mc.windows : RandomWindows();
    last_op_ = absl::StrCat("OpenSession(", sess.id, ", ", kContainers[sess.container].id, ", ",
                            sess.tenant, ", ", WindowsText(sess.grants), ")");
    Expected want;
    if (!mc.held) {
      want = {Code::kNotFound, "is not held by this node"};
    } else if (mc.tenant != sess.tenant) {
      want = {Code::kUnauthenticated, absl::StrCat("does not belong to tenant \"", sess.tenant)};
    }
    absl::Status got = core_->OpenSession(sess.id, kContainers[sess.container].id, sess.tenant,
                                          sess.grants).status();
    Count("open", got);
    if (std::string err = Match(got, want); !err.empty()) return err;
    sess.open = got.ok();
    sess.handle = mc.handle;
    return "";
  }

  // What the core says of a session before anything else.
  Expected PredictSession(const std::string& id) const {
    for (const MSession& s : sessions_) {
      if (s.id != id || !s.open) continue;
      const MContainer& mc = model_[s.container];
      if (!mc.held || mc.handle != s.handle) {
        return {Code::kFailedPrecondition,
                absl::StrCat("session: container ", kContainers[s.container].id,
                             " this session was opened on was destroyed")};
      }
      return {};
    }
    return {Code::kNotFound, absl::StrCat("session: no session \"", id, "\"")};
  }

  bool Live(int s) const { return PredictSession(sessions_[s].id).code == Code::kOk; }

  // The launcher of a session that is dead or was refused mostly reconnects.
  std::string Reconnect(int s) {
    core_->CloseSession(sessions_[s].id);
    ++outcomes_["reconnect"];
    ModelCloseSession(s, /*fail_first=*/false);
    return NewSession(s);
  }

  std::vector<IovaRange> RandomWindows() {
    std::vector<IovaRange> out;
    for (const IovaRange& w : kWindows) {
      if (Chance(75)) out.push_back(w);
    }
    return out;
  }

  static std::string WindowsText(const std::vector<IovaRange>& windows) {
    std::string out = "[";
    for (const IovaRange& w : windows) absl::StrAppend(&out, Hex(w.start), "-", Hex(w.last), " ");
    return out + "]";
  }

  // SetWindows on held container `c`: the model revokes exactly the mappings
  // not wholly inside one new window.
  // With `shrink`, one of the container's windows is released (if it has
  // any); else the windows are drawn afresh (growing, shrinking or both).
  std::string SetRandomWindows(int c, bool shrink = false) {
    std::vector<IovaRange> windows = RandomWindows();
    if (shrink && !model_[c].windows.empty()) {
      windows = model_[c].windows;
      windows.erase(windows.begin() + Uniform(windows.size()));
    }
    last_op_ = absl::StrCat("SetWindows(", kContainers[c].id, ", ", WindowsText(windows), ")");
    MContainer& mc = model_[c];
    std::vector<uint64_t> victims;
    for (const auto& [iova, m] : mc.mappings) {
      if (!InsideOne(windows, iova, iova + (m.size - 1))) victims.push_back(iova);
    }
    absl::StatusOr<size_t> got = core_->SetWindows(kContainers[c].id, windows);
    Count("set_windows", got.status());
    if (!got.ok()) return absl::StrCat("SetWindows: ", Describe(got.status()));
    if (*got != victims.size()) {
      return absl::StrCat("SetWindows revoked ", *got, " want ", victims.size(), "; ");
    }
    outcomes_["revoked"] += static_cast<int>(victims.size());
    for (uint64_t v : victims) ModelRemoveMapping(mc, mc.mappings.find(v));
    mc.windows = std::move(windows);
    return "";
  }

  static std::string MappingText(const MMapping& m) {
    return absl::StrCat("size ", Hex(m.size), " session ", m.session, " memory ", m.memory_id,
                        " obj ", m.obj, " offset ", Hex(m.offset), " r", m.readable, " w",
                        m.writable, " owner ", m.owner);
  }

  static std::string UsageText(const std::map<std::string, std::pair<uint64_t, uint64_t>>& u) {
    std::string out = "{";
    for (const auto& [t, v] : u) absl::StrAppend(&out, t, ":", v.first, "/", v.second, " ");
    return out + "}";
  }

  std::map<std::string, std::pair<uint64_t, uint64_t>> ModelUsage() const {
    std::map<std::string, std::pair<uint64_t, uint64_t>> out;
    for (const MObject& o : objects_) {
      if (!o.known) continue;
      uint64_t pinned = 0;
      for (int p : o.pins) pinned += p > 0;
      if (pinned) out[o.owner].first += pinned * kPage;
    }
    for (const MContainer& c : model_) {
      for (const auto& [iova, m] : c.mappings) out[m.owner].second += m.size;
    }
    for (auto it = out.begin(); it != out.end();) {
      if (it->second.first == 0 && it->second.second == 0) {
        it = out.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  uint64_t ModelBilled(const std::string& tenant) const {
    auto u = ModelUsage();
    auto it = u.find(tenant);
    return it == u.end() ? 0 : it->second.first;
  }

  uint64_t ModelNodeBudget(const std::string& tenant) const {
    uint64_t sum = 0;
    for (const MContainer& c : model_) {
      if (c.held && c.tenant == tenant) sum += c.budget;
    }
    return sum;
  }

  void MaybeForget(int obj) {
    MObject& o = objects_[obj];
    if (o.known && o.refs == 0 && o.live == 0) o = MObject{};
  }

  void ModelRemoveMapping(MContainer& c, std::map<uint64_t, MMapping>::iterator it) {
    MObject& o = objects_[it->second.obj];
    for (uint64_t p = it->second.offset / kPage; p < (it->second.offset + it->second.size) / kPage;
         ++p) {
      --o.pins[p];
    }
    --o.live;
    const int obj = it->second.obj;
    c.mappings.erase(it);
    MaybeForget(obj);
  }

  void ModelDestroy(int c) {
    MContainer& m = model_[c];
    while (!m.mappings.empty()) ModelRemoveMapping(m, m.mappings.begin());
    m = MContainer{};
  }

  // CloseSession: unmaps the session's mappings (containers by id, then by
  // IOVA; with `fail_first` the first backend unmap fails and that mapping
  // stays), then drops its memory references.
  void ModelCloseSession(int s, bool fail_first) {
    const std::string id = sessions_[s].id;
    // The core unmaps one backend call per IOVA run holding only this
    // session's mappings (another mapping or the container's end ends a
    // run); with fail_first the first run's call fails and all of its
    // mappings stay.
    bool failed = !fail_first;
    bool in_failing_run = false;
    for (MContainer& c : model_) {
      for (auto it = c.mappings.begin(); it != c.mappings.end();) {
        if (it->second.session != id) {
          if (in_failing_run) failed = true;
          in_failing_run = false;
          ++it;
          continue;
        }
        if (!failed) {
          in_failing_run = true;
          ++it;
          continue;
        }
        auto next = std::next(it);
        ModelRemoveMapping(c, it);
        it = next;
      }
      if (in_failing_run) failed = true;
      in_failing_run = false;
    }
    for (const std::string& mid : sessions_[s].memory_ids) {
      const int obj = memory_[mid].obj;
      memory_.erase(mid);
      --objects_[obj].refs;
      MaybeForget(obj);
      retired_memory_ids_.push_back(mid);
    }
    sessions_[s].memory_ids.clear();
  }

  static std::string Match(const absl::Status& got, const Expected& want) {
    if (got.code() == want.code && absl::StrContains(got.message(), want.substr)) return "";
    return absl::StrCat("got ", Describe(got), ", want ", absl::StatusCodeToString(want.code),
                        " containing \"", want.substr, "\"; ");
  }

  void Count(const std::string& op, const absl::Status& s) {
    ++outcomes_[absl::StrCat(op, ":", absl::StatusCodeToString(s.code()))];
  }

  // ----------------------------------------------------------- operations

  std::string OpRegister(int s = -1) {
    if (s < 0) s = Uniform(kNumSessions);
    if (!Live(s) && Chance(50)) return Reconnect(s);
    const int obj = Uniform(kNumObjects);
    uint64_t size = kObjectPages[obj] * kPage;
    const int variant = Uniform(100);
    if (variant < 4) {
      size = 0;
    } else if (variant < 8) {
      size -= 100;
    } else if (variant < 14) {
      size += kPage;  // Another size of the same object.
    }
    last_op_ = absl::StrCat("RegisterMemory(", sessions_[s].id, ", ", sessions_[s].tenant,
                            ", obj ", obj, ", size ", Hex(size), ")");
    MObject& o = objects_[obj];
    Expected want;
    if (size == 0 || size % kPage != 0) {
      want = {Code::kInvalidArgument, "fd: memory size must be a non-zero multiple of 4096"};
    } else if (Expected session = PredictSession(sessions_[s].id); session.code != Code::kOk) {
      want = session;
    } else if (o.known && o.size != size) {
      want = {Code::kFailedPrecondition, absl::StrCat("size: object ", KeyOf(obj).DebugString())};
    }
    absl::StatusOr<MemoryInfo> got = core_->RegisterMemory(
        sessions_[s].id, sessions_[s].tenant,
        GuestMemoryRegion{KeyOf(obj), size, VaddrOf(obj), nullptr}, "guest");
    Count(absl::StartsWith(want.substr, "session:") ? "register-session" : "register",
          got.status());
    std::string err = Match(got.status(), want);
    if (!err.empty() || !got.ok()) return err;
    const bool was_known = o.known;
    if (!o.known) {
      o.known = true;
      o.owner = sessions_[s].tenant;
      o.size = size;
      o.pins.assign(size / kPage, 0);
    }
    ++o.refs;
    if (got->shared != was_known) err += absl::StrCat("shared ", got->shared, " want ", was_known, "; ");
    if (got->owner_tenant != o.owner) {
      err += absl::StrCat("owner ", got->owner_tenant, " want ", o.owner, "; ");
    }
    if (got->size != size) err += "size differs; ";
    if (memory_.count(got->memory_id)) err += "memory id reused; ";
    memory_[got->memory_id] = MMemory{sessions_[s].id, obj, size};
    sessions_[s].memory_ids.push_back(got->memory_id);
    return err;
  }

  uint64_t RandomIova() {
    const int v = Uniform(100);
    if (v < 80) return UniformU64(0, 127) * kPage;
    if (v < 88) return 0xfedf0000ULL + UniformU64(0, 40) * kPage;  // Around the MSI window.
    if (v < 91) return 0x7fffff0000ULL + UniformU64(0, 32) * kPage;  // Around the top.
    if (v < 95) return UniformU64(0, 127) * kPage + 0x800;           // Misaligned.
    return kMax - UniformU64(0, 3) * kPage - (kPage - 1);            // Overflows.
  }

  std::string OpMap() {
    const int s = Uniform(kNumSessions);
    if (!Live(s) && Chance(75)) return Reconnect(s);
    const MSession& sess = sessions_[s];
    // Mostly the session's own container.
    const int c = Chance(85) && sess.container >= 0 ? sess.container : Uniform(kNumContainers);
    // A session without memory mostly registers some first.
    if (sess.memory_ids.empty() && Chance(90)) return OpRegister(s);
    std::string memory_id;
    const int mv = Uniform(100);
    if (mv < 85 && !sess.memory_ids.empty()) {
      memory_id = sess.memory_ids[Uniform(sess.memory_ids.size())];
    } else if (mv < 88 && !memory_.empty()) {
      auto it = memory_.begin();
      std::advance(it, Uniform(memory_.size()));
      memory_id = it->first;  // Perhaps another session's memory.
    } else if (mv < 94 && !retired_memory_ids_.empty()) {
      memory_id = retired_memory_ids_[Uniform(retired_memory_ids_.size())];
    } else {
      memory_id = "m-0000000000000000";
    }
    const uint64_t size_pages =
        memory_.count(memory_id) ? memory_[memory_id].size / kPage : 16;
    uint64_t offset = UniformU64(0, size_pages) * kPage;
    uint64_t length = UniformU64(1, std::max<uint64_t>(1, size_pages / 2)) * kPage;
    const int lv = Uniform(100);
    if (lv < 3) {
      length = 0;
    } else if (lv < 6) {
      length += 0x800;
    } else if (lv < 9) {
      offset += 0x200;
    } else if (lv < 12) {
      length = size_pages * kPage;
      offset = 0;
    }
    if (offset == size_pages * kPage && !Chance(20)) offset = 0;
    const uint64_t iova = RandomIova();
    bool readable = Chance(80), writable = Chance(80);
    if (!readable && !writable && Chance(50)) readable = true;
    last_op_ = absl::StrCat("MapMemory(", sess.id, ", ", kContainers[c].id, ", ", memory_id,
                            ", offset ", Hex(offset), ", length ", Hex(length), ", iova ",
                            Hex(iova), ", r", readable, " w", writable, ")");
    bool quota_refusal = false;
    Expected want = PredictMap(s, c, memory_id, offset, length, iova, readable, writable,
                               &quota_refusal);
    absl::Status got = core_->MapMemory(sess.id, kContainers[c].id, memory_id, offset, length,
                                        iova, readable, writable);
    Count(quota_refusal                                           ? "map-quota"
          : absl::StrContains(want.substr, "outside every window") ? "map-window"
                                                                    : "map",
          got);
    std::string err = Match(got, want);
    // Invariant 4, stated on its own: a quota refusal happens exactly when
    // the model says the owner would pass its node budget.
    if ((got.code() == Code::kResourceExhausted) != quota_refusal) {
      err += absl::StrCat("quota refusal ", got.code() == Code::kResourceExhausted,
                          " but model says ", quota_refusal, "; ");
    }
    if (!got.ok() || !err.empty()) return err;
    ModelMap(s, c, memory_id, offset, length, iova, readable, writable);
    return "";
  }

  Expected PredictMap(int s, int c, const std::string& memory_id, uint64_t offset,
                      uint64_t length, uint64_t iova, bool readable, bool writable,
                      bool* quota_refusal) {
    const MContainer& mc = model_[c];
    if (Expected session = PredictSession(sessions_[s].id); session.code != Code::kOk) {
      return session;
    }
    if (sessions_[s].container != c) {
      return {Code::kPermissionDenied, absl::StrCat("container_id: ", kContainers[c].id,
                                                    " is not the container of session ",
                                                    sessions_[s].id)};
    }
    auto mem = memory_.find(memory_id);
    if (mem == memory_.end() || mem->second.session != sessions_[s].id) {
      return {Code::kNotFound, absl::StrCat("memory_id: this session has no memory \"",
                                            memory_id, "\"")};
    }
    if (!readable && !writable) return {Code::kInvalidArgument, "readable, writable:"};
    if (offset % kPage) return {Code::kInvalidArgument, "offset: must be a multiple"};
    if (length % kPage) return {Code::kInvalidArgument, "length: must be a multiple"};
    if (iova % kPage) return {Code::kInvalidArgument, "iova: must be a multiple"};
    if (length == 0) return {Code::kInvalidArgument, "length: must be greater than 0"};
    const uint64_t size = mem->second.size;
    if (offset > size || length > size - offset) {
      return {Code::kInvalidArgument, "passes the end of memory"};
    }
    if (length - 1 > kMax - iova) return {Code::kInvalidArgument, "overflows 64 bits"};
    if (!InsideOne(sessions_[s].grants, iova, iova + (length - 1)) ||
        !InsideOne(mc.windows, iova, iova + (length - 1))) {
      return {Code::kPermissionDenied,
              absl::StrCat("iova: ", Hex(iova), "+", Hex(length),
                           " is outside every window of the session")};
    }
    const MObject& o = objects_[mem->second.obj];
    uint64_t newly = 0;
    for (uint64_t p = offset / kPage; p < (offset + length) / kPage; ++p) newly += o.pins[p] == 0;
    newly *= kPage;
    const uint64_t billed = ModelBilled(o.owner);
    const uint64_t budget = ModelNodeBudget(o.owner);
    // billed + newly > budget, without overflow.
    if (newly > 0 && (billed > budget || newly > budget - billed)) {
      *quota_refusal = true;
      return {Code::kResourceExhausted,
              absl::StrCat("would bill tenant \"", o.owner, "\" ", Hex(newly), " more bytes; it has ",
                           Hex(billed), " billed of its ", Hex(budget))};
    }
    const uint64_t last = iova + (length - 1);
    if (!InsideUsable(iova, last)) {
      return {Code::kInvalidArgument, "is not inside one usable range"};
    }
    for (const auto& [m_iova, m] : mc.mappings) {
      if (m_iova <= last && m_iova + m.size - 1 >= iova) {
        return {Code::kAlreadyExists, "overlaps mapping"};
      }
    }
    return {};
  }

  void ModelMap(int s, int c, const std::string& memory_id, uint64_t offset, uint64_t length,
                uint64_t iova, bool readable, bool writable) {
    const MMemory& mem = memory_[memory_id];
    MObject& o = objects_[mem.obj];
    for (uint64_t p = offset / kPage; p < (offset + length) / kPage; ++p) ++o.pins[p];
    ++o.live;
    MMapping m;
    m.size = length;
    m.session = sessions_[s].id;
    m.memory_id = memory_id;
    m.obj = mem.obj;
    m.offset = offset;
    m.readable = readable;
    m.writable = writable;
    m.owner = o.owner;
    model_[c].mappings[iova] = m;
  }

  // The mappings [iova, iova + length) would unmap, or the expected error.
  Expected PredictUnmap(int c, uint64_t iova, uint64_t length, const std::string& session,
                        std::vector<uint64_t>* victims, uint64_t* bytes) {
    const MContainer& mc = model_[c];
    if (!session.empty()) {
      if (Expected live = PredictSession(session); live.code != Code::kOk) return live;
      for (const MSession& s : sessions_) {
        if (s.id == session && s.container != c) {
          return {Code::kPermissionDenied, "is not the container of session"};
        }
      }
    }
    if (!mc.held) return {Code::kNotFound, "container_id: "};
    if (length == 0) return {Code::kInvalidArgument, "length: must be greater than 0"};
    if (length - 1 > kMax - iova) return {Code::kInvalidArgument, "overflows 64 bits"};
    const uint64_t last = iova + (length - 1);
    for (const auto& [m_iova, m] : mc.mappings) {
      const uint64_t m_last = m_iova + (m.size - 1);
      if (m_iova > last || m_last < iova) continue;
      if (m_iova < iova || m_last > last) return {Code::kInvalidArgument, "unmap whole mappings"};
      if (!session.empty() && m.session != session) {
        return {Code::kPermissionDenied, "holds a mapping of another session"};
      }
      victims->push_back(m_iova);
      *bytes += m.size;
    }
    if (victims->empty()) return {Code::kNotFound, "iova: no mapping inside"};
    return {};
  }

  std::string OpUnmap() {
    const int c = Uniform(kNumContainers);
    const int s = Uniform(kNumSessions);
    std::string session = sessions_[s].id;
    const MContainer& mc = model_[c];
    uint64_t iova = 0, length = 0;
    const int v = Uniform(100);
    if (v < 55 && !mc.mappings.empty()) {
      auto it = mc.mappings.begin();
      std::advance(it, Uniform(mc.mappings.size()));
      iova = it->first;
      length = it->second.size;
      if (Chance(80)) session = it->second.session;  // Usually the owner asks.
      const int cut = Uniform(100);
      if (cut < 10 && length > kPage) {
        iova += kPage;
        length -= kPage;  // Cuts the mapping's head off.
      } else if (cut < 15) {
        length += kPage;  // Whole mapping and maybe a neighbour's head.
      } else if (cut < 22 && iova >= kPage) {
        iova -= kPage;  // Maybe a neighbour's tail, then the whole mapping.
        length += kPage;
      }
    } else if (v < 85) {
      iova = UniformU64(0, 127) * kPage;
      length = UniformU64(1, 48) * kPage;
    } else if (v < 90) {
      iova = UniformU64(0, 127) * kPage;
      length = 0;
    } else if (v < 95) {
      iova = kMax - kPage + 1;
      length = 2 * kPage;
    } else {
      iova = 0;
      length = 1ULL << 40;  // Everything in the low range.
    }
    if (Chance(12)) session.clear();  // The node-side unmap: any session.
    last_op_ = absl::StrCat("Unmap(", kContainers[c].id, ", iova ", Hex(iova), ", length ",
                            Hex(length), ", session \"", session, "\")");
    std::vector<uint64_t> victims;
    uint64_t bytes = 0;
    Expected want = PredictUnmap(c, iova, length, session, &victims, &bytes);
    absl::StatusOr<uint64_t> got = core_->Unmap(kContainers[c].id, iova, length, session);
    Count("unmap", got.status());
    std::string err = Match(got.status(), want);
    if (!err.empty() || !got.ok()) return err;
    if (*got != bytes) err += absl::StrCat("unmapped ", *got, " bytes, want ", bytes, "; ");
    for (uint64_t victim : victims) {
      ModelRemoveMapping(model_[c], model_[c].mappings.find(victim));
    }
    return err;
  }

  std::string OpCloseSession() {
    const int s = Uniform(kNumSessions);
    last_op_ = absl::StrCat("CloseSession(", sessions_[s].id, ")");
    core_->CloseSession(sessions_[s].id);
    ++outcomes_["close"];
    ModelCloseSession(s, /*fail_first=*/false);
    return NewSession(s);
  }

  // The broker's windows for a container change (or a push for a container
  // the node does not hold).
  std::string OpSetWindows() {
    const int c = Uniform(kNumContainers + 1);
    if (c < kNumContainers && model_[c].held) return SetRandomWindows(c, /*shrink=*/Chance(50));
    const char* id = c < kNumContainers ? kContainers[c].id : kUnknownContainer;
    last_op_ = absl::StrCat("SetWindows(", id, ", not held)");
    absl::StatusOr<size_t> got = core_->SetWindows(id, RandomWindows());
    Count("set_windows", got.status());
    return Match(got.status(), {Code::kNotFound, "is not held by this node"});
  }

  std::string OpSetBudgets() {
    std::vector<v1::ContainerBudget> budgets;
    const int n = 1 + Uniform(3);
    last_op_ = "SetBudgets(";
    for (int i = 0; i < n; ++i) {
      v1::ContainerBudget b;
      const int c = Uniform(kNumContainers + 1);
      b.set_container_id(c == kNumContainers ? kUnknownContainer : kContainers[c].id);
      b.set_pin_budget_bytes(kBudgets[Uniform(std::size(kBudgets))]);
      absl::StrAppend(&last_op_, b.container_id(), "=", Hex(b.pin_budget_bytes()), " ");
      budgets.push_back(b);
    }
    last_op_ += ")";
    core_->SetBudgets(budgets);
    ++outcomes_["set_budgets"];
    for (const v1::ContainerBudget& b : budgets) {
      for (int c = 0; c < kNumContainers; ++c) {
        if (b.container_id() == kContainers[c].id && model_[c].held) {
          model_[c].budget = b.pin_budget_bytes();
        }
      }
    }
    return "";
  }

  std::string OpDestroyAndRecreate() {
    const int c = Uniform(kNumContainers);
    last_op_ = absl::StrCat("DestroyContainer(", kContainers[c].id, ")");
    std::string err;
    const ContainerHandle old_handle = model_[c].handle;
    absl::Status destroyed = core_->DestroyContainer(kContainers[c].id);
    Count("destroy", destroyed);
    if (!model_[c].held) {
      err += Match(destroyed, {Code::kNotFound, "is not held by this node"});
    } else {
      err += Match(destroyed, {});
      if (destroyed.ok()) {
        ModelDestroy(c);
        // The sim dropped the address space with its mappings.
        if (backend_->ListMappings(old_handle).status().code() != Code::kNotFound) {
          err += absl::StrCat("handle ", old_handle, " survived its container; ");
        }
      }
    }
    if (!err.empty()) return err;
    if (Chance(10)) return CheckState();  // Stay destroyed for a while.
    err = CheckState();
    if (!err.empty()) return absl::StrCat("after destroy: ", err);
    return Recreate(c);
  }

  std::string Recreate(int c) {
    const std::string tenant = kTenants[Uniform(kNumTenants)];
    const uint64_t budget = kBudgets[Uniform(std::size(kBudgets))];
    last_op_ = absl::StrCat("CreateContainer(", kContainers[c].id, ", ", tenant, ", ",
                            Hex(budget), ")");
    absl::StatusOr<v1::AgentContainer> got =
        core_->CreateContainer(kContainers[c].id, tenant, kContainers[c].devices, budget);
    Count("create", got.status());
    if (!got.ok()) return absl::StrCat("recreate: ", Describe(got.status()));
    model_[c].held = true;
    model_[c].tenant = tenant;
    model_[c].budget = budget;
    model_[c].handle = next_handle_++;
    // The broker tells a new container its windows; now and then it stays
    // without any for a while (nothing can be mapped into it).
    if (Chance(10)) return "";
    return SetRandomWindows(c);
  }

  // CreateContainer on an id already held: same spec updates the budget,
  // another tenant is ALREADY_EXISTS and changes nothing.
  std::string OpCreateExisting() {
    const int c = Uniform(kNumContainers);
    if (!model_[c].held) return Recreate(c);
    const std::string tenant = kTenants[Uniform(kNumTenants)];
    const uint64_t budget = kBudgets[Uniform(std::size(kBudgets))];
    last_op_ = absl::StrCat("CreateContainer(existing ", kContainers[c].id, ", ", tenant, ", ",
                            Hex(budget), ")");
    absl::StatusOr<v1::AgentContainer> got =
        core_->CreateContainer(kContainers[c].id, tenant, kContainers[c].devices, budget);
    Count("create_existing", got.status());
    if (tenant == model_[c].tenant) {
      std::string err = Match(got.status(), {});
      if (got.ok()) model_[c].budget = budget;
      return err;
    }
    return Match(got.status(), {Code::kAlreadyExists, "already exists with tenant"});
  }

  // A backend fault on an operation the model says would reach the backend:
  // it must fail with the backend's error and change nothing (or, for
  // CloseSession, leave exactly the mapping whose unmap failed).
  std::string OpInjectedFault() {
    const int kind = Uniform(5);
    if (kind == 0) {
      // Map: find a map the model says succeeds.
      for (int attempt = 0; attempt < 20; ++attempt) {
        const int s = Uniform(kNumSessions);
        if (sessions_[s].memory_ids.empty() || !sessions_[s].open) continue;
        const int c = sessions_[s].container;
        const std::string memory_id =
            sessions_[s].memory_ids[Uniform(sessions_[s].memory_ids.size())];
        const uint64_t pages = memory_[memory_id].size / kPage;
        const uint64_t offset = UniformU64(0, pages - 1) * kPage;
        const uint64_t length = UniformU64(1, pages - offset / kPage) * kPage;
        const uint64_t iova = UniformU64(0, 127) * kPage;
        bool quota = false;
        if (PredictMap(s, c, memory_id, offset, length, iova, true, true, &quota).code !=
            Code::kOk) {
          continue;
        }
        last_op_ = absl::StrCat("MapMemory with injected EIO (", sessions_[s].id, ", ",
                                kContainers[c].id, ", ", memory_id, ", offset ", Hex(offset),
                                ", length ", Hex(length), ", iova ", Hex(iova), ")");
        backend_->set_next_error(SimOp::kMap, EIO);
        absl::Status got = core_->MapMemory(sessions_[s].id, kContainers[c].id, memory_id,
                                            offset, length, iova, true, true);
        Count("map-fault", got);
        return Match(got, {Code::kInternal, "injected by set_next_error"});
      }
      return "";
    }
    if (kind == 1) {
      // Unmap of a whole mapping.
      for (int c = 0; c < kNumContainers; ++c) {
        const MContainer& mc = model_[c];
        if (mc.mappings.empty()) continue;
        auto it = mc.mappings.begin();
        std::advance(it, Uniform(mc.mappings.size()));
        last_op_ = absl::StrCat("Unmap with injected EIO (", kContainers[c].id, ", iova ",
                                Hex(it->first), ")");
        // The owner, or the node when the owner is gone (a session whose
        // close failed to unmap this).
        const std::string session =
            PredictSession(it->second.session).code == Code::kOk ? it->second.session : "";
        backend_->set_next_error(SimOp::kUnmap, EIO);
        absl::StatusOr<uint64_t> got = core_->Unmap(kContainers[c].id, it->first, it->second.size,
                                                     session);
        Count("unmap-fault", got.status());
        return Match(got.status(), {Code::kInternal, "injected by set_next_error"});
      }
      return "";
    }
    if (kind == 2) {
      // DestroyContainer of a held container.
      const int c = Uniform(kNumContainers);
      if (!model_[c].held) return "";
      last_op_ = absl::StrCat("DestroyContainer with injected EIO (", kContainers[c].id, ")");
      backend_->set_next_error(SimOp::kDestroyContainer, EIO);
      absl::Status got = core_->DestroyContainer(kContainers[c].id);
      Count("destroy-fault", got);
      return Match(got, {Code::kInternal, "injected by set_next_error"});
    }
    if (kind == 3) {
      // SetWindows whose first revocation fails: the mappings of that
      // backend call (the first IOVA run of victims not interrupted by a
      // kept mapping) stay mapped and billed, the others are revoked.
      for (int c = 0; c < kNumContainers; ++c) {
        MContainer& mc = model_[c];
        if (mc.mappings.empty()) continue;
        std::vector<IovaRange> windows = RandomWindows();
        std::vector<uint64_t> victims;
        for (const auto& [iova, m] : mc.mappings) {
          if (!InsideOne(windows, iova, iova + (m.size - 1))) victims.push_back(iova);
        }
        if (victims.empty()) windows.clear();
        victims.clear();
        for (const auto& [iova, m] : mc.mappings) {
          if (!InsideOne(windows, iova, iova + (m.size - 1))) victims.push_back(iova);
        }
        last_op_ = absl::StrCat("SetWindows with injected EIO (", kContainers[c].id, ", ",
                                WindowsText(windows), ")");
        size_t first_run = 0;  // Victims in the failing first run.
        for (auto it = mc.mappings.find(victims[0]); it != mc.mappings.end(); ++it) {
          if (first_run == victims.size() || it->first != victims[first_run]) break;
          ++first_run;
        }
        backend_->set_next_error(SimOp::kUnmap, EIO);
        absl::StatusOr<size_t> got = core_->SetWindows(kContainers[c].id, windows);
        Count("set_windows-fault", got.status());
        if (!got.ok()) return absl::StrCat("SetWindows: ", Describe(got.status()));
        if (*got != victims.size() - first_run) {
          return absl::StrCat("SetWindows revoked ", *got, " want ", victims.size() - first_run,
                              "; ");
        }
        for (size_t i = first_run; i < victims.size(); ++i) {
          ModelRemoveMapping(mc, mc.mappings.find(victims[i]));
        }
        outcomes_["revoked"] += static_cast<int>(victims.size() - first_run);
        mc.windows = std::move(windows);
        return "";
      }
      return "";
    }
    // CloseSession whose first unmap fails: that mapping stays (and stays
    // billed, the backend still holds it); the rest go.
    for (int s = 0; s < kNumSessions; ++s) {
      bool has_mapping = false;
      for (const MContainer& mc : model_) {
        for (const auto& [iova, m] : mc.mappings) has_mapping |= m.session == sessions_[s].id;
      }
      if (!has_mapping) continue;
      last_op_ = absl::StrCat("CloseSession with injected EIO (", sessions_[s].id, ")");
      backend_->set_next_error(SimOp::kUnmap, EIO);
      core_->CloseSession(sessions_[s].id);
      ++outcomes_["close-fault"];
      ModelCloseSession(s, /*fail_first=*/true);
      return NewSession(s);
    }
    return "";
  }

  std::mt19937 rng_;
  std::unique_ptr<SimBackend> backend_;
  std::unique_ptr<AgentCore> core_;

  MContainer model_[kNumContainers];
  ContainerHandle next_handle_ = 1;  // The sim's numbering.
  std::vector<MObject> objects_;
  std::map<std::string, MMemory> memory_;  // By memory id.
  std::vector<MSession> sessions_;
  std::vector<std::string> retired_memory_ids_;
  int session_gen_ = 0;
  std::string last_op_;
  std::map<std::string, int> outcomes_;
};

constexpr int kSteps = 3000;

class AgentCoreRandomTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  static void SetUpTestSuite() { SetMinLogLevel(LogLevel::kError); }
};

TEST_P(AgentCoreRandomTest, LedgerBackendAndBudgetsFollowTheModelAfterEveryStep) {
  const uint32_t seed = GetParam();
  Harness h(seed);
  ASSERT_EQ(h.CreateAll(), "") << "seed " << seed << " setup: " << h.last_op();
  ASSERT_EQ(h.CheckState(), "") << "seed " << seed << " after setup";
  for (int step = 0; step < kSteps; ++step) {
    const std::string op_err = h.Step();
    ASSERT_EQ(op_err, "") << "seed " << seed << " step " << step << ": " << h.last_op();
    const std::string state_err = h.CheckState();
    ASSERT_EQ(state_err, "") << "seed " << seed << " step " << step << " after " << h.last_op();
  }
  ASSERT_EQ(h.CheckAllHandles(), "") << "seed " << seed;
  ASSERT_EQ(h.Drain(), "") << "seed " << seed;

  // The run must have exercised what it claims to: successes and each kind
  // of refusal.
  std::map<std::string, int>& n = h.outcomes();
  std::string summary;
  for (const auto& [k, v] : n) absl::StrAppend(&summary, k, "=", v, " ");
  RecordProperty("outcomes", summary);
  EXPECT_GT(n["register:OK"], 0) << summary;
  EXPECT_GT(n["register:FAILED_PRECONDITION"], 0) << summary;
  EXPECT_GT(n["map:OK"], 50) << summary;
  EXPECT_GT(n["map-quota:RESOURCE_EXHAUSTED"], 10) << summary;
  EXPECT_GT(n["map:ALREADY_EXISTS"], 0) << summary;
  EXPECT_GT(n["map:INVALID_ARGUMENT"], 0) << summary;
  EXPECT_GT(n["map:NOT_FOUND"], 0) << summary;
  EXPECT_GT(n["map:PERMISSION_DENIED"], 0) << summary;       // Another container.
  EXPECT_GT(n["map:FAILED_PRECONDITION"], 0) << summary;     // A dead session.
  EXPECT_GT(n["map-window:PERMISSION_DENIED"], 10) << summary;
  // How many revocations land depends on thread timing; at least one must.
  EXPECT_GT(n["revoked"], 0) << summary;
  EXPECT_GT(n["open:UNAUTHENTICATED"] + n["open:NOT_FOUND"], 0) << summary;
  EXPECT_GT(n["register-session:FAILED_PRECONDITION"], 0) << summary;  // A dead session.
  EXPECT_GT(n["unmap:FAILED_PRECONDITION"], 0) << summary;
  EXPECT_GT(n["unmap:OK"], 20) << summary;
  EXPECT_GT(n["unmap:INVALID_ARGUMENT"], 0) << summary;
  EXPECT_GT(n["unmap:NOT_FOUND"], 0) << summary;
  EXPECT_GT(n["unmap:PERMISSION_DENIED"], 0) << summary;
  EXPECT_GT(n["destroy:OK"], 0) << summary;
  EXPECT_GT(n["map-fault:INTERNAL"] + n["unmap-fault:INTERNAL"], 0) << summary;
}

INSTANTIATE_TEST_SUITE_P(Seeds, AgentCoreRandomTest, ::testing::Values(1u, 2u, 3u, 4u, 5u));

// A SimBackend whose k-th Unmap call (1-based) fails, for faults that
// SimBackend::set_next_error (which fails the NEXT call) cannot place: the
// second backend unmap of one AgentCore::Unmap or CloseSession.
class NthUnmapFailsBackend final : public Backend {
 public:
  explicit NthUnmapFailsBackend(SimBackend* sim) : sim_(sim) {}
  void FailUnmapCall(int k) {
    fail_at_ = k;
    calls_ = 0;
  }
  absl::string_view kind() const override { return sim_->kind(); }
  bool simulated() const override { return true; }
  absl::StatusOr<std::vector<BackendDevice>> ListDevices() override { return sim_->ListDevices(); }
  absl::StatusOr<ContainerHandle> CreateContainer(const std::vector<std::string>& d) override {
    return sim_->CreateContainer(d);
  }
  absl::StatusOr<Geometry> GetGeometry(ContainerHandle h) override { return sim_->GetGeometry(h); }
  absl::Status DestroyContainer(ContainerHandle h) override { return sim_->DestroyContainer(h); }
  absl::Status Map(ContainerHandle h, uint64_t iova, uint64_t vaddr, uint64_t size, bool r,
                   bool w) override {
    return sim_->Map(h, iova, vaddr, size, r, w);
  }
  absl::StatusOr<uint64_t> Unmap(ContainerHandle h, uint64_t iova, uint64_t size) override {
    if (++calls_ == fail_at_) return absl::InternalError("injected unmap failure");
    return sim_->Unmap(h, iova, size);
  }
  absl::StatusOr<std::vector<BackendMapping>> ListMappings(ContainerHandle h) override {
    return sim_->ListMappings(h);
  }

 private:
  SimBackend* const sim_;
  int fail_at_ = 0;
  int calls_ = 0;
};

class AgentCoreUnmapFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetMinLogLevel(LogLevel::kError);
    absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
    ASSERT_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> sim = SimBackend::Create(*std::move(specs));
    ASSERT_OK(sim);
    sim_ = *std::move(sim);
    backend_ = std::make_unique<NthUnmapFailsBackend>(sim_.get());
    core_ = std::make_unique<AgentCore>("n1", backend_.get());
    ASSERT_OK(core_->CreateContainer(kContainers[0].id, "acme", kContainers[0].devices, 1ULL << 30));
    ASSERT_OK(core_->SetWindows(kContainers[0].id, {kWindows[0]}));
    ASSERT_OK(core_->OpenSession("s1", kContainers[0].id, "acme", {kWindows[0]}));
    absl::StatusOr<MemoryInfo> mem = core_->RegisterMemory(
        "s1", "acme", GuestMemoryRegion{KeyOf(0), 16 * kPage, VaddrOf(0), nullptr}, "guest");
    ASSERT_OK(mem);
    memory_id_ = mem->memory_id;
    // Three mappings of distinct pages: 0x0 (pages 0-1), 0x4000 (2-3), 0x8000 (4-5).
    for (uint64_t i = 0; i < 3; ++i) {
      ASSERT_OK(core_->MapMemory("s1", kContainers[0].id, memory_id_, 2 * i * kPage, 2 * kPage,
                                 4 * i * kPage, true, true));
    }
  }

  // The ledger, AgentCore's mapping table and the backend agree.
  void ExpectInStep(size_t want_mappings) {
    absl::StatusOr<std::vector<BackendMapping>> in_backend = sim_->ListMappings(1);
    ASSERT_OK(in_backend);
    EXPECT_EQ(in_backend->size(), want_mappings);
    absl::StatusOr<v1::AgentGetContainerResponse> held = core_->GetContainer(kContainers[0].id);
    ASSERT_OK(held);
    ASSERT_EQ(static_cast<size_t>(held->mappings_size()), in_backend->size());
    uint64_t bytes = 0;
    for (size_t i = 0; i < in_backend->size(); ++i) {
      EXPECT_EQ(held->mappings(i).iova(), (*in_backend)[i].iova);
      bytes += (*in_backend)[i].size;
    }
    uint64_t billed = 0, mapped = 0;
    for (const v1::PinUsage& u : core_->Usage()) {
      billed += u.billed_bytes();
      mapped += u.mapped_bytes();
    }
    EXPECT_EQ(billed, bytes);  // The three mappings pin distinct pages.
    EXPECT_EQ(mapped, bytes);
  }

  std::unique_ptr<SimBackend> sim_;
  std::unique_ptr<NthUnmapFailsBackend> backend_;
  std::unique_ptr<AgentCore> core_;
  std::string memory_id_;
};

TEST_F(AgentCoreUnmapFaultTest, UnmapFailingKeepsLedgerInStepWithBackend) {
  // One backend call for the whole range (no longer one per mapping): when
  // it fails nothing was unmapped, and all three stay mapped and billed.
  backend_->FailUnmapCall(1);
  EXPECT_THAT(core_->Unmap(kContainers[0].id, 0, 12 * kPage, "s1"),
              StatusIs(Code::kInternal, "injected unmap failure"));
  ExpectInStep(3);
  backend_->FailUnmapCall(0);
  ASSERT_OK(core_->Unmap(kContainers[0].id, 0, 12 * kPage, "s1"));
  ExpectInStep(0);
}

TEST_F(AgentCoreUnmapFaultTest, CloseSessionFailingKeepsItsRunBilledAndDestroyFreesIt) {
  // The three mappings are one IOVA run (only empty IOVA between them): one
  // backend call, and when it fails all three stay counted while the
  // backend holds them.
  backend_->FailUnmapCall(1);
  core_->CloseSession("s1");
  ExpectInStep(3);
  ASSERT_OK(core_->DestroyContainer(kContainers[0].id));
  EXPECT_THAT(core_->Usage(), ::testing::IsEmpty());
}

}  // namespace
}  // namespace agent
}  // namespace iommu
