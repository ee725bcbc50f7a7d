// Test-only: builds a fake sysfs tree (PCI devices, drivers, IOMMU groups)
// under a directory, and plays the kernel's part for the writes that
// SysfsDevices makes in managed mode. Header-only; not thread-safe.
#ifndef AGENT_SYSFS_TREE_FOR_TEST_H_
#define AGENT_SYSFS_TREE_FOR_TEST_H_

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace iommu {
namespace agent {

class SysfsTreeForTest {
 public:
  explicit SysfsTreeForTest(const std::string& name) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    root_ = absl::StrCat(tmp ? tmp : "/tmp", "/", name, "-", getpid());
    Run(absl::StrCat("rm -rf '", root_, "'"));
    MkdirP(root_ + "/bus/pci/devices");
    MkdirP(root_ + "/bus/pci/drivers");
    Touch(root_ + "/bus/pci/drivers_probe");
  }

  const std::string& root() const { return root_; }

  // A device bound to `driver` ("" for none) in IOMMU group `group`.
  void AddDevice(const std::string& address, const std::string& ids, uint32_t group,
                 const std::string& driver) {
    const std::string dev = DevPath(address);
    MkdirP(dev);
    const size_t colon = ids.find(':');
    WriteFile(dev + "/vendor", absl::StrCat("0x", ids.substr(0, colon), "\n"));
    WriteFile(dev + "/device", absl::StrCat("0x", ids.substr(colon + 1), "\n"));
    WriteFile(dev + "/driver_override", "(null)\n");
    const std::string g = absl::StrCat(root_, "/kernel/iommu_groups/", group);
    MkdirP(g + "/devices");
    Touch(g + "/devices/" + address);
    Link(absl::StrCat("../../../../kernel/iommu_groups/", group), dev + "/iommu_group");
    original_[address] = driver;
    Bind(address, driver);
  }

  void AddCdev(const std::string& address, const std::string& name) {
    MkdirP(DevPath(address) + "/vfio-dev/" + name);
  }

  // Devices that drivers_probe must not bind to vfio-pci (a probe failure).
  void FailVfioProbe(const std::string& address) { fail_vfio_.insert(address); }

  std::string DriverOf(const std::string& address) const {
    char buf[512];
    const ssize_t n = readlink((DevPath(address) + "/driver").c_str(), buf, sizeof(buf));
    if (n < 0) return "";
    std::string t(buf, n);
    return t.substr(t.rfind('/') + 1);
  }

  // The writes seen, as "RELATIVE_PATH <- DATA" with the root stripped.
  const std::vector<std::string>& writes() const { return writes_; }

  // Pass as SysfsOptions::on_write.
  void OnWrite(const std::string& path, const std::string& data) {
    absl::string_view rel = path;
    absl::ConsumePrefix(&rel, root_);
    writes_.push_back(absl::StrCat(rel, " <- ", absl::StripTrailingAsciiWhitespace(data)));
    if (absl::EndsWith(rel, "/driver/unbind")) {
      unlink((DevPath(data) + "/driver").c_str());
    } else if (rel == "/bus/pci/drivers_probe") {
      std::ifstream in(DevPath(data) + "/driver_override");
      std::string override_driver;
      std::getline(in, override_driver);
      if (DriverOf(data).empty()) {
        if (!override_driver.empty() && override_driver != "(null)") {
          if (!(override_driver == "vfio-pci" && fail_vfio_.count(data))) {
            Bind(data, override_driver);
          }
        } else {
          Bind(data, original_[data]);
        }
      }
    } else if (absl::EndsWith(rel, "/driver_override") && data == "\n") {
      WriteFile(path, "(null)\n");
    }
  }

 private:
  std::string DevPath(const std::string& address) const {
    return absl::StrCat(root_, "/bus/pci/devices/", address);
  }
  void Bind(const std::string& address, const std::string& driver) {
    if (driver.empty()) return;
    const std::string d = absl::StrCat(root_, "/bus/pci/drivers/", driver);
    MkdirP(d);
    Touch(d + "/unbind");
    const std::string link = DevPath(address) + "/driver";
    unlink(link.c_str());
    Link(absl::StrCat("../../drivers/", driver), link);
  }
  static void Run(const std::string& cmd) {
    if (std::system(cmd.c_str()) != 0) std::abort();
  }
  static void Link(const std::string& target, const std::string& path) {
    if (symlink(target.c_str(), path.c_str()) != 0) std::abort();
  }
  static void MkdirP(const std::string& path) { Run(absl::StrCat("mkdir -p '", path, "'")); }
  static void Touch(const std::string& path) { WriteFile(path, ""); }
  static void WriteFile(const std::string& path, const std::string& data) {
    std::ofstream(path) << data;
  }

  std::string root_;
  std::map<std::string, std::string> original_;
  std::set<std::string> fail_vfio_;
  std::vector<std::string> writes_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_SYSFS_TREE_FOR_TEST_H_
