#include "agent/vfio_type1_backend.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "absl/memory/memory.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "agent/kernel_uapi.h"
#include "agent/log.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
absl::StatusOr<Geometry> Type1Geometry(const Type1Info& info) {
  if ((info.flags & uapi::kVfioIommuInfoPgsizes) == 0 || info.iova_pgsizes == 0) {
    return absl::FailedPreconditionError(
        "VFIO_IOMMU_GET_INFO: the kernel reports no IOMMU page sizes");
  }
  if (!info.has_iova_ranges) {
    return absl::FailedPreconditionError(
        "VFIO_IOMMU_GET_INFO: the kernel reports no CAP_IOVA_RANGE (Linux < 5.4?); "
        "refusing to guess the reserved IOVA ranges");
  }
  Geometry g;
  g.page_size_bitmap = info.iova_pgsizes;
  g.usable = TrimRanges(info.iova_ranges, MinPageSize(info.iova_pgsizes));
  g.max_mappings = info.has_dma_avail ? info.dma_avail : 0;
  return g;
}

absl::StatusOr<std::unique_ptr<VfioType1Backend>> VfioType1Backend::Create(
    KernelOps* ops, SysfsDevices* sysfs) {
  ASSIGN_OR_RETURN(ContainerFd probe, ContainerFd::Open(ops));
  ASSIGN_OR_RETURN(const int version, probe.GetApiVersion());
  if (version != uapi::kVfioApiVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VFIO_GET_API_VERSION: kernel reports ", version, ", this agent speaks ",
        uapi::kVfioApiVersion));
  }
  ASSIGN_OR_RETURN(const bool v2, probe.CheckExtension(uapi::kVfioType1v2Iommu));
  if (!v2) {
    return absl::FailedPreconditionError(
        "VFIO_CHECK_EXTENSION: the kernel has no VFIO_TYPE1v2_IOMMU (is "
        "vfio_iommu_type1 loaded?)");
  }
  return absl::WrapUnique(new VfioType1Backend(ops, sysfs));
}

VfioType1Backend::~VfioType1Backend() {
  // Containers still open are torn down by their owners' destructors (device
  // fds, groups, container: the kernel unmaps and unpins on the last close).
  // Claimed groups stay on vfio-pci: giving them back while a launcher may
  // still hold a device fd would block in the kernel.
}

absl::StatusOr<std::vector<BackendDevice>> VfioType1Backend::ListDevices() {
  return sysfs_->Scan();
}

absl::StatusOr<ContainerHandle> VfioType1Backend::CreateContainer(
    const std::vector<std::string>& addresses) {
  const std::string context =
      absl::StrCat("vfio-type1 CREATE_CONTAINER devices=", DeviceListText(addresses));
  absl::MutexLock create_lock(&create_mu_);
  ASSIGN_OR_RETURN(const ResolvedDevices resolved,
                   containers_.ScanAndResolve(sysfs_, context, addresses));

  auto c = std::make_shared<Container>();
  c->addresses = addresses;
  // From here, any early return closes what was opened (the owners'
  // destructors, devices first) and gives claimed groups back.
  {
    ClaimGuard guard(sysfs_, &c->claims);
    ContainerFd container;
    std::vector<GroupFd> group_fds;
    std::vector<DeviceFd> devices;
    RETURN_IF_ERROR(ClaimGroups(sysfs_, resolved.groups, &c->claims));
    ASSIGN_OR_RETURN(container, ContainerFd::Open(ops_));
    for (const auto& [group, unused] : resolved.groups) {
      ASSIGN_OR_RETURN(GroupFd g, GroupFd::Open(ops_, group));
      ASSIGN_OR_RETURN(const uint32_t flags, g.GetStatus());
      if ((flags & uapi::kVfioGroupFlagsViable) == 0) {
        return ErrnoStatus(EBUSY, context,
                           absl::StrCat("VFIO_GROUP_GET_STATUS group=", group,
                                        ": not viable (a member is bound to a "
                                        "host driver)"));
      }
      if ((flags & uapi::kVfioGroupFlagsContainerSet) != 0) {
        return ErrnoStatus(EBUSY, context,
                           absl::StrCat("VFIO_GROUP_GET_STATUS group=", group,
                                        ": already set on another container"));
      }
      RETURN_IF_ERROR(g.SetContainer(container));
      group_fds.push_back(std::move(g));
    }
    RETURN_IF_ERROR(container.SetIommu(uapi::kVfioType1v2Iommu));
    ASSIGN_OR_RETURN(const Type1Info info, container.GetIommuInfo());
    ASSIGN_OR_RETURN(c->geometry, Type1Geometry(info));
    for (const std::string& address : addresses) {
      const BackendDevice* d = nullptr;
      for (const BackendDevice& s : resolved.scanned) {
        if (s.address == address) d = &s;
      }
      for (const GroupFd& g : group_fds) {
        if (g.group() != d->iommu_group) continue;
        ASSIGN_OR_RETURN(DeviceFd fd, g.GetDeviceFd(address));
        devices.push_back(std::move(fd));
      }
    }
    guard.Disarm();
    c->container = std::move(container);
    c->groups = std::move(group_fds);
    c->devices = std::move(devices);
  }
  return containers_.Add(std::move(c));
}

