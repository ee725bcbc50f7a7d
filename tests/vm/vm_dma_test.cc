// vm_dma_test: runs INSIDE a QEMU VM (tests/vm/vm_e2e.sh starts the broker and an agent
// with a real backend first) and proves, with real DMA from QEMU edu devices through the
// emulated Intel IOMMU, that the product's path works end to end:
//
//   a) setup through the broker's gRPC API: tenant + quota, container on the first edu
//      device with a pin budget, a window at a fixed base below 256 MiB, a grant;
//   b) the launcher path: session, memfd, two maps, GetDevices -> exactly one VFIO device
//      fd and no iommufd / container / group fd in this process;
//   c) DMA RAM -> device -> RAM through the mappings; after an unmap the IOMMU blocks it;
//   d) bad input and the pin budget: PERMISSION_DENIED, INVALID_ARGUMENT,
//      RESOURCE_EXHAUSTED with the agent's mappings and ledger unchanged;
//   e) two containers (two edu devices) mapping the same memfd: billed once, mapped twice,
//      and DMA through both reaches the same host page;
//   f) the agent restarts (kill -9, then SIGTERM + start: an upgrade) while the launcher
//      DMAs in a loop: no transfer fails, the container stays READY with the same mappings
//      and billing, the launcher resumes its session with its resume token; a launcher that
//      died while the agent was down is released after --session-resume-timeout and billing
//      follows; deleting the container afterwards cuts the DMA of the device fd the launcher
//      still holds.
//   h) (issue 12) the kernel counts pins per mapping: restarted with a finite RLIMIT_MEMLOCK
//      and without CAP_IPC_LOCK (--agent_memlock_restart_cmd), the agent first refuses to
//      start without --kernel-pin-bytes-per-tenant (its message is checked), then with
//      it maps one page again and again up to the share, refuses the next map with
//      RESOURCE_EXHAUSTED before the kernel, and the kernel's VmLck + VmPin for the agent
//      equals the per-mapping sum (not the one page billed).
//
// Prints one "check.<name>=PASS|FAIL ..." line per check and "vm_dma_test: PASS|FAIL"; exits
// non-zero on any failure.
//
//   vm_dma_test --broker=127.0.0.1:7400 --node=vm1 --socket=/run/iommu-agent/launcher.sock
//               --agent_pid_file=/tmp/agent.pid --agent_restart_cmd=/tmp/start_agent.sh
//               [--parts=abcdef] [--agent_memlock_restart_cmd=/tmp/start_agent_memlock.sh]
#include <dirent.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "grpcpp/grpcpp.h"
#include "launcher/client.h"
#include "proto/agent.grpc.pb.h"
#include "proto/broker.grpc.pb.h"

namespace {

using iommu::UniqueFd;
using iommu::launcher::LauncherClient;
using iommu::launcher::LauncherDevices;
namespace v1 = iommu::v1;

constexpr uint64_t kPage = 4096;
constexpr uint32_t kXfer = 4095;  // QEMU 7.2's edu aborts the VM on 4096.
constexpr uint64_t kEduBuf = 0x40000;
constexpr uint64_t kWinBase = 0x1000000;  // 16 MiB: below edu's 28-bit DMA mask.
constexpr uint64_t kWinSize = 0x200000;
constexpr uint64_t kIovaA = kWinBase;
constexpr uint64_t kIovaB = kWinBase + kPage;
constexpr uint64_t kQuota = 8 * kPage;   // tenant pinned quota
constexpr uint64_t kBudget = 4 * kPage;  // each container's pin budget
const char kTenant[] = "vmdma";

// ------------------------------------------------------------------ reporting
int g_failures = 0;
int g_checks = 0;

void Check(const std::string& name, bool ok, const std::string& detail = "") {
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("check.%s=%s%s%s\n", name.c_str(), ok ? "PASS" : "FAIL", detail.empty() ? "" : " ",
              detail.c_str());
  std::fflush(stdout);
}

void Info(const std::string& key, const std::string& value) {
  std::printf("info.%s=%s\n", key.c_str(), value.c_str());
  std::fflush(stdout);
}

std::string Hex(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%" PRIx64, v);
  return b;
}

std::string St(const absl::Status& s) {
  return s.ok() ? "OK" : absl::StatusCodeToString(s.code()) + ": " + std::string(s.message());
}
std::string St(const grpc::Status& s) {
  return s.ok() ? "OK" : absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())) +
                             ": " + s.error_message();
}

[[noreturn]] void Abort(const std::string& why) {
  std::printf("vm_dma_test: FAIL (aborted: %s) after %d checks, %d failed\n", why.c_str(),
              g_checks, g_failures + 1);
  std::fflush(stdout);
  std::exit(1);
}

// Returns false after `timeout_ms` without `pred()` holding.
bool PollUntil(int timeout_ms, const std::function<bool()>& pred) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return c;
}

// ------------------------------------------------------------------ edu via a VFIO device fd
struct Edu {
  int fd = -1;
  uint64_t cfg_off = 0, bar0_off = 0;
  std::string err;

  bool Region(uint32_t index, uint64_t* off) {
    vfio_region_info ri{};
    ri.argsz = sizeof ri;
    ri.index = index;
    if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &ri) != 0) {
      err = "VFIO_DEVICE_GET_REGION_INFO(" + std::to_string(index) + "): " + strerror(errno);
      return false;
    }
    *off = ri.offset;
    return true;
  }
  bool Rd32(uint64_t reg, uint32_t* v) {
    if (pread(fd, v, 4, bar0_off + reg) != 4) {
      err = "pread BAR0+" + Hex(reg) + ": " + strerror(errno);
      return false;
    }
    return true;
  }
  bool Wr(uint64_t reg, uint64_t v, int width) {
    if (pwrite(fd, &v, width, bar0_off + reg) != width) {
      err = "pwrite BAR0+" + Hex(reg) + ": " + strerror(errno);
      return false;
    }
    return true;
  }
  // Memory decoding + bus mastering on, edu id checked.
  bool Setup() {
    if (!Region(VFIO_PCI_CONFIG_REGION_INDEX, &cfg_off)) return false;
    if (!Region(VFIO_PCI_BAR0_REGION_INDEX, &bar0_off)) return false;
    uint16_t cmd = 0;
    if (pread(fd, &cmd, 2, cfg_off + 4) != 2) return err = "pread COMMAND", false;
    cmd |= 0x2 | 0x4;
    if (pwrite(fd, &cmd, 2, cfg_off + 4) != 2) return err = "pwrite COMMAND", false;
    if (pread(fd, &cmd, 2, cfg_off + 4) != 2) return err = "pread COMMAND", false;
    if (!(cmd & 0x4)) return err = "bus mastering did not stick", false;
    uint32_t id = 0;
    if (!Rd32(0, &id)) return false;
    if ((id & 0xff) != 0xed) return err = "BAR0 id " + Hex(id) + " is not an edu", false;
    return true;
  }
  // One DMA; cmd bit 1 = device -> RAM. Waits for completion (20 s).
  bool Dma(uint64_t src, uint64_t dst, uint32_t cnt, bool to_ram) {
    if (!Wr(0x80, src, 8) || !Wr(0x88, dst, 8) || !Wr(0x90, cnt, 8)) return false;
    if (!Wr(0x98, 1u | (to_ram ? 2u : 0u), 4)) return false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (true) {
      uint32_t c = 0;
      if (!Rd32(0x98, &c)) return false;
      if (!(c & 1)) return true;
      if (std::chrono::steady_clock::now() > deadline) {
        err = "DMA " + Hex(src) + " -> " + Hex(dst) + " did not complete in 20 s";
        return false;
      }
      usleep(1000);
    }
  }
};

