// The parser of iommuctl's command line: ParseCommandLine (argv to a typed
// Invocation, against the command table and the global flags) and UsageHint
// (the --help to point a usage error at). The flags' value kinds and their
// errors are common/cli_flags.h's.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/args.h"
#include "client/args_internal.h"
#include "common/cli_flags.h"

namespace iommu {
namespace client {
namespace {

using cli::FindFlag;
using cli::Suggest;

std::vector<std::string> NounsAndWords() {
  std::vector<std::string> out;
  for (const CommandSpec& c : Commands()) {
    if (std::find(out.begin(), out.end(), c.noun) == out.end()) out.push_back(c.noun);
  }
  return out;
}

std::vector<std::string> VerbsOf(absl::string_view noun) {
  std::vector<std::string> out;
  for (const CommandSpec& c : Commands()) {
    if (c.noun == noun && !c.verb.empty()) out.push_back(c.verb);
  }
  return out;
}

// The command line as read so far.
struct ParseState {
  Invocation inv;
  std::vector<std::string> words;  // Non-flag arguments, in order.
  const CommandSpec* command = nullptr;
};

// Adds a command word, resolving the command as soon as its words are known
// so that its own flags are recognised after it.
void AddWord(const std::string& word, ParseState* st) {
  st->words.push_back(word);
  if (st->command != nullptr) return;
  if (st->words.size() == 1 && FindCommand(st->words[0], "") != nullptr) {
    st->command = FindCommand(st->words[0], "");
  } else if (st->words.size() == 2) {
    st->command = FindCommand(st->words[0], st->words[1]);
  }
}

// "--name[=value]", or a short flag: -h, -o VALUE, -o=VALUE, -oVALUE, and -l
// for --selector as kubectl spells it.
absl::StatusOr<cli::FlagArg> SplitArg(const std::string& arg) {
  if (arg[1] == '-') return cli::SplitFlag(arg);
  cli::FlagArg out;
  const char letter = arg[1];
  if (letter == 'h' && arg.size() == 2) {
    out.name = "help";
  } else if (letter == 'o' || letter == 'l') {
    out.name = letter == 'o' ? "output" : "selector";
    if (arg.size() > 2) {
      out.has_value = true;
      out.value = arg.substr(arg[2] == '=' ? 3 : 2);
    }
  } else {
    return Usage(absl::StrCat("unknown flag ", Quote(arg)));
  }
  return out;
}

// "unknown flag --name ...", with the command's flags and the global ones
// as suggestions, and a hint when a command flag came before the command.
absl::Status UnknownFlag(const std::string& name, const ParseState& st) {
  std::vector<FlagSpec> known = GlobalFlags();
  std::string where;
  if (st.command != nullptr) {
    known.insert(known.begin(), st.command->flags.begin(), st.command->flags.end());
    where = absl::StrCat(" for ", Quote(st.command->FullName()));
  } else if (st.words.size() < 2) {
    for (const CommandSpec& c : Commands()) {
      if (FindFlag(c.flags, name) != nullptr) {
        where =
            " (command flags go after the command, e.g. iommuctl container list "
            "--tenant=acme)";
        break;
      }
    }
  }
  return cli::UnknownFlag(name, where, known);
}

// Reads the flag at args[*i] (and its value, advancing *i when it is the
// next argument) into the command's flags or the global options.
absl::Status ReadFlag(const std::vector<std::string>& args, size_t* i, ParseState* st) {
  absl::StatusOr<cli::FlagArg> arg = SplitArg(args[*i]);
  if (!arg.ok()) return arg.status();
  const FlagSpec* spec = st->command != nullptr ? FindFlag(st->command->flags, arg->name) : nullptr;
  const bool global = spec == nullptr;
  if (global) spec = FindFlag(GlobalFlags(), arg->name);
  if (spec == nullptr) return UnknownFlag(arg->name, *st);
  absl::StatusOr<FlagValue> value = cli::TakeValue(*spec, *arg, args, i);
  if (!value.ok()) return value.status();
  if (global) return ApplyGlobal(*spec, *value, &st->inv);
  return cli::AddValue(*spec, *std::move(value), &st->inv.flags);
}

// After every argument is read: resolves `help [noun [verb]]`, the noun and
// the command. True when the Invocation is complete (help was asked for).
absl::StatusOr<bool> ResolveCommand(ParseState* st) {
  std::vector<std::string>& words = st->words;
  // `help [noun [verb]]` is the same as `[noun [verb]] --help`.
  if (!words.empty() && words[0] == "help") {
    st->inv.help = true;
    words.erase(words.begin());
    st->command = nullptr;
    if (!st->inv.flags.empty()) return Usage("help: takes no flags");
    if (words.size() >= 2) st->command = FindCommand(words[0], words[1]);
    if (words.size() == 1) st->command = FindCommand(words[0], "");
  }
  if (words.empty()) {
    if (st->inv.help) return true;
    return Usage("missing command");
  }
  const std::string& noun = words[0];
  if (!IsNoun(noun)) {
    return Usage(absl::StrCat("unknown command ", Quote(noun), Suggest(noun, NounsAndWords(), "")));
  }
  if (st->command == nullptr) {
    if (words.size() == 1) {
      // A noun without its verb.
      if (st->inv.help) {
        st->inv.help_noun = noun;
        return true;
      }
      return Usage(absl::StrCat(Quote(noun), " needs a command: one of ",
                                absl::StrJoin(VerbsOf(noun), ", ")));
    }
    return Usage(absl::StrCat("unknown command ", Quote(absl::StrCat(noun, " ", words[1])),
                              Suggest(words[1], VerbsOf(noun), ""), "; ", noun,
                              " commands are: ", absl::StrJoin(VerbsOf(noun), ", ")));
  }
  if (st->inv.help) {
    st->inv.help_noun = st->command->noun;
    st->inv.help_command = st->command;
    return true;
  }
  st->inv.command = st->command;
  return false;
}

// The words after the command: its positional argument, if it takes one.
absl::Status ReadPositional(const ParseState& st, Invocation* inv) {
  const CommandSpec& command = *inv->command;
  const std::string name = Quote(command.FullName());
  const size_t used = command.verb.empty() ? 1 : 2;
  std::vector<std::string> rest(st.words.begin() + used, st.words.end());
  if (command.positional.empty()) {
    if (rest.empty()) return absl::OkStatus();
    return Usage(absl::StrCat(name, " takes no arguments, got ", Quote(rest[0])));
  }
  if (rest.empty() && !command.positional_optional) {
    return Usage(absl::StrCat(name, ": missing ", command.positional));
  }
  if (rest.size() > 1) {
    return Usage(
        absl::StrCat(name, ": takes one ", command.positional, ", got also ", Quote(rest[1])));
  }
  if (!rest.empty()) inv->positional = rest[0];
  if (!rest.empty() && inv->positional.empty()) {
    return Usage(absl::StrCat(name, ": ", command.positional, " must not be empty"));
  }
  return absl::OkStatus();
}

// Rules that need the whole command line: required flags, and -o name only
// for commands that print named objects.
absl::Status CheckComplete(const Invocation& inv) {
  const CommandSpec& command = *inv.command;
  for (const FlagSpec& f : command.flags) {
    if (f.required && !inv.Has(f.name)) {
      return Usage(absl::StrCat("--", f.name, ": required by ", Quote(command.FullName()), " (--",
                                f.name, "=", f.value_name, ")"));
    }
  }
  // Refused before anything is sent, so that a mutation is never applied
  // only for its answer to be unprintable.
  if (inv.global.output == OutputFormat::kName && !command.names_objects &&
      command.FullName() != "help") {
    return Usage(absl::StrCat("--output=name: ", Quote(command.FullName()),
                              " prints no objects to name; use -o table or -o json"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& args,
                                            absl::string_view default_broker) {
  ParseState st;
  st.inv.global.broker = std::string(default_broker);
  bool flags_done = false;  // After "--".
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      AddWord(arg, &st);
    } else if (arg == "--") {
      flags_done = true;
    } else {
      absl::Status read = ReadFlag(args, &i, &st);
      if (!read.ok()) return read;
    }
  }
  absl::StatusOr<bool> done = ResolveCommand(&st);
  if (!done.ok()) return done.status();
  if (*done) return std::move(st.inv);
  absl::Status status = ReadPositional(st, &st.inv);
  if (status.ok()) status = CheckComplete(st.inv);
  if (!status.ok()) return status;
  return std::move(st.inv);
}

std::string UsageHint(const std::vector<std::string>& args) {
  // A flag that takes its value as the next argument ("-o json", "--tenant
  // acme"): that value is not a command word.
  const auto takes_next = [](const std::string& a) {
    if (a == "-o" || a == "-l") return true;
    if (!absl::StartsWith(a, "--") || absl::StrContains(a, '=')) return false;
    const absl::string_view name = absl::string_view(a).substr(2);
    const FlagSpec* f = FindFlag(GlobalFlags(), name);
    for (const CommandSpec& c : Commands()) {
      if (f == nullptr) f = FindFlag(c.flags, name);
    }
    return f != nullptr && f->kind != ValueKind::kSwitch;
  };
  std::vector<std::string> words;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      words.insert(words.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (takes_next(a)) {
      ++i;
      continue;
    }
    if (!a.empty() && a[0] != '-') words.push_back(a);
  }
  if (!words.empty() && words[0] == "help") words.erase(words.begin());
  std::string topic;
  if (words.size() >= 2 && FindCommand(words[0], words[1]) != nullptr) {
    topic = absl::StrCat(words[0], " ", words[1], " ");
  } else if (!words.empty() && IsNoun(words[0])) {
    topic = absl::StrCat(words[0], " ");
  }
  return absl::StrCat("Run 'iommuctl ", topic, "--help' for usage.");
}

}  // namespace client
}  // namespace iommu
