#include "agent/sim_backend.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/memory/memory.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/errno_status.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

std::string DeviceList(const std::vector<std::string>& addresses) {
  return absl::StrCat("[", absl::StrJoin(addresses, ","), "]");
}

std::string MapContext(ContainerHandle h, uint64_t iova, uint64_t size,
                       uint64_t vaddr) {
  return absl::StrCat("sim MAP_DMA container=", h, " iova=", Hex(iova),
                      " size=", Hex(size), " vaddr=", Hex(vaddr));
}

std::string UnmapContext(ContainerHandle h, uint64_t iova, uint64_t size) {
  return absl::StrCat("sim UNMAP_DMA container=", h, " iova=", Hex(iova),
                      " size=", Hex(size));
}

std::string NoContainer(ContainerHandle h) {
  return absl::StrCat("no container with handle ", h);
}

std::string RangeText(uint64_t start, uint64_t last) {
  return absl::StrCat(Hex(start), "-", Hex(last));
}

}  // namespace

Geometry DefaultX86Geometry() {
  Geometry g;
  g.usable = {{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}};
  g.page_size_bitmap = 0x40201000;  // 4K | 2M | 1G
  g.max_mappings = 65535;
  return g;
}

absl::StatusOr<std::unique_ptr<SimBackend>> SimBackend::Create(
    std::vector<SimDeviceSpec> specs, Geometry geometry) {
  if (geometry.page_size_bitmap == 0) {
    return absl::InvalidArgumentError("sim geometry: page_size_bitmap is empty");
  }
  const uint64_t granule = MinPageSize(geometry.page_size_bitmap);
  for (size_t i = 0; i < geometry.usable.size(); ++i) {
    const IovaRange& r = geometry.usable[i];
    if (r.start > r.last || r.start % granule != 0 ||
        (r.last + 1) % granule != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sim geometry: usable range ", RangeText(r.start, r.last),
          " is empty or not aligned to the page size ", Hex(granule)));
    }
    if (i > 0 && r.start <= geometry.usable[i - 1].last) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sim geometry: usable range ", RangeText(r.start, r.last),
          " is not sorted after and disjoint from the previous one"));
    }
  }

  std::sort(specs.begin(), specs.end(),
            [](const SimDeviceSpec& a, const SimDeviceSpec& b) {
              return a.address < b.address;
            });
  // Which device blocks each group (the first one bound to a host driver).
  std::map<uint32_t, const SimDeviceSpec*> blocker;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (i > 0 && specs[i].address == specs[i - 1].address) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sim devices: address ", specs[i].address, " listed twice"));
    }
    if (!specs[i].host_driver.empty()) {
      blocker.emplace(specs[i].iommu_group, &specs[i]);
    }
  }
  std::vector<BackendDevice> devices;
  devices.reserve(specs.size());
  for (const SimDeviceSpec& spec : specs) {
    BackendDevice d;
    d.address = spec.address;
    d.iommu_group = spec.iommu_group;
    d.vendor_id = spec.vendor_id;
    d.device_id = spec.device_id;
    d.driver = spec.host_driver.empty() ? std::string(kVfioPci) : spec.host_driver;
    auto it = blocker.find(spec.iommu_group);
    d.assignable = it == blocker.end();
    if (!d.assignable) {
      const SimDeviceSpec& b = *it->second;
      d.unassignable_reason =
          b.address == spec.address
              ? absl::StrCat("bound to host driver ", b.host_driver,
                             ", not vfio-pci")
              : absl::StrCat("IOMMU group ", spec.iommu_group, " member ",
                             b.address, " is bound to host driver ",
                             b.host_driver, ", not vfio-pci");
    }
    devices.push_back(std::move(d));
  }
  return absl::WrapUnique(new SimBackend(std::move(devices), std::move(geometry)));
}

SimBackend::SimBackend(std::vector<BackendDevice> devices, Geometry geometry)
    : devices_(std::move(devices)),
      geometry_(std::move(geometry)),
      granule_(MinPageSize(geometry_.page_size_bitmap)) {}