void Fill(uint8_t* p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
}

size_t FirstDiff(const uint8_t* a, const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i]) return i;
  return n;
}

size_t CountNonZero(const uint8_t* p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) c += p[i] != 0;
  return c;
}

// ------------------------------------------------------------------ fd scan
// Links in /proc/self/fd that are IOMMU-side fds: /dev/iommu, /dev/vfio/vfio,
// /dev/vfio/<group number>.
std::vector<std::string> IommuSideFds() {
  std::vector<std::string> bad;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return {"opendir /proc/self/fd failed"};
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char path[300], target[512];
    std::snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = 0;
    std::string t(target);
    bool group = t.rfind("/dev/vfio/", 0) == 0 && t.size() > 10 &&
                 t.find_first_not_of("0123456789", 10) == std::string::npos;
    if (t == "/dev/iommu" || t == "/dev/vfio/vfio" || group) {
      bad.push_back(std::string(e->d_name) + "->" + t);
    }
  }
  closedir(d);
  return bad;
}

std::string FdList() {
  std::string out;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return "?";
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char path[300], target[512];
    std::snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = 0;
    if (!out.empty()) out += ",";
    out += std::string(e->d_name) + ":" + target;
  }
  closedir(d);
  return out;
}

// ------------------------------------------------------------------ test context
struct Options {
  std::string broker = "127.0.0.1:7400";
  std::string node = "vm1";
  std::string socket = "/run/iommu-agent/launcher.sock";
  std::string agent_pid_file = "/tmp/agent.pid";
  std::string agent_restart_cmd;
  std::string parts = "abcdef";
  // Part h: starts the agent with a finite RLIMIT_MEMLOCK, no CAP_IPC_LOCK and
  // --kernel-pin-bytes-per-tenant=kKernelPinShare, after an attempt without the flag whose
  // output and status it leaves in kMemlockRefusedLog.
  std::string agent_memlock_restart_cmd;
};

struct Memory {
  UniqueFd fd;
  uint8_t* p = nullptr;
  uint64_t size = 0;
  std::string id;  // in the session it was registered in
};

class Test {
 public:
  explicit Test(Options o) : o_(std::move(o)) {
    broker_ = v1::Broker::NewStub(
        grpc::CreateChannel(o_.broker, grpc::InsecureChannelCredentials()));
  }
  int Run();

 private:
  bool Part(char c) const { return o_.parts.find(c) != std::string::npos; }

  // Broker / agent helpers.
  absl::StatusOr<v1::Node> GetNode() {
    v1::GetNodeRequest r;
    r.set_node(o_.node);
    v1::Node n;
    grpc::Status s = broker_->GetNode(Ctx().get(), r, &n);
    if (!s.ok()) return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return n;
  }
  v1::Agent::Stub* AgentStub() {
    absl::StatusOr<v1::Node> n = GetNode();
    if (!n.ok()) return nullptr;
    if (n->agent_address() != agent_address_ || !agent_) {
      agent_address_ = n->agent_address();
      agent_ = v1::Agent::NewStub(
          grpc::CreateChannel(agent_address_, grpc::InsecureChannelCredentials()));
    }
    return agent_.get();
  }
  // Agent ledger for the tenant: {billed, mapped}; {-1,-1} on error.
  std::pair<int64_t, int64_t> AgentUsage(std::string* err = nullptr) {
    v1::Agent::Stub* a = AgentStub();
    if (a == nullptr) return {-1, -1};
    v1::GetInventoryResponse inv;
    grpc::Status s = a->GetInventory(Ctx().get(), v1::GetInventoryRequest(), &inv);
    if (!s.ok()) {
      if (err) *err = St(s);
      return {-1, -1};
    }
    for (const v1::PinUsage& u : inv.usage()) {
      if (u.tenant_id() == kTenant) return {int64_t(u.billed_bytes()), int64_t(u.mapped_bytes())};
    }
    return {0, 0};
  }
  // "iova+size,..." of the agent's mappings of container `c`.
  std::string AgentMappings(const std::string& c, int* count = nullptr) {
    v1::Agent::Stub* a = AgentStub();
    if (a == nullptr) return "ERR(no agent)";
    v1::AgentGetContainerRequest r;
    r.set_container_id(c);
    v1::AgentGetContainerResponse resp;
    grpc::Status s = a->GetContainer(Ctx().get(), r, &resp);
    if (!s.ok()) return "ERR(" + St(s) + ")";
    std::string out;
    for (const v1::Mapping& m : resp.mappings()) {
      if (!out.empty()) out += ",";
      out += Hex(m.iova()) + "+" + Hex(m.size());
    }
    if (count) *count = resp.mappings_size();
    return out.empty() ? "none" : out;
  }
  std::pair<int64_t, int64_t> BrokerUsage() {
    v1::GetUsageRequest r;
    r.set_tenant_id(kTenant);
    v1::GetUsageResponse resp;
    grpc::Status s = broker_->GetUsage(Ctx().get(), r, &resp);
    if (!s.ok() || resp.tenants_size() != 1) return {-1, -1};
    return {int64_t(resp.tenants(0).pinned_bytes()), int64_t(resp.tenants(0).mapped_bytes())};
  }

  absl::StatusOr<std::string> MakeContainer(const std::string& device, const std::string& tag);
  absl::StatusOr<std::string> Grant(const std::string& container);
  absl::StatusOr<Memory> NewMemory(LauncherClient* c, uint64_t size, const std::string& name);
  bool OpenEdu(LauncherClient* c, const std::string& tag, UniqueFd* fd_out, Edu* edu);
  bool RoundTrip(const std::string& tag, Edu* edu, uint64_t src_iova, uint64_t dst_iova,
                 const uint8_t* want, uint8_t* dst);

  void PartA();
  void PartB();
  void PartC();
  void PartD();
  void PartE();
  void PartF();
  bool RestartAgent(const std::string& tag, int signal, const std::string& container);
  bool ResumeSession1(const std::string& tag);
  void PartH();

