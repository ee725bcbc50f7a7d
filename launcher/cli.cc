#include "launcher/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/byte_size.h"
#include "common/cli_flags.h"
#include "common/unique_fd.h"
#include "launcher/client.h"

namespace iommu {
namespace launcher {
namespace {

// errno -> status once, at the call site, naming the call and its object.
absl::Status ErrnoStatus(int err, absl::string_view context) {
  return absl::ErrnoToStatus(err, context);
}

constexpr const char kTokenEnv[] = "IOMMU_LAUNCHER_TOKEN";

// No token the broker signs is longer (common/grant_token.h).
constexpr size_t kMaxTokenBytes = 4096;

constexpr const char kTokenSources[] =
    "set $IOMMU_LAUNCHER_TOKEN, or pass --token-file=PATH (--token-file=- reads stdin)";

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

const char* Access(bool r, bool w) { return r && w ? "rw" : (r ? "r" : (w ? "w" : "none")); }

void Line(std::FILE* out, const std::string& line) {
  std::fprintf(out, "%s\n", line.c_str());
  std::fflush(out);
}

// How long --hold keeps trying to resume its session after the agent hung
// up: the agent's default --session-resume-timeout.
constexpr absl::Duration kResumeFor = absl::Seconds(60);

// Blocks until SIGINT/SIGTERM, EOF (or an error) on stdin, or the agent
// closing `agent_fd`. Signals are blocked first and taken through a
// signalfd, so one that arrives between "ready" and poll() is not lost.
// When the agent hangs up (it restarted), `resume` reconnects and resumes
// the session, returning the new connection's fd; without it, or when it
// fails, the hang-up ends the wait with its error.
absl::Status WaitForRelease(int agent_fd, std::FILE* out,
                            const std::function<absl::StatusOr<int>()>& resume) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) {
    return ErrnoStatus(errno, "sigprocmask SIG_BLOCK SIGINT SIGTERM");
  }
  UniqueFd sfd(signalfd(-1, &mask, SFD_CLOEXEC));
  if (!sfd.valid()) return ErrnoStatus(errno, "signalfd SIGINT SIGTERM");
  Line(out, "ready");
  bool stdin_open = true;
  while (true) {
    pollfd fds[3] = {{sfd.get(), POLLIN, 0},
                     {agent_fd, POLLIN, 0},
                     {stdin_open ? STDIN_FILENO : -1, POLLIN, 0}};
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll");
    }
    if (fds[0].revents != 0) {
      signalfd_siginfo info;
      const ssize_t n = read(sfd.get(), &info, sizeof(info));
      const char* name = n == sizeof(info) && info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
      Line(out, absl::StrCat("step=release reason=", name));
      return absl::OkStatus();
    }
    if (fds[1].revents != 0) {
      // The agent sends nothing unasked, so any readiness is a hang-up.
      if (!resume) {
        return absl::UnavailableError("launcher socket: the agent closed the connection");
      }
      Line(out, "step=agent_hangup reason=the agent closed the connection; resuming");
      absl::StatusOr<int> again = resume();
      if (!again.ok()) return again.status();
      agent_fd = *again;
      continue;
    }
    if (fds[2].revents != 0) {
      char buf[256];
      const ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
      if (n > 0) continue;  // Input is ignored; only its end matters.
      if (n < 0 && errno == EINTR) continue;
      Line(out, "step=release reason=stdin-eof");
      return absl::OkStatus();
    }
  }
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(absl::string_view field, absl::string_view text) {
  return cli::ParseSize(field, text);
}

absl::StatusOr<MapSpec> ParseMapSpec(absl::string_view text) {
  const std::string form = "want OFFSET:LENGTH@IOVA[:rw|r|w]";
  std::vector<absl::string_view> at = absl::StrSplit(text, '@');
  if (at.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("--map: \"", text, "\": ", form));
  }
  std::vector<absl::string_view> range = absl::StrSplit(at[0], ':');
  std::vector<absl::string_view> where = absl::StrSplit(at[1], ':');
  if (range.size() != 2 || where.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("--map: \"", text, "\": ", form));
  }
  MapSpec spec;
  absl::StatusOr<uint64_t> v = ParseSize("--map offset", range[0]);
  if (!v.ok()) return v.status();
  spec.offset = *v;
  v = ParseSize("--map length", range[1]);
  if (!v.ok()) return v.status();
  if (*v == 0) return absl::InvalidArgumentError("--map length: must not be 0");
  spec.length = *v;
  v = ParseSize("--map iova", where[0]);
  if (!v.ok()) return v.status();
  spec.iova = *v;
  if (where.size() == 2) {
    if (where[1] == "rw") {
      spec.readable = spec.writable = true;
    } else if (where[1] == "r") {
      spec.writable = false;
    } else if (where[1] == "w") {
      spec.readable = false;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--map access: \"", where[1], "\" must be rw, r or w"));
    }
  }
  return spec;
}

