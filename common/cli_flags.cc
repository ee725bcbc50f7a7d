#include "common/cli_flags.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/byte_size.h"
#include "common/message_text.h"

namespace iommu {
namespace cli {
namespace {

absl::Status Usage(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::Status ParseSwitch(absl::string_view flag, absl::string_view text, FlagValue* value) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "true" || lower == "1") {
    value->number = 1;
  } else if (lower == "false" || lower == "0") {
    value->number = 0;
  } else {
    return Usage(
        absl::StrCat(flag, ": takes no value (or =true / =false), got ", QuoteForMessage(text)));
  }
  return absl::OkStatus();
}

// ID or VENDOR:DEVICE.
absl::Status ParsePciIds(absl::string_view flag, absl::string_view text, FlagValue* value) {
  const size_t colon = text.find(':');
  absl::StatusOr<uint32_t> v = ParsePciId(flag, text.substr(0, colon));
  if (!v.ok()) return v.status();
  value->number = *v;
  if (colon != absl::string_view::npos) {
    absl::StatusOr<uint32_t> d =
        ParsePciId(absl::StrCat(flag, " (device after ':')"), text.substr(colon + 1));
    if (!d.ok()) return d.status();
    value->has_second = true;
    value->second = *d;
  }
  return absl::OkStatus();
}

// Stores a parsed number, or returns its error.
template <typename T>
absl::Status SetNumber(absl::StatusOr<T> parsed, FlagValue* value) {
  if (!parsed.ok()) return parsed.status();
  value->number = *parsed;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(absl::string_view flag, absl::string_view text) {
  return ParseByteSize(flag, text);
}

absl::StatusOr<uint64_t> ParseUint(absl::string_view flag, absl::string_view text, uint64_t max) {
  const std::string what = "an unsigned integer (decimal or 0x hex)";
  absl::string_view digits = text;
  int base = 10;
  if (absl::ConsumePrefix(&digits, "0x") || absl::ConsumePrefix(&digits, "0X")) base = 16;
  if (digits.empty()) {
    return Usage(absl::StrCat(flag, ": expected ", what, ", got ", QuoteForMessage(text)));
  }
  uint64_t v = 0;
  for (char ch : digits) {
    int d;
    if (absl::ascii_isdigit(ch)) {
      d = ch - '0';
    } else if (base == 16 && absl::ascii_isxdigit(ch)) {
      d = absl::ascii_tolower(ch) - 'a' + 10;
    } else {
      return Usage(absl::StrCat(flag, ": expected ", what, ", got ", QuoteForMessage(text)));
    }
    if (v > (std::numeric_limits<uint64_t>::max() - d) / base) {
      return Usage(absl::StrCat(flag, ": ", QuoteForMessage(text), " is too large"));
    }
    v = v * base + d;
  }
  if (v > max) {
    return Usage(
        absl::StrFormat("%s: %s is too large (at most %#x)", flag, QuoteForMessage(text), max));
  }
  return v;
}

absl::StatusOr<uint32_t> ParsePciId(absl::string_view flag, absl::string_view text) {
  absl::string_view digits = text;
  if (!absl::ConsumePrefix(&digits, "0x")) absl::ConsumePrefix(&digits, "0X");
  if (digits.empty() || digits.size() > 4 ||
      digits.find_first_not_of("0123456789abcdefABCDEF") != absl::string_view::npos) {
    return Usage(absl::StrCat(flag, ": ", QuoteForMessage(text),
                              " is not a PCI id: want 1-4 hex digits as lspci shows them, 0x "
                              "optional (e.g. 8086 or 0x8086; ids are never decimal)"));
  }
  uint32_t v = 0;
  for (char c : digits) {
    v = v * 16 + (absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10);
  }
  return v;
}

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view flag, absl::string_view text) {
  absl::Duration d;
  uint64_t seconds = 0;
  if (absl::SimpleAtoi(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return Usage(absl::StrCat(flag, ": invalid duration ", QuoteForMessage(text),
                              " (expected e.g. 5s, 500ms, 1m)"));
  }
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return Usage(
        absl::StrCat(flag, ": must be a positive, finite duration, got ", QuoteForMessage(text)));
  }
  return d;
}

absl::StatusOr<FlagValue> ParseValue(const FlagSpec& spec, absl::string_view text) {
  const std::string flag = absl::StrCat("--", spec.name);
  FlagValue value;
  value.text = std::string(text);
  absl::Status status;
  switch (spec.kind) {
    case ValueKind::kSwitch:
      status = ParseSwitch(flag, text, &value);
      break;
    case ValueKind::kString:
      if (text.empty() && !spec.allow_empty) {
        status = Usage(absl::StrCat(flag, ": must not be empty"));
      }
      break;
    case ValueKind::kSize:
      status = SetNumber(ParseSize(flag, text), &value);
      break;
    case ValueKind::kPciId:
      status = SetNumber(ParsePciId(flag, text), &value);
      break;
    case ValueKind::kPciIds:
      status = ParsePciIds(flag, text, &value);
      break;
    case ValueKind::kUint32:
      status = SetNumber(ParseUint(flag, text, std::numeric_limits<uint32_t>::max()), &value);
      break;
    case ValueKind::kUint64:
      status = SetNumber(ParseUint(flag, text, std::numeric_limits<uint64_t>::max()), &value);
      break;
    case ValueKind::kDuration: {
      absl::StatusOr<absl::Duration> d = ParseDuration(flag, text);
      if (d.ok()) value.duration = *d;
      status = d.status();
      break;
    }
  }
  if (!status.ok()) return status;
  return value;
}

const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags, absl::string_view name) {
  for (const FlagSpec& f : flags) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

FlagArg SplitFlag(absl::string_view arg) {
  absl::string_view body = arg.substr(std::min<size_t>(2, arg.size()));
  const size_t eq = body.find('=');
  FlagArg out;
  out.name = std::string(body.substr(0, eq));
  if (eq != absl::string_view::npos) {
    out.has_value = true;
    out.value = std::string(body.substr(eq + 1));
  }
  return out;
}

absl::StatusOr<FlagValue> TakeValue(const FlagSpec& spec, const FlagArg& arg,
                                    const std::vector<std::string>& args, size_t* i) {
  if (!spec.removed.empty()) return Usage(absl::StrCat("--", spec.name, ": ", spec.removed));
  if (arg.has_value) return ParseValue(spec, arg.value);
  if (spec.kind == ValueKind::kSwitch) return ParseValue(spec, "true");
  if (*i + 1 >= args.size()) {
    return Usage(
        absl::StrCat("--", spec.name, ": needs a value (--", spec.name, "=", spec.value_name, ")"));
  }
  absl::StatusOr<FlagValue> value = ParseValue(spec, args[*i + 1]);
  if (value.ok()) ++*i;
  return value;
}

absl::Status AddValue(const FlagSpec& spec, FlagValue value, FlagValues* values) {
  std::vector<FlagValue>& given = (*values)[spec.name];
  if (!given.empty() && !spec.repeated) {
    return Usage(absl::StrCat("--", spec.name, ": given more than once"));
  }
  given.push_back(std::move(value));
  return absl::OkStatus();
}

absl::Status UnknownFlag(absl::string_view name, absl::string_view where,
                         const std::vector<FlagSpec>& flags) {
  std::vector<std::string> candidates;
  for (const FlagSpec& f : flags) {
    if (f.removed.empty()) candidates.push_back(f.name);
  }
  return Usage(absl::StrCat("unknown flag --", name, where, Suggest(name, candidates, "--")));
}

absl::StatusOr<FlagValues> ParseFlags(const std::vector<FlagSpec>& flags,
                                      const std::vector<std::string>& args) {
  FlagValues values;
  for (size_t i = 0; i < args.size(); ++i) {
    if (!absl::StartsWith(args[i], "--")) {
      return Usage(absl::StrCat("unexpected argument ", QuoteForMessage(args[i])));
    }
    const FlagArg arg = SplitFlag(args[i]);
    const FlagSpec* spec = FindFlag(flags, arg.name);
    if (spec == nullptr) return UnknownFlag(arg.name, "", flags);
    absl::StatusOr<FlagValue> value = TakeValue(*spec, arg, args, &i);
    if (!value.ok()) return value.status();
    absl::Status added = AddValue(*spec, *std::move(value), &values);
    if (!added.ok()) return added;
  }
  return values;
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string Suggest(absl::string_view word, const std::vector<std::string>& candidates,
                    absl::string_view prefix) {
  size_t best = 3;
  std::string best_word;
  for (const std::string& c : candidates) {
    const size_t d = EditDistance(word, c);
    if (d < best || (!best_word.empty() && d == best && c < best_word)) {
      best = d;
      best_word = c;
    }
  }
  if (best_word.empty()) return "";
  return absl::StrCat(" (did you mean ", prefix, best_word, "?)");
}

std::string Wrap(absl::string_view text, size_t width, size_t indent) {
  std::string out;
  size_t column = indent;
  bool first_paragraph = true;
  for (absl::string_view paragraph : absl::StrSplit(text, '\n')) {
    if (!first_paragraph) {
      out.append("\n").append(indent, ' ');
      column = indent;
    }
    first_paragraph = false;
    bool first_word = true;
    for (absl::string_view word : absl::StrSplit(paragraph, ' ', absl::SkipEmpty())) {
      if (!first_word && column + 1 + word.size() > width) {
        out.append("\n").append(indent, ' ');
        column = indent;
        first_word = true;
      }
      if (!first_word) {
        out.push_back(' ');
        ++column;
      }
      out.append(word.data(), word.size());
      column += word.size();
      first_word = false;
    }
  }
  return out;
}

std::string FlagUsage(const FlagSpec& flag) {
  if (flag.kind == ValueKind::kSwitch) return absl::StrCat("--", flag.name);
  return absl::StrCat("--", flag.name, "=", flag.value_name);
}

std::string RenderFlagList(const std::vector<FlagSpec>& flags, size_t width) {
  size_t column = 0;
  for (const FlagSpec& f : flags) {
    if (f.removed.empty()) column = std::max(column, FlagUsage(f).size());
  }
  std::string out;
  for (const FlagSpec& f : flags) {
    if (!f.removed.empty()) continue;
    std::string help = f.help;
    if (f.required) absl::StrAppend(&help, " Required.");
    if (f.repeated && !absl::StrContains(help, "repeatable")) {
      absl::StrAppend(&help, " Repeatable.");
    }
    // Help starts after the flag column; long help wraps under itself.
    absl::StrAppendFormat(&out, "  %-*s  %s\n", static_cast<int>(column), FlagUsage(f),
                          Wrap(help, width, column + 4));
  }
  return out;
}

}  // namespace cli
}  // namespace iommu