void SimBackend::set_next_error(SimOp op, int err) {
  absl::MutexLock lock(&mu_);
  next_error_[static_cast<int>(op)] = err;
}

absl::Status SimBackend::TakeInjectedErrorLocked(SimOp op,
                                                 absl::string_view context) {
  auto it = next_error_.find(static_cast<int>(op));
  if (it == next_error_.end()) return absl::OkStatus();
  const int err = it->second;
  next_error_.erase(it);
  return ErrnoStatus(err, context, "injected by set_next_error");
}

SimBackend::Container* SimBackend::FindLocked(ContainerHandle handle) {
  auto it = containers_.find(handle);
  return it == containers_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::vector<BackendDevice>> SimBackend::ListDevices() {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kListDevices, "sim LIST_DEVICES"));
  return devices_;
}

absl::Status SimBackend::CheckDevicesLocked(
    absl::string_view context, const std::vector<std::string>& addresses) {
  if (addresses.empty()) return ErrnoStatus(EINVAL, context, "no devices");

  absl::flat_hash_set<std::string> listed;
  std::vector<const BackendDevice*> found;
  for (const std::string& address : addresses) {
    if (!listed.insert(address).second) {
      return ErrnoStatus(EINVAL, context,
                         absl::StrCat(address, " listed twice"));
    }
    auto it = std::lower_bound(
        devices_.begin(), devices_.end(), address,
        [](const BackendDevice& d, const std::string& a) { return d.address < a; });
    if (it == devices_.end() || it->address != address) {
      return ErrnoStatus(ENODEV, context, absl::StrCat("no device ", address));
    }
    found.push_back(&*it);
  }
  for (const BackendDevice* d : found) {
    // iommufd refuses to claim DMA ownership of a group that a host driver
    // uses (EBUSY); type1 reports the group as not viable.
    if (!d->assignable) {
      return ErrnoStatus(EBUSY, context,
                         absl::StrCat(d->address, " is not assignable: ",
                                      d->unassignable_reason));
    }
    auto held = holder_.find(d->address);
    if (held != holder_.end()) {
      return ErrnoStatus(EBUSY, context,
                         absl::StrCat(d->address, " is held by container ",
                                      held->second));
    }
  }
  // Type1 attaches groups, not devices: a partial group would silently hand
  // the other members to the same address space.
  for (const BackendDevice* d : found) {
    for (const BackendDevice& other : devices_) {
      if (other.iommu_group == d->iommu_group && !listed.contains(other.address)) {
        return ErrnoStatus(
            EINVAL, context,
            absl::StrCat("group ", d->iommu_group, " also holds ",
                         other.address, "; assign the whole group"));
      }
    }
  }

  return absl::OkStatus();
}

absl::StatusOr<ContainerHandle> SimBackend::CreateContainer(
    const std::vector<std::string>& addresses) {
  const std::string context =
      absl::StrCat("sim CREATE_CONTAINER devices=", DeviceList(addresses));
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kCreateContainer, context));
  RETURN_IF_ERROR(CheckDevicesLocked(context, addresses));
  const ContainerHandle handle = next_handle_++;
  Container& c = containers_[handle];
  c.devices = addresses;
  for (const std::string& address : addresses) holder_[address] = handle;
  return handle;
}

absl::StatusOr<Geometry> SimBackend::GetGeometry(ContainerHandle handle) {
  const std::string context = absl::StrCat("sim GET_GEOMETRY container=", handle);
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kGetGeometry, context));
  if (FindLocked(handle) == nullptr) {
    return ErrnoStatus(ENOENT, context, NoContainer(handle));
  }
  return geometry_;
}

absl::Status SimBackend::DestroyContainer(ContainerHandle handle) {
  const std::string context = absl::StrCat("sim DESTROY container=", handle);
  {
    absl::MutexLock gate(&gate_mu_);
    ++destroys_waiting_;
    gate_mu_.Await(absl::Condition(
        +[](bool* blocked) { return !*blocked; }, &destroys_blocked_));
    --destroys_waiting_;
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kDestroyContainer, context));
  Container* c = FindLocked(handle);
  if (c == nullptr) return ErrnoStatus(ENOENT, context, NoContainer(handle));
  for (const std::string& address : c->devices) holder_.erase(address);
  containers_.erase(handle);  // Its mappings go with it.
  return absl::OkStatus();
}

