#include "agent/sysfs_devices.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/errno_status.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

constexpr absl::string_view kVfioPci = "vfio-pci";

bool ParseHexId(absl::string_view s, uint32_t* out) {
  s = absl::StripAsciiWhitespace(s);
  absl::ConsumePrefix(&s, "0x");
  if (s.empty() || s.size() > 4) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return absl::SimpleHexAtoi(s, out);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  char buf[256];
  std::string out;
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// The last component of a symlink's target, "" when the link does not exist.
absl::StatusOr<std::string> LinkBasename(const std::string& path) {
  char buf[4096];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf) - 1);
  if (n < 0) {
    if (errno == ENOENT) return std::string();
    return ErrnoStatus(errno, absl::StrCat("readlink ", path));
  }
  const absl::string_view target(buf, static_cast<size_t>(n));
  const size_t slash = target.rfind('/');
  return std::string(slash == absl::string_view::npos ? target
                                                      : target.substr(slash + 1));
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return ErrnoStatus(errno, absl::StrCat("opendir ", path));
  std::vector<std::string> out;
  while (const dirent* e = ::readdir(dir)) {
    const absl::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    out.emplace_back(name);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

std::string DriverText(const std::string& driver) {
  return driver.empty() ? "no driver" : absl::StrCat("driver ", driver);
}

}  // namespace

bool DeviceFilter::Matches(absl::string_view address, uint32_t vendor,
                           uint32_t device) const {
  for (const std::string& a : addresses) {
    if (a == address) return true;
  }
  for (const Id& id : ids) {
    if (id.vendor == vendor && (id.any_device || id.device == device)) return true;
  }
  return false;
}

absl::StatusOr<DeviceFilter> ParseDeviceFilter(absl::string_view flag) {
  DeviceFilter out;
  if (absl::StripAsciiWhitespace(flag).empty()) return out;
  for (absl::string_view raw : absl::StrSplit(flag, ',')) {
    const absl::string_view entry = absl::StripAsciiWhitespace(raw);
    auto bad = [&](absl::string_view rule) {
      return absl::InvalidArgumentError(absl::StrCat(
          "devices: entry \"", absl::CEscape(entry), "\" ", rule,
          " (expected a PCI address like 0000:00:04.0, or VENDOR:DEVICE in "
          "hex like 1af4:1041 or 1af4:*)"));
    };
    const std::vector<absl::string_view> parts = absl::StrSplit(entry, ':');
    if (parts.size() == 3) {
      if (absl::Status s = ValidatePciAddress("address", entry); !s.ok()) {
        return bad(s.message());
      }
      out.addresses.emplace_back(entry);
    } else if (parts.size() == 2) {
      DeviceFilter::Id id;
      if (!ParseHexId(parts[0], &id.vendor)) return bad("has a bad VENDOR id");
      if (parts[1] == "*") {
        id.any_device = true;
      } else if (!ParseHexId(parts[1], &id.device)) {
        return bad("has a bad DEVICE id");
      }
      out.ids.push_back(id);
    } else {
      return bad("is neither an address nor an id pair");
    }
  }
  return out;
}

SysfsDevices::SysfsDevices(DeviceFilter filter, SysfsOptions options)
    : filter_(std::move(filter)), options_(std::move(options)) {}

std::string SysfsDevices::DevicePath(absl::string_view address) const {
  return absl::StrCat(options_.root, "/bus/pci/devices/", address);
}

