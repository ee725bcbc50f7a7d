#include "agent/iommufd_backend.h"

#include <algorithm>
#include <cerrno>

#include "absl/memory/memory.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/errno_status.h"
#include "agent/kernel_uapi.h"
#include "agent/log.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
absl::StatusOr<Geometry> IoasGeometry(const IoasRanges& ranges,
                                      uint64_t host_page_size) {
  const uint64_t granule = std::max<uint64_t>(ranges.iova_alignment, host_page_size);
  if (!IsPowerOfTwo(granule)) {
    return absl::InternalError(absl::StrCat(
        "IOMMU_IOAS_IOVA_RANGES: alignment ", Hex(ranges.iova_alignment),
        " / host page size ", Hex(host_page_size), " is not a power of two"));
  }
  Geometry g;
  g.page_size_bitmap = granule;
  g.usable = TrimRanges(ranges.ranges, granule);
  g.max_mappings = 0;
  if (g.usable.empty()) {
    return absl::InternalError("IOMMU_IOAS_IOVA_RANGES: no usable IOVA range");
  }
  return g;
}

absl::StatusOr<std::unique_ptr<IommufdBackend>> IommufdBackend::Create(
    KernelOps* ops, SysfsDevices* sysfs, uint64_t host_page_size) {
  ASSIGN_OR_RETURN(IommufdFd probe, IommufdFd::Open(ops));
  if (!IsPowerOfTwo(host_page_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("host page size ", host_page_size, " is not a power of two"));
  }
  return absl::WrapUnique(new IommufdBackend(ops, sysfs, host_page_size));
}

absl::StatusOr<std::vector<BackendDevice>> IommufdBackend::ListDevices() {
  return sysfs_->Scan();
}

absl::StatusOr<ContainerHandle> IommufdBackend::CreateContainer(
    const std::vector<std::string>& addresses) {
  const std::string context =
      absl::StrCat("iommufd CREATE_CONTAINER devices=", DeviceListText(addresses));
  absl::MutexLock create_lock(&create_mu_);
  ASSIGN_OR_RETURN(const ResolvedDevices resolved,
                   containers_.ScanAndResolve(sysfs_, context, addresses));

  auto c = std::make_shared<Container>();
  c->addresses = addresses;
  {
    // Any early return closes the device fds (unbinding them), then the
    // iommufd (freeing the IOAS), then gives claimed groups back.
    ClaimGuard guard(sysfs_, &c->claims);
    IommufdFd iommufd;
    std::vector<DeviceFd> devices;
    RETURN_IF_ERROR(ClaimGroups(sysfs_, resolved.groups, &c->claims));
    ASSIGN_OR_RETURN(iommufd, IommufdFd::Open(ops_));
    ASSIGN_OR_RETURN(const uint32_t ioas_id, iommufd.IoasAlloc());
    for (const std::string& address : addresses) {
      ASSIGN_OR_RETURN(const std::string path, sysfs_->VfioCdevPath(address));
      ASSIGN_OR_RETURN(DeviceFd device, DeviceFd::OpenCdev(ops_, path, address));
      if (absl::Status bound = device.BindIommufd(iommufd).status(); !bound.ok()) {
        // 6.12 answers EINVAL (not EBUSY) when the cdev is already bound,
        // e.g. a launcher from before an agent restart still holds it open:
        // that is a state to wait out, not a bad argument.
        if (absl::IsInvalidArgument(bound)) {
          return absl::FailedPreconditionError(absl::StrCat(
              bound.message(), " (the device is still bound to another iommufd context: "
                               "a process from before may still hold its fd)"));
        }
        return bound;
      }
      RETURN_IF_ERROR(device.AttachIommufdPt(ioas_id).status());
      devices.push_back(std::move(device));
    }
    // Ranges narrow as devices attach: read them after the last attach.
    ASSIGN_OR_RETURN(const IoasRanges ranges, iommufd.IoasIovaRanges(ioas_id));
    ASSIGN_OR_RETURN(c->geometry, IoasGeometry(ranges, host_page_size_));
    guard.Disarm();
    c->ioas_id = ioas_id;
    c->iommufd = std::move(iommufd);
    c->devices = std::move(devices);
  }
  return containers_.Add(std::move(c));
}

absl::StatusOr<Geometry> IommufdBackend::GetGeometry(ContainerHandle handle) {
  const std::string context = absl::StrCat("iommufd GET_GEOMETRY container=", handle);
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  return c->geometry;
}

