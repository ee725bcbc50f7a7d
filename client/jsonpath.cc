#include "client/jsonpath.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace iommu {
namespace client {

struct JsonPathTemplate::Step {
  enum class Kind { kMember, kAllMembers, kRecursive, kIndex, kAll, kSlice, kFilter };
  Kind kind = Kind::kMember;
  std::string name;                  // kMember, kRecursive.
  int64_t index = 0;                 // kIndex.
  std::optional<int64_t> from, to;   // kSlice.
  std::vector<Step> filter_path;     // kFilter: the path after '@'.
  bool filter_negate = false;        // kFilter: != rather than ==.
  JsonNode filter_literal;           // kFilter.
};

struct JsonPathTemplate::Segment {
  enum class Kind { kText, kPath, kRange };
  Kind kind = Kind::kText;
  std::string text;                                  // kText.
  bool from_root = false;                            // kPath, kRange: began with '$'.
  std::vector<Step> path;                            // kPath, kRange.
  std::vector<std::shared_ptr<const Segment>> body;  // kRange.
};

namespace {

using Step = JsonPathTemplate::Step;
using Segment = JsonPathTemplate::Segment;

absl::Status Bad(size_t offset, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("--output=jsonpath: at character ", offset + 1, ": ", what));
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

// Parses one expression (the text between a pair of braces); `base` is its
// offset in the template, for messages.
class ExprParser final {
 public:
  ExprParser(absl::string_view expr, size_t base) : expr_(expr), base_(base) {}

  // A path: optional '$' or '@', then steps, then the end of the expression.
  absl::Status Path(bool* from_root, std::vector<Step>* steps) {
    *from_root = Consume("$");
    if (!*from_root) Consume("@");
    absl::Status s = Steps(steps);
    if (!s.ok()) return s;
    SkipSpace();
    if (pos_ != expr_.size()) return Error("unexpected text in the path");
    return absl::OkStatus();
  }

  // A "string" literal filling the whole expression.
  absl::StatusOr<std::string> Literal() {
    absl::StatusOr<std::string> text = QuotedString('"');
    if (!text.ok()) return text;
    SkipSpace();
    if (pos_ != expr_.size()) return Error("unexpected text after the string");
    return text;
  }

 private:
  absl::Status Error(absl::string_view what) const { return Bad(base_ + pos_, what); }

  bool Consume(absl::string_view word) {
    if (!absl::StartsWith(expr_.substr(pos_), word)) return false;
    pos_ += word.size();
    return true;
  }

  void SkipSpace() {
    while (pos_ < expr_.size() && expr_[pos_] == ' ') ++pos_;
  }

  std::string Name() {
    const size_t from = pos_;
    while (pos_ < expr_.size() && IsNameChar(expr_[pos_])) ++pos_;
    return std::string(expr_.substr(from, pos_ - from));
  }

  // Steps until something that is not a step ('=' or ')' in a filter, the end).
  absl::Status Steps(std::vector<Step>* steps) {
    while (pos_ < expr_.size()) {
      Step step;
      if (Consume("..")) {
        step.kind = Step::Kind::kRecursive;
        step.name = Name();
        if (step.name.empty()) return Error("'..' needs a member name");
      } else if (Consume(".")) {
        if (Consume("*")) {
          step.kind = Step::Kind::kAllMembers;
        } else {
          step.name = Name();
          // A lone "." is the current item itself: no step.
          if (step.name.empty()) continue;
        }
      } else if (Consume("[")) {
        absl::Status s = Bracket(&step);
        if (!s.ok()) return s;
      } else {
        return absl::OkStatus();
      }
      steps->push_back(std::move(step));
    }
    return absl::OkStatus();
  }

  absl::Status Bracket(Step* step) {
    SkipSpace();
    if (Consume("*")) {
      step->kind = Step::Kind::kAll;
    } else if (pos_ < expr_.size() && (expr_[pos_] == '\'' || expr_[pos_] == '"')) {
      absl::StatusOr<std::string> name = QuotedString(expr_[pos_]);
      if (!name.ok()) return name.status();
      step->name = *name;
    } else if (Consume("?(")) {
      absl::Status s = Filter(step);
      if (!s.ok()) return s;
    } else {
      absl::Status s = IndexOrSlice(step);
      if (!s.ok()) return s;
    }
    SkipSpace();
    if (!Consume("]")) return Error("expected ']'");
    return absl::OkStatus();
  }

  std::optional<int64_t> Integer() {
    const size_t from = pos_;
    if (pos_ < expr_.size() && expr_[pos_] == '-') ++pos_;
    while (pos_ < expr_.size() && absl::ascii_isdigit(static_cast<unsigned char>(expr_[pos_]))) {
      ++pos_;
    }
    int64_t v = 0;
    if (!absl::SimpleAtoi(expr_.substr(from, pos_ - from), &v)) {
      pos_ = from;
      return std::nullopt;
    }
    return v;
  }

