#include "common/byte_size.h"

#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/message_text.h"

namespace iommu {
namespace {

struct Unit {
  const char* suffix;
  uint64_t multiplier;
};

constexpr uint64_t kKi = uint64_t{1} << 10;
constexpr uint64_t kK = 1000;

constexpr Unit kUnits[] = {
    {"Ki", kKi},
    {"Mi", kKi * kKi},
    {"Gi", kKi * kKi * kKi},
    {"Ti", kKi * kKi * kKi * kKi},
    {"Pi", kKi * kKi * kKi * kKi * kKi},
    {"Ei", kKi * kKi * kKi * kKi * kKi * kKi},
    {"k", kK},
    {"M", kK * kK},
    {"G", kK * kK * kK},
    {"T", kK * kK * kK * kK},
    {"P", kK * kK * kK * kK * kK},
    {"E", kK * kK * kK * kK * kK * kK},
};

absl::Status Invalid(absl::string_view field, absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", QuoteForMessage(text), " ", why,
                                                 " (sizes are ", kByteSizeForms, ")"));
}

// The message for a unit that is not one of kUnits: for a letter we can
// place ("GB", "GiB", "g", "K"), the two readings it may have meant.
std::string UnitAdvice(absl::string_view digits, absl::string_view unit) {
  const char letter = absl::ascii_toupper(unit[0]);
  static constexpr char kLetters[] = "KMGTPE";
  bool known = false;
  for (const char* p = kLetters; *p != '\0'; ++p) known = known || *p == letter;
  if (!known) return absl::StrCat("has an unknown unit ", QuoteForMessage(unit));
  const std::string binary = absl::StrCat(digits, std::string(1, letter), "i");
  const std::string decimal =
      absl::StrCat(digits, letter == 'K' ? std::string("k") : std::string(1, letter));
  const int power = 10 * static_cast<int>(std::string(kLetters).find(letter) + 1);
  const int dec_power = 3 * static_cast<int>(std::string(kLetters).find(letter) + 1);
  if (unit == "m") {
    return absl::StrCat("has unit \"m\", which is milli in Kubernetes: write ", digits,
                        "Mi (2^20 bytes) or ", digits, "M (10^6 bytes)");
  }
  return absl::StrCat("is ambiguous: write ", binary, " (2^", power, " bytes) or ", decimal,
                      " (10^", dec_power, " bytes)");
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view field, absl::string_view text) {
  if (text.empty()) return Invalid(field, text, "is empty");
  absl::string_view s = text;
  if (absl::ConsumePrefix(&s, "0x") || absl::ConsumePrefix(&s, "0X")) {
    if (s.empty() || s.size() > 16 ||
        s.find_first_not_of("0123456789abcdefABCDEF") != absl::string_view::npos) {
      return Invalid(field, text, "is not a hex number of at most 16 digits (hex takes no unit)");
    }
    uint64_t v = 0;
    for (char c : s) {
      v = v * 16 + (absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10);
    }
    return v;
  }
  size_t n = 0;
  while (n < s.size() && absl::ascii_isdigit(s[n])) ++n;
  if (n == 0) return Invalid(field, text, "does not start with a digit");
  const absl::string_view digits = s.substr(0, n);
  absl::string_view unit = s.substr(n);
  if (!unit.empty() && (unit[0] == '.' || unit[0] == ',')) {
    return Invalid(field, text, "is not a whole number: use a smaller unit (1536Mi, not 1.5Gi)");
  }
  uint64_t multiplier = 1;
  if (!unit.empty()) {
    multiplier = 0;
    for (const Unit& u : kUnits) {
      if (unit == u.suffix) multiplier = u.multiplier;
    }
    if (multiplier == 0) return Invalid(field, text, UnitAdvice(digits, unit));
  }
  uint64_t v = 0;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  for (char c : digits) {
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (kMax - d) / 10) return Invalid(field, text, "is too large (at most 2^64-1 bytes)");
    v = v * 10 + d;
  }
  if (v > kMax / multiplier) return Invalid(field, text, "is too large (at most 2^64-1 bytes)");
  return v * multiplier;
}

}  // namespace iommu