absl::Status IommufdBackend::DestroyContainer(ContainerHandle handle) {
  const std::string context = absl::StrCat("iommufd DESTROY container=", handle);
  absl::MutexLock create_lock(&create_mu_);
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  {
    absl::MutexLock lock(&c->mu);
    // Detach explicitly rather than rely on close: a launcher's dup of a
    // device fd would keep the device attached past our close.
    size_t detached = 0;
    absl::Status failed;
    for (; detached < c->devices.size(); ++detached) {
      failed = c->devices[detached].DetachIommufdPt();
      if (!failed.ok()) break;
    }
    if (failed.ok()) failed = c->iommufd.Destroy(c->ioas_id);
    if (!failed.ok()) {
      // Put the devices back where they were.
      for (size_t i = 0; i < detached; ++i) {
        if (absl::Status s = c->devices[i].AttachIommufdPt(c->ioas_id).status(); !s.ok()) {
          LogEvent(LogLevel::kError, "reattach_failed",
                   {{"container", absl::StrCat(handle)},
                    {"device", c->devices[i].address()},
                    {"error", s.message()}});
        }
      }
      return failed;
    }
    c->destroyed = true;
    c->mappings = MappingTable();
    containers_.Erase(handle);
    c->devices.clear();
    c->iommufd.Reset();
  }
  ReleaseGroupClaims(sysfs_, c->claims);
  return absl::OkStatus();
}

absl::Status IommufdBackend::Map(ContainerHandle handle, uint64_t iova,
                                 uint64_t vaddr, uint64_t size, bool readable,
                                 bool writable) {
  const std::string context = absl::StrCat("iommufd IOAS_MAP container=", handle,
                                           " iova=", Hex(iova), " size=", Hex(size));
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  const uint32_t flags = uapi::kIommuIoasMapFixedIova |
                         (readable ? uapi::kIommuIoasMapReadable : 0) |
                         (writable ? uapi::kIommuIoasMapWriteable : 0);
  absl::MutexLock lock(&c->mu);
  RETURN_IF_ERROR(CheckNotDestroyed(*c, context, handle));
  RETURN_IF_ERROR(c->iommufd.IoasMap(c->ioas_id, iova, vaddr, size, flags));
  c->mappings.Add(BackendMapping{iova, size, vaddr, readable, writable});
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> IommufdBackend::Unmap(ContainerHandle handle,
                                               uint64_t iova, uint64_t size) {
  const std::string context = absl::StrCat("iommufd IOAS_UNMAP container=", handle,
                                           " iova=", Hex(iova), " size=", Hex(size));
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  absl::MutexLock lock(&c->mu);
  RETURN_IF_ERROR(CheckNotDestroyed(*c, context, handle));
  // size 0 would mean "nothing" to us but the kernel reads iova=0 length=0
  // literally; refuse it here with the backend.h rule.
  if (size == 0) return ErrnoStatus(EINVAL, context, "size is 0");
  // 6.12's IOMMU_IOAS_UNMAP does not check alignment: it unmaps the whole
  // mappings inside a misaligned range (found by the conformance suite).
  // backend.h promises EINVAL, as type1 answers.
  const uint64_t granule = MinPageSize(c->geometry.page_size_bitmap);
  if ((iova | size) % granule != 0) {
    return ErrnoStatus(EINVAL, context,
                       absl::StrCat("iova and size must be multiples of the page size ",
                                    Hex(granule)));
  }
  // iommufd reports cutting a mapping as ENOENT, like an empty range;
  // backend.h promises EINVAL for it, so check our table first.
  if (const BackendMapping* cut = c->mappings.FindCut(iova, size)) {
    return ErrnoStatus(EINVAL, context,
                       absl::StrCat("cuts mapping ", Hex(cut->iova), "-",
                                    Hex(cut->iova + cut->size - 1),
                                    "; unmap whole mappings"));
  }
  ASSIGN_OR_RETURN(const uint64_t bytes, c->iommufd.IoasUnmap(c->ioas_id, iova, size));
  c->mappings.EraseRange(iova, size);
  return bytes;
}

absl::StatusOr<std::vector<BackendMapping>> IommufdBackend::ListMappings(
    ContainerHandle handle) {
  return containers_.ListMappings(
      handle, absl::StrCat("iommufd LIST_MAPPINGS container=", handle));
}

absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>>
IommufdBackend::DeviceFds(ContainerHandle handle) {
  return containers_.DeviceFds(handle,
                               absl::StrCat("iommufd DEVICE_FDS container=", handle));
}

absl::StatusOr<PersistedContainer> IommufdBackend::PersistContainer(
    ContainerHandle handle) {
  const std::string context = absl::StrCat("iommufd PERSIST container=", handle);
  ASSIGN_OR_RETURN(std::shared_ptr<Container> c, containers_.Find(handle, context));
  absl::MutexLock lock(&c->mu);
  RETURN_IF_ERROR(CheckNotDestroyed(*c, context, handle));
  PersistedContainer out;
  ASSIGN_OR_RETURN(UniqueFd iommufd, c->iommufd.Dup("iommufd"));
  out.fds.emplace_back("iommufd", std::move(iommufd));
  RETURN_IF_ERROR(AppendPersistedDeviceFds(c->devices, &out.fds));
  out.state = absl::StrCat("ioas=", c->ioas_id);
  return out;
}

namespace {

// "ioas=<decimal>" -> the IOAS id; INVALID_ARGUMENT "<context>: state: ...".
absl::StatusOr<uint32_t> ParseIommufdState(absl::string_view context,
                                           absl::string_view state) {
  constexpr absl::string_view kPrefix = "ioas=";
  absl::string_view digits = state;
  uint32_t id = 0;
  const bool ok = absl::ConsumePrefix(&digits, kPrefix) && !digits.empty() &&
                  digits.size() <= 10 &&
                  std::all_of(digits.begin(), digits.end(),
                              [](char ch) { return ch >= '0' && ch <= '9'; }) &&
                  absl::SimpleAtoi(digits, &id) && id != 0;
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, ": state: expected \"ioas=<id>\" (a non-zero 32-bit IOAS id), got \"",
        absl::CEscape(state.substr(0, 64)), "\""));
  }
  return id;
}

}  // namespace

