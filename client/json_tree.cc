#include "client/json_tree.h"

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace iommu {
namespace client {
namespace {

constexpr int kMaxDepth = 128;

// Recursive descent over `text`; pos_ is the next byte to read.
class Parser final {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<JsonNode> Document() {
    JsonNode root;
    absl::Status s = Value(0, &root);
    if (!s.ok()) return s;
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the JSON value");
    return root;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("JSON at byte ", pos_, ": ", what));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  absl::Status Value(int depth, JsonNode* out) {
    if (depth > kMaxDepth) return Error("nested deeper than 128 levels");
    SkipSpace();
    if (pos_ >= text_.size()) return Error("expected a value, found the end");
    const char c = text_[pos_];
    if (c == '{') return Object(depth, out);
    if (c == '[') return Array(depth, out);
    if (c == '"') {
      out->kind = JsonNode::Kind::kString;
      return String(&out->scalar);
    }
    for (const char* word : {"true", "false"}) {
      if (Consume(word)) {
        out->kind = JsonNode::Kind::kBool;
        out->scalar = word;
        return absl::OkStatus();
      }
    }
    if (Consume("null")) {
      out->kind = JsonNode::Kind::kNull;
      return absl::OkStatus();
    }
    if (c == '-' || absl::ascii_isdigit(static_cast<unsigned char>(c))) return Number(out);
    return Error(absl::StrFormat("unexpected character '%c'", c));
  }

  absl::Status Object(int depth, JsonNode* out) {
    out->kind = JsonNode::Kind::kObject;
    ++pos_;  // '{'
    SkipSpace();
    if (Consume("}")) return absl::OkStatus();
    while (true) {
      SkipSpace();
      if (pos_ >= text_.size() || text_[pos_] != '"') return Error("expected a member name");
      std::string name;
      absl::Status s = String(&name);
      if (!s.ok()) return s;
      SkipSpace();
      if (!Consume(":")) return Error("expected ':' after a member name");
      JsonNode value;
      s = Value(depth + 1, &value);
      if (!s.ok()) return s;
      out->members.emplace_back(std::move(name), std::move(value));
      SkipSpace();
      if (Consume("}")) return absl::OkStatus();
      if (!Consume(",")) return Error("expected ',' or '}' in an object");
    }
  }

  absl::Status Array(int depth, JsonNode* out) {
    out->kind = JsonNode::Kind::kArray;
    ++pos_;  // '['
    SkipSpace();
    if (Consume("]")) return absl::OkStatus();
    while (true) {
      JsonNode item;
      absl::Status s = Value(depth + 1, &item);
      if (!s.ok()) return s;
      out->items.push_back(std::move(item));
      SkipSpace();
      if (Consume("]")) return absl::OkStatus();
      if (!Consume(",")) return Error("expected ',' or ']' in an array");
    }
  }

  absl::Status Number(JsonNode* out) {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) {
        ++pos_;
      }
      return pos_ > from;
    };
    Consume("-");
    if (!digits()) return Error("a number needs digits");
    if (Consume(".") && !digits()) return Error("a fraction needs digits");
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (!Consume("+")) Consume("-");
      if (!digits()) return Error("an exponent needs digits");
    }
    out->kind = JsonNode::Kind::kNumber;
    out->scalar = std::string(text_.substr(start, pos_ - start));
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> Hex4() {
    if (pos_ + 4 > text_.size()) return Error("\\u needs four hex digits");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return Error("\\u needs four hex digits");
      }
    }
    return v;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  absl::Status Escape(std::string* out) {
    if (pos_ >= text_.size()) return Error("unterminated escape");
    const char e = text_[pos_++];
    switch (e) {
      case '"': out->push_back('"'); return absl::OkStatus();
      case '\\': out->push_back('\\'); return absl::OkStatus();
      case '/': out->push_back('/'); return absl::OkStatus();
      case 'b': out->push_back('\b'); return absl::OkStatus();
      case 'f': out->push_back('\f'); return absl::OkStatus();
      case 'n': out->push_back('\n'); return absl::OkStatus();
      case 'r': out->push_back('\r'); return absl::OkStatus();
      case 't': out->push_back('\t'); return absl::OkStatus();
      case 'u': break;
      default: return Error(absl::StrFormat("unknown escape '\\%c'", e));
    }
    absl::StatusOr<uint32_t> cp = Hex4();
    if (!cp.ok()) return cp.status();
    if (*cp >= 0xd800 && *cp < 0xdc00) {
      // A high surrogate: the low one must follow.
      if (!Consume("\\u")) return Error("a high surrogate without its low surrogate");
      absl::StatusOr<uint32_t> low = Hex4();
      if (!low.ok()) return low.status();
      if (*low < 0xdc00 || *low >= 0xe000) return Error("a high surrogate without its low one");
      *cp = 0x10000 + ((*cp - 0xd800) << 10) + (*low - 0xdc00);
    } else if (*cp >= 0xdc00 && *cp < 0xe000) {
      return Error("a low surrogate without its high surrogate");
    }
    AppendUtf8(*cp, out);
    return absl::OkStatus();
  }

  absl::Status String(std::string* out) {
    ++pos_;  // '"'
    while (true) {
      if (pos_ >= text_.size()) return Error("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return absl::OkStatus();
      if (static_cast<unsigned char>(c) < 0x20) return Error("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      absl::Status s = Escape(out);
      if (!s.ok()) return s;
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

void AppendCompact(const JsonNode& node, std::string* out) {
  switch (node.kind) {
    case JsonNode::Kind::kNull:
      out->append("null");
      return;
    case JsonNode::Kind::kBool:
    case JsonNode::Kind::kNumber:
      out->append(node.scalar);
      return;
    case JsonNode::Kind::kString:
      out->append(QuoteJsonString(node.scalar));
      return;
    case JsonNode::Kind::kArray:
      out->push_back('[');
      for (size_t i = 0; i < node.items.size(); ++i) {
        if (i > 0) out->push_back(',');
        AppendCompact(node.items[i], out);
      }
      out->push_back(']');
      return;
    case JsonNode::Kind::kObject:
      out->push_back('{');
      for (size_t i = 0; i < node.members.size(); ++i) {
        if (i > 0) out->push_back(',');
        absl::StrAppend(out, QuoteJsonString(node.members[i].first), ":");
        AppendCompact(node.members[i].second, out);
      }
      out->push_back('}');
      return;
  }
}

}  // namespace

const JsonNode* JsonNode::Find(absl::string_view name) const {
  for (const auto& [key, value] : members) {
    if (key == name) return &value;
  }
  return nullptr;
}

absl::StatusOr<JsonNode> ParseJson(absl::string_view text) { return Parser(text).Document(); }

std::string CompactJson(const JsonNode& node) {
  std::string out;
  AppendCompact(node, &out);
  return out;
}

std::string QuoteJsonString(absl::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      default:
        // Control characters and DEL: JSON requires escaping the former,
        // YAML's double-quoted style (which reuses this) both.
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace client
}  // namespace iommu
