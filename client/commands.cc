// RunIommuctl, the whole program minus process wiring (client/commands.h): it
// parses the command line, answers the commands that need no broker, picks
// the request id and the broker, and dispatches to the command's handler
// through the one table of them below; then it turns the outcome into the
// exit code. The handlers are in *_commands.cc (client/command_handlers.h),
// the call and print machinery they share in client/command_session.h.
#include "client/commands.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/args.h"
#include "client/command_handlers.h"
#include "client/command_session.h"
#include "client/config.h"
#include "client/config_commands.h"
#include "client/config_file.h"
#include "client/structured_output.h"
#include "client/views.pb.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;

// ---------------------------------------------------------------- generic

// Most commands send a request that is a plain copy of the command line
// (CommandSpec::positional_field and flag_fields, built by BuildRequest) and
// print the answer; the handlers below them hold only what is more.

// Builds the request, sends it and prints the answer.
template <typename Req, typename Resp>
absl::Status Send(Session& s, Method<Req, Resp> method) {
  Req req;
  RETURN_IF_ERROR(s.Build(&req));
  Resp resp;
  RETURN_IF_ERROR(s.Call(method, req, &resp));
  return s.Print(resp);
}

// Builds the request, sends it and confirms "<noun> <ID> <done>" (for the
// answers that carry nothing: deletes, releases).
template <typename Req, typename Resp>
absl::Status SendAndConfirm(Session& s, Method<Req, Resp> method, const char* done) {
  Req req;
  RETURN_IF_ERROR(s.Build(&req));
  Resp resp;
  RETURN_IF_ERROR(s.Call(method, req, &resp));
  return s.PrintDone(resp, absl::StrCat(s.inv().command->noun, " ", s.inv().positional, " ", done));
}

// Builds the request of a list method, pages through it and prints every
// item.
template <typename Req, typename Resp, typename Item>
absl::Status List(Session& s, Method<Req, Resp> method,
                  google::protobuf::RepeatedPtrField<Item>* (Resp::*items)()) {
  Req req;
  RETURN_IF_ERROR(s.Build(&req));
  Resp all;
  RETURN_IF_ERROR(s.ListAll(method, req, items, &all));
  return s.Print(all);
}

using Handler = absl::Status (*)(Session&);

// Every command's handler, by its full name: the generic ones where the
// request is a plain copy of the command line, else the command's own.
const std::map<std::string, Handler>& Handlers() {
  static const auto* handlers = new std::map<std::string, Handler>{
      {"tenant create", &TenantCreate},
      {"tenant get", [](Session& s) { return Send(s, &Stub::GetTenant); }},
      {"tenant list",
       [](Session& s) {
         return List(s, &Stub::ListTenants, &v1::ListTenantsResponse::mutable_tenants);
       }},
      {"tenant set-quota", &TenantSetQuota},
      {"tenant label", &TenantLabel},
      {"tenant delete",
       [](Session& s) { return SendAndConfirm(s, &Stub::DeleteTenant, "deleted"); }},
      {"node list",
       [](Session& s) { return List(s, &Stub::ListNodes, &v1::ListNodesResponse::mutable_nodes); }},
      {"node get", [](Session& s) { return Send(s, &Stub::GetNode); }},
      {"node cordon", [](Session& s) { return Send(s, &Stub::CordonNode); }},
      {"node uncordon", [](Session& s) { return Send(s, &Stub::UncordonNode); }},
      {"node drain", [](Session& s) { return Send(s, &Stub::DrainNode); }},
      {"node delete", [](Session& s) { return SendAndConfirm(s, &Stub::DeleteNode, "deleted"); }},
      {"device list",
       [](Session& s) {
         return List(s, &Stub::ListDevices, &v1::ListDevicesResponse::mutable_devices);
       }},
      {"container create", &ContainerCreate},
      {"container get", [](Session& s) { return Send(s, &Stub::GetContainer); }},
      {"container list", &ContainerList},
      {"container delete",
       [](Session& s) { return SendAndConfirm(s, &Stub::DeleteContainer, "deleted"); }},
      {"container set-budget", [](Session& s) { return Send(s, &Stub::SetContainerBudget); }},
      {"container label", &ContainerLabel},
      {"container grant", &ContainerGrant},
      {"window allocate", &WindowAllocate},
      {"window release",
       [](Session& s) { return SendAndConfirm(s, &Stub::ReleaseWindow, "released"); }},
      {"window list",
       [](Session& s) {
         return List(s, &Stub::ListWindows, &v1::ListWindowsResponse::mutable_windows);
       }},
      {"usage", &Usage},
      {"describe tenant", &DescribeTenant},
      {"describe node", &DescribeNode},
      {"describe container", &DescribeContainer},
      {"describe window", &DescribeWindow},
      {"top", &Top},
      {"version", &Version},
  };
  return *handlers;
}

