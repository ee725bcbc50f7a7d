#include "common/label_selector.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/labels.h"

namespace iommu {
namespace {

bool IsKeyChar(char c) {
  return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/';
}
bool IsValueChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-'; }

// A cursor over the selector text that reports errors with their position.
class Parser {
 public:
  Parser(absl::string_view field, absl::string_view text) : field_(field), text_(text) {}

  absl::StatusOr<std::vector<LabelSelector::Requirement>> All() {
    std::vector<LabelSelector::Requirement> out;
    SkipSpace();
    if (AtEnd()) return out;
    for (;;) {
      absl::StatusOr<LabelSelector::Requirement> r = One();
      if (!r.ok()) return r.status();
      out.push_back(*std::move(r));
      if (out.size() > kMaxSelectorRequirements) {
        return absl::InvalidArgumentError(absl::StrCat(
            field_, ": at most ", kMaxSelectorRequirements, " requirements in a selector"));
      }
      SkipSpace();
      if (AtEnd()) return out;
      if (!Consume(",")) return Error("expected ',' between requirements");
    }
  }

 private:
  absl::StatusOr<LabelSelector::Requirement> One() {
    LabelSelector::Requirement r;
    SkipSpace();
    const bool negated = Consume("!");
    SkipSpace();
    const size_t key_at = pos_;
    r.key = Take(IsKeyChar);
    if (r.key.empty()) return Error("expected a label key");
    absl::Status key_ok = ValidateLabel(field_, r.key, "");
    if (!key_ok.ok()) return AtPosition(key_at, key_ok.message());
    SkipSpace();
    if (negated) {
      r.op = LabelSelector::Op::kNotExists;
      return r;
    }
    if (AtEnd() || Peek() == ',') {
      r.op = LabelSelector::Op::kExists;
      return r;
    }
    if (Consume("==") || Consume("=")) {
      r.op = LabelSelector::Op::kEquals;
    } else if (Consume("!=")) {
      r.op = LabelSelector::Op::kNotEquals;
    } else if (ConsumeWord("notin")) {
      r.op = LabelSelector::Op::kNotIn;
      return ValueSet(std::move(r));
    } else if (ConsumeWord("in")) {
      r.op = LabelSelector::Op::kIn;
      return ValueSet(std::move(r));
    } else {
      return Error("expected one of = == != in notin , after the key");
    }
    absl::StatusOr<std::string> v = Value(r.key);
    if (!v.ok()) return v.status();
    r.values.push_back(*std::move(v));
    return r;
  }

  absl::StatusOr<LabelSelector::Requirement> ValueSet(LabelSelector::Requirement r) {
    SkipSpace();
    if (!Consume("(")) return Error("expected '(' after in/notin");
    for (;;) {
      absl::StatusOr<std::string> v = Value(r.key);
      if (!v.ok()) return v.status();
      r.values.push_back(*std::move(v));
      SkipSpace();
      if (Consume(")")) return r;
      if (!Consume(",")) return Error("expected ',' or ')' in the value set");
    }
  }

  absl::StatusOr<std::string> Value(const std::string& key) {
    SkipSpace();
    const size_t at = pos_;
    std::string v = Take(IsValueChar);
    absl::Status ok = ValidateLabel(field_, key, v);
    if (!ok.ok()) return AtPosition(at, ok.message());
    return v;
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }
  void SkipSpace() {
    while (!AtEnd() && absl::ascii_isspace(Peek())) ++pos_;
  }
  bool Consume(absl::string_view s) {
    if (text_.substr(pos_, s.size()) != s) return false;
    pos_ += s.size();
    return true;
  }
  // A word operator must end at a space or '(' so that a key such as "index"
  // is not read as "in".
  bool ConsumeWord(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    const size_t end = pos_ + word.size();
    if (end < text_.size() && !absl::ascii_isspace(text_[end]) && text_[end] != '(') return false;
    pos_ = end;
    return true;
  }
  std::string Take(bool (*accept)(char)) {
    const size_t start = pos_;
    while (!AtEnd() && accept(Peek())) ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }
  absl::Status AtPosition(size_t at, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(field_, ": at character ", at + 1, ": ", what));
  }
  absl::Status Error(absl::string_view what) const {
    const std::string near =
        AtEnd() ? "the end" : absl::StrCat("\"", absl::CHexEscape(text_.substr(pos_, 16)), "\"");
    return AtPosition(pos_, absl::StrCat(what, ", found ", near));
  }

  const std::string field_;
  const absl::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<LabelSelector> LabelSelector::Parse(absl::string_view field,
                                                   absl::string_view text) {
  if (text.size() > kMaxSelectorLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": at most ", kMaxSelectorLength, " characters"));
  }
  absl::StatusOr<std::vector<Requirement>> all = Parser(field, text).All();
  if (!all.ok()) return all.status();
  LabelSelector s;
  s.requirements_ = *std::move(all);
  return s;
}

bool LabelSelector::Holds(const Requirement& r, const std::string* value) {
  const auto listed = [&] {
    return value != nullptr &&
           std::find(r.values.begin(), r.values.end(), *value) != r.values.end();
  };
  switch (r.op) {
    case Op::kEquals: return listed();
    case Op::kNotEquals: return !listed();
    case Op::kIn: return listed();
    case Op::kNotIn: return !listed();
    case Op::kExists: return value != nullptr;
    case Op::kNotExists: return value == nullptr;
  }
  return false;
}

}  // namespace iommu