  Options o_;
  std::unique_ptr<v1::Broker::Stub> broker_;
  std::unique_ptr<v1::Agent::Stub> agent_;
  std::string agent_address_;
  std::vector<std::string> devices_;
  std::string c1_, c2_, token1_;
  std::string session1_, resume1_;  // Session 1, for ResumeSession after an agent restart.
  std::unique_ptr<LauncherClient> s1_, s2_;
  Memory m1_;
  UniqueFd dev0_fd_, dev1_fd_;
  Edu edu0_, edu1_;
  bool c_ok_ = false;
};

absl::StatusOr<std::string> Test::MakeContainer(const std::string& device, const std::string& tag) {
  v1::CreateContainerRequest r;
  r.set_tenant_id(kTenant);
  r.set_node(o_.node);
  r.add_devices(device);
  r.set_pin_budget_bytes(kBudget);
  v1::Container c;
  grpc::Status s = broker_->CreateContainer(Ctx().get(), r, &c);
  Check(tag + ".create_container", s.ok() && c.state() == v1::CONTAINER_STATE_READY,
        "status=" + St(s) + " id=" + c.id() + " device=" + device +
            " state=" + v1::ContainerState_Name(c.state()) + " budget=" + Hex(c.pin_budget_bytes()));
  if (!s.ok()) return absl::InternalError("CreateContainer: " + St(s));
  std::string ranges;
  for (const auto& u : c.geometry().usable_ranges()) {
    ranges += "[" + Hex(u.start()) + "-" + Hex(u.last()) + "]";
  }
  Info(tag + ".geometry", "usable=" + ranges + " page_sizes=" + Hex(c.geometry().page_size_bitmap()) +
                              " max_mappings=" + std::to_string(c.geometry().max_mappings()));
  v1::AllocateWindowRequest w;
  w.set_container_id(c.id());
  w.set_size(kWinSize);
  w.set_fixed_base(true);
  w.set_base(kWinBase);
  v1::Window win;
  s = broker_->AllocateWindow(Ctx().get(), w, &win);
  Check(tag + ".allocate_window", s.ok() && win.base() == kWinBase && win.size() == kWinSize,
        "status=" + St(s) + " id=" + win.id() + " base=" + Hex(win.base()) + " size=" + Hex(win.size()));
  if (!s.ok()) return absl::InternalError("AllocateWindow: " + St(s));
  return c.id();
}

absl::StatusOr<std::string> Test::Grant(const std::string& container) {
  v1::GrantLauncherRequest g;
  g.set_container_id(container);
  g.set_ttl_seconds(600);
  v1::GrantLauncherResponse gr;
  grpc::Status s = broker_->GrantLauncher(Ctx().get(), g, &gr);
  if (!s.ok()) return absl::InternalError("GrantLauncher: " + St(s));
  if (gr.token().empty() || gr.windows_size() != 1) {
    return absl::InternalError("GrantLauncher: token empty or windows=" +
                               std::to_string(gr.windows_size()));
  }
  return gr.token();
}

absl::StatusOr<Memory> Test::NewMemory(LauncherClient* c, uint64_t size, const std::string& name) {
  Memory m;
  absl::StatusOr<UniqueFd> fd = LauncherClient::CreateMemfd(size, name);
  if (!fd.ok()) return fd.status();
  m.fd = *std::move(fd);
  m.size = size;
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd.get(), 0);
  if (p == MAP_FAILED) return absl::InternalError(std::string("mmap memfd: ") + strerror(errno));
  m.p = static_cast<uint8_t*>(p);
  if (c != nullptr) {
    auto r = c->RegisterMemory(m.fd.get(), name);
    if (!r.ok()) return r.status();
    m.id = r->memory_id();
  }
  return m;
}

bool Test::OpenEdu(LauncherClient* c, const std::string& tag, UniqueFd* fd_out, Edu* edu) {
  absl::StatusOr<LauncherDevices> d = c->GetDevices();
  if (!d.ok()) {
    Check(tag + ".get_devices", false, St(d.status()));
    return false;
  }
  bool one = d->fds.size() == 1 && d->addresses.size() == 1;
  std::string addr = d->addresses.empty() ? "" : d->addresses[0];
  Check(tag + ".get_devices_one_fd", one,
        "fds=" + std::to_string(d->fds.size()) + " address=" + addr);
  if (d->fds.empty()) return false;
  *fd_out = std::move(d->fds[0]);
  vfio_device_info info{};
  info.argsz = sizeof info;
  int rc = ioctl(fd_out->get(), VFIO_DEVICE_GET_INFO, &info);
  int e = errno;
  Check(tag + ".vfio_device_get_info", rc == 0 && (info.flags & VFIO_DEVICE_FLAGS_PCI),
        rc == 0 ? "flags=" + Hex(info.flags) + " regions=" + std::to_string(info.num_regions) +
                      " irqs=" + std::to_string(info.num_irqs)
                : std::string("errno=") + std::to_string(e) + " " + strerror(e));
  edu->fd = fd_out->get();
  bool ok = edu->Setup();
  Check(tag + ".edu_bus_master", ok, ok ? "COMMAND memory+master on, id ok" : edu->err);
  return ok && one && rc == 0;
}

// DMA src_iova -> edu buffer -> dst_iova; dst must equal want over kXfer bytes and
// dst[kXfer] must be untouched (caller sets it).
bool Test::RoundTrip(const std::string& tag, Edu* edu, uint64_t src_iova, uint64_t dst_iova,
                     const uint8_t* want, uint8_t* dst) {
  uint8_t sentinel = dst[kXfer];
  if (!edu->Dma(src_iova, kEduBuf, kXfer, false) || !edu->Dma(kEduBuf, dst_iova, kXfer, true)) {
    Check(tag, false, edu->err);
    return false;
  }
  size_t i = FirstDiff(dst, want, kXfer);
  bool ok = i == kXfer && dst[kXfer] == sentinel;
  Check(tag, ok,
        "iova " + Hex(src_iova) + " -> edu -> " + Hex(dst_iova) + " bytes=" + std::to_string(kXfer) +
            (i == kXfer ? " identical" : " first_diff=" + std::to_string(i)) +
            (dst[kXfer] == sentinel ? "" : " byte_after_transfer_written"));
  return ok;
}