absl::StatusOr<UnmapSpec> ParseUnmapSpec(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (parts.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--unmap: \"", text, "\": want IOVA:LENGTH"));
  }
  UnmapSpec spec;
  absl::StatusOr<uint64_t> v = ParseSize("--unmap iova", parts[0]);
  if (!v.ok()) return v.status();
  spec.iova = *v;
  v = ParseSize("--unmap length", parts[1]);
  if (!v.ok()) return v.status();
  if (*v == 0) return absl::InvalidArgumentError("--unmap length: must not be 0");
  spec.length = *v;
  return spec;
}

namespace {

// iommu-launcher's flags, in the order --help lists them.
const std::vector<cli::FlagSpec>& Flags() {
  using cli::ValueKind;
  static const auto* flags = new std::vector<cli::FlagSpec>{
      {"socket", ValueKind::kString, "PATH",
       "The agent's launcher socket (Node.launcher_socket).", /*required=*/true},
      {"token-file", ValueKind::kString, "PATH|-",
       absl::StrCat("Read the grant token from PATH, or from the first line of stdin for "
                    "\"-\"; default: $", kTokenEnv, ". Never on the command line, where every "
                    "local user can read it (/proc/PID/cmdline)."),
       false, false, /*allow_empty=*/true},
      {"memfd", ValueKind::kSize, "SIZE", "Create a memfd of SIZE bytes and register it."},
      {"file", ValueKind::kString, "PATH", "Register PATH (opened read-write) instead."},
      {"map", ValueKind::kString, "SPEC",
       "Map the memory range OFFSET:LENGTH at IOVA; SPEC is OFFSET:LENGTH@IOVA[:rw|r|w] "
       "(default access rw).", false,
       /*repeated=*/true},
      {"unmap", ValueKind::kString, "IOVA:LENGTH",
       "Unmap the whole mappings inside IOVA:LENGTH (after the maps).", false,
       /*repeated=*/true},
      {"list", ValueKind::kSwitch, "", "Print the session's mappings."},
      {"devices", ValueKind::kSwitch, "", "Fetch the device fds and print their addresses."},
      {"hold", ValueKind::kSwitch, "",
       "Print \"ready\", then keep the session until SIGINT/SIGTERM or EOF on stdin; when the "
       "agent restarts meanwhile, reconnect and resume the session (ResumeSession) instead "
       "of ending."},
      {"help", ValueKind::kSwitch, "", "Show this help."},
      // Removed, not ignored: a token in argv is readable by every local
      // user, and the single-use check only helps if nobody else sees it.
      {"token", ValueKind::kString, "TOKEN", "", false, false, false,
       absl::StrCat("removed, because a token on the command line is readable by every local "
                    "user through /proc/PID/cmdline; ", kTokenSources)},
  };
  return *flags;
}

constexpr size_t kHelpWidth = 80;

// The last value given for `name`, or nullptr.
const cli::FlagValue* Last(const cli::FlagValues& values, const std::string& name) {
  auto it = values.find(name);
  return it == values.end() || it->second.empty() ? nullptr : &it->second.back();
}

// Every value given for a repeated flag, in order.
std::vector<std::string> All(const cli::FlagValues& values, const std::string& name) {
  std::vector<std::string> out;
  auto it = values.find(name);
  if (it == values.end()) return out;
  for (const cli::FlagValue& v : it->second) out.push_back(v.text);
  return out;
}

}  // namespace

std::string Usage() {
  return absl::StrCat(
      "usage: iommu-launcher --socket=PATH [--token-file=PATH|-]\n"
      "         [--memfd=SIZE | --file=PATH] [--map=OFFSET:LENGTH@IOVA[:rw|r|w]]...\n"
      "         [--unmap=IOVA:LENGTH]... [--list] [--devices] [--hold]\n"
      "\n",
      cli::Wrap("Opens a session on the node agent's launcher socket with a broker grant "
                "token, hands it guest memory and maps it for DMA, printing key=value lines.",
                kHelpWidth, 0),
      "\n\nFlags:\n", cli::RenderFlagList(Flags(), kHelpWidth), "\n",
      cli::Wrap(absl::StrCat("SIZE, OFFSET, LENGTH and IOVA are ", kByteSizeForms,
                             ". Units are case-sensitive; 1GB-style units are refused as "
                             "ambiguous."),
                kHelpWidth, 0),
      "\n\n", cli::Wrap("Exit status 0 on success; 1 with \"error: CODE: message\" on stderr.",
                        kHelpWidth, 0),
      "\n");
}

