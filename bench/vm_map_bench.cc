// vm_map_bench: runs INSIDE the real-kernel VM (bench/vm_map_path.sh boots it) and times
// one map + one unmap of a 4 KiB and a 2 MiB range of a memfd, by two routes:
//
//   direct-type1    VFIO_IOMMU_MAP_DMA / VFIO_IOMMU_UNMAP_DMA on this process's own type1
//                   container holding the edu device's group
//   direct-iommufd  IOMMU_IOAS_MAP (FIXED_IOVA) / IOMMU_IOAS_UNMAP on this process's own
//                   IOAS with the edu device's cdev attached
//   socket          LauncherClient::Map / Unmap through the running agent's launcher socket
//                   (broker setup over gRPC: tenant, container on the first assignable edu
//                   device, a window, a grant; then session, memfd, RegisterMemory)
//
// The direct modes must run before the agent starts: the agent then takes the devices.
// Each op is timed on its own (CLOCK_MONOTONIC) for --seconds per length after a short
// warm-up; prints one line per length:
//
//   vm_map_bench: path=P len=BYTES iters=N mean_us=X p50_us=X p90_us=X min_us=X
//
// The socket mode also times path=socket-list2 (len=0): two ListMappings round trips, the
// transport's own cost for the two requests of a map + unmap.
//
// and exits non-zero on any failure. This is a benchmark, not a test: it asserts only that
// each op succeeds. Under QEMU TCG absolute times are slow; compare the routes.
//
//   vm_map_bench direct-type1|direct-iommufd [--device=BDF] [--seconds=S]
//   vm_map_bench socket --broker=127.0.0.1:7400 --node=vm1 --socket=PATH [--seconds=S]
#include <dirent.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "grpcpp/grpcpp.h"
#include "launcher/client.h"
#include "proto/broker.grpc.pb.h"