// ---------------------------------------------------------------- a) broker setup
void Test::PartA() {
  // The node and its edu devices.
  bool ready = PollUntil(20000, [&] {
    auto n = GetNode();
    return n.ok() && n->state() == v1::NODE_STATE_READY;
  });
  auto n = GetNode();
  Check("a.node_ready", ready,
        n.ok() ? "node=" + n->name() + " backend=" + n->backend() +
                     " simulated=" + (n->simulated() ? "true" : "false") +
                     " devices=" + std::to_string(n->device_count()) + " agent=" + n->agent_address()
               : St(n.status()));
  if (!ready) Abort("node not ready");
  Check("a.node_not_simulated", !n->simulated(), "backend=" + n->backend());
  Info("backend_reported_to_broker", n->backend());

  v1::ListDevicesRequest ld;
  ld.set_node(o_.node);
  v1::ListDevicesResponse devs;
  grpc::Status s = broker_->ListDevices(Ctx().get(), ld, &devs);
  std::string list;
  for (const v1::Device& d : devs.devices()) {
    list += d.address() + "(" + Hex(d.vendor_id()) + ":" + Hex(d.device_id()) + ",group " +
            std::to_string(d.iommu_group()) + "," + d.driver() + (d.assignable() ? ",ok" : ",NOT assignable:" + d.unassignable_reason()) + ") ";
    if (d.vendor_id() == 0x1234 && d.device_id() == 0x11e8 && d.assignable()) {
      devices_.push_back(d.address());
    }
  }
  std::sort(devices_.begin(), devices_.end());
  Check("a.list_devices", s.ok() && !devices_.empty(), "status=" + St(s) + " " + list);
  if (devices_.empty()) Abort("no assignable edu device");

  v1::CreateTenantRequest t;
  t.set_tenant_id(kTenant);
  t.mutable_quota()->set_pinned_bytes(kQuota);
  v1::Tenant tenant;
  s = broker_->CreateTenant(Ctx().get(), t, &tenant);
  Check("a.create_tenant", s.ok(), "status=" + St(s) + " pinned_quota=" + Hex(kQuota));
  if (!s.ok()) Abort("tenant");

  absl::StatusOr<std::string> c = MakeContainer(devices_[0], "a");
  if (!c.ok()) Abort(St(c.status()));
  c1_ = *c;
  absl::StatusOr<std::string> tok = Grant(c1_);
  Check("a.grant", tok.ok(), tok.ok() ? "token_len=" + std::to_string(tok->size()) : St(tok.status()));
  if (!tok.ok()) Abort("grant");
  token1_ = *tok;
}

// ---------------------------------------------------------------- b) launcher path
void Test::PartB() {
  absl::StatusOr<std::unique_ptr<LauncherClient>> c = LauncherClient::Connect(o_.socket);
  Check("b.connect", c.ok(), c.ok() ? o_.socket : St(c.status()));
  if (!c.ok()) Abort("connect");
  s1_ = *std::move(c);
  auto opened = s1_->OpenSession(token1_);
  Check("b.open_session", opened.ok() && opened->container_id() == c1_,
        opened.ok() ? "session=" + opened->session_id() + " container=" + opened->container_id() +
                          " windows=" + std::to_string(opened->windows_size())
                    : St(opened.status()));
  if (!opened.ok()) Abort("open session");
  session1_ = opened->session_id();
  resume1_ = opened->resume_token();
  absl::StatusOr<Memory> m = NewMemory(s1_.get(), 2 * kPage, "guest");
  Check("b.memfd_register", m.ok(), m.ok() ? "memory_id=" + m->id : St(m.status()));
  if (!m.ok()) Abort("memory");
  m1_ = *std::move(m);
  absl::Status ma = s1_->Map(m1_.id, 0, kPage, kIovaA, true, true);
  absl::Status mb = s1_->Map(m1_.id, kPage, kPage, kIovaB, true, true);
  Check("b.map_page0_at_A", ma.ok(), "iova=" + Hex(kIovaA) + " " + St(ma));
  Check("b.map_page1_at_B", mb.ok(), "iova=" + Hex(kIovaB) + " " + St(mb));
  if (!ma.ok() || !mb.ok()) Abort("map");
  auto u = AgentUsage();
  Check("b.agent_usage_after_maps", u.first == int64_t(2 * kPage) && u.second == int64_t(2 * kPage),
        "billed=" + std::to_string(u.first) + " mapped=" + std::to_string(u.second));
  if (!OpenEdu(s1_.get(), "b", &dev0_fd_, &edu0_)) Abort("device fd");
  std::vector<std::string> bad = IommuSideFds();
  std::string joined;
  for (auto& b : bad) joined += b + " ";
  Check("b.no_iommu_side_fds", bad.empty(),
        bad.empty() ? "fds: " + FdList() : "found: " + joined);
  char link[512] = {0};
  std::string p = "/proc/self/fd/" + std::to_string(dev0_fd_.get());
  ssize_t n = readlink(p.c_str(), link, sizeof link - 1);
  Info("b.device_fd_link", n > 0 ? link : "?");
}

// ---------------------------------------------------------------- c) DMA
void Test::PartC() {
  uint8_t* page0 = m1_.p;
  uint8_t* page1 = m1_.p + kPage;
  Fill(page0, kPage, 0x11);
  std::memset(page1, 0, kPage);
  c_ok_ = RoundTrip("c.dma_A_to_edu_to_B", &edu0_, kIovaA, kIovaB, page0, page1);

  absl::StatusOr<uint64_t> un = s1_->Unmap(kIovaB, kPage);
  Check("c.unmap_B", un.ok() && *un == kPage,
        un.ok() ? "unmapped=" + Hex(*un) : St(un.status()));
  int count = -1;
  std::string maps = AgentMappings(c1_, &count);
  Check("c.agent_mappings_after_unmap", count == 1, maps);
  std::memset(page1, 0, kPage);
  bool dma = edu0_.Dma(kEduBuf, kIovaB, kXfer, true);
  usleep(200000);  // let the kernel print its DMAR fault before our line (one console)
  size_t changed = CountNonZero(page1, kPage);
  Check("c.dma_to_unmapped_B_blocked", dma && changed == 0,
        dma ? "changed_bytes=" + std::to_string(changed) + " (expect a DMAR write fault on the console)"
            : edu0_.err);
}

