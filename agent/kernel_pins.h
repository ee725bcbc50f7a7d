// What the kernel says it has pinned and locked for this process and for the
// whole node, read from procfs. Two pure parsers (unit-tested with literal
// file contents) and a reader of the real files.
//
// Why these numbers: the kernel charges pins per MAPPING, not per page.
// VFIO type1 (vfio_lock_acct) raises the mapping task's mm->locked_vm (VmLck)
// by every page of every VFIO_IOMMU_MAP_DMA, even when another mapping
// already pins the same page; iommufd raises mm->pinned_vm (VmPin) per
// IOAS map and, without CAP_IPC_LOCK, the user's locked_vm (per uid, not
// visible in /proc/<pid>/status). With CAP_IPC_LOCK both still count, they
// are only not checked against RLIMIT_MEMLOCK.
//
// Thread-safe (no shared state).
#ifndef AGENT_KERNEL_PINS_H_
#define AGENT_KERNEL_PINS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

// From /proc/self/status.
struct ProcessPins {
  uint64_t locked_bytes = 0;  // VmLck: mm->locked_vm (mlock + VFIO type1 pins).
  uint64_t pinned_bytes = 0;  // VmPin: mm->pinned_vm (iommufd, RDMA, ...).
};

// Parses the text of /proc/<pid>/status: the "VmLck:" and "VmPin:" lines,
// "<number> kB", converted to bytes. Other lines are ignored. On failure,
// INVALID_ARGUMENT naming `file` and the field: a line missing (a kernel
// thread's status has neither), not "<n> kB", or overflowing.
absl::StatusOr<ProcessPins> ParseProcStatusPins(absl::string_view text,
                                                absl::string_view file = "/proc/self/status");

// Parses the text of /proc/vmstat and returns the FOLL_PIN pages held now,
// system-wide (every process, not just the agent): nr_foll_pin_acquired -
// nr_foll_pin_released. On failure, INVALID_ARGUMENT naming `file` and the
// counter: missing, not a number, or released > acquired.
absl::StatusOr<uint64_t> ParseVmstatFollPinOutstanding(absl::string_view text,
                                                      absl::string_view file = "/proc/vmstat");

// Reads and parses `path` (default /proc/self/status). Errors name the file:
// the errno of open/read as a Status, or the parser's error.
absl::StatusOr<ProcessPins> ReadProcessPins(const std::string& path = "/proc/self/status");

// Reads and parses `path` (default /proc/vmstat), errors as above.
absl::StatusOr<uint64_t> ReadFollPinOutstanding(const std::string& path = "/proc/vmstat");

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_KERNEL_PINS_H_