absl::Status SimBackend::Map(ContainerHandle handle, uint64_t iova,
                             uint64_t vaddr, uint64_t size, bool readable,
                             bool writable) {
  const std::string context = MapContext(handle, iova, size, vaddr);
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kMap, context));
  Container* c = FindLocked(handle);
  if (c == nullptr) return ErrnoStatus(ENOENT, context, NoContainer(handle));
  // The checks come in the order type1's vfio_dma_do_map makes them.
  if (!readable && !writable) {
    return ErrnoStatus(EINVAL, context, "neither readable nor writable");
  }
  if (size == 0) return ErrnoStatus(EINVAL, context, "size is 0");
  if ((iova | size | vaddr) % granule_ != 0) {
    return ErrnoStatus(EINVAL, context,
                       absl::StrCat("iova, size and vaddr must be multiples of "
                                    "the page size ", Hex(granule_)));
  }
  const uint64_t last = iova + (size - 1);
  if (last < iova || vaddr + (size - 1) < vaddr) {
    return ErrnoStatus(EINVAL, context, "range wraps past 2^64");
  }
  bool inside = false;
  for (const IovaRange& r : geometry_.usable) {
    if (iova >= r.start && last <= r.last) inside = true;
  }
  if (!inside) {
    return ErrnoStatus(EINVAL, context,
                       absl::StrCat(RangeText(iova, last),
                                    " is not inside one usable range"));
  }
  // Mappings are disjoint, so only two can overlap [iova, last]: the first
  // one starting at or after iova (if it starts by last) and the one before
  // it (if it reaches iova).
  auto next = c->mappings.lower_bound(iova);
  if (next != c->mappings.end() && next->first <= last) {
    return ErrnoStatus(EEXIST, context,
                       absl::StrCat("overlaps mapping ",
                                    RangeText(next->first,
                                              next->first + next->second.size - 1)));
  }
  if (next != c->mappings.begin()) {
    auto prev = std::prev(next);
    const uint64_t prev_last = prev->first + prev->second.size - 1;
    if (prev_last >= iova) {
      return ErrnoStatus(EEXIST, context,
                         absl::StrCat("overlaps mapping ",
                                      RangeText(prev->first, prev_last)));
    }
  }
  if (geometry_.max_mappings != 0 &&
      c->mappings.size() >= geometry_.max_mappings) {
    return ErrnoStatus(ENOSPC, context,
                       absl::StrCat("container holds the maximum of ",
                                    geometry_.max_mappings, " mappings"));
  }
  c->mappings[iova] = BackendMapping{iova, size, vaddr, readable, writable};
  return absl::OkStatus();
}

void SimBackend::BlockUnmaps() {
  absl::MutexLock lock(&gate_mu_);
  unmaps_blocked_ = true;
}

void SimBackend::UnblockUnmaps() {
  absl::MutexLock lock(&gate_mu_);
  unmaps_blocked_ = false;
}

void SimBackend::AwaitBlockedUnmaps(int n) {
  absl::MutexLock lock(&gate_mu_);
  std::pair<int*, int> want(&unmaps_waiting_, n);
  gate_mu_.Await(absl::Condition(
      +[](std::pair<int*, int>* w) { return *w->first >= w->second; }, &want));
}

void SimBackend::BlockDestroys() {
  absl::MutexLock lock(&gate_mu_);
  destroys_blocked_ = true;
}

void SimBackend::UnblockDestroys() {
  absl::MutexLock lock(&gate_mu_);
  destroys_blocked_ = false;
}

void SimBackend::AwaitBlockedDestroys(int n) {
  absl::MutexLock lock(&gate_mu_);
  std::pair<int*, int> want(&destroys_waiting_, n);
  gate_mu_.Await(absl::Condition(
      +[](std::pair<int*, int>* w) { return *w->first >= w->second; }, &want));
}

uint64_t SimBackend::unmap_calls() {
  absl::MutexLock lock(&gate_mu_);
  return unmap_calls_;
}

