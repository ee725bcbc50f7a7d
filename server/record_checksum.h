// Checksums of the store's records. SQLite checks its pages' structure
// (PRAGMA quick_check) but not the bytes of a value: a flipped bit in a
// serialized quota parses as another quota. Each row therefore carries a
// CRC32C (Castagnoli, as LevelDB and ext4 use) of its fields, written with it
// and verified on every read, so damage is reported as DATA_LOSS instead of
// being served.
//
// Thread-safe (pure functions).
#ifndef SERVER_RECORD_CHECKSUM_H_
#define SERVER_RECORD_CHECKSUM_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace iommu {

// CRC32C of `data` continuing from `crc` (0 to start).
uint32_t Crc32c(uint32_t crc, absl::string_view data);

// The checksum of an object row. Each field is preceded by its length, so
// that moving bytes from one field to the next changes the sum.
uint32_t ObjectChecksum(absl::string_view kind, absl::string_view id, absl::string_view value);

// The checksum of a remembered answer.
uint32_t RequestChecksum(absl::string_view request_id, absl::string_view fingerprint,
                         absl::string_view response, int64_t time_ms);

}  // namespace iommu

#endif  // SERVER_RECORD_CHECKSUM_H_