// True when the broker may or may not have applied a mutation that failed
// with `code`, so that retrying with the same request id is the safe move.
bool OutcomeUnknown(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kUnknown || code == absl::StatusCode::kInternal ||
         code == absl::StatusCode::kCancelled || code == absl::StatusCode::kAborted;
}

// The broker and credentials to use: flags, --context, the environment,
// the current context, the defaults (client/config.h). INVALID_ARGUMENT for
// an unreadable or malformed config file or an unknown context.
absl::StatusOr<GlobalOptions> ConnectionSettings(const Invocation& inv,
                                                 const CliEnvironment& env) {
  EnvSettings from_env;
  from_env.broker = env.default_broker;
  from_env.cert = env.cert;
  from_env.key = env.key;
  from_env.ca = env.ca;
  from_env.trust_domain = env.trust_domain;
  from_env.insecure = env.insecure;
  iommu::ctl::CliConfig config;
  if (!env.config_path.empty()) {
    absl::StatusOr<iommu::ctl::CliConfig> loaded = LoadConfigFile(env.config_path);
    // An unreadable config is the caller's to fix, like a bad flag.
    if (!loaded.ok()) return absl::InvalidArgumentError(loaded.status().message());
    config = *std::move(loaded);
  } else if (!inv.global.context.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--context: no config file (set $", kConfigEnvVar, " or $HOME)"));
  }
  return ResolveSettings(inv.global, inv.global.context, from_env, config);
}

// The commands that need no broker: help, completion, config and
// `version --client`. Runs `inv` when it is one of them and returns its exit
// code; nullopt for every other command.
std::optional<int> RunWithoutBroker(const Invocation& inv, const std::vector<std::string>& args,
                                    std::ostream& out, std::ostream& err,
                                    const CliEnvironment& env) {
  if (inv.help) {
    out << RenderHelp(inv.help_noun, inv.help_command);
    return 0;
  }
  if (inv.command->FullName() == "completion") {
    if (inv.positional != "bash") {
      err << "error: completion: only bash is supported, got \"" << inv.positional << "\"\n"
          << UsageHint(args) << "\n";
      return 2;
    }
    out << RenderBashCompletion();
    return 0;
  }
  if (inv.command->noun == "config") {
    absl::Status status = RunConfigCommand(inv, env.config_path, out);
    if (status.ok()) return 0;
    if (absl::IsInvalidArgument(status)) {
      err << "error: " << status.message() << "\n" << UsageHint(args) << "\n";
      return 2;
    }
    err << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message() << "\n";
    return 1;
  }
  // `version` prints the client's line even when the broker is unreachable.
  if (inv.command->FullName() == "version" && inv.Has("client")) {
    const iommu::ctl::VersionView v = ClientVersion();
    absl::StatusOr<std::string> text =
        IsStructured(inv.global.output) ? FormatStructured(v, inv.global) : FormatVersion(v);
    out << (text.ok() ? *text : FormatVersion(v));
    return 0;
  }
  return std::nullopt;
}

// The request id of `inv`: empty for commands that change nothing; else
// --request-id when given (INVALID_ARGUMENT when malformed), or a new one.
absl::StatusOr<std::string> RequestIdFor(const Invocation& inv, const CliEnvironment& env) {
  if (!inv.command->mutation) return std::string();
  if (!inv.global.request_id.empty()) {
    RETURN_IF_ERROR(ValidateRequestId("--request-id", inv.global.request_id));
    return inv.global.request_id;
  }
  return env.new_request_id ? env.new_request_id() : NewRequestId();
}

// The stub to the broker `inv` names (ConnectionSettings). On failure writes
// the error to `err`, sets *exit_code (2 for the caller's mistakes: a bad
// config file or context, a transport configuration the factory cannot use;
// 1 for anything else) and returns null.
std::shared_ptr<Stub> Connect(const Invocation& inv, const CliEnvironment& env,
                              const StubFactory& stub_factory, std::ostream& err, int* exit_code) {
  absl::StatusOr<GlobalOptions> global = ConnectionSettings(inv, env);
  if (!global.ok()) {
    err << "error: " << global.status().message() << "\n";
    *exit_code = 2;
    return nullptr;
  }
  absl::StatusOr<std::shared_ptr<Stub>> stub = stub_factory(*global);
  if (stub.ok() && *stub == nullptr) stub = absl::InternalError("stub factory returned null");
  if (!stub.ok()) {
    // A transport configuration the factory cannot use is the caller's
    // mistake (exit 2); anything else is a failure to connect (exit 1).
    if (absl::IsInvalidArgument(stub.status())) {
      err << "error: " << stub.status().message() << "\n";
      *exit_code = 2;
      return nullptr;
    }
    err << "error: " << absl::StatusCodeToString(stub.status().code()) << ": "
        << stub.status().message() << "\n";
    *exit_code = 1;
    return nullptr;
  }
  return *std::move(stub);
}

