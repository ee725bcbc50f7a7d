#include "server/record_checksum.h"

#include <array>

namespace iommu {
namespace {

// The table of the reflected Castagnoli polynomial 0x82F63B78.
std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

uint32_t AddU64(uint32_t crc, uint64_t v) {
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(v >> (8 * i));
  return Crc32c(crc, absl::string_view(bytes, sizeof(bytes)));
}

uint32_t AddField(uint32_t crc, absl::string_view field) {
  return Crc32c(AddU64(crc, field.size()), field);
}

}  // namespace

uint32_t Crc32c(uint32_t crc, absl::string_view data) {
  static const std::array<uint32_t, 256> table = MakeTable();
  crc = ~crc;
  for (unsigned char b : data) crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t ObjectChecksum(absl::string_view kind, absl::string_view id, absl::string_view value) {
  return AddField(AddField(AddField(0, kind), id), value);
}

uint32_t RequestChecksum(absl::string_view request_id, absl::string_view fingerprint,
                         absl::string_view response, int64_t time_ms) {
  return AddU64(AddField(AddField(AddField(0, request_id), fingerprint), response),
                static_cast<uint64_t>(time_ms));
}

}  // namespace iommu
