// backend_conformance: runs the backend conformance suite
// (agent/backend_conformance.h) against a REAL backend on this host's edu
// devices. Used inside the VM tests (tests/vm/vm_e2e.sh), before the agent
// starts, since both need the devices.
//
//   backend_conformance vfio|iommufd
//
// Devices: the first two addresses of $IOMMU_VM_EDU_DEVICES (space-separated,
// set by the VM's /init), each alone in its IOMMU group and bound to vfio-pci.
// Prints one "conformance.<check>=PASS" or "conformance.<check>=FAIL <detail>"
// line per check (one FAIL line per failure), before it one
// "conformance_answer.<check> <call> -> <status>" line per call expected to
// fail (what the backend, and through it the kernel, answered), and a summary line
// "backend_conformance <kind>: PASS|FAIL"; exits 0 when every check passed,
// 1 when one failed, 2 on a usage or setup error.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "agent/backend.h"
#include "agent/backend_conformance.h"
#include "agent/iommufd_backend.h"
#include "agent/linux_kernel_ops.h"
#include "agent/sysfs_devices.h"
#include "agent/vfio_type1_backend.h"

namespace {

using ::iommu::agent::Backend;
using ::iommu::agent::BackendDevice;
using ::iommu::agent::ConformanceEnv;
using ::iommu::agent::ConformanceResult;
using ::iommu::agent::DeviceFilter;
using ::iommu::agent::IommufdBackend;
using ::iommu::agent::LinuxKernelOps;
using ::iommu::agent::ParseDeviceFilter;
using ::iommu::agent::RunBackendConformanceChecks;
using ::iommu::agent::SysfsDevices;
using ::iommu::agent::SysfsOptions;
using ::iommu::agent::VfioType1Backend;

constexpr char kEduIds[] = "1234:11e8";

int SetupError(const std::string& what) {
  std::fprintf(stderr, "backend_conformance: %s\n", what.c_str());
  std::printf("backend_conformance: SETUP FAILED: %s\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const absl::string_view which = argc == 2 ? argv[1] : "";
  if (which != "vfio" && which != "iommufd") {
    std::fprintf(stderr, "usage: %s vfio|iommufd  (devices from $IOMMU_VM_EDU_DEVICES)\n",
                 argv[0]);
    return 2;
  }
  const char* env_devices = std::getenv("IOMMU_VM_EDU_DEVICES");
  const std::vector<std::string> devices =
      absl::StrSplit(env_devices == nullptr ? "" : env_devices, ' ', absl::SkipEmpty());
  if (devices.size() < 2) {
    return SetupError("$IOMMU_VM_EDU_DEVICES must name at least 2 devices");
  }

  absl::StatusOr<DeviceFilter> filter = ParseDeviceFilter(kEduIds);
  if (!filter.ok()) return SetupError(filter.status().ToString());
  SysfsDevices sysfs(*std::move(filter), SysfsOptions{});  // Outlives the backend.
  std::unique_ptr<Backend> backend;
  if (which == "iommufd") {
    absl::StatusOr<std::unique_ptr<IommufdBackend>> b = IommufdBackend::Create(
        LinuxKernelOps::Get(), &sysfs, static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
    if (!b.ok()) return SetupError(b.status().ToString());
    backend = *std::move(b);
  } else {
    absl::StatusOr<std::unique_ptr<VfioType1Backend>> b =
        VfioType1Backend::Create(LinuxKernelOps::Get(), &sysfs);
    if (!b.ok()) return SetupError(b.status().ToString());
    backend = *std::move(b);
  }

  absl::StatusOr<std::vector<BackendDevice>> listed = backend->ListDevices();
  if (!listed.ok()) return SetupError(listed.status().ToString());
  for (const BackendDevice& d : *listed) {
    std::printf("backend_conformance: device %s group=%u driver=%s assignable=%d\n",
                d.address.c_str(), d.iommu_group, d.driver.c_str(), d.assignable);
  }

  ConformanceEnv env;
  // persist_adopt's "before" and "after" agents: fresh instances of the
  // same kind over the same kernel, as a restarted agent builds.
  env.new_instance = [&which, &sysfs]() -> absl::StatusOr<std::unique_ptr<Backend>> {
    if (which == "iommufd") {
      absl::StatusOr<std::unique_ptr<IommufdBackend>> b = IommufdBackend::Create(
          LinuxKernelOps::Get(), &sysfs, static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
      if (!b.ok()) return b.status();
      return std::unique_ptr<Backend>(*std::move(b));
    }
    absl::StatusOr<std::unique_ptr<VfioType1Backend>> b =
        VfioType1Backend::Create(LinuxKernelOps::Get(), &sysfs);
    if (!b.ok()) return b.status();
    return std::unique_ptr<Backend>(*std::move(b));
  };
  env.device_a = devices[0];
  env.device_b = devices[1];
#if defined(__x86_64__) || defined(__i386__)
  env.expect_msi_window = true;  // The VMs run an emulated Intel IOMMU.
#endif
  const std::string kind(backend->kind());
  std::printf("backend_conformance: backend=%s devices=%s,%s\n", kind.c_str(),
              env.device_a.c_str(), env.device_b.c_str());
  int failed = 0;
  const std::vector<ConformanceResult> results = RunBackendConformanceChecks(*backend, env);
  for (const ConformanceResult& r : results) {
    for (const std::string& a : r.answers) {
      std::printf("conformance_answer.%s %s\n", r.check.c_str(), a.c_str());
    }
    if (r.failures.empty()) {
      std::printf("conformance.%s=PASS\n", r.check.c_str());
      continue;
    }
    ++failed;
    for (const std::string& f : r.failures) {
      std::printf("conformance.%s=FAIL %s\n", r.check.c_str(), f.c_str());
    }
  }
  std::printf("backend_conformance %s: %s (%zu checks, %d failed)\n", kind.c_str(),
              failed == 0 ? "PASS" : "FAIL", results.size(), failed);
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}
