// Names and labels that operators give containers and tenants, checked the
// way Kubernetes checks them, so the rules people already know apply here.
// Pure functions, no I/O, thread-safe. Errors are INVALID_ARGUMENT and start
// with the field name, like common/validation.h.
#ifndef COMMON_LABELS_H_
#define COMMON_LABELS_H_

#include <cstddef>
#include <map>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

// Labels one object may carry. Every label is kept in memory and in the store
// with its object and copied into every answer, so the count is bounded like
// any other per-tenant resource.
inline constexpr size_t kMaxLabels = 32;

// Container names: 1-63 characters from [a-z0-9-], starting and ending with a
// letter or digit (a DNS label, as a VM's host name would be), and not of the
// form of a container id ("c-" and 16 hex digits), so that a reference is
// never ambiguous between an id and a name.
absl::Status ValidateContainerName(absl::string_view field, absl::string_view value);

// One label. Keys are [PREFIX/]NAME: NAME 1-63 characters from
// [A-Za-z0-9._-] starting and ending with a letter or digit, PREFIX a DNS
// subdomain of at most 253 characters. Values are empty or follow NAME's
// rule. `field` names the map ("labels"); the message adds the key.
absl::Status ValidateLabel(absl::string_view field, absl::string_view key,
                           absl::string_view value);

// A whole label map: each label valid and at most kMaxLabels of them.
template <typename Map>
absl::Status ValidateLabels(absl::string_view field, const Map& labels);

// Renders labels as "k=v,k2=v2" in key order, for tables and events.
template <typename Map>
std::string LabelsText(const Map& labels);

// Applies a label edit to *labels: every label of `set` added or
// overwritten, every key of `remove` removed (a missing key is fine). Checked
// before anything changes: the labels set are valid, the keys removed are
// valid keys, no key is both set and removed, and at most kMaxLabels remain.
// Fields are named "labels" and "remove_keys".
template <typename Map, typename Keys>
absl::Status EditLabels(const Map& set, const Keys& remove, Map* labels);

// How a request names a container: by id, by NAME within the caller's tenant
// (or, for an operator, the one tenant that has a container of that name),
// or by TENANT/NAME.
struct ParsedContainerRef {
  std::string id;      // Set when the reference is an id.
  std::string tenant;  // Set for TENANT/NAME.
  std::string name;    // Set for NAME and TENANT/NAME.
};

// Parses a reference; the error names `field` and the three accepted forms.
absl::StatusOr<ParsedContainerRef> ParseContainerRef(absl::string_view field, absl::string_view value);

// ------------------------------------------------------------ implementation

absl::Status TooManyLabels(absl::string_view field, size_t count);
absl::Status BothSetAndRemoved(absl::string_view key);

template <typename Map>
absl::Status ValidateLabels(absl::string_view field, const Map& labels) {
  if (labels.size() > kMaxLabels) return TooManyLabels(field, labels.size());
  for (const auto& [key, value] : labels) {
    absl::Status s = ValidateLabel(field, key, value);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

template <typename Map, typename Keys>
absl::Status EditLabels(const Map& set, const Keys& remove, Map* labels) {
  absl::Status s = ValidateLabels("labels", set);
  if (!s.ok()) return s;
  if (static_cast<size_t>(remove.size()) > 4 * kMaxLabels) {
    return TooManyLabels("remove_keys", remove.size());
  }
  for (const auto& key : remove) {
    s = ValidateLabel("remove_keys", key, "");
    if (!s.ok()) return s;
    if (set.find(key) != set.end()) return BothSetAndRemoved(key);
  }
  Map edited = *labels;
  for (const auto& key : remove) edited.erase(key);
  for (const auto& [key, value] : set) edited[key] = value;
  if (edited.size() > kMaxLabels) return TooManyLabels("labels", edited.size());
  *labels = std::move(edited);
  return absl::OkStatus();
}

template <typename Map>
std::string LabelsText(const Map& labels) {
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  std::string out;
  for (const auto& [key, value] : sorted) {
    if (!out.empty()) out += ",";
    out += key;
    out += "=";
    out += value;
  }
  return out;
}

}  // namespace iommu

#endif  // COMMON_LABELS_H_