absl::StatusOr<Geometry> VfioType1Backend::GetGeometry(ContainerHandle handle) {
  const std::string context = absl::StrCat("vfio-type1 GET_GEOMETRY container=", handle);
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  return c->geometry;
}

absl::Status VfioType1Backend::DestroyContainer(ContainerHandle handle) {
  const std::string context = absl::StrCat("vfio-type1 DESTROY container=", handle);
  absl::MutexLock create_lock(&create_mu_);
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  {
    absl::MutexLock lock(&c->mu);
    // Unmap everything first: this unpins every page even if a launcher
    // keeps a device fd (and with it the container) open.
    absl::StatusOr<uint64_t> all = c->container.UnmapDma(0, 0, uapi::kVfioDmaUnmapFlagAll);
    if (all.ok()) {
      c->mappings = MappingTable();
    } else {
      // Kernels before 5.13 have no FLAG_ALL: unmap what we know we mapped.
      for (const BackendMapping& m : c->mappings.List()) {
        absl::StatusOr<uint64_t> one = c->container.UnmapDma(m.iova, m.size, 0);
        if (!one.ok()) return one.status();  // The rest is left as it was.
        c->mappings.EraseRange(m.iova, m.size);
      }
    }
    c->destroyed = true;
    containers_.Erase(handle);
    c->devices.clear();
    for (const GroupFd& g : c->groups) {
      if (absl::Status s = g.UnsetContainer(); !s.ok()) {
        LogEvent(LogLevel::kWarning, "group_unset_failed",
                 {{"container", absl::StrCat(handle)},
                  {"group", absl::StrCat(g.group())},
                  {"error", s.message()},
                  {"note", "a launcher still holds a device fd; the group stays on "
                           "the emptied container until it closes it"}});
      }
    }
    c->groups.clear();
    c->container.Reset();
  }
  ReleaseGroupClaims(sysfs_, c->claims);
  return absl::OkStatus();
}

