// What the records of a broker's store must satisfy before a broker serves
// them, checked on the records alone: each parses and is filed under its
// object's own id; each container's tenant and node exist, its devices are
// held by no other container, its name is free in its tenant and its
// windows fit it, apart, and belong to its tenant.
//
// A store holds such records only if something other than the broker wrote
// them (an edited file, an import, a bug of an older version); serving them
// could hand a device out twice or reach an owner that is not there. The
// broker checks them at every load, and iommu-store-migrate before it
// copies a state anywhere.
//
// Pure: no I/O, no clock, no locking.
#ifndef SERVER_MODEL_STORED_RECORDS_H_
#define SERVER_MODEL_STORED_RECORDS_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/broker.pb.h"
#include "server/store.h"
#include "server/window_allocator.h"

namespace iommu {
namespace model {

// The allocator of container `c`'s windows: its usable ranges, at its
// smallest IOMMU page size. INVALID_ARGUMENT naming the container when its
// geometry has no page size or its ranges do not make an allocator.
absl::StatusOr<WindowAllocator> ContainerAllocator(const v1::Container& c);

// OK, or DATA_LOSS naming the first record (or pair of records) that breaks
// a rule above. The devices and grant key of a node without its record
// (what a DeleteNode of an older version left behind) are allowed: a load
// ignores them.
absl::Status CheckStoredRecords(const std::vector<StoreRecord>& records);

}  // namespace model
}  // namespace iommu

#endif  // SERVER_MODEL_STORED_RECORDS_H_