absl::StatusOr<ContainerHandle> IommufdBackend::AdoptContainer(
    const std::vector<std::string>& addresses, std::map<std::string, UniqueFd> fds,
    absl::string_view state, const std::vector<BackendMapping>& mappings) {
  const std::string context =
      absl::StrCat("iommufd ADOPT_CONTAINER devices=", DeviceListText(addresses));
  // Owns every fd given until it is adopted; any early return closes the
  // rest (and the owners close what was taken).
  AdoptedFds given(std::move(fds));
  ASSIGN_OR_RETURN(const uint32_t ioas_id, ParseIommufdState(context, state));
  ASSIGN_OR_RETURN(MappingTable table, MappingTableFrom(context, mappings));
  absl::MutexLock create_lock(&create_mu_);
  RETURN_IF_ERROR(containers_.ScanAndResolve(sysfs_, context, addresses).status());
  std::vector<std::string> names = {"iommufd"};
  for (const std::string& address : addresses) names.push_back(DeviceFdName(address));
  RETURN_IF_ERROR(given.CheckNames(context, names));

  absl::StatusOr<IommufdFd> iommufd = IommufdFd::Adopt(ops_, given.Take("iommufd"), ioas_id);
  if (!iommufd.ok()) {
    return NotAKind(context, "iommufd", absl::StrCat("/dev/iommu context holding IOAS ", ioas_id),
                    iommufd.status());
  }
  std::vector<DeviceFd> devices;
  for (const std::string& address : addresses) {
    const std::string name = DeviceFdName(address);
    absl::StatusOr<DeviceFd> d = DeviceFd::Adopt(ops_, given.Take(name), address);
    if (!d.ok()) return NotAKind(context, name, "bound VFIO device", d.status());
    devices.push_back(*std::move(d));
  }
  ASSIGN_OR_RETURN(const IoasRanges ranges, iommufd->IoasIovaRanges(ioas_id));
  auto c = std::make_shared<Container>();
  c->addresses = addresses;
  ASSIGN_OR_RETURN(c->geometry, IoasGeometry(ranges, host_page_size_));
  c->ioas_id = ioas_id;
  c->iommufd = *std::move(iommufd);
  c->devices = std::move(devices);
  return containers_.Add(std::move(c), std::move(table));
}

}  // namespace agent
}  // namespace iommu
