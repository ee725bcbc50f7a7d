// -o jsonpath=TEMPLATE: kubectl's JSONPath templates over iommuctl's JSON
// output (client/json_tree.h), for scripts that want a few fields without jq.
//
// A template is text with expressions in braces, as in kubectl:
//   {.containers[*].id}                     every container's id, space-separated
//   {range .containers[*]}{.id}{"\t"}{.state}{"\n"}{end}
//   {.nodes[?(@.state=="NODE_STATE_READY")].name}
// Supported inside braces:
//   .name  ['name']  .*        a member, by name, or every member
//   ..name                     every member of that name at any depth
//   [N]  [-N]  [*]  [A:B]      array index (negative from the end), all, slice
//   [?(@.path == LITERAL)]     array items whose path equals (or with !=, does
//                              not equal) a "string", a number, true/false/null
//   $  @                       the document root / the current item (the
//                              default: the root, or the item of a range)
//   range EXPR ... end         the text between, once per result of EXPR
//   "literal"                  text, with \n \t \" \\ escapes
// Results of one expression are joined by a space; strings print without
// quotes, numbers as the JSON has them, objects and arrays as compact JSON.
// A name that matches nothing prints nothing, as kubectl does by default.
//
// Parse once, render many: a parsed template is immutable and thread-safe.
#ifndef CLIENT_JSONPATH_H_
#define CLIENT_JSONPATH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/json_tree.h"

namespace iommu {
namespace client {

class JsonPathTemplate final {
 public:
  // INVALID_ARGUMENT naming the offset and what was expected on a template
  // that does not parse (an unclosed brace, an unknown operator, a range
  // without its end, an end without a range).
  static absl::StatusOr<JsonPathTemplate> Parse(absl::string_view text);

  // The template's text with every expression replaced by its results.
  std::string Render(const JsonNode& root) const;

  struct Step;
  struct Segment;

 private:
  std::vector<std::shared_ptr<const Segment>> segments_;
};

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_JSONPATH_H_