  absl::Status IndexOrSlice(Step* step) {
    std::optional<int64_t> first = Integer();
    SkipSpace();
    if (!Consume(":")) {
      if (!first) return Error("expected an index, a slice, *, a 'name' or a ?(filter)");
      step->kind = Step::Kind::kIndex;
      step->index = *first;
      return absl::OkStatus();
    }
    step->kind = Step::Kind::kSlice;
    step->from = first;
    SkipSpace();
    step->to = Integer();
    return absl::OkStatus();
  }

  absl::Status Filter(Step* step) {
    step->kind = Step::Kind::kFilter;
    SkipSpace();
    if (!Consume("@")) return Error("a filter starts with @, e.g. [?(@.state==\"...\")]");
    absl::Status s = Steps(&step->filter_path);
    if (!s.ok()) return s;
    SkipSpace();
    if (Consume("!=")) {
      step->filter_negate = true;
    } else if (!Consume("==")) {
      return Error("a filter compares with == or !=");
    }
    SkipSpace();
    s = FilterLiteral(&step->filter_literal);
    if (!s.ok()) return s;
    SkipSpace();
    if (!Consume(")")) return Error("expected ')' to close the filter");
    return absl::OkStatus();
  }

  absl::Status FilterLiteral(JsonNode* literal) {
    if (pos_ < expr_.size() && (expr_[pos_] == '"' || expr_[pos_] == '\'')) {
      absl::StatusOr<std::string> text = QuotedString(expr_[pos_]);
      if (!text.ok()) return text.status();
      literal->kind = JsonNode::Kind::kString;
      literal->scalar = *text;
      return absl::OkStatus();
    }
    for (const char* word : {"true", "false", "null"}) {
      if (Consume(word)) {
        literal->kind = word[0] == 'n' ? JsonNode::Kind::kNull : JsonNode::Kind::kBool;
        literal->scalar = word[0] == 'n' ? "" : word;
        return absl::OkStatus();
      }
    }
    std::optional<int64_t> n = Integer();
    if (!n) return Error("expected a \"string\", an integer, true, false or null");
    literal->kind = JsonNode::Kind::kNumber;
    literal->scalar = absl::StrCat(*n);
    return absl::OkStatus();
  }

  // A string in `quote`s with \n \t \\ and \<quote> escapes.
  absl::StatusOr<std::string> QuotedString(char quote) {
    ++pos_;
    std::string out;
    while (pos_ < expr_.size()) {
      char c = expr_[pos_++];
      if (c == quote) return out;
      if (c == '\\' && pos_ < expr_.size()) {
        c = expr_[pos_++];
        if (c == 'n') c = '\n';
        if (c == 't') c = '\t';
        if (c == 'r') c = '\r';
      }
      out.push_back(c);
    }
    return Error("unterminated string");
  }

