// Maps guest memory a launcher handed the agent (a memfd, or a file on tmpfs
// or hugetlbfs, passed with SCM_RIGHTS) into the agent's own address space,
// because IOMMU_IOAS_MAP and VFIO_IOMMU_MAP_DMA pin pages of the calling
// process. The result identifies the backing object by (st_dev, st_ino), so
// the same memory arriving twice is recognised and billed once.
//
// Thread-safe (no shared state).
#ifndef AGENT_GUEST_MEMORY_H_
#define AGENT_GUEST_MEMORY_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "agent/agent_core.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

// Largest memory object accepted (1 TiB): a bound on what one fd can make
// the agent map.
inline constexpr uint64_t kMaxGuestMemoryBytes = 1ULL << 40;

// Takes ownership of `fd`; on success the returned region's keepalive owns
// the fd and the shared mapping (munmap + close when the last reference
// goes). Errors, all INVALID_ARGUMENT naming "fd" and the rule, closing the
// fd: not a regular file; not on tmpfs/hugetlbfs (memfds are); size 0, not a
// multiple of 4096 or above kMaxGuestMemoryBytes; not opened read-write.
// Tries to seal the object against shrinking (F_SEAL_SHRINK), so a launcher
// cannot pull pages out from under a device; memfds created without
// MFD_ALLOW_SEALING are accepted unsealed.
absl::StatusOr<GuestMemoryRegion> MapGuestMemory(UniqueFd fd);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_GUEST_MEMORY_H_