absl::StatusOr<uint64_t> SimBackend::Unmap(ContainerHandle handle,
                                           uint64_t iova, uint64_t size) {
  const std::string context = UnmapContext(handle, iova, size);
  {
    absl::MutexLock gate(&gate_mu_);
    ++unmap_calls_;
    ++unmaps_waiting_;
    gate_mu_.Await(absl::Condition(
        +[](bool* blocked) { return !*blocked; }, &unmaps_blocked_));
    --unmaps_waiting_;
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kUnmap, context));
  Container* c = FindLocked(handle);
  if (c == nullptr) return ErrnoStatus(ENOENT, context, NoContainer(handle));
  if (size == 0) return ErrnoStatus(EINVAL, context, "size is 0");
  if ((iova | size) % granule_ != 0) {
    return ErrnoStatus(EINVAL, context,
                       absl::StrCat("iova and size must be multiples of the "
                                    "page size ", Hex(granule_)));
  }
  const uint64_t last = iova + (size - 1);
  if (last < iova) return ErrnoStatus(EINVAL, context, "range wraps past 2^64");

  // Every mapping overlapping [iova, last]: possibly one starting before iova,
  // then those starting inside the range.
  auto first = c->mappings.lower_bound(iova);
  if (first != c->mappings.begin()) {
    auto prev = std::prev(first);
    const uint64_t prev_last = prev->first + prev->second.size - 1;
    if (prev_last >= iova) {
      return ErrnoStatus(EINVAL, context,
                         absl::StrCat("cuts mapping ",
                                      RangeText(prev->first, prev_last),
                                      "; unmap whole mappings"));
    }
  }
  auto end = first;
  uint64_t unmapped = 0;
  for (; end != c->mappings.end() && end->first <= last; ++end) {
    const uint64_t m_last = end->first + end->second.size - 1;
    if (m_last > last) {
      return ErrnoStatus(EINVAL, context,
                         absl::StrCat("cuts mapping ",
                                      RangeText(end->first, m_last),
                                      "; unmap whole mappings"));
    }
    unmapped += end->second.size;
  }
  if (first == end) {
    return ErrnoStatus(ENOENT, context,
                       absl::StrCat("nothing mapped in ", RangeText(iova, last)));
  }
  c->mappings.erase(first, end);
  return unmapped;
}

absl::StatusOr<std::vector<BackendMapping>> SimBackend::ListMappings(
    ContainerHandle handle) {
  const std::string context = absl::StrCat("sim LIST_MAPPINGS container=", handle);
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kListMappings, context));
  Container* c = FindLocked(handle);
  if (c == nullptr) return ErrnoStatus(ENOENT, context, NoContainer(handle));
  std::vector<BackendMapping> out;
  out.reserve(c->mappings.size());
  for (const auto& [iova, m] : c->mappings) out.push_back(m);
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>>
SimBackend::DeviceFds(ContainerHandle handle) {
  const std::string context = absl::StrCat("sim DEVICE_FDS container=", handle);
  std::vector<std::string> devices;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kDeviceFds, context));
    Container* c = FindLocked(handle);
    if (c == nullptr) return ErrnoStatus(ENOENT, context, NoContainer(handle));
    devices = c->devices;
  }
  std::vector<std::pair<std::string, UniqueFd>> out;
  for (const std::string& address : devices) {
    const std::string name = absl::StrCat("sim-device-", address);
    UniqueFd rw(memfd_create(name.c_str(), MFD_CLOEXEC));
    if (!rw) return ErrnoStatus(errno, absl::StrCat(context, " memfd_create ", name));
    // Reopen read-only through /proc so the launcher gets an O_RDONLY fd.
    const std::string proc = absl::StrCat("/proc/self/fd/", rw.get());
    UniqueFd ro(open(proc.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ro) return ErrnoStatus(errno, absl::StrCat(context, " open ", proc));
    out.emplace_back(address, std::move(ro));
  }
  return out;
}