// ---------------------------------------------------------------- d) bad input, budget
void Test::PartD() {
  // Outside the window: the first page after it.
  absl::Status out = s1_->Map(m1_.id, kPage, kPage, kWinBase + kWinSize, true, true);
  Check("d.map_outside_window", out.code() == absl::StatusCode::kPermissionDenied,
        "iova=" + Hex(kWinBase + kWinSize) + " " + St(out));
  absl::Status below = s1_->Map(m1_.id, kPage, kPage, kWinBase - kPage, true, true);
  Check("d.map_below_window", below.code() == absl::StatusCode::kPermissionDenied,
        "iova=" + Hex(kWinBase - kPage) + " " + St(below));
  absl::Status unal = s1_->Map(m1_.id, kPage, kPage, kIovaB + 0x800, true, true);
  Check("d.map_unaligned_iova", unal.code() == absl::StatusCode::kInvalidArgument,
        "iova=" + Hex(kIovaB + 0x800) + " " + St(unal));
  absl::Status unal_off = s1_->Map(m1_.id, 0x800, kPage, kIovaB, true, true);
  Check("d.map_unaligned_offset", unal_off.code() == absl::StatusCode::kInvalidArgument,
        "offset=0x800 " + St(unal_off));

  // Budget: 4 pages; 1 page (page0 at A) is billed now.
  absl::StatusOr<Memory> q = NewMemory(s1_.get(), 4 * kPage, "quota");
  if (!q.ok()) {
    Check("d.quota_memfd", false, St(q.status()));
    return;
  }
  auto u0 = AgentUsage();
  std::string m0 = AgentMappings(c1_);
  auto l0 = s1_->ListMappings();
  const uint64_t qiova = kWinBase + 0x100000;
  absl::Status over = s1_->Map(q->id, 0, 4 * kPage, qiova, true, true);
  auto u1 = AgentUsage();
  std::string m1 = AgentMappings(c1_);
  auto l1 = s1_->ListMappings();
  Check("d.map_past_budget", over.code() == absl::StatusCode::kResourceExhausted,
        "billed_before=" + std::to_string(u0.first) + " +4 pages over budget " + Hex(kBudget) +
            ": " + St(over));
  Check("d.past_budget_changed_nothing",
        u0 == u1 && m0 == m1 && l0.ok() && l1.ok() && l0->size() == l1->size(),
        "agent_usage billed=" + std::to_string(u1.first) + " mapped=" + std::to_string(u1.second) +
            " mappings=" + m1);
  // Nothing reached the kernel either: the device cannot write at the refused IOVA.
  std::memset(q->p, 0, q->size);
  bool dma = edu0_.Dma(kEduBuf, qiova, kXfer, true);
  usleep(200000);
  size_t changed = CountNonZero(q->p, q->size);
  Check("d.past_budget_not_in_iommu", dma && changed == 0,
        dma ? "DMA edu -> " + Hex(qiova) + " changed_bytes=" + std::to_string(changed) +
                  " (expect a DMAR write fault)"
            : edu0_.err);
  // Exactly up to the budget is allowed: 3 more pages (1 + 3 = 4).
  absl::Status fits = s1_->Map(q->id, 0, 3 * kPage, qiova, true, true);
  auto u2 = AgentUsage();
  Check("d.map_up_to_budget", fits.ok() && u2.first == int64_t(kBudget),
        St(fits) + " billed=" + std::to_string(u2.first));
  if (fits.ok()) {
    absl::StatusOr<uint64_t> un = s1_->Unmap(qiova, 3 * kPage);
    auto u3 = AgentUsage();
    Check("d.unmap_releases_billing", un.ok() && u3 == u0,
          (un.ok() ? "unmapped=" + Hex(*un) : St(un.status())) +
              " billed=" + std::to_string(u3.first));
  }
  munmap(q->p, q->size);
}

// ---------------------------------------------------------------- e) shared memory, two containers
void Test::PartE() {
  if (devices_.size() < 2) {
    Check("e.two_edu_devices", false, "devices=" + std::to_string(devices_.size()) + " (run_vm.sh -n 2)");
    return;
  }
  absl::StatusOr<std::string> c = MakeContainer(devices_[1], "e");
  if (!c.ok()) return;
  c2_ = *c;
  absl::StatusOr<std::string> tok = Grant(c2_);
  Check("e.grant", tok.ok(), tok.ok() ? "" : St(tok.status()));
  if (!tok.ok()) return;
  auto cl = LauncherClient::Connect(o_.socket);
  if (!cl.ok()) {
    Check("e.connect", false, St(cl.status()));
    return;
  }
  s2_ = *std::move(cl);
  auto opened = s2_->OpenSession(*tok);
  Check("e.open_session", opened.ok() && opened->container_id() == c2_,
        opened.ok() ? "session=" + opened->session_id() : St(opened.status()));
  if (!opened.ok()) return;

  // Shared memory S: one memfd, registered in both sessions (the second through a dup).
  absl::StatusOr<Memory> shared = NewMemory(s1_.get(), kPage, "shared");
  if (!shared.ok()) {
    Check("e.shared_memfd", false, St(shared.status()));
    return;
  }
  UniqueFd dupfd(dup(shared->fd.get()));
  auto reg2 = s2_->RegisterMemory(dupfd.get(), "shared-dup");
  Check("e.register_dup_in_session2", reg2.ok() && reg2->owner_tenant() == kTenant,
        reg2.ok() ? "memory_id=" + reg2->memory_id() + " owner=" + reg2->owner_tenant()
                  : St(reg2.status()));
  if (!reg2.ok()) return;
  absl::StatusOr<Memory> p2 = NewMemory(s2_.get(), kPage, "src2");
  if (!p2.ok()) {
    Check("e.src2_memfd", false, St(p2.status()));
    return;
  }
  const uint64_t s_iova = kWinBase + 0x10000;   // S in both containers
  const uint64_t p2_iova = kWinBase + 0x20000;  // P2 in container 2

  auto u0 = AgentUsage();
  absl::Status m1 = s1_->Map(shared->id, 0, kPage, s_iova, true, true);
  auto u1 = AgentUsage();
  absl::Status m2 = s2_->Map(reg2->memory_id(), 0, kPage, s_iova, true, true);
  auto u2 = AgentUsage();
  Check("e.map_shared_in_c1", m1.ok() && u1.first == u0.first + int64_t(kPage) &&
                                  u1.second == u0.second + int64_t(kPage),
        St(m1) + " billed " + std::to_string(u0.first) + "->" + std::to_string(u1.first) +
            " mapped " + std::to_string(u0.second) + "->" + std::to_string(u1.second));
  Check("e.map_shared_in_c2_billed_once",
        m2.ok() && u2.first == u1.first && u2.second == u1.second + int64_t(kPage),
        St(m2) + " billed " + std::to_string(u1.first) + "->" + std::to_string(u2.first) +
            " mapped " + std::to_string(u1.second) + "->" + std::to_string(u2.second));
  absl::Status mp = s2_->Map(p2->id, 0, kPage, p2_iova, true, false);
  Check("e.map_src2_in_c2", mp.ok(), St(mp));
  // Page 1 of the first memory back at B in container 1 as the final destination.
  absl::Status mb = s1_->Map(m1_.id, kPage, kPage, kIovaB, true, true);
  Check("e.remap_B_in_c1", mb.ok(), St(mb));
  auto u3 = AgentUsage();
  bool billed_ok = false;
  auto bu = BrokerUsage();
  PollUntil(5000, [&] {
    bu = BrokerUsage();
    billed_ok = bu.first == u3.first && bu.second == u3.second;
    return billed_ok;
  });
  Check("e.broker_usage_matches_agent", billed_ok,
        "agent billed=" + std::to_string(u3.first) + " mapped=" + std::to_string(u3.second) +
            " broker pinned=" + std::to_string(bu.first) + " mapped=" + std::to_string(bu.second));
  Info("e.agent_mappings_c1", AgentMappings(c1_));
  Info("e.agent_mappings_c2", AgentMappings(c2_));
  if (!m1.ok() || !m2.ok() || !mp.ok() || !mb.ok()) return;

  if (!OpenEdu(s2_.get(), "e", &dev1_fd_, &edu1_)) return;
  Check("e.no_iommu_side_fds", IommuSideFds().empty(), "");
  // Device 2 writes pattern2 into S through container 2 ...
  std::vector<uint8_t> want(kPage);
  Fill(p2->p, kPage, 0x5c);
  std::memcpy(want.data(), p2->p, kPage);
  std::memset(shared->p, 0, kPage);
  RoundTrip("e.dma_dev2_src2_to_shared_via_c2", &edu1_, p2_iova, s_iova, want.data(), shared->p);
  // ... device 1 reads S through container 1 and writes it to page1 (B).
  uint8_t* page1 = m1_.p + kPage;
  std::memset(page1, 0, kPage);
  RoundTrip("e.dma_dev1_shared_via_c1_to_B", &edu0_, s_iova, kIovaB, want.data(), page1);
  munmap(shared->p, kPage);
  munmap(p2->p, kPage);
}