namespace {

namespace v1 = iommu::v1;
using iommu::UniqueFd;
using iommu::launcher::LauncherClient;

// ---- iommufd uapi of Linux 6.12 (Debian 12's linux-libc-dev 6.1 has none); as in
// tests/vm/edu_smoke.c.
constexpr unsigned kIommufdType = ';';
#define IOMMU_IOAS_ALLOC_ _IO(kIommufdType, 0x81)
#define IOMMU_IOAS_MAP_ _IO(kIommufdType, 0x85)
#define IOMMU_IOAS_UNMAP_ _IO(kIommufdType, 0x86)
#define VFIO_DEVICE_BIND_IOMMUFD_ _IO(VFIO_TYPE, VFIO_BASE + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT_ _IO(VFIO_TYPE, VFIO_BASE + 19)
struct iommu_ioas_alloc_ { uint32_t size, flags, out_ioas_id; };
struct iommu_ioas_map_ {
  uint32_t size, flags, ioas_id, reserved;
  uint64_t user_va, length, iova;
};
struct iommu_ioas_unmap_ { uint32_t size, ioas_id; uint64_t iova, length; };
struct vfio_device_bind_iommufd_ { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
struct vfio_device_attach_iommufd_pt_ { uint32_t argsz, flags, pt_id; };
constexpr uint32_t kMapFixedIova = 1u << 0;
constexpr uint32_t kMapWriteable = 1u << 1;
constexpr uint32_t kMapReadable = 1u << 2;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
// The memfd each route maps from; the 2 MiB op maps its 2 MiB-aligned second half.
constexpr uint64_t kMemBytes = 4 * kMiB;
constexpr uint64_t kOffset = 2 * kMiB;
// One window of the broker (fixed base, below edu's 28-bit DMA mask); the direct routes
// use the same IOVA.
constexpr uint64_t kWinBase = 0x1000000;
constexpr uint64_t kWinSize = 4 * kMiB;
constexpr uint64_t kIova = kWinBase + 2 * kMiB;
const uint64_t kLengths[] = {4 * kKiB, 2 * kMiB};
const char kTenant[] = "vmbench";

[[noreturn]] void Die(const std::string& what) {
  printf("vm_map_bench: FAIL: %s\n", what.c_str());
  fflush(stdout);
  exit(1);
}
[[noreturn]] void DieErrno(const std::string& what) {
  Die(what + " (errno " + std::to_string(errno) + ": " + strerror(errno) + ")");
}

double NowUs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

// Times `op` (one map + one unmap of `length`) for `seconds` after 5 warm-up runs and
// prints the line.
void Measure(const std::string& path, uint64_t length, double seconds,
             const std::function<void(uint64_t)>& op) {
  for (int i = 0; i < 5; ++i) op(length);
  std::vector<double> us;
  const double end = NowUs() + seconds * 1e6;
  double total = 0;
  while (NowUs() < end || us.size() < 20) {
    const double t0 = NowUs();
    op(length);
    const double d = NowUs() - t0;
    us.push_back(d);
    total += d;
  }
  std::sort(us.begin(), us.end());
  printf("vm_map_bench: path=%s len=%" PRIu64 " iters=%zu mean_us=%.2f p50_us=%.2f p90_us=%.2f min_us=%.2f\n",
         path.c_str(), length, us.size(), total / us.size(), us[us.size() / 2],
         us[us.size() * 9 / 10], us[0]);
  fflush(stdout);
}

uint8_t* NewMemfdMapping(UniqueFd* fd) {
  absl::StatusOr<UniqueFd> m = LauncherClient::CreateMemfd(kMemBytes, "vm-map-bench");
  if (!m.ok()) Die(m.status().ToString());
  *fd = *std::move(m);
  void* p = mmap(nullptr, kMemBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
  if (p == MAP_FAILED) DieErrno("mmap memfd");
  return static_cast<uint8_t*>(p);
}

std::string FirstEdu(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = getenv("IOMMU_VM_EDU_DEVICES");
  if (env == nullptr || *env == 0) Die("no --device and no IOMMU_VM_EDU_DEVICES");
  std::string s = env;
  return s.substr(0, s.find(' '));
}

void DirectType1(const std::string& bdf, double seconds) {
  char link[512];
  const std::string group_link = "/sys/bus/pci/devices/" + bdf + "/iommu_group";
  ssize_t n = readlink(group_link.c_str(), link, sizeof link - 1);
  if (n < 0) DieErrno("readlink " + group_link);
  link[n] = 0;
  const std::string group = strrchr(link, '/') + 1;
  UniqueFd container(open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
  if (!container.valid()) DieErrno("open /dev/vfio/vfio");
  UniqueFd gfd(open(("/dev/vfio/" + group).c_str(), O_RDWR | O_CLOEXEC));
  if (!gfd.valid()) DieErrno("open /dev/vfio/" + group);
  int cfd = container.get();
  if (ioctl(gfd.get(), VFIO_GROUP_SET_CONTAINER, &cfd)) DieErrno("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) DieErrno("VFIO_SET_IOMMU(TYPE1v2)");
  UniqueFd mem_fd;
  uint8_t* mem = NewMemfdMapping(&mem_fd);
  for (uint64_t len : kLengths) {
    Measure("direct-type1", len, seconds, [&](uint64_t length) {
      vfio_iommu_type1_dma_map m{};
      m.argsz = sizeof m;
      m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
      m.vaddr = reinterpret_cast<uint64_t>(mem + kOffset);
      m.iova = kIova;
      m.size = length;
      if (ioctl(cfd, VFIO_IOMMU_MAP_DMA, &m)) DieErrno("VFIO_IOMMU_MAP_DMA");
      vfio_iommu_type1_dma_unmap u{};
      u.argsz = sizeof u;
      u.iova = kIova;
      u.size = length;
      if (ioctl(cfd, VFIO_IOMMU_UNMAP_DMA, &u)) DieErrno("VFIO_IOMMU_UNMAP_DMA");
      if (u.size != length) Die("VFIO_IOMMU_UNMAP_DMA unmapped " + std::to_string(u.size));
    });
  }
}

void DirectIommufd(const std::string& bdf, double seconds) {
  const std::string dir_path = "/sys/bus/pci/devices/" + bdf + "/vfio-dev";
  DIR* dir = opendir(dir_path.c_str());
  if (dir == nullptr) DieErrno("opendir " + dir_path);
  std::string cdev;
  while (dirent* e = readdir(dir)) {
    if (strncmp(e->d_name, "vfio", 4) == 0) cdev = std::string("/dev/vfio/devices/") + e->d_name;
  }
  closedir(dir);
  if (cdev.empty()) Die("no vfioN under " + dir_path);
  UniqueFd iommufd(open("/dev/iommu", O_RDWR | O_CLOEXEC));
  if (!iommufd.valid()) DieErrno("open /dev/iommu");
  UniqueFd dev(open(cdev.c_str(), O_RDWR | O_CLOEXEC));
  if (!dev.valid()) DieErrno("open " + cdev);
  vfio_device_bind_iommufd_ bind{sizeof(vfio_device_bind_iommufd_), 0, iommufd.get(), 0};
  if (ioctl(dev.get(), VFIO_DEVICE_BIND_IOMMUFD_, &bind)) DieErrno("VFIO_DEVICE_BIND_IOMMUFD");
  iommu_ioas_alloc_ alloc{sizeof(iommu_ioas_alloc_), 0, 0};
  if (ioctl(iommufd.get(), IOMMU_IOAS_ALLOC_, &alloc)) DieErrno("IOMMU_IOAS_ALLOC");
  vfio_device_attach_iommufd_pt_ at{sizeof(vfio_device_attach_iommufd_pt_), 0, alloc.out_ioas_id};
  if (ioctl(dev.get(), VFIO_DEVICE_ATTACH_IOMMUFD_PT_, &at)) DieErrno("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
  UniqueFd mem_fd;
  uint8_t* mem = NewMemfdMapping(&mem_fd);
  for (uint64_t len : kLengths) {
    Measure("direct-iommufd", len, seconds, [&](uint64_t length) {
      iommu_ioas_map_ m{};
      m.size = sizeof m;
      m.flags = kMapFixedIova | kMapReadable | kMapWriteable;
      m.ioas_id = alloc.out_ioas_id;
      m.user_va = reinterpret_cast<uint64_t>(mem + kOffset);
      m.length = length;
      m.iova = kIova;
      if (ioctl(iommufd.get(), IOMMU_IOAS_MAP_, &m)) DieErrno("IOMMU_IOAS_MAP");
      iommu_ioas_unmap_ u{sizeof(iommu_ioas_unmap_), alloc.out_ioas_id, kIova, length};
      if (ioctl(iommufd.get(), IOMMU_IOAS_UNMAP_, &u)) DieErrno("IOMMU_IOAS_UNMAP");
      if (u.length != length) Die("IOMMU_IOAS_UNMAP unmapped " + std::to_string(u.length));
    });
  }
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return c;
}
std::string St(const grpc::Status& s) {
  return s.ok() ? "OK" : std::to_string(s.error_code()) + " " + s.error_message();
}

void Socket(const std::string& broker_addr, const std::string& node, const std::string& socket,
            double seconds) {
  std::unique_ptr<v1::Broker::Stub> broker =
      v1::Broker::NewStub(grpc::CreateChannel(broker_addr, grpc::InsecureChannelCredentials()));
  // The node ready, and its first assignable edu device.
  std::string device;
  for (int i = 0; i < 150 && device.empty(); ++i) {
    v1::GetNodeRequest gn;
    gn.set_node(node);
    v1::Node n;
    if (broker->GetNode(Ctx().get(), gn, &n).ok() && n.state() == v1::NODE_STATE_READY) {
      v1::ListDevicesRequest ld;
      ld.set_node(node);
      v1::ListDevicesResponse devs;
      if (broker->ListDevices(Ctx().get(), ld, &devs).ok()) {
        std::vector<std::string> edus;
        for (const v1::Device& d : devs.devices()) {
          if (d.vendor_id() == 0x1234 && d.device_id() == 0x11e8 && d.assignable()) {
            edus.push_back(d.address());
          }
        }
        std::sort(edus.begin(), edus.end());
        if (!edus.empty()) device = edus[0];
        printf("vm_map_bench: agent backend=%s simulated=%d device=%s\n", n.backend().c_str(),
               n.simulated() ? 1 : 0, device.c_str());
      }
    }
    if (device.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (device.empty()) Die("node " + node + " never ready with an assignable edu device");

  v1::CreateTenantRequest t;
  t.set_tenant_id(kTenant);
  t.mutable_quota()->set_pinned_bytes(64 * kMiB);
  v1::Tenant tenant;
  grpc::Status s = broker->CreateTenant(Ctx().get(), t, &tenant);
  if (!s.ok()) Die("CreateTenant: " + St(s));
  v1::CreateContainerRequest cr;
  cr.set_tenant_id(kTenant);
  cr.set_node(node);
  cr.add_devices(device);
  cr.set_pin_budget_bytes(16 * kMiB);
  v1::Container c;
  s = broker->CreateContainer(Ctx().get(), cr, &c);
  if (!s.ok() || c.state() != v1::CONTAINER_STATE_READY) Die("CreateContainer: " + St(s));
  v1::AllocateWindowRequest w;
  w.set_container_id(c.id());
  w.set_size(kWinSize);
  w.set_fixed_base(true);
  w.set_base(kWinBase);
  v1::Window win;
  s = broker->AllocateWindow(Ctx().get(), w, &win);
  if (!s.ok()) Die("AllocateWindow: " + St(s));
  v1::GrantLauncherRequest g;
  g.set_container_id(c.id());
  g.set_ttl_seconds(600);
  v1::GrantLauncherResponse gr;
  s = broker->GrantLauncher(Ctx().get(), g, &gr);
  if (!s.ok()) Die("GrantLauncher: " + St(s));

  absl::StatusOr<std::unique_ptr<LauncherClient>> client = LauncherClient::Connect(socket);
  if (!client.ok()) Die(client.status().ToString());
  auto opened = (*client)->OpenSession(gr.token());
  if (!opened.ok()) Die("OpenSession: " + opened.status().ToString());
  UniqueFd mem_fd;
  NewMemfdMapping(&mem_fd);
  auto reg = (*client)->RegisterMemory(mem_fd.get(), "ram");
  if (!reg.ok()) Die("RegisterMemory: " + reg.status().ToString());
  const std::string memory_id = reg->memory_id();
  LauncherClient* cl = client->get();
  for (uint64_t len : kLengths) {
    Measure("socket", len, seconds, [&](uint64_t length) {
      absl::Status m = cl->Map(memory_id, kOffset, length, kIova, true, true);
      if (!m.ok()) Die("Map: " + m.ToString());
      absl::StatusOr<uint64_t> u = cl->Unmap(kIova, length);
      if (!u.ok() || *u != length) Die("Unmap: " + u.status().ToString());
    });
  }
  // The transport's floor: two ListMappings round trips (an op is two requests), which
  // touch neither the ledger nor the kernel's IOMMU.
  Measure("socket-list2", 0, seconds, [&](uint64_t) {
    for (int i = 0; i < 2; ++i) {
      auto l = cl->ListMappings();
      if (!l.ok()) Die("ListMappings: " + l.status().ToString());
    }
  });
}

std::string Flag(int argc, char** argv, const std::string& name, const std::string& def) {
  const std::string prefix = "--" + name + "=";
  for (int i = 2; i < argc; ++i) {
    if (strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) return argv[i] + prefix.size();
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s direct-type1|direct-iommufd|socket [--flags]\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const double seconds = atof(Flag(argc, argv, "seconds", "2").c_str());
  if (mode == "direct-type1") {
    DirectType1(FirstEdu(Flag(argc, argv, "device", "")), seconds);
  } else if (mode == "direct-iommufd") {
    DirectIommufd(FirstEdu(Flag(argc, argv, "device", "")), seconds);
  } else if (mode == "socket") {
    Socket(Flag(argc, argv, "broker", "127.0.0.1:7400"), Flag(argc, argv, "node", "vm1"),
           Flag(argc, argv, "socket", "/run/iommu-agent/launcher.sock"), seconds);
  } else {
    fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  printf("vm_map_bench %s: DONE\n", mode.c_str());
  return 0;
}
