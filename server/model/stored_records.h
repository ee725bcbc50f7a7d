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

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/broker.pb.h"
#include "server/store.h"
#include "server/window_allocator.h"

namespace iommu {
namespace model {

// A container as stored, with its windows reserved in its allocator.
struct StoredContainer {
  v1::Container container;
  WindowAllocator allocator;
  std::set<std::string> window_ids;
};

// The records, parsed and checked, keyed by id (node name for a node's
// devices and key).
struct StoredState {
  std::map<std::string, v1::Tenant> tenants;
  std::map<std::string, v1::Node> nodes;
  std::map<std::string, std::vector<v1::Device>> devices;
  std::map<std::string, std::string> node_keys;  // Raw grant-signing keys.
  std::map<std::string, StoredContainer> containers;
  std::map<std::string, v1::Window> windows;
  // Nodes with devices or a key but no record: what a DeleteNode of an
  // older version left behind. Their parts are not in `devices` and
  // `node_keys`; a load ignores them (and may delete them).
  std::vector<std::string> leftover_nodes;
};

// The state `records` hold, or DATA_LOSS naming the first record (or pair
// of records) that breaks a rule above. Parsing and checking are one pass,
// so a load pays for them once.
absl::StatusOr<StoredState> ParseStoredRecords(const std::vector<StoreRecord>& records);

// ParseStoredRecords' verdict alone.
absl::Status CheckStoredRecords(const std::vector<StoreRecord>& records);

}  // namespace model
}  // namespace iommu

#endif  // SERVER_MODEL_STORED_RECORDS_H_
