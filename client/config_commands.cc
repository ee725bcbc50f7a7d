#include "client/config_commands.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "client/config.h"
#include "client/config_file.h"
#include "client/format.h"
#include "client/structured_output.h"
#include "common/broker_target.h"
#include "common/status_macros.h"

namespace iommu {
namespace client {
namespace {

using iommu::ctl::CliConfig;
using iommu::ctl::CliContext;

// The file's content as -o asks: JSON for tables and json, else YAML or the
// JSONPath template over the same JSON.
absl::Status PrintConfig(const CliConfig& config, const GlobalOptions& global,
                         std::ostream& out) {
  absl::StatusOr<std::string> text = FormatStructured(config, global);
  if (!text.ok()) return text.status();
  out << *text;
  return absl::OkStatus();
}

std::string Auth(const CliContext& c) {
  if (c.insecure()) return "insecure";
  if (!c.cert().empty()) return absl::StrCat("mtls (", c.cert(), ")");
  return "-";
}

absl::Status GetContexts(const CliConfig& config, const GlobalOptions& global,
                         std::ostream& out) {
  if (IsStructured(global.output)) return PrintConfig(config, global, out);
  if (global.output == OutputFormat::kName) {
    for (const CliContext& c : config.contexts()) out << "context/" << c.name() << "\n";
    return absl::OkStatus();
  }
  Table table({"CURRENT", "NAME", "BROKER", "TRUST-DOMAIN", "AUTH"});
  for (const CliContext& c : config.contexts()) {
    table.AddRow({c.name() == config.current_context() ? "*" : "", c.name(),
                  c.broker().empty() ? "-" : c.broker(),
                  c.trust_domain().empty() ? "-" : c.trust_domain(), Auth(c)});
  }
  out << table.Render(!global.no_headers);
  return absl::OkStatus();
}

// Applies set-context's flags to `context`: only the fields given change.
absl::Status SetFields(const Invocation& inv, CliContext* context) {
  if (inv.Has("broker")) {
    // Checked as --broker is, so that a typo fails now, not at the next call;
    // names are resolved when used, not when saved (the file may be written
    // away from the broker's network).
    const HostResolver any_name = [](const std::string&) {
      return absl::StatusOr<std::vector<std::string>>(std::vector<std::string>{"192.0.2.1"});
    };
    absl::StatusOr<std::string> target =
        BrokerTarget("--broker", inv.String("broker"), any_name);
    if (!target.ok()) return target.status();
    context->set_broker(inv.String("broker"));
  }
  if (inv.Has("cert")) context->set_cert(inv.String("cert"));
  if (inv.Has("key")) context->set_key(inv.String("key"));
  if (inv.Has("ca")) context->set_ca(inv.String("ca"));
  if (inv.Has("trust-domain")) context->set_trust_domain(inv.String("trust-domain"));
  if (inv.Has("insecure")) context->set_insecure(inv.Number("insecure") != 0);
  if (context->insecure() && !context->cert().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--insecure: context \"", context->name(),
        "\" would have both a certificate and --insecure; give --insecure=false or drop the "
        "certificate (--cert= --key= --ca=)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CliContext*> FindMutable(CliConfig* config, const std::string& name) {
  for (CliContext& c : *config->mutable_contexts()) {
    if (c.name() == name) return &c;
  }
  return NoSuchContext(*config, "", name);
}

}  // namespace

absl::Status RunConfigCommand(const Invocation& inv, const std::string& config_path,
                              std::ostream& out) {
  if (config_path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no config file: set $", kConfigEnvVar, " (or $HOME) to say where it is"));
  }
  absl::StatusOr<CliConfig> config = LoadConfigFile(config_path);
  if (!config.ok()) return config.status();
  const std::string& verb = inv.command->verb;
  const std::string& name = inv.positional;
  if (verb == "view") return PrintConfig(*config, inv.global, out);
  if (verb == "get-contexts") return GetContexts(*config, inv.global, out);
  if (verb == "current-context") {
    if (config->current_context().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no current context in ", config_path, "; set one with iommuctl config use-context"));
    }
    out << config->current_context() << "\n";
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(ValidateContextName("NAME", name));
  std::string done;
  if (verb == "use-context") {
    absl::StatusOr<CliContext*> found = FindMutable(&*config, name);
    if (!found.ok()) return found.status();
    config->set_current_context(name);
    done = absl::StrCat("Switched to context \"", name, "\".");
  } else if (verb == "set-context") {
    absl::StatusOr<CliContext*> found = FindMutable(&*config, name);
    CliContext* context = found.ok() ? *found : config->add_contexts();
    context->set_name(name);
    RETURN_IF_ERROR(SetFields(inv, context));
    done = absl::StrCat("Context \"", name, "\" ", found.ok() ? "modified." : "created.");
  } else if (verb == "delete-context") {
    RETURN_IF_ERROR(FindMutable(&*config, name).status());
    auto* contexts = config->mutable_contexts();
    for (int i = 0; i < contexts->size(); ++i) {
      if (contexts->Get(i).name() == name) {
        contexts->DeleteSubrange(i, 1);
        break;  // Names are unique (ParseConfig).
      }
    }
    if (config->current_context() == name) config->clear_current_context();
    done = absl::StrCat("Deleted context \"", name, "\".");
  } else {
    return absl::InternalError(absl::StrCat("no handler for config ", verb));
  }
  RETURN_IF_ERROR(SaveConfigFile(config_path, *config));
  out << done << "\n";
  return absl::OkStatus();
}

}  // namespace client
}  // namespace iommu
