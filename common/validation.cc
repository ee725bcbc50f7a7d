#include "common/validation.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/message_text.h"

namespace iommu {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", rule));
}

bool IsLowerAlnum(char c) { return absl::ascii_islower(c) || absl::ascii_isdigit(c); }
bool IsLowerHex(char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'); }

}  // namespace

absl::Status ValidateTenantId(absl::string_view field, absl::string_view value) {
  if (value.empty()) return Invalid(field, "required");
  if (value.size() > 63) return Invalid(field, "at most 63 characters");
  if (!absl::ascii_islower(value[0])) {
    return Invalid(
        field, absl::StrCat("must start with a lowercase letter, got ", QuoteForMessage(value)));
  }
  for (char c : value) {
    if (!IsLowerAlnum(c) && c != '-') {
      return Invalid(field, absl::StrCat("only lowercase letters, digits and '-' allowed, got ",
                                         QuoteForMessage(value)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateNodeName(absl::string_view field, absl::string_view value) {
  if (value.empty()) return Invalid(field, "required");
  if (value.size() > 63) return Invalid(field, "at most 63 characters");
  if (!IsLowerAlnum(value[0])) {
    return Invalid(field, absl::StrCat("must start with a lowercase letter or digit, got ",
                                       QuoteForMessage(value)));
  }
  for (char c : value) {
    if (!IsLowerAlnum(c) && c != '-' && c != '.') {
      return Invalid(field,
                     absl::StrCat("only lowercase letters, digits, '-' and '.' allowed, got ",
                                  QuoteForMessage(value)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRequestId(absl::string_view field, absl::string_view value) {
  if (value.empty()) return absl::OkStatus();
  if (value.size() > 128) return Invalid(field, "at most 128 characters");
  for (char c : value) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-') {
      return Invalid(field,
                     absl::StrCat("only [A-Za-z0-9._:-] allowed, got ", QuoteForMessage(value)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePciAddress(absl::string_view field, absl::string_view value) {
  // DDDD:BB:DD.F
  const std::string rule = absl::StrCat("must be a PCI address DDDD:BB:DD.F in lowercase hex, got ",
                                        QuoteForMessage(value));
  if (value.size() != 12 || value[4] != ':' || value[7] != ':' || value[10] != '.') {
    return Invalid(field, rule);
  }
  for (int i : {0, 1, 2, 3, 5, 6, 8, 9, 11}) {
    if (!IsLowerHex(value[i])) return Invalid(field, rule);
  }
  const int dev = std::stoi(std::string(value.substr(8, 2)), nullptr, 16);
  const int fn = value[11] - '0';
  if (dev > 0x1f || fn < 0 || fn > 7) {
    return Invalid(field, absl::StrCat("device must be <= 1f and function <= 7, got ",
                                       QuoteForMessage(value)));
  }
  return absl::OkStatus();
}

absl::Status ValidateObjectId(absl::string_view field, absl::string_view value,
                              absl::string_view prefix) {
  if (value.empty()) return Invalid(field, "required");
  const std::string rule = absl::StrCat(
      "must be \"", prefix, "\" followed by 16 lowercase hex digits, got ", QuoteForMessage(value));
  if (value.size() != prefix.size() + 16 || value.substr(0, prefix.size()) != prefix) {
    return Invalid(field, rule);
  }
  for (char c : value.substr(prefix.size())) {
    if (!IsLowerHex(c)) return Invalid(field, rule);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> EffectivePageSize(absl::string_view field, uint32_t requested) {
  if (requested == 0) return kDefaultPageSize;
  if (requested > kMaxPageSize) {
    return Invalid(field, absl::StrCat("at most ", kMaxPageSize, ", got ", requested));
  }
  return requested;
}

uint64_t MinPageSize(uint64_t page_size_bitmap) {
  return page_size_bitmap & (~page_size_bitmap + 1);
}

absl::StatusOr<uint64_t> ValidateWindowRequest(uint64_t size, uint64_t alignment,
                                               bool fixed_base, uint64_t base,
                                               uint64_t page_size) {
  if (page_size == 0 || !IsPowerOfTwo(page_size)) {
    return absl::InternalError(absl::StrCat("container page size ", Hex(page_size),
                                            " is not a power of two"));
  }
  if (size == 0) return Invalid("size", "must be greater than 0");
  if (size % page_size != 0) {
    return Invalid("size", absl::StrCat("must be a multiple of the IOMMU page size ",
                                        Hex(page_size), ", got ", Hex(size)));
  }
  if (alignment == 0) alignment = page_size;
  if (!IsPowerOfTwo(alignment)) {
    return Invalid("alignment", absl::StrCat("must be a power of two, got ", Hex(alignment)));
  }
  if (alignment < page_size) {
    return Invalid("alignment", absl::StrCat("must be at least the IOMMU page size ",
                                             Hex(page_size), ", got ", Hex(alignment)));
  }
  if (fixed_base) {
    if (base % alignment != 0) {
      return Invalid("base", absl::StrCat("must be a multiple of the alignment ", Hex(alignment),
                                          ", got ", Hex(base)));
    }
    if (size - 1 > UINT64_MAX - base) {
      return Invalid("size", absl::StrCat("base ", Hex(base), " + size ", Hex(size),
                                          " overflows 64 bits"));
    }
  }
  return alignment;
}

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

absl::Status ValidatePageToken(absl::string_view field, absl::string_view token) {
  if (token.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": at most 256 characters"));
  }
  return absl::OkStatus();
}

absl::Status ValidateQuota(uint64_t pinned_bytes, uint64_t window_bytes) {
  if (pinned_bytes == 0) {
    return absl::InvalidArgumentError("quota.pinned_bytes: required, must be greater than 0");
  }
  if (pinned_bytes % 4096 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quota.pinned_bytes: must be a multiple of 4096 (a host page), got ", pinned_bytes));
  }
  if (window_bytes % 4096 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quota.window_bytes: must be a multiple of 4096 (a host page), got ", window_bytes));
  }
  return absl::OkStatus();
}

}  // namespace iommu
