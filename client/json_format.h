// The JSON writer behind iommuctl's -o json (client/format.h's FormatJson):
// any protobuf message as pretty-printed JSON, by reflection. A library of
// its own because the reflection walk knows nothing of the broker's types,
// and the views that do need none of it.
//
// The proto3 JSON mapping with proto field names and every primitive field
// printed (zeros explicit; singular messages and oneof members only when
// set), indented by two spaces, with two changes (format.h says why):
//  - 64-bit integers are plain JSON numbers, exact, not strings;
//  - an int64 field named *_ms (milliseconds since the epoch) is followed by
//    a sibling without the suffix holding the instant in RFC 3339 UTC with
//    milliseconds, or null for 0.
// Map entries are sorted by key; bytes are base64; NaN and infinities are the
// strings "NaN", "Infinity" and "-Infinity"; an enum number the descriptor
// does not know is printed as the number.
//
// Pure: no I/O, thread-safe.
#ifndef CLIENT_JSON_FORMAT_H_
#define CLIENT_JSON_FORMAT_H_

#include <string>

#include "google/protobuf/message.h"

namespace iommu {
namespace client {

// `message` as JSON (see the file comment), without a trailing newline.
std::string MessageToJson(const google::protobuf::Message& message);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_JSON_FORMAT_H_