// ---------------------------------------------------------------- f) kill -9 of the agent
pid_t ReadPid(const std::string& path) {
  std::ifstream f(path);
  long pid = 0;
  f >> pid;
  return static_cast<pid_t>(pid);
}

bool ProcessGoneOrZombie(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  if (!f) return true;
  std::string line;
  std::getline(f, line);
  size_t rp = line.rfind(')');
  return rp != std::string::npos && rp + 2 < line.size() && line[rp + 2] == 'Z';
}

// A DMA loop on a launcher's device fd: RAM -> edu -> RAM through the IOMMU, each transfer
// with a fresh pattern checked byte for byte, until Stop().
class DmaLoop {
 public:
  void Start(Edu* edu, uint8_t* src, uint8_t* dst) {
    thread_ = std::thread([this, edu, src, dst] {
      uint8_t seed = 1;
      while (!stop_.load()) {
        Fill(src, kPage, seed++);
        std::memset(dst, 0, kPage);
        if (!edu->Dma(kIovaA, kEduBuf, kXfer, false) || !edu->Dma(kEduBuf, kIovaB, kXfer, true)) {
          ++failures_;
          if (first_error_.empty()) first_error_ = edu->err;
        } else if (FirstDiff(dst, src, kXfer) != kXfer) {
          ++failures_;
          if (first_error_.empty()) first_error_ = "transfer " + std::to_string(iterations_) +
                                                   " did not arrive (first_diff=" +
                                                   std::to_string(FirstDiff(dst, src, kXfer)) + ")";
        }
        ++iterations_;
      }
    });
  }
  // Stops and returns "iterations=N failures=N [first_error=...]"; ok = no failure.
  std::string Stop(bool* ok) {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    *ok = failures_ == 0 && iterations_ > 0;
    return "iterations=" + std::to_string(iterations_) + " failures=" + std::to_string(failures_) +
           (first_error_.empty() ? "" : " first_error=" + first_error_);
  }
  int iterations() const { return iterations_.load(); }

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> iterations_{0};
  int failures_ = 0;
  std::string first_error_;
};

// Stops the agent with `signal`, runs --agent_restart_cmd and waits until the new run is
// registered and holds `container`. Checks are named `tag`.*.
bool Test::RestartAgent(const std::string& tag, int signal, const std::string& container) {
  pid_t pid = ReadPid(o_.agent_pid_file);
  if (pid <= 1) {
    Check(tag + ".agent_pid", false, "pid file " + o_.agent_pid_file);
    return false;
  }
  // A process already gone (the caller may have killed it) counts as stopped.
  const bool sent = kill(pid, signal) == 0 || errno == ESRCH;
  bool dead = sent && PollUntil(30000, [&] { return ProcessGoneOrZombie(pid); });
  Check(tag + ".agent_stopped", dead, std::string(strsignal(signal)) + " pid=" + std::to_string(pid));
  if (!dead) return false;
  const int rc = std::system(o_.agent_restart_cmd.c_str());
  pid_t pid2 = 0;
  bool up = rc == 0 && PollUntil(20000, [&] {
    pid2 = ReadPid(o_.agent_pid_file);
    return pid2 > 1 && pid2 != pid && !ProcessGoneOrZombie(pid2);
  });
  std::string detail;
  up = up && PollUntil(30000, [&] {
    auto n = GetNode();
    if (!n.ok() || n->state() != v1::NODE_STATE_READY) return false;
    v1::Agent::Stub* a = AgentStub();
    v1::GetInventoryResponse inv;
    if (a == nullptr || !a->GetInventory(Ctx().get(), v1::GetInventoryRequest(), &inv).ok()) {
      return false;
    }
    detail = "containers=";
    bool has = false;
    for (const auto& c : inv.containers()) {
      detail += c.id() + " ";
      has |= c.id() == container;
    }
    return has;
  });
  Check(tag + ".agent_restarted_and_holds_container", up,
        "rc=" + std::to_string(rc) + " new_pid=" + std::to_string(pid2) + " " + detail);
  return up;
}

// Resumes session 1 on a new connection (the old one died with the agent).
bool Test::ResumeSession1(const std::string& tag) {
  auto cl = LauncherClient::Connect(o_.socket);
  absl::StatusOr<v1::LauncherResponse::SessionOpened> resumed =
      cl.ok() ? (*cl)->ResumeSession(session1_, resume1_) : cl.status();
  Check(tag + ".launcher_resumes_session", resumed.ok() && resumed->container_id() == c1_,
        resumed.ok() ? "session=" + resumed->session_id() : St(resumed.status()));
  if (!resumed.ok()) return false;
  s1_ = *std::move(cl);
  auto list = s1_->ListMappings();
  Check(tag + ".resumed_session_keeps_mappings", list.ok() && list->size() == 2,
        list.ok() ? "mappings=" + std::to_string(list->size()) : St(list.status()));
  return list.ok();
}