// The exit code of a handler that returned `status`, after writing the error
// (and, for a mutation the broker may or may not have applied, how to retry
// it) to `err`.
int ExitCode(const absl::Status& status, const Invocation& inv,
             const std::vector<std::string>& args, const std::string& request_id,
             std::ostream& err) {
  if (status.ok()) return 0;
  if (IsUsageError(status)) {
    err << "error: " << status.message() << "\n" << UsageHint(args) << "\n";
    return 2;
  }
  err << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message() << "\n";
  if (inv.command->mutation && OutcomeUnknown(status.code())) {
    err << "hint: the broker may or may not have applied this; retry safely with --request-id="
        << request_id << "\n";
  }
  return 1;
}

}  // namespace

std::string NewRequestId() {
  absl::BitGen gen;
  const uint64_t hi = absl::Uniform<uint64_t>(gen);
  const uint64_t lo = absl::Uniform<uint64_t>(gen);
  // Version 4, variant 10xx.
  const uint64_t h = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  const uint64_t l = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", h >> 32, (h >> 16) & 0xffff, h & 0xffff,
                         l >> 48, l & 0xffffffffffffULL);
}

CliEnvironment ProcessEnvironment() {
  CliEnvironment env;
  const char* broker = std::getenv(kBrokerEnvVar);
  env.default_broker = broker != nullptr ? broker : "";
  auto get = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v == nullptr ? "" : v);
  };
  env.cert = get(kCertEnvVar);
  env.key = get(kKeyEnvVar);
  env.ca = get(kCaEnvVar);
  env.trust_domain = get(kTrustDomainEnvVar);
  env.insecure = get(kInsecureEnvVar) == "1";
  env.config_path = DefaultConfigPath();
  env.out_is_terminal = isatty(STDOUT_FILENO) == 1;
  return env;
}

int RunIommuctl(int argc, const char* const argv[], std::ostream& out, std::ostream& err,
                const StubFactory& stub_factory) {
  return RunIommuctl(argc, argv, out, err, stub_factory, ProcessEnvironment());
}

int RunIommuctl(int argc, const char* const argv[], std::ostream& out, std::ostream& err,
                const StubFactory& stub_factory, const CliEnvironment& env) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  if (args.empty()) {
    err << RenderHelp("", nullptr);
    return 2;
  }
  // No default broker here: ResolveSettings ranks the environment's and the
  // config file's against --broker.
  absl::StatusOr<Invocation> parsed = ParseCommandLine(args, "");
  if (!parsed.ok()) {
    err << "error: " << parsed.status().message() << "\n" << UsageHint(args) << "\n";
    return 2;
  }
  const Invocation& inv = *parsed;
  // A command's output is the answer; the libraries' info lines (e.g. the
  // TLS files loaded) would bury it on every call.
  SetMinLogLevel(inv.global.verbose ? LogLevel::kInfo : LogLevel::kWarning);
  if (std::optional<int> code = RunWithoutBroker(inv, args, out, err, env)) return *code;

  auto handler = Handlers().find(inv.command->FullName());
  if (handler == Handlers().end()) {
    err << "error: INTERNAL: no handler for \"" << inv.command->FullName() << "\"\n";
    return 1;
  }
  absl::StatusOr<std::string> request_id = RequestIdFor(inv, env);
  if (!request_id.ok()) {
    err << "error: " << request_id.status().message() << "\n" << UsageHint(args) << "\n";
    return 2;
  }
  int exit_code = 0;
  std::shared_ptr<Stub> stub = Connect(inv, env, stub_factory, err, &exit_code);
  if (stub == nullptr) return exit_code;

  Session session(inv, stub.get(), *request_id, out, err, env);
  absl::Status status = handler->second(session);
  // Version prints only once it has every answer; on failure the client's
  // own line still goes out before the error.
  if (inv.command->FullName() == "version" && !status.ok() && !IsStructured(inv.global.output)) {
    out << FormatVersion(ClientVersion());
  }
  return ExitCode(status, inv, args, *request_id, err);
}

}  // namespace client
}  // namespace iommu