absl::Status SysfsDevices::Write(const std::string& path,
                                 const std::string& data) const {
  const std::string context =
      absl::StrCat("write \"", absl::CEscape(data), "\" to ", path);
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, context);
  // A sysfs store takes the whole buffer in one write; a short write is an
  // error, not something to continue.
  ssize_t n;
  do {
    n = ::write(fd, data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n < 0) return ErrnoStatus(err, context);
  if (static_cast<size_t>(n) != data.size()) {
    return ErrnoStatus(EIO, context, absl::StrCat("short write of ", n, " bytes"));
  }
  if (options_.on_write) options_.on_write(path, data);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> SysfsDevices::GroupMembers(
    uint32_t group) const {
  return ListDir(absl::StrCat(options_.root, "/kernel/iommu_groups/", group, "/devices"));
}

absl::StatusOr<std::string> SysfsDevices::Driver(const std::string& address) const {
  return LinkBasename(absl::StrCat(DevicePath(address), "/driver"));
}

absl::StatusOr<std::string> SysfsDevices::VfioCdevPath(
    const std::string& address) const {
  const std::string dir = absl::StrCat(DevicePath(address), "/vfio-dev");
  absl::StatusOr<std::vector<std::string>> entries = ListDir(dir);
  if (!entries.ok()) {
    return absl::NotFoundError(absl::StrCat(
        address, " has no VFIO device cdev (", entries.status().message(),
        "); needs vfio-pci and a kernel with CONFIG_VFIO_DEVICE_CDEV"));
  }
  for (const std::string& e : *entries) {
    uint32_t n;
    if (absl::StartsWith(e, "vfio") && absl::SimpleAtoi(e.substr(4), &n)) {
      return absl::StrCat("/dev/vfio/devices/", e);
    }
  }
  return absl::NotFoundError(absl::StrCat(dir, " has no vfioN entry"));
}

absl::StatusOr<std::vector<BackendDevice>> SysfsDevices::Scan() const {
  const std::string dir = absl::StrCat(options_.root, "/bus/pci/devices");
  absl::StatusOr<std::vector<std::string>> names = ListDir(dir);
  if (!names.ok()) return names.status();

  std::vector<BackendDevice> out;
  for (const std::string& address : *names) {
    if (!ValidatePciAddress("address", address).ok()) continue;
    BackendDevice d;
    d.address = address;
    const std::string path = DevicePath(address);
    absl::StatusOr<std::string> vendor = ReadSmallFile(path + "/vendor");
    absl::StatusOr<std::string> device = ReadSmallFile(path + "/device");
    const bool ids_ok = vendor.ok() && device.ok() &&
                        ParseHexId(*vendor, &d.vendor_id) &&
                        ParseHexId(*device, &d.device_id);
    // The allowlist by address needs no ids; by id, unreadable ids never
    // match (so a device we cannot identify is never grabbed).
    if (!filter_.Matches(address, d.vendor_id, d.device_id)) continue;
    if (!ids_ok) {
      d.unassignable_reason = absl::StrCat(
          "cannot read vendor/device ids: ",
          !vendor.ok() ? vendor.status().message()
                       : !device.ok() ? device.status().message()
                                      : "not a 16-bit hex id");
      out.push_back(std::move(d));
      continue;
    }
    absl::StatusOr<std::string> driver = Driver(address);
    absl::StatusOr<std::string> group = LinkBasename(path + "/iommu_group");
    if (!driver.ok() || !group.ok()) {
      d.unassignable_reason = std::string(
          (!driver.ok() ? driver.status() : group.status()).message());
      out.push_back(std::move(d));
      continue;
    }
    d.driver = *driver;
    if (group->empty() || !absl::SimpleAtoi(*group, &d.iommu_group)) {
      d.unassignable_reason =
          "no IOMMU group (is the IOMMU enabled, e.g. intel_iommu=on?)";
      out.push_back(std::move(d));
      continue;
    }
    absl::StatusOr<std::vector<std::string>> members = GroupMembers(d.iommu_group);
    if (!members.ok()) {
      d.unassignable_reason = std::string(members.status().message());
      out.push_back(std::move(d));
      continue;
    }
    d.assignable = true;
    for (const std::string& m : *members) {
      std::string m_driver = d.driver;
      uint32_t mv = 0, md = 0;
      if (m != address) {
        absl::StatusOr<std::string> mdrv = Driver(m);
        if (!mdrv.ok()) {
          d.assignable = false;
          d.unassignable_reason = absl::StrCat("IOMMU group ", d.iommu_group, " member ",
                                               m, ": ", mdrv.status().message());
          break;
        }
        m_driver = *mdrv;
        absl::StatusOr<std::string> v = ReadSmallFile(DevicePath(m) + "/vendor");
        absl::StatusOr<std::string> dv = ReadSmallFile(DevicePath(m) + "/device");
        if (v.ok() && dv.ok()) {
          ParseHexId(*v, &mv);
          ParseHexId(*dv, &md);
        }
        if (!filter_.Matches(m, mv, md)) {
          d.assignable = false;
          d.unassignable_reason = absl::StrCat(
              "IOMMU group ", d.iommu_group, " member ", m, " (", DriverText(m_driver),
              ") is not on the --devices allowlist; the whole group must be");
          break;
        }
      }
      if (m_driver != kVfioPci && !options_.managed) {
        d.assignable = false;
        d.unassignable_reason =
            m == address
                ? absl::StrCat("bound to ", DriverText(m_driver), ", not vfio-pci")
                : absl::StrCat("IOMMU group ", d.iommu_group, " member ", m,
                               " is bound to ", DriverText(m_driver),
                               ", not vfio-pci");
        break;
      }
    }
    out.push_back(std::move(d));
  }
  return out;
}

absl::Status SysfsDevices::BindToVfio(const std::string& address,
                                      const std::string& driver) {
  const std::string path = DevicePath(address);
  if (absl::Status s = Write(path + "/driver_override", std::string(kVfioPci)); !s.ok()) {
    return s;
  }
  if (!driver.empty()) {
    if (absl::Status s = Write(path + "/driver/unbind", address); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = Write(options_.root + "/bus/pci/drivers_probe", address); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> now = Driver(address);
  if (!now.ok()) return now.status();
  if (*now != kVfioPci) {
    return absl::FailedPreconditionError(absl::StrCat(
        address, ": drivers_probe left it on ", DriverText(*now),
        ", not vfio-pci (is the vfio-pci module loaded?)"));
  }
  return absl::OkStatus();
}

absl::Status SysfsDevices::GiveBack(const std::string& address,
                                    const std::string& driver) {
  const std::string path = DevicePath(address);
  absl::Status first = Write(path + "/driver_override", "\n");
  absl::StatusOr<std::string> now = Driver(address);
  if (now.ok() && !now->empty() && *now != driver) {
    absl::Status s = Write(path + "/driver/unbind", address);
    if (first.ok()) first = s;
  }
  if (!driver.empty()) {
    absl::Status s = Write(options_.root + "/bus/pci/drivers_probe", address);
    if (first.ok()) first = s;
    absl::StatusOr<std::string> after = Driver(address);
    if (first.ok() && after.ok() && *after != driver) {
      first = absl::FailedPreconditionError(absl::StrCat(
          address, ": drivers_probe bound ", DriverText(*after),
          ", not its previous driver ", driver));
    }
  }
  return first;
}

absl::StatusOr<GroupClaim> SysfsDevices::ClaimGroup(uint32_t group) {
  GroupClaim claim;
  claim.group = group;
  absl::StatusOr<std::vector<std::string>> members = GroupMembers(group);
  if (!members.ok()) return members.status();
  // Check every member before touching any.
  std::map<std::string, std::string> drivers;
  for (const std::string& m : *members) {
    absl::StatusOr<std::string> driver = Driver(m);
    if (!driver.ok()) return driver.status();
    drivers[m] = *driver;
    if (*driver == kVfioPci) continue;
    if (!options_.managed) {
      return absl::FailedPreconditionError(absl::StrCat(
          "IOMMU group ", group, " member ", m, " is bound to ", DriverText(*driver),
          ", not vfio-pci, and the agent is not in managed mode"));
    }
    uint32_t v = 0, d = 0;
    absl::StatusOr<std::string> vs = ReadSmallFile(DevicePath(m) + "/vendor");
    absl::StatusOr<std::string> ds = ReadSmallFile(DevicePath(m) + "/device");
    if (vs.ok() && ds.ok()) {
      ParseHexId(*vs, &v);
      ParseHexId(*ds, &d);
    }
    if (!filter_.Matches(m, v, d)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "IOMMU group ", group, " member ", m, " (", DriverText(*driver),
          ") is not on the --devices allowlist; refusing to rebind it"));
    }
  }
  for (const std::string& m : *members) {
    const std::string& driver = drivers[m];
    if (driver == kVfioPci) continue;
    absl::Status s = BindToVfio(m, driver);
    if (!s.ok()) {
      // Undo this member's partial steps, then the moved ones, newest first.
      GiveBack(m, driver).IgnoreError();
      for (auto it = claim.moved.rbegin(); it != claim.moved.rend(); ++it) {
        GiveBack(it->first, it->second).IgnoreError();
      }
      return absl::Status(s.code(), absl::StrCat("claiming IOMMU group ", group,
                                                 " for vfio-pci: ", s.message(),
                                                 "; the group was given back"));
    }
    claim.moved.emplace_back(m, driver);
  }
  return claim;
}

absl::Status SysfsDevices::ReleaseGroup(const GroupClaim& claim) {
  absl::Status first;
  for (auto it = claim.moved.rbegin(); it != claim.moved.rend(); ++it) {
    absl::Status s = GiveBack(it->first, it->second);
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

}  // namespace agent
}  // namespace iommu
