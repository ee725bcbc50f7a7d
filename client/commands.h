// iommuctl's commands: each turns a parsed Invocation (client/args.h) into a
// broker request, calls the broker through Broker::StubInterface, and prints
// the answer (client/format.h).
//
// RunIommuctl() is the whole program minus process wiring: main.cc passes
// std::cout, std::cerr and a gRPC stub factory; tests pass string streams and
// a fake stub, in-process.
//
// Exit codes: 0 success (help included); 2 usage error ("error: <message>"
// and a hint naming the right --help on `err`); 1 when the broker refused or
// could not be reached ("error: <CODE_NAME>: <message>" on `err`, e.g.
// "error: NOT_FOUND: container_id: no container \"c-...\"").
//
// Thread-compatible: concurrent RunIommuctl calls are safe if their streams,
// stubs and factories are distinct or thread-safe.
#ifndef CLIENT_COMMANDS_H_
#define CLIENT_COMMANDS_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/args.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

// Makes the stub that talks to the broker named by `global` (address and
// transport, with the environment's defaults filled in). Called at most once
// per RunIommuctl, and only for commands that need the broker. The stub is
// shared so that a test can keep a handle on its fake.
using StubFactory =
    std::function<absl::StatusOr<std::shared_ptr<iommu::v1::Broker::StubInterface>>(
        const GlobalOptions& global)>;

// What RunIommuctl takes from its surroundings.
struct CliEnvironment {
  // Broker address when --broker is not given ($IOMMU_BROKER); empty: from
  // the config file's context, else 127.0.0.1:7400.
  std::string default_broker;
  // Transport defaults when --cert/--key/--ca/--trust-domain/--insecure are
  // not given ($IOMMUCTL_CERT, ...); client/config.h says how they rank
  // against the config file's contexts.
  std::string cert, key, ca, trust_domain;
  bool insecure = false;
  // The config file of contexts (client/config_file.h); empty: none, so
  // only flags, the fields above and the defaults count.
  std::string config_path;
  // Makes the request id of a mutation when --request-id is not given.
  // Null: NewRequestId().
  std::function<std::string()> new_request_id;
  // Waits `interval` between two redraws of `top --watch`; returning false
  // ends the command (exit 0). Null: sleeps, and never ends it (Ctrl-C does).
  std::function<bool(absl::Duration interval)> wait;
  // Pauses between two attempts of a call that no broker answered
  // (client/call_retry.h). Null: sleeps.
  std::function<void(absl::Duration pause)> retry_sleep;
  // True when `out` is a terminal: `top --watch` then clears the screen
  // before each frame; otherwise (a pipe, a file) it writes no escape
  // sequences and separates plain frames with a blank line.
  bool out_is_terminal = false;
};

// The environment of this process: default_broker from $IOMMU_BROKER; the
// transport from $IOMMUCTL_CERT, $IOMMUCTL_KEY, $IOMMUCTL_CA,
// $IOMMUCTL_TRUST_DOMAIN, $IOMMUCTL_INSECURE=1; config_path from
// DefaultConfigPath(); random request ids; out_is_terminal from
// isatty(STDOUT_FILENO).
CliEnvironment ProcessEnvironment();

// A fresh random request id: a version 4 UUID in lowercase hex.
std::string NewRequestId();

// Runs iommuctl with argv[0..argc) (argv[0] is the program name and is
// ignored), writing results to `out` and errors to `err`; returns the exit
// code (see the file comment). Uses ProcessEnvironment().
int RunIommuctl(int argc, const char* const argv[], std::ostream& out, std::ostream& err,
                const StubFactory& stub_factory);

// Same with an explicit environment (tests: fixed request ids, no $IOMMU_BROKER).
int RunIommuctl(int argc, const char* const argv[], std::ostream& out, std::ostream& err,
                const StubFactory& stub_factory, const CliEnvironment& env);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_COMMANDS_H_
