#include "common/flag_spelling.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"

namespace iommu {
namespace {

std::string Dashed(absl::string_view name) { return absl::StrReplaceAll(name, {{"_", "-"}}); }

// True for "-x..." and "--x...": a flag, not a value such as "-5" or "-".
bool LooksLikeFlag(absl::string_view arg) {
  absl::string_view body = arg;
  if (!absl::ConsumePrefix(&body, "--") && !absl::ConsumePrefix(&body, "-")) return false;
  return !body.empty() && absl::ascii_isalpha(static_cast<unsigned char>(body.front()));
}

// Abseil's own usage flags, which its parser handles without registering
// them (FindCommandLineFlag does not know them).
bool IsAbseilUsageFlag(absl::string_view name) {
  for (const char* usage : {"helpfull", "helpshort", "helppackage", "helpon", "helpmatch",
                            "version", "only_check_args"}) {
    if (name == usage) return true;
  }
  return false;
}

// Appends `text` word-wrapped to `width` columns, each line indented by
// `indent` spaces.
void AppendWrapped(absl::string_view text, size_t indent, size_t width, std::string* out) {
  size_t column = 0;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (column > 0 && column + 1 + word.size() > width) {
      out->append("\n");
      column = 0;
    }
    if (column == 0) {
      out->append(indent, ' ');
      column = indent;
    } else {
      out->push_back(' ');
      ++column;
    }
    out->append(word.data(), word.size());
    column += word.size();
  }
  out->append("\n");
}

// Whether this program's sources define the flag (not Abseil's own).
bool OwnFlag(const absl::CommandLineFlag& flag) {
  for (const char* dir : {"server/", "agent/", "common/"}) {
    if (absl::StartsWith(flag.Filename(), dir)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<TranslatedFlags> TranslateFlagSpelling(
    const std::vector<std::string>& args, const std::function<bool(absl::string_view)>& known) {
  TranslatedFlags out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (i > 0 && arg == "--") {
      out.args.insert(out.args.end(), args.begin() + static_cast<long>(i), args.end());
      break;
    }
    if (i == 0 || !LooksLikeFlag(arg)) {
      out.args.push_back(arg);
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      out.help = true;
      continue;
    }
    const size_t eq = arg.find('=');
    const absl::string_view given = absl::string_view(arg).substr(0, eq);
    absl::string_view name = given;
    if (!absl::ConsumePrefix(&name, "--")) absl::ConsumePrefix(&name, "-");
    std::string underscored = absl::StrReplaceAll(name, {{"-", "_"}});
    if (!known(underscored) && !IsAbseilUsageFlag(underscored)) {
      // --no-foo-bar / --nofoo_bar: Abseil's negation of boolean foo_bar.
      absl::string_view negated = underscored;
      if ((absl::ConsumePrefix(&negated, "no_") || absl::ConsumePrefix(&negated, "no")) &&
          known(negated)) {
        underscored = absl::StrCat("no", negated);
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag ", given, " (see --help)"));
      }
    }
    if (absl::StrContains(name, '_')) {
      out.deprecated.emplace_back(std::string(given), absl::StrCat("--", Dashed(name)));
    }
    out.args.push_back(absl::StrCat("--", underscored,
                                    eq == std::string::npos ? "" : arg.substr(eq)));
  }
  return out;
}

std::string RenderFlagsHelp(absl::string_view usage, std::vector<FlagHelp> flags) {
  std::sort(flags.begin(), flags.end(),
            [](const FlagHelp& a, const FlagHelp& b) { return a.name < b.name; });
  std::string out = absl::StrCat(usage, "\n\nFlags:\n");
  for (const FlagHelp& f : flags) {
    absl::StrAppend(&out, "  --", Dashed(f.name), "\n");
    AppendWrapped(absl::StrCat(f.help, " (default: \"", f.default_value, "\")"), 6, 80, &out);
  }
  return out;
}

namespace {

// ParseFlags without exiting: the exit status when the program must stop
// (help printed, or a bad flag), else nullopt. Separate so that everything it
// allocated is freed before ParseFlags exits (leak checkers run at exit).
std::optional<int> TranslateAndParse(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  absl::StatusOr<TranslatedFlags> translated =
      TranslateFlagSpelling(args, [](absl::string_view name) {
        return absl::FindCommandLineFlag(name) != nullptr;
      });
  if (!translated.ok()) {
    std::cerr << (args.empty() ? "" : args[0]) << ": " << translated.status().message() << "\n";
    return 2;
  }
  if (translated->help) {
    std::vector<FlagHelp> own;
    for (const auto& [name, flag] : absl::GetAllFlags()) {
      if (OwnFlag(*flag)) own.push_back({std::string(name), flag->Help(), flag->DefaultValue()});
    }
    std::cout << RenderFlagsHelp(absl::ProgramUsageMessage(), std::move(own))
              << "\nAlso: --version, --helpfull (every flag, Abseil's too, as defined: "
                 "with '_').\n";
    return 0;
  }
  std::vector<char*> pointers;
  for (std::string& a : translated->args) pointers.push_back(a.data());
  pointers.push_back(nullptr);
  absl::ParseCommandLine(static_cast<int>(pointers.size() - 1), pointers.data());
  for (const auto& [old, dashed] : translated->deprecated) {
    LogEvent(LogLevel::kWarning, "deprecated_flag", {{"flag", old}, {"use", dashed}});
  }
  return std::nullopt;
}

}  // namespace

void ParseFlags(int argc, char** argv) {
  const std::optional<int> exit_code = TranslateAndParse(argc, argv);
  if (exit_code.has_value()) {
    std::cout.flush();
    std::exit(*exit_code);
  }
}

}  // namespace iommu