absl::StatusOr<CliOptions> ParseArgs(const std::vector<std::string>& args,
                                     const char* env_token) {
  absl::StatusOr<cli::FlagValues> given = cli::ParseFlags(Flags(), args);
  if (!given.ok()) return given.status();
  const cli::FlagValues& flags = *given;
  const auto on = [&flags](const char* name) {
    const cli::FlagValue* v = Last(flags, name);
    return v != nullptr && v->number != 0;
  };
  CliOptions options;
  options.list = on("list");
  options.hold = on("hold");
  options.devices = on("devices");
  options.help = on("help");
  if (const cli::FlagValue* v = Last(flags, "socket")) options.socket = v->text;
  if (const cli::FlagValue* v = Last(flags, "file")) options.file = v->text;
  if (const cli::FlagValue* v = Last(flags, "token-file")) {
    if (v->text.empty()) return absl::InvalidArgumentError("--token-file: needs a path or -");
    options.token_file = v->text;
  }
  if (const cli::FlagValue* v = Last(flags, "memfd")) {
    if (v->number == 0) return absl::InvalidArgumentError("--memfd: must not be 0");
    options.memfd_size = v->number;
  }
  for (const std::string& text : All(flags, "map")) {
    absl::StatusOr<MapSpec> spec = ParseMapSpec(text);
    if (!spec.ok()) return spec.status();
    options.maps.push_back(*spec);
  }
  for (const std::string& text : All(flags, "unmap")) {
    absl::StatusOr<UnmapSpec> spec = ParseUnmapSpec(text);
    if (!spec.ok()) return spec.status();
    options.unmaps.push_back(*spec);
  }
  if (options.help) return options;
  if (options.token_file.empty() && env_token != nullptr) options.token = env_token;
  if (options.socket.empty()) return absl::InvalidArgumentError("--socket: required");
  if (options.token.empty() && options.token_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token: required; ", kTokenSources));
  }
  if (options.memfd_size != 0 && !options.file.empty()) {
    return absl::InvalidArgumentError("--memfd and --file: give one, not both");
  }
  if (!options.maps.empty() && options.memfd_size == 0 && options.file.empty()) {
    return absl::InvalidArgumentError("--map: needs memory (--memfd or --file)");
  }
  return options;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path, int stdin_fd) {
  const bool from_stdin = path == "-";
  UniqueFd owned;
  int fd = stdin_fd;
  if (!from_stdin) {
    owned = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned.valid()) return ErrnoStatus(errno, absl::StrCat("--token-file: open ", path));
    fd = owned.get();
  }
  const std::string what = from_stdin ? "stdin" : path;
  std::string token;
  char c;
  // One byte at a time from stdin so that what follows the first line stays
  // there (--hold watches stdin for EOF); a file is read whole.
  // Room for the longest token and a line end ("\r\n"), and one byte more
  // to tell a longer file.
  while (token.size() <= kMaxTokenBytes + 2) {
    const ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, absl::StrCat("--token-file: read ", what));
    if (n == 0 || (from_stdin && c == '\n')) break;
    token.push_back(c);
  }
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--token-file: ", what, " holds more than ", kMaxTokenBytes, " bytes; not a token"));
  }
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--token-file: ", what, " holds no token"));
  }
  return token;
}

