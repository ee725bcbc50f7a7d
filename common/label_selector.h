// Label selectors in Kubernetes' syntax, so `-l team=ml,env!=prod` means here
// what it means to kubectl. Pure logic, no I/O; a parsed selector is
// immutable and safe to share between threads.
//
// A selector is requirements separated by ',', all of which must hold:
//   key=value, key==value   the label is present with that value
//   key!=value              absent, or present with another value
//   key in (v1,v2)          present with one of the values
//   key notin (v1,v2)       absent, or present with none of the values
//   key                     present (any value)
//   !key                    absent
// Whitespace around keys, operators and values is ignored. The empty
// selector matches everything.
#ifndef COMMON_LABEL_SELECTOR_H_
#define COMMON_LABEL_SELECTOR_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

// Bounds on what a request may ask the broker to evaluate per object listed.
inline constexpr size_t kMaxSelectorLength = 4096;
inline constexpr size_t kMaxSelectorRequirements = 32;

class LabelSelector {
 public:
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kNotExists };
  struct Requirement {
    std::string key;
    Op op;
    std::vector<std::string> values;  // One for = and !=, one or more for in/notin.
  };

  // Parses `text`; INVALID_ARGUMENT naming `field`, the position and the
  // rule when it is not a selector or a key or value breaks the label rules
  // (common/labels.h).
  static absl::StatusOr<LabelSelector> Parse(absl::string_view field, absl::string_view text);

  bool empty() const { return requirements_.empty(); }
  const std::vector<Requirement>& requirements() const { return requirements_; }

  // Whether `labels` (any map from string to string with find/end) satisfies
  // every requirement.
  template <typename Map>
  bool Matches(const Map& labels) const {
    for (const Requirement& r : requirements_) {
      auto it = labels.find(r.key);
      const std::string* value = it == labels.end() ? nullptr : &it->second;
      if (!Holds(r, value)) return false;
    }
    return true;
  }

 private:
  static bool Holds(const Requirement& r, const std::string* value);
  std::vector<Requirement> requirements_;
};

}  // namespace iommu

#endif  // COMMON_LABEL_SELECTOR_H_
