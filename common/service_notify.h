// systemd service notifications (sd_notify(3)): readiness, stopping, status
// and watchdog pings, for units with Type=notify and WatchdogSec=. Outside
// systemd ($NOTIFY_SOCKET unset) every call does nothing.
//
// Thread-safe (sd_notify opens a socket per call).
#ifndef COMMON_SERVICE_NOTIFY_H_
#define COMMON_SERVICE_NOTIFY_H_

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace iommu {

// READY=1 with a one-line STATUS=: start-up is complete.
void NotifyReady(absl::string_view status);
// STOPPING=1 with a STATUS=: the stop has begun.
void NotifyStopping(absl::string_view status);
// How often systemd expects WATCHDOG=1 (half of WatchdogSec=, as
// sd_watchdog_enabled(3) advises), or zero when no watchdog is set.
absl::Duration WatchdogPingInterval();
// WATCHDOG=1: call from the loop whose progress proves the daemon works.
void NotifyWatchdog();

}  // namespace iommu

#endif  // COMMON_SERVICE_NOTIFY_H_
