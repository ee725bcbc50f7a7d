#include "common/message_text.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace iommu {
namespace {

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xc0) == 0x80; }

// The longest prefix of `s` of at most `n` bytes that ends between characters.
absl::string_view HeadOf(absl::string_view s, size_t n) {
  if (n >= s.size()) return s;
  while (n > 0 && IsContinuationByte(s[n])) --n;
  return s.substr(0, n);
}

// The longest suffix of `s` of at most `n` bytes that starts at a character.
absl::string_view TailOf(absl::string_view s, size_t n) {
  if (n >= s.size()) return s;
  size_t from = s.size() - n;
  while (from < s.size() && IsContinuationByte(s[from])) ++from;
  return s.substr(from);
}

}  // namespace

std::string QuoteForMessage(absl::string_view v) {
  if (v.size() <= kMaxQuotedBytes) return absl::StrCat("\"", absl::CHexEscape(v), "\"");
  return absl::StrCat("\"", absl::CHexEscape(v.substr(0, kMaxQuotedBytes)), "...\" (", v.size(),
                      " bytes)");
}

std::string ElideMiddle(absl::string_view text, size_t max) {
  if (text.size() <= max) return std::string(text);
  // The marker with the largest count it can carry; what is left is split
  // two to one between the start (the field) and the end (the rule).
  const std::string longest = absl::StrCat("...[", text.size(), " bytes elided]...");
  if (max <= longest.size()) return std::string(HeadOf(text, max));
  const size_t room = max - longest.size();
  const absl::string_view head = HeadOf(text, room - room / 3);
  const absl::string_view tail = TailOf(text, room / 3);
  return absl::StrCat(head, "...[", text.size() - head.size() - tail.size(), " bytes elided]...",
                      tail);
}

}  // namespace iommu