// ---------------------------------------------------------------- f) agent restarts
// kill -9 and SIGTERM + start (an upgrade) while a launcher DMAs in a loop: no transfer
// fails, the container stays READY with the same mappings and billing, the launcher resumes
// its session; a launcher that died while the agent was down is released after
// --session-resume-timeout; deleting the container after the restarts cuts the DMA.
void Test::PartF() {
  if (o_.agent_restart_cmd.empty()) {
    Check("f.agent_restart_cmd", false, "no --agent_restart_cmd");
    return;
  }
  if (resume1_.empty()) {
    Check("f.session_has_resume_token", false, "the agent gave no resume token (no journal?)");
    return;
  }
  // Known mappings: page 0 of m1 at A, page 1 at B.
  s1_->Unmap(kWinBase, kWinSize).IgnoreError();
  absl::Status ma = s1_->Map(m1_.id, 0, kPage, kIovaA, true, true);
  absl::Status mb = s1_->Map(m1_.id, kPage, kPage, kIovaB, true, true);
  Check("f.map", ma.ok() && mb.ok(), St(ma) + " / " + St(mb));
  if (!ma.ok() || !mb.ok()) return;
  const std::string before = AgentMappings(c1_);
  int c2_before = 0;
  if (!c2_.empty()) AgentMappings(c2_, &c2_before);
  auto billed_before = AgentUsage();
  PollUntil(10000, [&] { return BrokerUsage().first == billed_before.first; });
  Info("f.before", "c1=" + before + " c2_mappings=" + std::to_string(c2_before) +
                       " billed=" + std::to_string(billed_before.first));

  // kill -9 under DMA; launcher 2 dies while the agent is down.
  DmaLoop loop;
  loop.Start(&edu0_, m1_.p, m1_.p + kPage);
  PollUntil(10000, [&] { return loop.iterations() >= 3; });
  pid_t old_pid = ReadPid(o_.agent_pid_file);
  kill(old_pid, SIGKILL);
  PollUntil(10000, [&] { return ProcessGoneOrZombie(old_pid); });
  const int during_down = loop.iterations();
  edu1_.fd = -1;
  dev1_fd_.reset();
  s2_.reset();
  // RestartAgent sends SIGKILL to a process already gone: only the restart matters.
  bool up = RestartAgent("f.kill9", SIGKILL, c1_);
  const int after_up = loop.iterations();
  PollUntil(5000, [&] { return loop.iterations() >= after_up + 3; });
  bool dma_ok = false;
  std::string dma = loop.Stop(&dma_ok);
  Check("f.kill9.dma_never_faults", dma_ok && after_up > during_down,
        dma + " during_restart=" + std::to_string(after_up - during_down));
  if (!up) return;
  v1::GetContainerRequest gc;
  gc.set_container_id(c1_);
  v1::Container cont;
  grpc::Status gs = broker_->GetContainer(Ctx().get(), gc, &cont);
  Check("f.kill9.broker_container_ready", gs.ok() && cont.state() == v1::CONTAINER_STATE_READY,
        St(gs) + " state=" + v1::ContainerState_Name(cont.state()));
  const std::string after = AgentMappings(c1_);
  Check("f.kill9.same_mappings", after == before, "before=" + before + " after=" + after);
  auto billed_after = AgentUsage();
  Check("f.kill9.same_billing", billed_after.first == billed_before.first,
        "before=" + std::to_string(billed_before.first) + " after=" + std::to_string(billed_after.first));
  if (!ResumeSession1("f.kill9")) return;

  // Launcher 2 never came back: its session is closed, its mappings and billing go.
  if (!c2_.empty() && c2_before > 0) {
    int left = -1;
    bool released = PollUntil(30000, [&] {
      AgentMappings(c2_, &left);
      return left == 0;
    });
    Check("f.dead_launcher_released", released, "c2 mappings=" + std::to_string(left));
    auto agent_now = AgentUsage();
    bool follows = PollUntil(10000, [&] { return BrokerUsage().first == agent_now.first; });
    Check("f.broker_billing_follows", follows,
          "agent=" + std::to_string(agent_now.first) + " broker=" + std::to_string(BrokerUsage().first));
  }

  // An upgrade: SIGTERM, a new process, under DMA.
  DmaLoop loop2;
  loop2.Start(&edu0_, m1_.p, m1_.p + kPage);
  PollUntil(10000, [&] { return loop2.iterations() >= 3; });
  const int before_term = loop2.iterations();
  up = RestartAgent("f.sigterm", SIGTERM, c1_);
  const int after_term = loop2.iterations();
  PollUntil(5000, [&] { return loop2.iterations() >= after_term + 3; });
  std::string dma2 = loop2.Stop(&dma_ok);
  Check("f.sigterm.dma_never_faults", dma_ok && after_term > before_term,
        dma2 + " during_restart=" + std::to_string(after_term - before_term));
  if (!up) return;
  Check("f.sigterm.same_mappings", AgentMappings(c1_) == before, AgentMappings(c1_));
  if (!ResumeSession1("f.sigterm")) return;

  // Revocation after the restarts: the launcher still holds its device fd.
  v1::DeleteContainerRequest del;
  del.set_container_id(c1_);
  v1::DeleteContainerResponse dr;
  grpc::Status ds = broker_->DeleteContainer(Ctx().get(), del, &dr);
  bool gone = ds.ok() && PollUntil(30000, [&] {
    v1::Container c;
    return broker_->GetContainer(Ctx().get(), gc, &c).error_code() == grpc::StatusCode::NOT_FOUND;
  });
  Check("f.delete_container", gone, St(ds));
  uint8_t* dst = m1_.p + kPage;
  Fill(m1_.p, kPage, 0x77);
  std::memset(dst, 0, kPage);
  bool ran = edu0_.Dma(kIovaA, kEduBuf, kXfer, false) && edu0_.Dma(kEduBuf, kIovaB, kXfer, true);
  usleep(200000);
  size_t changed = CountNonZero(dst, kPage);
  Check("f.delete_cuts_dma", ran && changed == 0,
        ran ? "changed_bytes=" + std::to_string(changed) + " (expect DMAR faults on the console)"
            : edu0_.err);
  auto billed_end = AgentUsage();
  int c1_left = -1;
  AgentMappings(c1_, &c1_left);
  Check("f.delete_releases_billing", c1_left <= 0, "c1 mappings=" + std::to_string(c1_left) +
                                                       " billed=" + std::to_string(billed_end.first));
  c1_.clear();
}

// ---------------------------------------------------------------- h) kernel pin share
constexpr uint64_t kKernelPinShare = 8 * kPage;  // --kernel-pin-bytes-per-tenant in vm_e2e.sh
constexpr char kMemlockRefusedLog[] = "/tmp/agent_memlock_refused.log";

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// VmLck + VmPin of `pid` in bytes; -1 when unreadable.
int64_t KernelPinnedBytes(pid_t pid, std::string* detail) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  int64_t sum = 0;
  int found = 0;
  while (std::getline(in, line)) {
    if (line.rfind("VmLck:", 0) == 0 || line.rfind("VmPin:", 0) == 0) {
      *detail += line + " ";
      sum += std::strtoll(line.c_str() + 6, nullptr, 10) * 1024;
      ++found;
    }
  }
  return found == 2 ? sum : -1;
}

