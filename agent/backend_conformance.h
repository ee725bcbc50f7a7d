// The backend conformance suite: one set of checks of the Backend contract
// (agent/backend.h) that runs unchanged against SimBackend (in a unit test)
// and against the real VfioType1Backend and IommufdBackend (inside the VM
// tests, tests/vm/vm_e2e.sh). Where a real kernel answers differently from
// the contract, the contract and SimBackend follow the kernel.
//
// The expected results are the ones backend.h documents, never a particular
// implementation's: codes via ErrnoCode (common/errno_status.h) and the errno
// name in the message.
//
// No gtest dependency, so that it links into a plain binary for the VM.
// Thread-compatible: one run at a time per backend. A run creates and
// destroys its own containers and maps memory it allocates itself; it leaves
// no container behind unless a DestroyContainer fails (reported).
#ifndef AGENT_BACKEND_CONFORMANCE_H_
#define AGENT_BACKEND_CONFORMANCE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "agent/backend.h"

namespace iommu {
namespace agent {

// Where the suite gets the host memory it maps: page-aligned, mapped by the
// suite itself, unmapped when the check ends.
enum class ConformanceMemory {
  kAnonymousShared,  // mmap(MAP_SHARED | MAP_ANONYMOUS).
  kMemfd,            // memfd_create + mmap(MAP_SHARED).
};

struct ConformanceEnv {
  // Two assignable devices, each alone in its own IOMMU group, that no
  // container holds when the run starts.
  std::string device_a;
  std::string device_b;
  // An address the backend does not manage (for the ENODEV check).
  std::string unknown_device = "0000:ff:1f.7";
  ConformanceMemory memory = ConformanceMemory::kAnonymousShared;
  // True when the platform reserves the x86 MSI window 0xfee00000-0xfeefffff
  // (x86 with an IOMMU that reports it, and SimBackend's default x86
  // geometry): no usable range may touch it and a map inside it is EINVAL.
  bool expect_msi_window = false;
  // Builds a fresh instance of the backend under test over the same kernel
  // (same KernelOps, same sysfs; a second instance in the same process is
  // fine). The persist_adopt check builds one to play the agent before a
  // restart (created, mapped, persisted, then destroyed as a dying process
  // would be) and one to play the restarted agent (adopts, maps, unmaps,
  // destroys). Unset: persist_adopt records one answer saying it was skipped
  // and passes.
  std::function<absl::StatusOr<std::unique_ptr<Backend>>()> new_instance;
};

// The outcome of one named check; `failures` is empty when it passed. Every
// failure reads "<check>: <call>: expected <...>, got <...>". `answers` has
// one "<call> -> <status>" line per call that was expected to fail, as the
// backend answered it (the status names the layer that refused: the ioctl
// for the kernel, or the backend's own context).
struct ConformanceResult {
  std::string check;
  std::vector<std::string> failures;
  std::vector<std::string> answers;
};

// Runs every check in a fixed order and returns one result per check.
std::vector<ConformanceResult> RunBackendConformanceChecks(
    Backend& backend, const ConformanceEnv& env);

// Runs every check; returns all failures (empty: the backend conforms).
std::vector<std::string> RunBackendConformance(Backend& backend,
                                               const ConformanceEnv& env);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_BACKEND_CONFORMANCE_H_
