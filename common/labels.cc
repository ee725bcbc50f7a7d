#include "common/labels.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/message_text.h"
#include "common/validation.h"

namespace iommu {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", rule));
}

bool IsLowerAlnum(char c) { return absl::ascii_islower(c) || absl::ascii_isdigit(c); }

// The NAME part of a key and a non-empty value: Kubernetes' "qualified name".
bool IsQualifiedName(absl::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!absl::ascii_isalnum(s.front()) || !absl::ascii_isalnum(s.back())) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

// A DNS subdomain: dot-separated labels of [a-z0-9-], each starting and ending
// with a letter or digit, at most 253 characters in all.
bool IsDnsSubdomain(absl::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (start <= s.size()) {
    size_t dot = s.find('.', start);
    if (dot == absl::string_view::npos) dot = s.size();
    absl::string_view part = s.substr(start, dot - start);
    if (part.empty() || part.size() > 63) return false;
    if (!IsLowerAlnum(part.front()) || !IsLowerAlnum(part.back())) return false;
    for (char c : part) {
      if (!IsLowerAlnum(c) && c != '-') return false;
    }
    start = dot + 1;
  }
  return true;
}

}  // namespace

absl::Status ValidateContainerName(absl::string_view field, absl::string_view value) {
  if (value.empty()) return Invalid(field, "required");
  const std::string rule = absl::StrCat(
      "a name is 1-63 characters from [a-z0-9-] starting and ending with a letter or digit, got ",
      QuoteForMessage(value));
  if (value.size() > 63 || !IsLowerAlnum(value.front()) || !IsLowerAlnum(value.back())) {
    return Invalid(field, rule);
  }
  for (char c : value) {
    if (!IsLowerAlnum(c) && c != '-') return Invalid(field, rule);
  }
  if (ValidateObjectId(field, value, "c-").ok()) {
    return Invalid(field, absl::StrCat("a name may not have the form of a container id (\"c-\" "
                                       "and 16 hex digits), got ",
                                       QuoteForMessage(value)));
  }
  return absl::OkStatus();
}

absl::Status ValidateLabel(absl::string_view field, absl::string_view key,
                           absl::string_view value) {
  const std::string where = absl::StrCat(field, "[", QuoteForMessage(key), "]");
  if (key.empty()) return Invalid(field, "a label key may not be empty");
  absl::string_view name = key;
  const size_t slash = key.find('/');
  if (slash != absl::string_view::npos) {
    if (!IsDnsSubdomain(key.substr(0, slash))) {
      return Invalid(where, "a key's prefix (before '/') must be a DNS subdomain: at most 253 "
                            "characters of dot-separated [a-z0-9-] parts");
    }
    name = key.substr(slash + 1);
  }
  if (!IsQualifiedName(name)) {
    return Invalid(where, "a key's name must be 1-63 characters from [A-Za-z0-9._-] starting and "
                          "ending with a letter or digit, with an optional DNS-subdomain prefix "
                          "and '/'");
  }
  if (!value.empty() && !IsQualifiedName(value)) {
    return Invalid(where, absl::StrCat("a value must be empty or 1-63 characters from "
                                       "[A-Za-z0-9._-] starting and ending with a letter or "
                                       "digit, got ",
                                       QuoteForMessage(value)));
  }
  return absl::OkStatus();
}

absl::Status TooManyLabels(absl::string_view field, size_t count) {
  return Invalid(field, absl::StrCat("at most ", kMaxLabels, " labels, got ", count));
}

absl::Status BothSetAndRemoved(absl::string_view key) {
  return Invalid("remove_keys", absl::StrCat("key ", QuoteForMessage(key),
                                             " is also in labels; a key may "
                                             "be set or removed, not both"));
}

absl::StatusOr<ParsedContainerRef> ParseContainerRef(absl::string_view field, absl::string_view value) {
  if (value.empty()) return Invalid(field, "required");
  ParsedContainerRef ref;
  if (ValidateObjectId(field, value, "c-").ok()) {
    ref.id = std::string(value);
    return ref;
  }
  const std::string forms = "expects a container id (\"c-\" and 16 hex digits), a NAME or "
                            "TENANT/NAME; ";
  const size_t slash = value.find('/');
  absl::string_view name = value;
  if (slash != absl::string_view::npos) {
    absl::Status tenant = ValidateTenantId("tenant", value.substr(0, slash));
    if (!tenant.ok()) return Invalid(field, absl::StrCat(forms, tenant.message()));
    ref.tenant = std::string(value.substr(0, slash));
    name = value.substr(slash + 1);
  }
  absl::Status valid = ValidateContainerName("name", name);
  if (!valid.ok()) return Invalid(field, absl::StrCat(forms, valid.message()));
  ref.name = std::string(name);
  return ref;
}

}  // namespace iommu
