// Bounds on what a message or a log line repeats of its input. Error
// messages name the value they refuse, and refusals are logged; a caller's
// value can be megabytes long, so every text leaving a daemon (a status, a
// log line, an event) goes through one of these. Pure functions.
#ifndef COMMON_MESSAGE_TEXT_H_
#define COMMON_MESSAGE_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace iommu {

// The most of a value QuoteForMessage repeats.
inline constexpr size_t kMaxQuotedBytes = 64;
// The longest status message a daemon sends (well under gRPC's 8 KiB limit
// on a client's metadata, even percent-encoded), and the longest value of a
// log line's field.
inline constexpr size_t kMaxMessageBytes = 2048;

// `v` in double quotes, non-printing bytes, quotes and backslashes escaped;
// past kMaxQuotedBytes, its first kMaxQuotedBytes and its length:
// "abc..." (100000 bytes).
std::string QuoteForMessage(absl::string_view v);

// `text` when it is at most `max` bytes; otherwise its start and its end
// with "...[N bytes elided]..." between, `max` bytes or fewer in all. A
// message names its field first and its rule last, so both survive. Cuts
// only between UTF-8 characters.
std::string ElideMiddle(absl::string_view text, size_t max = kMaxMessageBytes);

}  // namespace iommu

#endif  // COMMON_MESSAGE_TEXT_H_