absl::Status VfioType1Backend::Map(ContainerHandle handle, uint64_t iova,
                                   uint64_t vaddr, uint64_t size, bool readable,
                                   bool writable) {
  const std::string context = absl::StrCat("vfio-type1 MAP_DMA container=", handle,
                                           " iova=", Hex(iova), " size=", Hex(size));
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  const uint32_t flags = (readable ? uapi::kVfioDmaMapFlagRead : 0) |
                         (writable ? uapi::kVfioDmaMapFlagWrite : 0);
  absl::MutexLock lock(&c->mu);
  RETURN_IF_ERROR(CheckNotDestroyed(*c, context, handle));
  RETURN_IF_ERROR(c->container.MapDma(iova, vaddr, size, flags));
  c->mappings.Add(BackendMapping{iova, size, vaddr, readable, writable});
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> VfioType1Backend::Unmap(ContainerHandle handle,
                                                 uint64_t iova, uint64_t size) {
  const std::string context = absl::StrCat("vfio-type1 UNMAP_DMA container=", handle,
                                           " iova=", Hex(iova), " size=", Hex(size));
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  absl::MutexLock lock(&c->mu);
  RETURN_IF_ERROR(CheckNotDestroyed(*c, context, handle));
  ASSIGN_OR_RETURN(const uint64_t bytes, c->container.UnmapDma(iova, size, 0));
  if (bytes == 0) {
    return ErrnoStatus(ENOENT, context, "nothing mapped in that range");
  }
  c->mappings.EraseRange(iova, size);
  return bytes;
}

absl::StatusOr<std::vector<BackendMapping>> VfioType1Backend::ListMappings(
    ContainerHandle handle) {
  return containers_.ListMappings(
      handle, absl::StrCat("vfio-type1 LIST_MAPPINGS container=", handle));
}

absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>>
VfioType1Backend::DeviceFds(ContainerHandle handle) {
  return containers_.DeviceFds(handle,
                               absl::StrCat("vfio-type1 DEVICE_FDS container=", handle));
}

absl::StatusOr<PersistedContainer> VfioType1Backend::PersistContainer(
    ContainerHandle handle) {
  const std::string context = absl::StrCat("vfio-type1 PERSIST container=", handle);
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  absl::MutexLock lock(&c->mu);
  RETURN_IF_ERROR(CheckNotDestroyed(*c, context, handle));
  PersistedContainer out;
  ASSIGN_OR_RETURN(UniqueFd container, c->container.Dup("container"));
  out.fds.emplace_back("container", std::move(container));
  for (const GroupFd& g : c->groups) {
    const std::string name = GroupFdName(g.group());
    ASSIGN_OR_RETURN(UniqueFd fd, g.Dup(name));
    out.fds.emplace_back(name, std::move(fd));
  }
  RETURN_IF_ERROR(AppendPersistedDeviceFds(c->devices, &out.fds));
  return out;
}

absl::StatusOr<ContainerHandle> VfioType1Backend::AdoptContainer(
    const std::vector<std::string>& addresses, std::map<std::string, UniqueFd> fds,
    absl::string_view state, const std::vector<BackendMapping>& mappings) {
  const std::string context =
      absl::StrCat("vfio-type1 ADOPT_CONTAINER devices=", DeviceListText(addresses));
  // Owns every fd given until it is adopted; any early return closes the
  // rest (and the owners close what was taken).
  AdoptedFds given(std::move(fds));
  if (!state.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, ": state: vfio-type1 persists no state, got \"",
                     absl::CEscape(state.substr(0, 64)), "\""));
  }
  ASSIGN_OR_RETURN(MappingTable table, MappingTableFrom(context, mappings));
  absl::MutexLock create_lock(&create_mu_);
  ASSIGN_OR_RETURN(const ResolvedDevices resolved,
                   containers_.ScanAndResolve(sysfs_, context, addresses));
  std::vector<std::string> names = {"container"};
  for (const auto& [group, unused] : resolved.groups) names.push_back(GroupFdName(group));
  for (const std::string& address : addresses) names.push_back(DeviceFdName(address));
  RETURN_IF_ERROR(given.CheckNames(context, names));

  absl::StatusOr<ContainerFd> container = ContainerFd::Adopt(ops_, given.Take("container"));
  if (!container.ok()) {
    return NotAKind(context, "container", "VFIO container", container.status());
  }
  std::vector<GroupFd> group_fds;
  for (const auto& [group, unused] : resolved.groups) {
    const std::string name = GroupFdName(group);
    absl::StatusOr<GroupFd> g = GroupFd::Adopt(ops_, given.Take(name), group);
    if (!g.ok()) return NotAKind(context, name, "VFIO group set on a container", g.status());
    group_fds.push_back(*std::move(g));
  }
  std::vector<DeviceFd> devices;
  for (const std::string& address : addresses) {
    const std::string name = DeviceFdName(address);
    absl::StatusOr<DeviceFd> d = DeviceFd::Adopt(ops_, given.Take(name), address);
    if (!d.ok()) return NotAKind(context, name, "VFIO device", d.status());
    devices.push_back(*std::move(d));
  }
  absl::StatusOr<Type1Info> info = container->GetIommuInfo();
  if (!info.ok()) {
    return NotAKind(context, "container", "VFIO container with a type1 IOMMU set",
                    info.status());
  }
  auto c = std::make_shared<Container>();
  c->addresses = addresses;
  ASSIGN_OR_RETURN(c->geometry, Type1Geometry(*info));
  if (info->has_dma_avail) {
    // DMA_AVAIL already counts the mappings the kernel holds; report the
    // limit as CreateContainer saw it.
    c->geometry.max_mappings = static_cast<uint32_t>(std::min<uint64_t>(
        UINT32_MAX, uint64_t{info->dma_avail} + table.List().size()));
  }
  c->container = *std::move(container);
  c->groups = std::move(group_fds);
  c->devices = std::move(devices);
  return containers_.Add(std::move(c), std::move(table));
}

}  // namespace agent
}  // namespace iommu
