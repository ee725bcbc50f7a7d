#include "client/yaml.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace client {
namespace {

// True when `s` can be written unquoted and reads back as this string under
// YAML 1.1 and 1.2 resolvers alike: letters, digits and a few punctuation
// marks, not starting like a number or an indicator, not a word that some
// resolver reads as a boolean or null. Deliberately conservative: quoting a
// string that did not need it costs two characters, not quoting one that did
// changes its type.
bool PlainSafe(absl::string_view s) {
  if (s.empty()) return false;
  const unsigned char first = static_cast<unsigned char>(s.front());
  if (!absl::ascii_isalpha(first) && first != '/' && first != '_') return false;
  if (s.back() == ':') return false;
  for (const char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (!absl::ascii_isalnum(u) && c != '-' && c != '_' && c != '.' && c != '/' && c != ':' &&
        c != '@' && c != '+') {
      return false;
    }
  }
  static constexpr absl::string_view kReserved[] = {"true", "false", "yes", "no", "on",
                                                    "off",  "null",  "y",   "n"};
  for (absl::string_view word : kReserved) {
    if (absl::EqualsIgnoreCase(s, word)) return false;
  }
  // ".inf", ".nan" need a leading dot, which PlainSafe already refuses.
  return true;
}

std::string Scalar(const JsonNode& node) {
  switch (node.kind) {
    case JsonNode::Kind::kNull:
      return "null";
    case JsonNode::Kind::kBool:
    case JsonNode::Kind::kNumber:
      return node.scalar;
    case JsonNode::Kind::kString:
      return PlainSafe(node.scalar) ? node.scalar : QuoteJsonString(node.scalar);
    case JsonNode::Kind::kArray:
      return "[]";
    case JsonNode::Kind::kObject:
      return "{}";
  }
  return "null";
}

bool IsBlock(const JsonNode& node) {
  return (node.kind == JsonNode::Kind::kObject && !node.members.empty()) ||
         (node.kind == JsonNode::Kind::kArray && !node.items.empty());
}

void EmitSequence(const JsonNode& array, size_t indent, std::string* out);

void EmitMapping(const JsonNode& object, size_t indent, std::string* out) {
  for (const auto& [key, value] : object.members) {
    JsonNode key_node;
    key_node.kind = JsonNode::Kind::kString;
    key_node.scalar = key;
    absl::StrAppend(out, std::string(indent, ' '), Scalar(key_node), ":");
    if (!IsBlock(value)) {
      absl::StrAppend(out, " ", Scalar(value), "\n");
    } else if (value.kind == JsonNode::Kind::kObject) {
      out->append("\n");
      EmitMapping(value, indent + 2, out);
    } else {
      out->append("\n");
      EmitSequence(value, indent, out);
    }
  }
}

// A block rendered at `indent + 2`, its first line's indentation replaced by
// "- " at `indent`: how a mapping or sequence sits inside a sequence item.
void AppendAsItem(const std::string& block, size_t indent, std::string* out) {
  absl::StrAppend(out, std::string(indent, ' '), "- ", absl::string_view(block).substr(indent + 2));
}

void EmitSequence(const JsonNode& array, size_t indent, std::string* out) {
  for (const JsonNode& item : array.items) {
    if (!IsBlock(item)) {
      absl::StrAppend(out, std::string(indent, ' '), "- ", Scalar(item), "\n");
      continue;
    }
    std::string block;
    if (item.kind == JsonNode::Kind::kObject) {
      EmitMapping(item, indent + 2, &block);
    } else {
      EmitSequence(item, indent + 2, &block);
    }
    AppendAsItem(block, indent, out);
  }
}

}  // namespace

std::string FormatYaml(const JsonNode& node) {
  std::string out;
  if (!IsBlock(node)) return absl::StrCat(Scalar(node), "\n");
  if (node.kind == JsonNode::Kind::kObject) {
    EmitMapping(node, 0, &out);
  } else {
    EmitSequence(node, 0, &out);
  }
  return out;
}

}  // namespace client
}  // namespace iommu