absl::StatusOr<PersistedContainer> SimBackend::PersistContainer(
    ContainerHandle handle) {
  const std::string context = absl::StrCat("sim PERSIST container=", handle);
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kPersistContainer, context));
  Container* c = FindLocked(handle);
  if (c == nullptr) return ErrnoStatus(ENOENT, context, NoContainer(handle));
  if (!c->marker) {
    const std::string name = absl::StrCat("sim-container-", handle);
    UniqueFd marker(memfd_create(name.c_str(), MFD_CLOEXEC));
    if (!marker) return ErrnoStatus(errno, absl::StrCat(context, " memfd_create ", name));
    c->marker = std::move(marker);
  }
  UniqueFd dup(fcntl(c->marker.get(), F_DUPFD_CLOEXEC, 0));
  if (!dup) {
    return ErrnoStatus(errno, absl::StrCat(context, " F_DUPFD_CLOEXEC ",
                                           kSimContainerFdName, "=fd", c->marker.get()));
  }
  PersistedContainer out;
  out.fds.emplace_back(kSimContainerFdName, std::move(dup));
  return out;
}

absl::StatusOr<ContainerHandle> SimBackend::AdoptContainer(
    const std::vector<std::string>& addresses, std::map<std::string, UniqueFd> fds,
    absl::string_view state, const std::vector<BackendMapping>& mappings) {
  // Every fd in `fds` is closed on any error return (the map owns them);
  // on success the marker moves into the container.
  const std::string context =
      absl::StrCat("sim ADOPT_CONTAINER devices=", DeviceList(addresses));
  auto marker = fds.find(kSimContainerFdName);
  if (marker == fds.end() || !marker->second.valid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        context, ": fd ", kSimContainerFdName, ": missing (the fd store lost it)"));
  }
  std::vector<std::string> extra;
  for (const auto& [name, fd] : fds) {
    if (name != kSimContainerFdName) extra.push_back(absl::CEscape(name));
  }
  if (!extra.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, ": unknown fds [", absl::StrJoin(extra, ","),
        "] (the sim persists only ", kSimContainerFdName, ")"));
  }
  char link[256] = {};
  const std::string proc = absl::StrCat("/proc/self/fd/", marker->second.get());
  const ssize_t n = readlink(proc.c_str(), link, sizeof(link) - 1);
  const absl::string_view target(link, n > 0 ? static_cast<size_t>(n) : 0);
  if (!absl::StartsWith(target, "/memfd:sim-container")) {
    return absl::FailedPreconditionError(absl::StrCat(
        context, ": fd ", kSimContainerFdName, ": not a sim container memfd (",
        n < 0 ? absl::StrCat("readlink ", proc, ": ", ErrnoName(errno))
              : absl::StrCat("it is \"", absl::CEscape(target), "\""),
        ")"));
  }
  if (!state.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, ": state: the sim persists no state, got \"",
        absl::CEscape(state.substr(0, 64)), "\""));
  }
  std::map<uint64_t, BackendMapping> table;
  for (const BackendMapping& m : mappings) {
    if (m.size == 0 || m.iova + (m.size - 1) < m.iova) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, ": mappings: iova=", Hex(m.iova), " size=", Hex(m.size),
          " is empty or wraps past 2^64"));
    }
    auto next = table.lower_bound(m.iova);
    const bool overlaps_next = next != table.end() && next->first <= m.iova + (m.size - 1);
    const bool overlaps_prev =
        next != table.begin() &&
        std::prev(next)->first + (std::prev(next)->second.size - 1) >= m.iova;
    if (overlaps_next || overlaps_prev) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, ": mappings: iova=", Hex(m.iova), " size=", Hex(m.size),
          " overlaps another mapping"));
    }
    table[m.iova] = m;
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedErrorLocked(SimOp::kAdoptContainer, context));
  RETURN_IF_ERROR(CheckDevicesLocked(context, addresses));
  const ContainerHandle handle = next_handle_++;
  Container& c = containers_[handle];
  c.devices = addresses;
  c.mappings = std::move(table);
  c.marker = std::move(marker->second);
  for (const std::string& address : addresses) holder_[address] = handle;
  return handle;
}

}  // namespace agent
}  // namespace iommu