absl::Status RunCli(const CliOptions& options, std::FILE* out) {
  std::string token = options.token;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> read = ReadTokenFile(options.token_file, STDIN_FILENO);
    if (!read.ok()) return read.status();
    token = *std::move(read);
  }
  absl::StatusOr<std::unique_ptr<LauncherClient>> client =
      LauncherClient::Connect(options.socket);
  if (!client.ok()) return client.status();
  LauncherClient& c = **client;

  absl::StatusOr<v1::LauncherResponse::SessionOpened> session = c.OpenSession(token);
  if (!session.ok()) return session.status();
  Line(out, absl::StrCat("step=open_session session_id=", session->session_id(),
                         " container_id=", session->container_id(),
                         " tenant_id=", session->tenant_id(),
                         " expires_ms=", session->expires_ms()));
  for (const v1::GrantWindow& w : session->windows()) {
    Line(out, absl::StrCat("step=window window_id=", w.window_id(), " base=", Hex(w.base()),
                           " size=", Hex(w.size())));
  }

  UniqueFd memory;
  std::string memory_name;
  if (options.memfd_size != 0) {
    memory_name = "iommu-launcher";
    absl::StatusOr<UniqueFd> fd =
        LauncherClient::CreateMemfd(options.memfd_size, memory_name);
    if (!fd.ok()) return fd.status();
    memory = *std::move(fd);
  } else if (!options.file.empty()) {
    memory_name = options.file;
    memory.reset(open(options.file.c_str(), O_RDWR | O_CLOEXEC));
    if (!memory.valid()) return ErrnoStatus(errno, absl::StrCat("open --file ", options.file));
  }
  std::string memory_id;
  if (memory.valid()) {
    absl::StatusOr<v1::LauncherResponse::MemoryRegistered> reg =
        c.RegisterMemory(memory.get(), memory_name);
    if (!reg.ok()) return reg.status();
    memory_id = reg->memory_id();
    Line(out, absl::StrCat("step=register_memory memory_id=", reg->memory_id(),
                           " size=", Hex(reg->size()), " owner_tenant=", reg->owner_tenant(),
                           " shared=", reg->shared() ? "true" : "false"));
  }

  for (const MapSpec& m : options.maps) {
    absl::Status status = c.Map(memory_id, m.offset, m.length, m.iova, m.readable, m.writable);
    if (!status.ok()) return status;
    Line(out, absl::StrCat("step=map memory_id=", memory_id, " offset=", Hex(m.offset),
                           " length=", Hex(m.length), " iova=", Hex(m.iova),
                           " access=", Access(m.readable, m.writable)));
  }
  for (const UnmapSpec& u : options.unmaps) {
    absl::StatusOr<uint64_t> bytes = c.Unmap(u.iova, u.length);
    if (!bytes.ok()) return bytes.status();
    Line(out, absl::StrCat("step=unmap iova=", Hex(u.iova), " length=", Hex(u.length),
                           " bytes=", Hex(*bytes)));
  }
  if (options.list) {
    absl::StatusOr<std::vector<v1::LauncherResponse::MappingEntry>> list = c.ListMappings();
    if (!list.ok()) return list.status();
    for (const auto& e : *list) {
      Line(out, absl::StrCat("step=mapping memory_id=", e.memory_id(), " offset=",
                             Hex(e.offset()), " length=", Hex(e.length()), " iova=",
                             Hex(e.iova()), " access=", Access(e.readable(), e.writable())));
    }
    Line(out, absl::StrCat("step=list count=", list->size()));
  }
  LauncherDevices devices;  // Held until return, so --hold keeps them open.
  if (options.devices) {
    absl::StatusOr<LauncherDevices> got = c.GetDevices();
    if (!got.ok()) return got.status();
    devices = *std::move(got);
    for (size_t i = 0; i < devices.addresses.size(); ++i) {
      Line(out, absl::StrCat("step=device address=", devices.addresses[i],
                             " fd=", devices.fds[i].get()));
    }
  }
  if (!options.hold) return absl::OkStatus();
  if (session->resume_token().empty()) return WaitForRelease(c.socket_fd(), out, nullptr);
  // The agent keeps the session across its own restart: reconnect and take
  // it back, for as long as the agent keeps it waiting.
  std::unique_ptr<LauncherClient> current = *std::move(client);
  auto resume = [&]() -> absl::StatusOr<int> {
    const absl::Time deadline = absl::Now() + kResumeFor;
    absl::Status last = absl::DeadlineExceededError("not tried");
    while (absl::Now() < deadline) {
      absl::StatusOr<std::unique_ptr<LauncherClient>> next = LauncherClient::Connect(options.socket);
      if (next.ok()) {
        absl::StatusOr<v1::LauncherResponse::SessionOpened> resumed =
            (*next)->ResumeSession(session->session_id(), session->resume_token());
        if (resumed.ok()) {
          current = *std::move(next);
          Line(out, absl::StrCat("step=resume_session session_id=", resumed->session_id(),
                                 " container_id=", resumed->container_id(),
                                 " windows=", resumed->windows_size()));
          return current->socket_fd();
        }
        last = resumed.status();
        // A refusal is final; a restarting agent (not registered yet, socket
        // not there) is retried.
        if (last.code() == absl::StatusCode::kUnauthenticated ||
            last.code() == absl::StatusCode::kFailedPrecondition) {
          return last;
        }
      } else {
        last = next.status();
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::UnavailableError(absl::StrCat(
        "launcher socket: the agent did not take the session back within ",
        absl::FormatDuration(kResumeFor), ": ", last.message()));
  };
  return WaitForRelease(current->socket_fd(), out, resume);
}

}  // namespace launcher
}  // namespace iommu
