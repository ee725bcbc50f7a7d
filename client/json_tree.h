// A parsed JSON document, as the structured outputs of iommuctl (-o yaml,
// -o jsonpath) read it: iommuctl renders every answer as JSON once
// (client/format.h's FormatJson) and derives the other structured views from
// that text, so all of them show the same fields with the same values.
//
// Numbers keep their text ("18446744073709551615" stays exact; nothing is
// read as a double), object members keep their order.
//
// Pure functions and plain value types: no I/O, thread-compatible.
#ifndef CLIENT_JSON_TREE_H_
#define CLIENT_JSON_TREE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace client {

struct JsonNode {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

  Kind kind = Kind::kNull;
  // kBool: "true" or "false"; kNumber: the number as written; kString: the
  // decoded text (UTF-8). Empty for the other kinds.
  std::string scalar;
  std::vector<JsonNode> items;                          // kArray.
  std::vector<std::pair<std::string, JsonNode>> members;  // kObject, in order.

  // The member named `name` of an object, or nullptr (also for non-objects).
  const JsonNode* Find(absl::string_view name) const;
};

// Parses one JSON value (RFC 8259) surrounded by optional white space.
// INVALID_ARGUMENT naming the byte offset on malformed input, on nesting
// deeper than 128 levels, and on anything after the value.
absl::StatusOr<JsonNode> ParseJson(absl::string_view text);

// `node` as compact JSON (no white space), strings escaped as RFC 8259 asks.
std::string CompactJson(const JsonNode& node);

// `text` as a JSON string literal, with its quotes.
std::string QuoteJsonString(absl::string_view text);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_JSON_TREE_H_
