// The command table's rows for the commands that never need a broker:
// completion, config (the contexts of iommuctl's config file, run by
// client/config_commands.h) and help. Split from the rest of the table
// (args_object_commands.cc, args_view_commands.cc); Commands() (args.cc)
// assembles them.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/args.h"
#include "client/args_internal.h"

namespace iommu {
namespace client {
namespace {

// `iommuctl config ...`: edits the configuration file; never needs a broker.
void AddConfigCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) {
    s.needs_broker = false;
    c->push_back(std::move(s));
  };
  const std::string file = absl::StrCat("The file is $", kConfigEnvVar,
                                        ", else $XDG_CONFIG_HOME/iommuctl/config, else "
                                        "~/.config/iommuctl/config (JSON, written 0600).");
  add({"config",
       "get-contexts",
       "",
       false,
       "List the contexts",
       absl::StrCat("Lists the contexts of the config file; * marks the current one. ", file),
       {},
       {"iommuctl config get-contexts", "iommuctl config get-contexts -o name"}});
  add({"config",
       "current-context",
       "",
       false,
       "Print the current context's name",
       "Prints the name of the context used when --context is not given; fails (exit 1) "
       "when none is set.",
       {},
       {"iommuctl config current-context"}});
  add({"config",
       "use-context",
       "NAME",
       false,
       "Make a context the current one",
       "Makes context NAME the one used when --context is not given. Flags and the "
       "environment ($IOMMU_BROKER, $IOMMUCTL_CERT, ...) still win over it, field by field; "
       "an explicit --context wins over the environment.",
       {},
       {"iommuctl config use-context prod"}});
  add({"config",
       "set-context",
       "NAME",
       false,
       "Create a context or change some of its fields",
       absl::StrCat("Creates context NAME, or changes the fields given of an existing one "
                    "(fields not given keep their value). NAME is 1-63 letters, digits, '.', "
                    "'_' or '-'. ",
                    file),
       {Flag("broker", ValueKind::kString, "HOST:PORT",
             "Broker address, or every replica's, comma-separated."),
        Flag("cert", ValueKind::kString, "FILE", "PEM client certificate for mutual TLS."),
        Flag("key", ValueKind::kString, "FILE", "PEM private key of --cert."),
        Flag("ca", ValueKind::kString, "FILE", "PEM CA bundle that signed the broker's."),
        Flag("trust-domain", ValueKind::kString, "DOMAIN", "SPIFFE trust domain."),
        Flag("insecure", ValueKind::kSwitch, "",
             "Plaintext (development only); --insecure=false turns it off.")},
       {"iommuctl config set-context prod --broker=b1:7400,b2:7400,b3:7400 "
        "--cert=op.pem --key=op.key --ca=ca.pem",
        "iommuctl config set-context dev --broker=127.0.0.1:7400 --insecure"}});
  add({"config",
       "delete-context",
       "NAME",
       false,
       "Delete a context",
       "Deletes context NAME; if it was the current one, no context is current afterwards.",
       {},
       {"iommuctl config delete-context old"}});
  add({"config",
       "view",
       "",
       false,
       "Print the config file",
       absl::StrCat("Prints the whole config file as JSON (or -o yaml). ", file),
       {},
       {"iommuctl config view", "iommuctl config view -o yaml"}});
}

}  // namespace

// Single-word commands that never need a broker, and config: completion, the
// config commands, help.
void AddLocalCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  CommandSpec completion{
      "completion",
      "",
      "SHELL",
      false,
      "Print a shell completion script (bash)",
      "Prints a bash completion script for iommuctl's commands and flags, generated from "
      "the same command table the parser uses. Load it in the current shell with "
      "`source <(iommuctl completion bash)`, or install it as "
      "/etc/bash_completion.d/iommuctl. Ids and names are not completed (that would need "
      "the broker).",
      {},
      {"source <(iommuctl completion bash)",
       "iommuctl completion bash > /etc/bash_completion.d/iommuctl"}};
  completion.needs_broker = false;
  add(std::move(completion));
  AddConfigCommands(c);
  CommandSpec help{"help",
                   "",
                   "COMMAND",
                   true,
                   "Show help for a command",
                   "Shows help for iommuctl, a noun, or a command. Same as --help.",
                   {},
                   {"iommuctl help container create"}};
  help.needs_broker = false;
  add(std::move(help));
}

}  // namespace client
}  // namespace iommu
