#include "common/service_notify.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace iommu {
namespace {

// STATUS= is one line: a newline would start another assignment.
std::string OneLine(absl::string_view s) { return absl::StrReplaceAll(s, {{"\n", " "}}); }

}  // namespace

void NotifyReady(absl::string_view status) {
  sd_notify(0, absl::StrCat("READY=1\nSTATUS=", OneLine(status)).c_str());
}

void NotifyStopping(absl::string_view status) {
  sd_notify(0, absl::StrCat("STOPPING=1\nSTATUS=", OneLine(status)).c_str());
}

absl::Duration WatchdogPingInterval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return absl::ZeroDuration();
  return absl::Microseconds(usec) / 2;
}

void NotifyWatchdog() { sd_notify(0, "WATCHDOG=1"); }

}  // namespace iommu