  absl::string_view expr_;
  size_t base_;
  size_t pos_ = 0;
};

// The end of the expression opened at `open` ('{'): the offset of its '}',
// skipping braces inside string literals; npos when it is never closed.
size_t ClosingBrace(absl::string_view text, size_t open) {
  char quote = 0;
  for (size_t i = open + 1; i < text.size(); ++i) {
    const char c = text[i];
    if (quote != 0) {
      if (c == '\\') {
        ++i;
      } else if (c == quote) {
        quote = 0;
      }
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '}') {
      return i;
    }
  }
  return absl::string_view::npos;
}

void Descendants(const JsonNode& node, absl::string_view name,
                 std::vector<const JsonNode*>* out) {
  for (const auto& [key, value] : node.members) {
    if (key == name) out->push_back(&value);
    Descendants(value, name, out);
  }
  for (const JsonNode& item : node.items) Descendants(item, name, out);
}

std::vector<const JsonNode*> Evaluate(const std::vector<Step>& steps, const JsonNode* start);

bool Matches(const Step& filter, const JsonNode& item) {
  const std::vector<const JsonNode*> got = Evaluate(filter.filter_path, &item);
  bool equal = false;
  for (const JsonNode* v : got) {
    if (v->kind == filter.filter_literal.kind && v->scalar == filter.filter_literal.scalar) {
      equal = true;
    }
  }
  return filter.filter_negate ? !equal && !got.empty() : equal;
}

void ApplyStep(const Step& step, const JsonNode& node, std::vector<const JsonNode*>* out) {
  const int64_t size = static_cast<int64_t>(node.items.size());
  switch (step.kind) {
    case Step::Kind::kMember:
      if (const JsonNode* v = node.Find(step.name)) out->push_back(v);
      return;
    case Step::Kind::kAllMembers:
      for (const auto& member : node.members) out->push_back(&member.second);
      for (const JsonNode& item : node.items) out->push_back(&item);
      return;
    case Step::Kind::kRecursive:
      Descendants(node, step.name, out);
      return;
    case Step::Kind::kIndex: {
      const int64_t i = step.index < 0 ? size + step.index : step.index;
      if (i >= 0 && i < size) out->push_back(&node.items[static_cast<size_t>(i)]);
      return;
    }
    case Step::Kind::kAll:
      for (const JsonNode& item : node.items) out->push_back(&item);
      return;
    case Step::Kind::kSlice: {
      auto clamp = [size](int64_t v) {
        return std::max<int64_t>(0, std::min(size, v < 0 ? size + v : v));
      };
      const int64_t from = clamp(step.from.value_or(0));
      const int64_t to = clamp(step.to.value_or(size));
      for (int64_t i = from; i < to; ++i) out->push_back(&node.items[static_cast<size_t>(i)]);
      return;
    }
    case Step::Kind::kFilter:
      for (const JsonNode& item : node.items) {
        if (Matches(step, item)) out->push_back(&item);
      }
      return;
  }
}

std::vector<const JsonNode*> Evaluate(const std::vector<Step>& steps, const JsonNode* start) {
  std::vector<const JsonNode*> set = {start};
  for (const Step& step : steps) {
    std::vector<const JsonNode*> next;
    for (const JsonNode* node : set) ApplyStep(step, *node, &next);
    set = std::move(next);
  }
  return set;
}

std::string Show(const JsonNode& node) {
  switch (node.kind) {
    case JsonNode::Kind::kString:
    case JsonNode::Kind::kNumber:
    case JsonNode::Kind::kBool:
      return node.scalar;
    default:
      return CompactJson(node);
  }
}

void RenderSegments(const std::vector<std::shared_ptr<const Segment>>& segments,
                    const JsonNode& root, const JsonNode& current, std::string* out) {
  for (const auto& segment : segments) {
    if (segment->kind == Segment::Kind::kText) {
      out->append(segment->text);
      continue;
    }
    std::vector<const JsonNode*> results =
        Evaluate(segment->path, segment->from_root ? &root : &current);
    if (segment->kind == Segment::Kind::kPath) {
      absl::StrAppend(out, absl::StrJoin(results, " ", [](std::string* o, const JsonNode* n) {
                        o->append(Show(*n));
                      }));
      continue;
    }
    // A range over one array walks its items, as over its [*].
    if (results.size() == 1 && results[0]->kind == JsonNode::Kind::kArray) {
      std::vector<const JsonNode*> items;
      for (const JsonNode& item : results[0]->items) items.push_back(&item);
      results = std::move(items);
    }
    for (const JsonNode* item : results) RenderSegments(segment->body, root, *item, out);
  }
}

}  // namespace

absl::StatusOr<JsonPathTemplate> JsonPathTemplate::Parse(absl::string_view text) {
  // Open ranges: the segment list being filled is the innermost one's body.
  struct Frame {
    std::shared_ptr<Segment> range;  // Null for the top level.
    std::vector<std::shared_ptr<const Segment>> segments;
    size_t offset = 0;
  };
  std::vector<Frame> stack(1);
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find('{', pos);
    if (open != pos) {
      auto literal = std::make_shared<Segment>();
      literal->text = std::string(text.substr(pos, open - pos));
      stack.back().segments.push_back(std::move(literal));
      if (open == absl::string_view::npos) break;
    }
    const size_t close = ClosingBrace(text, open);
    if (close == absl::string_view::npos) return Bad(open, "'{' is never closed");
    absl::string_view inner = text.substr(open + 1, close - open - 1);
    absl::string_view expr = absl::StripAsciiWhitespace(inner);
    pos = close + 1;
    if (expr.empty()) return Bad(open, "empty expression {}");
    // Where `expr` starts in `text`, for messages.
    const size_t base = open + 1 + static_cast<size_t>(expr.data() - inner.data());
    if (expr == "end") {
      if (stack.size() == 1) return Bad(open, "{end} without a {range ...}");
      Frame done = std::move(stack.back());
      stack.pop_back();
      done.range->body = std::move(done.segments);
      stack.back().segments.push_back(std::move(done.range));
      continue;
    }
    auto segment = std::make_shared<Segment>();
    if (absl::ConsumePrefix(&expr, "range ")) {
      segment->kind = Segment::Kind::kRange;
      expr = absl::StripLeadingAsciiWhitespace(expr);
      absl::Status s =
          ExprParser(expr, base + 6).Path(&segment->from_root, &segment->path);
      if (!s.ok()) return s;
      stack.push_back(Frame{segment, {}, open});
      continue;
    }
    if (expr.front() == '"') {
      absl::StatusOr<std::string> literal = ExprParser(expr, base).Literal();
      if (!literal.ok()) return literal.status();
      segment->text = *literal;
    } else {
      segment->kind = Segment::Kind::kPath;
      absl::Status s = ExprParser(expr, base).Path(&segment->from_root, &segment->path);
      if (!s.ok()) return s;
    }
    stack.back().segments.push_back(std::move(segment));
  }
  if (stack.size() > 1) return Bad(stack.back().offset, "{range ...} without its {end}");
  JsonPathTemplate parsed;
  parsed.segments_ = std::move(stack.back().segments);
  return parsed;
}

std::string JsonPathTemplate::Render(const JsonNode& root) const {
  std::string out;
  RenderSegments(segments_, root, root, &out);
  return out;
}

}  // namespace client
}  // namespace iommu