void Test::PartH() {
  if (o_.agent_memlock_restart_cmd.empty()) {
    Check("h.agent_memlock_restart_cmd", false, "no --agent_memlock_restart_cmd");
    return;
  }
  // Drop what this process holds on the agent (part f may have run already).
  edu0_.fd = edu1_.fd = -1;
  dev0_fd_.reset();
  dev1_fd_.reset();
  s1_.reset();
  s2_.reset();
  // Part f ends by deleting container 1: its device, now closed by everyone, takes
  // a new container (which the restarted agent must hold).
  if (c1_.empty()) {
    absl::StatusOr<std::string> c = MakeContainer(devices_[0], "h");
    if (!c.ok()) return;
    c1_ = *c;
  }
  pid_t pid = ReadPid(o_.agent_pid_file);
  bool dead = pid > 1 && kill(pid, SIGKILL) == 0 &&
              PollUntil(10000, [&] { return ProcessGoneOrZombie(pid); });
  Check("h.kill9_agent", dead, "pid=" + std::to_string(pid));
  if (!dead) return;
  int src = std::system(o_.agent_memlock_restart_cmd.c_str());
  const std::string refused = ReadText(kMemlockRefusedLog);
  Check("h.refused_without_share",
        refused.find("memlock: RLIMIT_MEMLOCK is 262144 bytes") != std::string::npos &&
            refused.find("counts pins per mapping") != std::string::npos &&
            refused.find("LimitMEMLOCK=infinity") != std::string::npos &&
            refused.find("--kernel-pin-bytes-per-tenant=BYTES") != std::string::npos &&
            refused.find("rc=1") != std::string::npos,
        refused);
  pid_t pid2 = 0;
  bool up = src == 0 && PollUntil(20000, [&] {
    pid2 = ReadPid(o_.agent_pid_file);
    return pid2 > 1 && pid2 != pid && !ProcessGoneOrZombie(pid2);
  });
  Check("h.agent_started_with_share", up,
        "rc=" + std::to_string(src) + " new_pid=" + std::to_string(pid2));
  if (!up) return;
  bool reconciled = PollUntil(30000, [&] {
    auto n = GetNode();
    if (!n.ok() || n->state() != v1::NODE_STATE_READY) return false;
    v1::Agent::Stub* a = AgentStub();
    if (a == nullptr) return false;
    v1::GetInventoryResponse inv;
    if (!a->GetInventory(Ctx().get(), v1::GetInventoryRequest(), &inv).ok()) return false;
    for (const auto& c : inv.containers()) {
      if (c.id() == c1_) return true;
    }
    return false;
  });
  Check("h.agent_holds_container", reconciled, "container=" + c1_);
  if (!reconciled) return;
  absl::StatusOr<std::string> tok = Grant(c1_);
  if (!tok.ok()) {
    Check("h.grant", false, St(tok.status()));
    return;
  }
  auto cl = LauncherClient::Connect(o_.socket);
  if (!cl.ok()) {
    Check("h.connect", false, St(cl.status()));
    return;
  }
  std::unique_ptr<LauncherClient> s = *std::move(cl);
  auto opened = s->OpenSession(*tok);
  if (!opened.ok()) {
    Check("h.open_session", false, St(opened.status()));
    return;
  }
  absl::StatusOr<Memory> m = NewMemory(s.get(), kPage, "one-page");
  if (!m.ok()) {
    Check("h.memfd", false, St(m.status()));
    return;
  }
  std::string vm_before;
  const int64_t kernel_before = KernelPinnedBytes(pid2, &vm_before);
  // The same page, mapped at kKernelPinShare / kPage IOVAs: billed once, counted each time.
  const int n = static_cast<int>(kKernelPinShare / kPage);
  std::string errs;
  int mapped = 0;
  for (int i = 0; i < n; ++i) {
    absl::Status st = s->Map(m->id, 0, kPage, kWinBase + uint64_t(i) * kPage, true, true);
    if (st.ok()) {
      ++mapped;
    } else {
      errs += St(st) + " ";
    }
  }
  Check("h.maps_up_to_share", mapped == n, std::to_string(mapped) + "/" + std::to_string(n) + " " + errs);
  absl::Status over = s->Map(m->id, 0, kPage, kWinBase + uint64_t(n) * kPage, true, true);
  Check("h.map_past_share_refused",
        over.code() == absl::StatusCode::kResourceExhausted &&
            std::string(over.message()).find("kernel-pin-bytes-per-tenant") != std::string::npos &&
            std::string(over.message()).find(kTenant) != std::string::npos,
        St(over));
  std::string vm_after;
  const int64_t kernel_after = KernelPinnedBytes(pid2, &vm_after);
  Check("h.kernel_counts_per_mapping",
        kernel_before >= 0 && kernel_after - kernel_before == int64_t(kKernelPinShare),
        "before: " + vm_before + " after: " + vm_after);
  v1::Agent::Stub* a = AgentStub();
  v1::GetInventoryResponse inv;
  grpc::Status is = a == nullptr ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "no agent")
                                 : a->GetInventory(Ctx().get(), v1::GetInventoryRequest(), &inv);
  int64_t billed = -1, counted = -1;
  for (const v1::PinUsage& u : inv.usage()) {
    if (u.tenant_id() == kTenant) {
      billed = int64_t(u.billed_bytes());
      counted = int64_t(u.kernel_counted_bytes());
    }
  }
  Check("h.usage_billed_once_counted_per_mapping",
        is.ok() && billed == int64_t(kPage) && counted == int64_t(kKernelPinShare),
        St(is) + " billed=" + std::to_string(billed) + " kernel_counted=" + std::to_string(counted));
  munmap(m->p, m->size);
}

int Test::Run() {
  auto t0 = std::chrono::steady_clock::now();
  PartA();
  if (Part('b') || Part('c') || Part('d') || Part('e')) PartB();
  if (Part('c')) PartC();
  if (Part('d')) PartD();
  if (Part('e')) PartE();
  if (Part('f')) PartF();
  if (Part('h')) PartH();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("vm_dma_test: %s: %d checks, %d failed, %.1f s\n", g_failures ? "FAIL" : "PASS",
              g_checks, g_failures, secs);
  std::fflush(stdout);
  return g_failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* key, std::string* out) {
      std::string k = std::string("--") + key + "=";
      if (a.rfind(k, 0) != 0) return false;
      *out = a.substr(k.size());
      return true;
    };
    if (val("broker", &o.broker) || val("node", &o.node) || val("socket", &o.socket) ||
        val("agent_pid_file", &o.agent_pid_file) ||
        val("agent_restart_cmd", &o.agent_restart_cmd) || val("parts", &o.parts) ||
        val("agent_memlock_restart_cmd", &o.agent_memlock_restart_cmd)) {
      continue;
    }
    std::fprintf(stderr, "vm_dma_test: unknown argument %s\n", a.c_str());
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Test t(o);
  return t.Run();
}
