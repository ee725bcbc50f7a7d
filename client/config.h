// iommuctl's contexts (client/views.proto's CliConfig): parsing and
// rendering the configuration file's JSON, editing it, and deciding which
// broker and credentials a command uses.
//
// Where each connection setting comes from, first match wins, field by field:
//   1. its flag (--broker, --cert, --key, --ca, --trust-domain, --insecure);
//   2. the context named by --context, when given;
//   3. the environment ($IOMMU_BROKER, $IOMMUCTL_CERT, ...);
//   4. the current context of the file (`iommuctl config use-context`);
//   5. the defaults (127.0.0.1:7400, trust domain iommu.local, TLS).
// So an explicit --context beats stray environment variables, and exported
// variables still beat the file's default context, as they did before it
// existed.
//
// Pure functions: no I/O (client/config_file.h reads and writes the file),
// thread-safe.
#ifndef CLIENT_CONFIG_H_
#define CLIENT_CONFIG_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/args.h"
#include "client/views.pb.h"

namespace iommu {
namespace client {

// The configuration in `json`, read from `path` (named in messages).
// INVALID_ARGUMENT naming the path and the field for malformed JSON, unknown
// fields, values of the wrong type, an invalid or duplicate context name, or
// a current_context naming no context. An empty or all-blank text is an
// empty configuration.
absl::StatusOr<iommu::ctl::CliConfig> ParseConfig(absl::string_view json,
                                                  absl::string_view path);

// `config` as the file's JSON (every field of every context, ending in a
// newline); ParseConfig reads it back unchanged.
std::string RenderConfig(const iommu::ctl::CliConfig& config);

// The context named `name`, or nullptr.
const iommu::ctl::CliContext* FindContext(const iommu::ctl::CliConfig& config,
                                          absl::string_view name);

// INVALID_ARGUMENT "<prefix>no context named "NAME" (have: a, b)", listing
// the contexts `config` has (or how to add one when it has none).
absl::Status NoSuchContext(const iommu::ctl::CliConfig& config, absl::string_view prefix,
                           absl::string_view name);

// Connection settings from the environment (level 3 above); empty strings
// and false mean "not set".
struct EnvSettings {
  std::string broker, cert, key, ca, trust_domain;
  bool insecure = false;
};

// `flags` (ParseCommandLine's result, broker empty when --broker was not
// given) with every connection setting it lacks filled in by the rules
// above. `context_flag` is --context's value (empty: not given).
// INVALID_ARGUMENT when --context names no context in `config` (listing the
// ones that exist), or when the current context does not exist.
absl::StatusOr<GlobalOptions> ResolveSettings(const GlobalOptions& flags,
                                              absl::string_view context_flag,
                                              const EnvSettings& env,
                                              const iommu::ctl::CliConfig& config);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_CONFIG_H_
