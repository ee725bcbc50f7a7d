#include "agent/backend_setup.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "agent/agent_metrics.h"
#include "agent/iommufd_backend.h"
#include "agent/log.h"
#include "agent/sim_backend.h"
#include "agent/startup.h"
#include "agent/vfio_type1_backend.h"

namespace iommu {
namespace agent {
namespace {

absl::StatusOr<BuiltBackend> BuildSimBackend(const BackendPlan& plan) {
  std::vector<SimDeviceSpec> specs = plan.sim_devices;
  if (!plan.sim_config.empty()) {
    absl::StatusOr<std::vector<SimDeviceSpec>> more = ReadSimConfigFile(plan.sim_config);
    if (!more.ok()) return WithStartEvent("bad_flag", more.status());
    specs.insert(specs.end(), more->begin(), more->end());
  }
  Geometry geometry = DefaultX86Geometry();
  geometry.max_mappings = plan.sim_max_mappings;
  BuiltBackend built;
  built.device_count = specs.size();
  built.default_mapping_limit = plan.sim_max_mappings;
  absl::StatusOr<std::unique_ptr<SimBackend>> sim =
      SimBackend::Create(std::move(specs), geometry);
  if (!sim.ok()) return WithStartEvent("bad_flag", sim.status());
  built.backend = *std::move(sim);
  std::fputs(SimBanner().c_str(), stderr);
  if (built.device_count == 0) {
    LogEvent(LogLevel::kWarning, "sim_no_devices",
             {{"hint", "pass --sim-devices or --sim-config"}});
  }
  return built;
}

absl::StatusOr<BuiltBackend> BuildRealBackend(const BackendPlan& plan, KernelOps* ops) {
  BuiltBackend built;
  SysfsOptions sysfs_options;
  sysfs_options.managed = plan.manage_drivers;
  built.sysfs = std::make_unique<SysfsDevices>(plan.devices, sysfs_options);
  absl::StatusOr<MemlockDecision> pin = EnsureCanPinMemory(plan.kernel_pin_bytes_per_tenant);
  if (!pin.ok()) return WithStartEvent("memlock_refused", pin.status());
  LogEvent(LogLevel::kInfo, "memlock", {{"state", pin->description}});
  built.memlock = *std::move(pin);
  if (plan.kind == "iommufd") {
    absl::StatusOr<std::unique_ptr<IommufdBackend>> real = IommufdBackend::Create(
        ops, built.sysfs.get(), static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
    if (!real.ok()) return WithStartEvent("backend_failed", real.status());
    built.backend = *std::move(real);
  } else {
    absl::StatusOr<std::unique_ptr<VfioType1Backend>> real =
        VfioType1Backend::Create(ops, built.sysfs.get());
    if (!real.ok()) return WithStartEvent("backend_failed", real.status());
    built.backend = *std::move(real);
    built.default_mapping_limit = ReadType1DmaEntryLimit().value_or(0);
  }
  absl::StatusOr<std::vector<BackendDevice>> found = built.backend->ListDevices();
  if (!found.ok()) return WithStartEvent("backend_failed", found.status());
  built.device_count = found->size();
  return built;
}

}  // namespace

absl::StatusOr<BuiltBackend> BuildBackend(const BackendPlan& plan, KernelOps* ops) {
  if (plan.kind == "sim") return BuildSimBackend(plan);
  return BuildRealBackend(plan, ops);
}

}  // namespace agent
}  // namespace iommu
