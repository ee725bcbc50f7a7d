#include "client/args.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/jsonpath.h"
#include "common/byte_size.h"
#include "common/cli_flags.h"

namespace iommu {
namespace client {
namespace {

using cli::FindFlag;
using cli::Suggest;
using cli::Wrap;

// ---------------------------------------------------------------- the table

struct NounSpec {
  const char* name;
  const char* summary;
};

constexpr NounSpec kNouns[] = {
    {"tenant", "Tenants and their quotas (pinned memory, containers, IOVA window bytes)"},
    {"node", "Nodes (hosts whose agent registered) and their scheduling state"},
    {"device", "PCI devices that a node can pass through"},
    {"container", "Containers: IOMMU address spaces on a node with devices attached"},
    {"window", "IOVA windows reserved inside containers"},
    {"describe", "One object for people: its fields, what it holds and its recent events"},
    {"config", "Contexts: named brokers and credentials kept in iommuctl's config file"},
};

FlagSpec Flag(std::string name, ValueKind kind, std::string value_name, std::string help,
              bool required = false, bool repeated = false) {
  FlagSpec f;
  f.name = std::move(name);
  f.kind = kind;
  f.value_name = std::move(value_name);
  f.help = std::move(help);
  f.required = required;
  f.repeated = repeated;
  return f;
}

FlagSpec LimitFlag() {
  return Flag("limit", ValueKind::kUint32, "N",
              "Show at most N results (default: all, fetched page by page).");
}

// `iommuctl config ...`: edits the configuration file; never needs a broker.
void AddConfigCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) {
    s.needs_broker = false;
    c->push_back(std::move(s));
  };
  const std::string file = absl::StrCat("The file is $", kConfigEnvVar,
                                        ", else $XDG_CONFIG_HOME/iommuctl/config, else "
                                        "~/.config/iommuctl/config (JSON, written 0600).");
  add({"config", "get-contexts", "", false, "List the contexts",
       absl::StrCat("Lists the contexts of the config file; * marks the current one. ", file),
       {}, {"iommuctl config get-contexts", "iommuctl config get-contexts -o name"}});
  add({"config", "current-context", "", false, "Print the current context's name",
       "Prints the name of the context used when --context is not given; fails (exit 1) "
       "when none is set.",
       {}, {"iommuctl config current-context"}});
  add({"config", "use-context", "NAME", false, "Make a context the current one",
       "Makes context NAME the one used when --context is not given. Flags and the "
       "environment ($IOMMU_BROKER, $IOMMUCTL_CERT, ...) still win over it, field by field; "
       "an explicit --context wins over the environment.",
       {}, {"iommuctl config use-context prod"}});
  add({"config", "set-context", "NAME", false, "Create a context or change some of its fields",
       absl::StrCat("Creates context NAME, or changes the fields given of an existing one "
                    "(fields not given keep their value). NAME is 1-63 letters, digits, '.', "
                    "'_' or '-'. ", file),
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
  add({"config", "delete-context", "NAME", false, "Delete a context",
       "Deletes context NAME; if it was the current one, no context is current afterwards.",
       {}, {"iommuctl config delete-context old"}});
  add({"config", "view", "", false, "Print the config file",
       absl::StrCat("Prints the whole config file as JSON (or -o yaml). ", file), {},
       {"iommuctl config view", "iommuctl config view -o yaml"}});
}

FlagSpec LabelFlag(const std::string& what) {
  return Flag("label", ValueKind::kString, "KEY=VALUE",
              absl::StrCat("A label for the ", what,
                           " (repeatable, at most 32): KEY is [PREFIX/]NAME, NAME and VALUE "
                           "1-63 of [A-Za-z0-9._-], as in Kubernetes."),
              false, true);
}

FlagSpec SelectorFlag() {
  return Flag("selector", ValueKind::kString, "SELECTOR",
              "Only objects whose labels match (-l): k=v, k!=v, 'k in (a,b)', 'k notin (a,b)', "
              "k, !k; comma-separated, all must hold.");
}

// The label edit commands of tenants and containers.
CommandSpec LabelCommand(const std::string& noun, const std::string& positional,
                         const std::string& example) {
  return {noun,
          "label",
          positional,
          false,
          absl::StrCat("Add, change or remove a ", noun, "'s labels"),
          absl::StrCat("Sets each --label KEY=VALUE on ", noun, " ", positional,
                       " (adding it, or overwriting its value) and removes each --remove KEY "
                       "(a key it does not have is fine); other labels keep their value. At "
                       "most 32 labels remain. Give at least one of --label and --remove."),
          {LabelFlag(noun),
           Flag("remove", ValueKind::kString, "KEY", "A label key to remove (repeatable).",
                false, true)},
          {absl::StrCat("iommuctl ", noun, " label ", example, " --label=team=ml --remove=env")},
          true};
}

void AddTenantCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"tenant", "create", "ID", false, "Create a tenant with a quota",
       "Creates tenant ID with the given quota. ID is 1-63 characters: lowercase letters, "
       "digits and '-', starting with a letter.\n\n"
       "The pinned quota caps the guest memory the tenant may have pinned across the fleet; "
       "each host page is billed once per node however many containers map it.",
       {Flag("pinned", ValueKind::kSize, "SIZE", "Bytes of guest memory the tenant may pin (> 0).",
             true),
        Flag("max-containers", ValueKind::kUint32, "N",
             "Containers the tenant may hold at once (default 0: no limit)."),
        Flag("window-bytes", ValueKind::kSize, "SIZE",
             "Bytes of IOVA windows the tenant may hold (default 0: no limit)."),
        LabelFlag("tenant")},
       {"iommuctl tenant create acme --pinned=64Gi --max-containers=8 --label=team=ml"},
       true});
  add({"tenant", "get", "ID", false, "Show one tenant", "Shows tenant ID and its quota.", {},
       {"iommuctl tenant get acme"}});
  add({"tenant", "list", "", false, "List tenants",
       "Lists every tenant (or those whose labels match -l) and its quota.",
       {SelectorFlag(), LimitFlag()},
       {"iommuctl tenant list", "iommuctl tenant list -l team=ml", "iommuctl -o json tenant list"}});
  add({"tenant", "set-quota", "ID", false, "Change some or all of a tenant's quota limits",
       "Changes the limits given of tenant ID's quota; limits not given keep their value "
       "(a partial update with a field mask: only the fields given change). Give at least "
       "one. 0 means no limit for --max-containers and --window-bytes. The new quota may be "
       "below current usage: nothing is taken away, but new containers, windows and pins are "
       "refused until usage drops below it.",
       {Flag("pinned", ValueKind::kSize, "SIZE",
             "Bytes of guest memory the tenant may pin (> 0)."),
        Flag("max-containers", ValueKind::kUint32, "N",
             "Containers the tenant may hold at once (0: no limit)."),
        Flag("window-bytes", ValueKind::kSize, "SIZE",
             "Bytes of IOVA windows the tenant may hold (0: no limit).")},
       {"iommuctl tenant set-quota acme --window-bytes=16Gi",
        "iommuctl tenant set-quota acme --pinned=128Gi --max-containers=16"},
       true});
  add(LabelCommand("tenant", "ID", "acme"));
  add({"tenant", "delete", "ID", false, "Delete a tenant",
       "Deletes tenant ID. The tenant must own no containers.", {},
       {"iommuctl tenant delete acme"}, true});
}

// Nodes, and the devices a node can pass through.
void AddNodeCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"node", "list", "", false, "List nodes",
       "Lists the nodes whose agent registered, with their state, backend and device counts.",
       {LimitFlag()}, {"iommuctl node list"}});
  add({"node", "get", "NAME", false, "Show one node", "Shows node NAME in detail.", {},
       {"iommuctl node get host-a"}});
  add({"node", "cordon", "NAME", false, "Stop placing new containers on a node",
       "Cordons node NAME: it keeps its containers but receives no new ones.", {},
       {"iommuctl node cordon host-a"}, true});
  add({"node", "uncordon", "NAME", false, "Allow placing containers on a node again",
       "Uncordons node NAME.", {}, {"iommuctl node uncordon host-a"}, true});
  add({"node", "drain", "NAME", false, "Cordon a node and optionally delete its containers",
       "Cordons node NAME. With --delete-containers it also deletes every container on it "
       "(and their windows); without, it reports the containers that remain.",
       {Flag("delete-containers", ValueKind::kSwitch, "",
             "Also delete every container on the node.")},
       {"iommuctl node drain host-a", "iommuctl node drain host-a --delete-containers"},
       true});

  add({"node", "delete", "NAME", false, "Forget a retired node",
       "Deletes node NAME from the broker: its record, its devices and its metric series "
       "(iommu_broker_node_up{node=NAME} and the alerts on it). Refused while the node has "
       "containers (run 'iommuctl node drain NAME --delete-containers' first) or while its "
       "agent is alive (registered and heartbeating: stop the agent first). --force deletes "
       "a live node anyway; its agent then registers it again at its next heartbeat. It "
       "never deletes containers.",
       {Flag("force", ValueKind::kSwitch, "",
             "Delete even while the node's agent is alive.")},
       {"iommuctl node delete host-a", "iommuctl node delete host-a --force"},
       true});

  // Devices.
  add({"device", "list", "", false, "List a node's PCI devices",
       "Lists the PCI devices of node NAME: address, IOMMU group, ids, driver, whether it can "
       "be assigned and which container holds it.",
       {Flag("node", ValueKind::kString, "NAME", "The node whose devices to list.", true)},
       {"iommuctl device list --node=host-a"}});
}

CommandSpec ContainerCreateCommand() {
  return {"container", "create", "", false, "Create a container (IOMMU address space with devices)",
          "Creates a container for a tenant. Either name the node and its devices exactly "
          "(--node and one or more --device), or give a device selector (--vendor, --device-id, "
          "--count, all optional) and let the broker place the container on a ready, uncordoned "
          "node with enough free matching devices.\n\n"
          "The container's pin budget (--budget) is its share of the tenant's pinned quota: the "
          "node's agent lets the tenant's billed bytes on that node grow up to the sum of the "
          "budgets of the tenant's containers there, without asking the broker per mapping. "
          "Change it later with 'iommuctl container set-budget'.\n\n"
          "--name gives the container a name unique within its tenant (say the VM's), which "
          "every command then takes wherever it takes a container id: NAME within your tenant, "
          "or TENANT/NAME. Names are 1-63 characters of [a-z0-9-] starting and ending with a "
          "letter or digit, and fixed at creation.",
          {Flag("tenant", ValueKind::kString, "ID", "The tenant that owns the container.", true),
           Flag("name", ValueKind::kString, "NAME",
                "A name unique among the tenant's containers, e.g. vm-42."),
           LabelFlag("container"),
           Flag("node", ValueKind::kString, "NAME", "Place on this node (needs --device)."),
           Flag("device", ValueKind::kString, "ADDR",
                "PCI address on --node, e.g. 0000:00:04.0 (repeatable).", false, true),
           Flag("vendor", ValueKind::kPciIds, "ID[:DEVICE]",
                "Selector: PCI vendor id in hex as lspci shows it, 0x optional (8086 is "
                "0x8086); VENDOR:DEVICE (e.g. 10de:2330) selects the device id too."),
           Flag("device-id", ValueKind::kPciId, "ID",
                "Selector: PCI device id in hex, 0x optional, e.g. 11e8."),
           Flag("count", ValueKind::kUint32, "N", "Selector: number of devices (default 1)."),
           Flag("budget", ValueKind::kSize, "SIZE",
                "Bytes of the tenant's pinned quota set aside for this container; default: all of "
                "the quota no other container has yet.")},
          {"iommuctl container create --tenant=acme --vendor=1234 --device-id=11e8 --count=2",
           "iommuctl container create --tenant=acme --vendor=10de:2330",
           "iommuctl container create --tenant=acme --node=host-a --device=0000:00:04.0",
           "iommuctl container create --tenant=acme --vendor=0x1234 --budget=16Gi",
           "iommuctl container create --tenant=acme --vendor=10de --name=vm-42 --label=team=ml"},
          true};
}

void AddContainerCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add(ContainerCreateCommand());
  add({"container", "get", "ID", false, "Show one container",
       "Shows container ID (an id, a NAME or TENANT/NAME, as every container command takes): "
       "its name, labels, node, devices, state, IOVA geometry and windows.", {},
       {"iommuctl container get c-0123456789abcdef", "iommuctl container get acme/vm-42"}});
  add({"container", "list", "", false, "List containers",
       "Lists containers, optionally only those of a tenant, on a node, in a state, or whose "
       "labels match -l.",
       {Flag("tenant", ValueKind::kString, "ID", "Only this tenant's containers."),
        Flag("node", ValueKind::kString, "NAME", "Only containers on this node."),
        Flag("state", ValueKind::kString, "STATE", "Only containers in STATE: ready, "
                                                   "node-unavailable, failed or deleting (a "
                                                   "delete to repeat)."),
        SelectorFlag(), LimitFlag(),
        Flag("watch", ValueKind::kSwitch, "",
             "After the list, print each change as it becomes durable (CHANGED or DELETED and "
             "the row) until interrupted, like kubectl get -w; reconnects after a broker "
             "restart or failover, listing again when needed. A container that stops matching "
             "--node, --state or -l shows as DELETED, one that starts matching as CHANGED.")},
       {"iommuctl container list --tenant=acme", "iommuctl container list --state=node-unavailable",
        "iommuctl container list -l 'team=ml,env notin (dev)'",
        "iommuctl container list --tenant=acme --watch"}});
  add({"container", "delete", "ID", false, "Delete a container",
       "Deletes container ID, releasing its windows and its devices. If its node is "
       "unavailable the container is forgotten now and the node's agent destroys the address "
       "space when it reconciles.",
       {}, {"iommuctl container delete c-0123456789abcdef"}, true});
  add({"container", "set-budget", "ID", false, "Change a container's share of the pinned quota",
       "Sets the pin budget of container ID: the bytes of its tenant's pinned quota set aside "
       "for it. Raising it takes from the quota no other container has yet (refused with "
       "RESOURCE_EXHAUSTED when there is not enough). Lowering it below what is pinned through "
       "the container now is allowed: nothing is unpinned, but new pins are refused until "
       "usage drops below it.",
       {Flag("budget", ValueKind::kSize, "SIZE", "The new budget in bytes, a multiple of 4096.",
             true)},
       {"iommuctl container set-budget c-0123456789abcdef --budget=16Gi"},
       true});
  add(LabelCommand("container", "ID", "vm-42"));
  add({"container", "grant", "ID", false, "Issue a VM launcher token for a container",
       "Issues a single-use token that hands container ID (which must be ready) to a VM "
       "launcher on the container's node. The launcher presents it on the agent's unix socket "
       "(shown as Launcher socket) to open a session bound to the container, its tenant and "
       "the windows listed; the agent checks the token without calling the broker. The token "
       "must be presented before it expires (--ttl); the session then lives as long as its "
       "socket. Windows allocated after the grant need a new grant.\n\n"
       "Prints the token first, then where to present it and what it grants; --token-only "
       "prints just the token, for scripts.",
       {Flag("ttl", ValueKind::kDuration, "DURATION",
             "How long the token may be presented: whole seconds from 1s to 1h, e.g. 30s, 5m "
             "(default: the broker's, 60s)."),
        Flag("token-only", ValueKind::kSwitch, "",
             "Print only the token and a newline (table output only), e.g. "
             "TOKEN=$(iommuctl container grant ID --token-only).")},
       {"iommuctl container grant c-0123456789abcdef",
        "iommuctl container grant c-0123456789abcdef --ttl=5m",
        "TOKEN=$(iommuctl container grant c-0123456789abcdef --token-only)"}});
}

void AddWindowCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"window", "allocate", "CONTAINER", false, "Reserve an IOVA window in a container",
       "Reserves SIZE bytes of IOVA space in container CONTAINER. Without --base the broker "
       "picks the smallest free range that fits, lowest address first. A container holds at "
       "most 48 windows (a launcher grant names them all).",
       {Flag("size", ValueKind::kSize, "SIZE",
             "Bytes; a multiple of the container's IOMMU page size.", true),
        Flag("align", ValueKind::kSize, "SIZE",
             "Alignment, a power of two >= the IOMMU page size (default: the page size)."),
        Flag("base", ValueKind::kUint64, "ADDR",
             "Place the window exactly here (a multiple of the alignment), e.g. 0x100000000.")},
       {"iommuctl window allocate c-0123456789abcdef --size=2Gi --align=2Mi",
        "iommuctl window allocate c-0123456789abcdef --size=1Gi --base=0x100000000"},
       true});
  add({"window", "release", "ID", false, "Release an IOVA window", "Releases window ID.", {},
       {"iommuctl window release w-0123456789abcdef"}, true});
  add({"window", "list", "", false, "List IOVA windows",
       "Lists windows, optionally only those of one container or one tenant.",
       {Flag("container", ValueKind::kString, "ID", "Only windows in this container."),
        Flag("tenant", ValueKind::kString, "ID", "Only this tenant's windows."), LimitFlag()},
       {"iommuctl window list --container=c-0123456789abcdef"}});
}

// Describe: one object for people, in the style of kubectl describe.
void AddDescribeCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  const std::string events_note =
      "\n\nEvents are kept in the broker's memory only, the last 20 per object: a broker "
      "restart forgets them. The events of a deleted object stay for a while, and describe "
      "then shows them alone. -o json prints one JSON object (see client/views.proto).";
  add({"describe", "tenant", "ID", false, "Show a tenant: quota against usage, containers, events",
       "Shows tenant ID for people: its quota against its usage (pinned, billed once per host "
       "page; mapped; what deduplication saved; containers; windows), its usage per node, its "
       "containers (the first 50) and its recent events and its containers': what happened, "
       "when and why, as AGE, TYPE (Normal or Warning), REASON and MESSAGE." +
           events_note,
       {}, {"iommuctl describe tenant acme"}});
  add({"describe", "node", "NAME", false, "Show a node: devices, containers, usage, events",
       "Shows node NAME for people: its state, agent and backend, its devices, its containers "
       "(the first 50), each tenant's usage on it, and its recent events: registrations, "
       "missed heartbeats, cordons and drains, containers created, deleted or failed on it." +
           events_note,
       {}, {"iommuctl describe node host-a"}});
  add({"describe", "container", "ID", false, "Show a container: windows, usage, events",
       "Shows container ID (an id, NAME or TENANT/NAME) for people: its name, labels, node, "
       "devices, state, IOVA geometry and pin budget, "
       "its tenant's usage on its node, its windows (the first 50), and its recent events and "
       "its windows': creation, budget changes, windows allocated and released, launcher "
       "grants, refusals and failures with their reason." +
           events_note,
       {}, {"iommuctl describe container c-0123456789abcdef"}});
  add({"describe", "window", "ID", false, "Show an IOVA window, its container and events",
       "Shows window ID for people: its range, size and alignment, its container, and its "
       "recent events." +
           events_note,
       {}, {"iommuctl describe window w-0123456789abcdef"}});
}

// Single-word commands, and config (which never needs a broker).
void AddSingleWordCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"top", "", "", false, "Summarise the fleet: nodes, tenants, usage, savings",
       "Shows the fleet on one screen: the broker replica that leads (and since when, on "
       "what store), nodes by state (naming those not ready and the cordoned "
       "ones), containers by state, and one row per tenant with pinned bytes (billed: each "
       "host page once per node) against its quota, mapped bytes, what deduplication saved, "
       "containers, windows and window bytes, most pinned first, then a TOTAL row. Pinned "
       "figures come from each node's last heartbeat. A tenant's certificate sees only its own "
       "row, no nodes and no replicas.",
       {Flag("watch", ValueKind::kDuration, "DURATION",
             "Redraw every DURATION (e.g. 2s) until interrupted; table output only. On a "
             "terminal each frame clears the screen; piped or redirected, frames are plain "
             "text separated by a blank line.")},
       {"iommuctl top", "iommuctl top --watch=2s", "iommuctl -o json top"}});
  add({"usage", "", "", false, "Show usage against quotas, per tenant and per node",
       "Shows, per tenant: quota, IOVA window bytes, pinned bytes (billed: each host page "
       "once per node), mapped bytes (every mapping counted) and what deduplication saved; "
       "then the same per tenant and node. Pinned figures come from each node's last "
       "heartbeat.",
       {Flag("tenant", ValueKind::kString, "ID", "Only this tenant."),
        Flag("node", ValueKind::kString, "NAME", "Only this node.")},
       {"iommuctl usage", "iommuctl usage --tenant=acme -o json"}});
  CommandSpec version{
      "version", "", "", false,
      "Print the client's, broker's and agents' versions",
      "Prints iommuctl's version and commit, then, when the broker answers, the broker's "
      "(GetVersion), for operators the replica that answered (with several replicas on etcd, "
      "the leader), since when it leads and its store, and each node's agent version as it "
      "registered (ListNodes; operators only, a tenant sees no agents). If the broker cannot be reached, iommuctl's line is "
      "still printed and the error follows (exit 1); --client does not ask the broker.",
      {Flag("client", ValueKind::kSwitch, "", "Print iommuctl's version only.")},
      {"iommuctl version", "iommuctl version --client", "iommuctl -o json version"}};
  add(std::move(version));
  CommandSpec completion{
      "completion", "", "SHELL", false, "Print a shell completion script (bash)",
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
  CommandSpec help{"help", "", "COMMAND", true, "Show help for a command",
                   "Shows help for iommuctl, a noun, or a command. Same as --help.", {},
                   {"iommuctl help container create"}};
  help.needs_broker = false;
  add(std::move(help));
}

// Every command, grouped by noun in the order help lists them.
std::vector<CommandSpec> BuildCommands() {
  std::vector<CommandSpec> c;
  AddTenantCommands(&c);
  AddNodeCommands(&c);
  AddContainerCommands(&c);
  AddWindowCommands(&c);
  AddDescribeCommands(&c);
  AddSingleWordCommands(&c);
  return c;
}

// ---------------------------------------------------------------- requests

// The request fields a command's positional argument and flags fill, for
// BuildRequest (client/request_builder.h). A command missing here, or a flag
// not listed, is built by its handler's own code.
struct RequestMapping {
  std::string positional_field;
  std::map<std::string, std::string> flag_fields;
};

const std::map<std::string, RequestMapping>& RequestFields() {
  static const auto* quota = new std::map<std::string, std::string>{
      {"pinned", "quota.pinned_bytes"},
      {"max-containers", "quota.max_containers"},
      {"window-bytes", "quota.window_bytes"}};
  static const auto* fields = new std::map<std::string, RequestMapping>{
      {"tenant create", {"tenant_id", *quota}},
      {"tenant get", {"tenant_id", {}}},
      {"tenant list", {"", {{"selector", "label_selector"}}}},
      {"tenant set-quota", {"tenant_id", *quota}},
      {"tenant label", {"tenant_id", {{"remove", "remove_keys"}}}},
      {"tenant delete", {"tenant_id", {}}},
      {"node get", {"node", {}}},
      {"node cordon", {"node", {}}},
      {"node uncordon", {"node", {}}},
      {"node drain", {"node", {{"delete-containers", "delete_containers"}}}},
      {"node delete", {"node", {{"force", "force"}}}},
      {"device list", {"", {{"node", "node"}}}},
      {"container create",
       {"",
        {{"tenant", "tenant_id"},
         {"name", "name"},
         {"node", "node"},
         {"device", "devices"},
         {"vendor", "selector.vendor_id"},
         {"device-id", "selector.device_id"},
         {"count", "selector.count"},
         {"budget", "pin_budget_bytes"}}}},
      {"container get", {"container_id", {}}},
      {"container list",
       {"", {{"tenant", "tenant_id"}, {"node", "node"}, {"selector", "label_selector"}}}},
      {"container delete", {"container_id", {}}},
      {"container set-budget", {"container_id", {{"budget", "pin_budget_bytes"}}}},
      {"container label", {"container_id", {{"remove", "remove_keys"}}}},
      {"container grant", {"container_id", {}}},
      {"window allocate",
       {"container_id", {{"size", "size"}, {"align", "alignment"}, {"base", "base"}}}},
      {"window release", {"window_id", {}}},
      {"window list", {"", {{"container", "container_id"}, {"tenant", "tenant_id"}}}},
      {"usage", {"", {{"tenant", "tenant_id"}, {"node", "node"}}}},
  };
  return *fields;
}

// ---------------------------------------------------------------- globals

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      Flag("broker", ValueKind::kString, "HOST:PORT",
           absl::StrCat("Broker address, or every replica's, comma-separated: only the "
                        "leader serves and iommuctl finds it (default: $", kBrokerEnvVar,
                        ", else the current context's, else ", kDefaultBrokerAddress, ").")),
      Flag("cert", ValueKind::kString, "FILE",
           absl::StrCat("PEM client certificate for mutual TLS; its SAN URI "
                        "(spiffe://<trust-domain>/operator/<name> or .../tenant/<id>) is who you "
                        "are to the broker (default: $", kCertEnvVar, ").")),
      Flag("key", ValueKind::kString, "FILE",
           absl::StrCat("PEM private key of --cert (default: $", kKeyEnvVar, ").")),
      Flag("ca", ValueKind::kString, "FILE",
           absl::StrCat("PEM CA bundle that signed the broker's certificate (default: $",
                        kCaEnvVar, ").")),
      Flag("trust-domain", ValueKind::kString, "DOMAIN",
           absl::StrCat("SPIFFE trust domain; the broker must prove spiffe://DOMAIN/broker "
                        "(default: $", kTrustDomainEnvVar, ", else iommu.local).")),
      Flag("insecure", ValueKind::kSwitch, "",
           absl::StrCat("Plaintext, for a broker started with --insecure (development only; "
                        "also $", kInsecureEnvVar, "=1).")),
      Flag("context", ValueKind::kString, "NAME",
           "Use this context of the config file (see 'iommuctl config'): its broker and "
           "credentials, where no flag gives them; it wins over the environment."),
      Flag("output", ValueKind::kString, "FORMAT",
           "Output format (also -o): table; wide, the table with more columns (nodes: agent "
           "version and launcher socket; containers: page sizes, labels and status message; "
           "tenants: labels); json; "
           "yaml, the same fields as json; jsonpath=TEMPLATE, kubectl's JSONPath over the "
           "json ('{.containers[*].id}', '{range .nodes[*]}{.name}{\"\\n\"}{end}', filters "
           "[?(@.state==\"...\")]); or name, one KIND/ID a line (tenant/acme, "
           "node/node-1, device/0000:00:04.0, container/c-..., window/w-...) for list, get "
           "and create commands. In json, 64-bit integers are plain numbers printed exactly "
           "(above 2^53 a parser reading doubles, such as JavaScript or jq before 1.7, rounds "
           "them: use an exact-integer parser), and every *_ms time (milliseconds since the "
           "epoch) is followed by its RFC 3339 UTC twin without the suffix "
           "(\"create_time\": \"2024-05-01T12:00:00.000Z\"; null when unset)."),
      Flag("no-headers", ValueKind::kSwitch, "",
           "Print tables without their header row (lists and usage)."),
      Flag("timeout", ValueKind::kDuration, "DURATION",
           "How long each call to the broker may take, e.g. 5s, 500ms (default 5s). A call "
           "that finds no broker (none listening, a change of leader) is tried again within "
           "it, with the same request id."),
      Flag("request-id", ValueKind::kString, "ID",
           "Idempotency key of a mutation (default: a fresh random id). Repeat a failed "
           "mutation with the same id to retry it safely."),
      Flag("help", ValueKind::kSwitch, "", "Show help (also -h)."),
  };
  return *flags;
}

std::string Quote(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

absl::Status Usage(absl::string_view message) { return absl::InvalidArgumentError(message); }

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

// -o FORMAT: a format name, or jsonpath=TEMPLATE (the template checked here,
// so that a typo is refused before anything is sent).
absl::Status ApplyOutput(absl::string_view text, GlobalOptions* global) {
  static constexpr std::pair<const char*, OutputFormat> kFormats[] = {
      {"table", OutputFormat::kTable}, {"wide", OutputFormat::kWide},
      {"json", OutputFormat::kJson},   {"yaml", OutputFormat::kYaml},
      {"name", OutputFormat::kName}};
  const std::string lower = absl::AsciiStrToLower(text);
  for (const auto& [name, format] : kFormats) {
    if (lower == name) {
      global->output = format;
      return absl::OkStatus();
    }
  }
  absl::string_view tmpl = text;
  if (absl::ConsumePrefix(&tmpl, "jsonpath=")) {
    absl::StatusOr<JsonPathTemplate> parsed = JsonPathTemplate::Parse(tmpl);
    if (!parsed.ok()) return Usage(parsed.status().message());
    if (tmpl.empty()) return Usage("--output=jsonpath: the template is empty, e.g. "
                                   "-o jsonpath='{.containers[*].id}'");
    global->output = OutputFormat::kJsonPath;
    global->output_template = std::string(tmpl);
    return absl::OkStatus();
  }
  return Usage(absl::StrCat("--output: must be table, wide, json, yaml, name or "
                            "jsonpath=TEMPLATE, got ", Quote(text)));
}

// Applies one global flag to `inv`.
absl::Status ApplyGlobal(const FlagSpec& spec, const FlagValue& value, Invocation* inv) {
  if (spec.name == "help") {
    if (value.number != 0) inv->help = true;
  } else if (spec.name == "broker") {
    inv->global.broker = value.text;
  } else if (spec.name == "cert") {
    inv->global.cert = value.text;
  } else if (spec.name == "key") {
    inv->global.key = value.text;
  } else if (spec.name == "ca") {
    inv->global.ca = value.text;
  } else if (spec.name == "trust-domain") {
    inv->global.trust_domain = value.text;
  } else if (spec.name == "insecure") {
    inv->global.insecure = value.number != 0;
  } else if (spec.name == "context") {
    absl::Status valid = ValidateContextName("--context", value.text);
    if (!valid.ok()) return valid;
    inv->global.context = value.text;
  } else if (spec.name == "output") {
    return ApplyOutput(value.text, &inv->global);
  } else if (spec.name == "no-headers") {
    inv->global.no_headers = value.number != 0;
  } else if (spec.name == "timeout") {
    inv->global.timeout = value.duration;
  } else if (spec.name == "request-id") {
    inv->global.request_id = value.text;
  }
  return absl::OkStatus();
}

constexpr size_t kHelpWidth = 80;

// What a SIZE is, for help (common/byte_size.h reads it).
std::string SizeHelp() {
  return absl::StrCat(
      "SIZE is ", kByteSizeForms,
      ". Units are case-sensitive, as in Kubernetes: 1Gi is 1073741824 bytes, 1G is "
      "1000000000; 1GB, 1GiB and 4K are refused as ambiguous.");
}

std::string UsageLine(const CommandSpec& c) {
  std::string line = absl::StrCat("iommuctl ", c.FullName());
  if (!c.positional.empty()) {
    absl::StrAppend(&line, c.positional_optional ? " [" : " ", c.positional,
                    c.positional_optional ? "]" : "");
  }
  for (const FlagSpec& f : c.flags) {
    absl::StrAppend(&line, " ", f.required ? "" : "[", cli::FlagUsage(f), f.repeated ? "..." : "",
                    f.required ? "" : "]");
  }
  return line;
}

}  // namespace

// ---------------------------------------------------------------- public

std::string CommandSpec::FullName() const {
  return verb.empty() ? noun : absl::StrCat(noun, " ", verb);
}

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = [] {
    auto* c = new std::vector<CommandSpec>(BuildCommands());
    for (CommandSpec& spec : *c) {
      static const auto* kNamed = new std::set<std::string>{
          "tenant create",    "tenant get",       "tenant list",         "tenant set-quota",
          "node list",        "node get",         "node cordon",         "node uncordon",
          "device list",      "container create", "container get",       "container list",
          "container set-budget", "window allocate", "window list", "config get-contexts"};
      spec.names_objects = kNamed->count(spec.FullName()) > 0;
      auto fields = RequestFields().find(spec.FullName());
      if (fields != RequestFields().end()) {
        spec.positional_field = fields->second.positional_field;
        spec.flag_fields = fields->second.flag_fields;
      }
    }
    return c;
  }();
  return *commands;
}

const CommandSpec* FindCommand(absl::string_view noun, absl::string_view verb) {
  for (const CommandSpec& c : Commands()) {
    if (c.noun == noun && c.verb == verb) return &c;
  }
  return nullptr;
}

bool IsStructured(OutputFormat format) {
  return format == OutputFormat::kJson || format == OutputFormat::kYaml ||
         format == OutputFormat::kJsonPath;
}

bool IsNoun(absl::string_view noun) {
  for (const CommandSpec& c : Commands()) {
    if (c.noun == noun) return true;
  }
  return false;
}

bool Invocation::Has(absl::string_view flag) const {
  return flags.find(std::string(flag)) != flags.end();
}

std::string Invocation::String(absl::string_view flag) const {
  auto it = flags.find(std::string(flag));
  return it == flags.end() || it->second.empty() ? "" : it->second.back().text;
}

uint64_t Invocation::Number(absl::string_view flag) const {
  auto it = flags.find(std::string(flag));
  return it == flags.end() || it->second.empty() ? 0 : it->second.back().number;
}

absl::Duration Invocation::Duration(absl::string_view flag) const {
  auto it = flags.find(std::string(flag));
  return it == flags.end() || it->second.empty() ? absl::ZeroDuration()
                                                 : it->second.back().duration;
}

std::vector<std::string> Invocation::Strings(absl::string_view flag) const {
  std::vector<std::string> out;
  auto it = flags.find(std::string(flag));
  if (it == flags.end()) return out;
  for (const FlagValue& v : it->second) out.push_back(v.text);
  return out;
}

absl::Status ValidateContextName(absl::string_view what, absl::string_view name) {
  if (name.empty() || name.size() > 63) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a context name is 1-63 characters, got \"", name, "\""));
  }
  for (const char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' &&
        c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": a context name has only letters, digits, '.', '_' and '-', got \"", name,
          "\""));
    }
  }
  return absl::OkStatus();
}

namespace {

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
        where = " (command flags go after the command, e.g. iommuctl container list "
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
  const FlagSpec* spec = st->command != nullptr ? FindFlag(st->command->flags, arg->name)
                                                : nullptr;
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
    return Usage(absl::StrCat(name, ": takes one ", command.positional, ", got also ",
                              Quote(rest[1])));
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
      return Usage(absl::StrCat("--", f.name, ": required by ", Quote(command.FullName()),
                                " (--", f.name, "=", f.value_name, ")"));
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

namespace {

// The completion words for `flags`: "--name" for switches, "--name=" for
// flags that take a value.
std::string FlagWords(const std::vector<FlagSpec>& flags) {
  std::vector<std::string> words;
  for (const FlagSpec& f : flags) {
    words.push_back(absl::StrCat("--", f.name, f.kind == ValueKind::kSwitch ? "" : "="));
  }
  return absl::StrJoin(words, " ");
}

}  // namespace

std::string RenderBashCompletion() {
  // Nouns (and single-word commands) in table order, each noun's verbs, and
  // each command's flags: all from Commands() and GlobalFlags().
  std::vector<std::string> firsts;
  std::map<std::string, std::vector<std::string>> verbs;
  std::vector<std::string> valued = {"-o", "-l"};
  for (const FlagSpec& f : GlobalFlags()) {
    if (f.kind != ValueKind::kSwitch) valued.push_back(absl::StrCat("--", f.name));
  }
  std::string flag_cases;
  for (const CommandSpec& c : Commands()) {
    if (std::find(firsts.begin(), firsts.end(), c.noun) == firsts.end()) firsts.push_back(c.noun);
    if (!c.verb.empty()) verbs[c.noun].push_back(c.verb);
    for (const FlagSpec& f : c.flags) {
      const std::string name = absl::StrCat("--", f.name);
      if (f.kind != ValueKind::kSwitch &&
          std::find(valued.begin(), valued.end(), name) == valued.end()) {
        valued.push_back(name);
      }
    }
    absl::StrAppend(&flag_cases, "    \"", c.FullName(), "\") flags=\"", FlagWords(c.flags),
                    "\" ;;\n");
  }
  std::string verb_cases;
  for (const auto& [noun, vs] : verbs) {
    absl::StrAppend(&verb_cases, "      ", noun, ") words=\"", absl::StrJoin(vs, " "),
                    "\" ;;\n");
  }
  return absl::StrCat(
      "# bash completion for iommuctl, generated by `iommuctl completion bash` from its\n"
      "# command table. Load with: source <(iommuctl completion bash)\n"
      "_iommuctl() {\n"
      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
      "  local valued=\" ", absl::StrJoin(valued, " "), " \"\n"
      "  local -a given=()\n"
      "  local i w\n"
      "  # The words before the cursor that are not flags or their values.\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=\"${COMP_WORDS[i]}\"\n"
      "    if [[ $w == -* ]]; then\n"
      "      [[ $w != *=* && $valued == *\" $w \"* ]] && ((i++))\n"
      "      continue\n"
      "    fi\n"
      "    given+=(\"$w\")\n"
      "  done\n"
      "  local words=\"\" flags=\"\" command=\"\"\n"
      "  if ((${#given[@]} == 0)); then\n"
      "    words=\"", absl::StrJoin(firsts, " "), "\"\n"
      "  else\n"
      "    case \"${given[0]}\" in\n",
      verb_cases,
      "    esac\n"
      "    if [[ -n $words ]]; then\n"
      "      # A noun: its verbs until one is given.\n"
      "      if ((${#given[@]} >= 2)); then command=\"${given[0]} ${given[1]}\"; words=\"\"; fi\n"
      "    else\n"
      "      command=\"${given[0]}\"\n"
      "    fi\n"
      "  fi\n"
      "  case \"$command\" in\n",
      flag_cases,
      "  esac\n"
      "  [[ $command == completion && ${#given[@]} == 1 ]] && words=\"bash\"\n"
      "  if [[ $cur == -* ]]; then\n"
      "    words=\"$flags ", FlagWords(GlobalFlags()), "\"\n"
      "  fi\n"
      "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
      "  # --flag= takes its value right after the '='.\n"
      "  if [[ ${#COMPREPLY[@]} == 1 && ${COMPREPLY[0]} == *= ]]; then\n"
      "    compopt -o nospace 2>/dev/null\n"
      "  fi\n"
      "  return 0\n"
      "}\n"
      "complete -F _iommuctl iommuctl\n");
}

std::string RenderHelp(absl::string_view noun, const CommandSpec* command) {
  std::string out;
  if (command != nullptr) {
    absl::StrAppend(&out, command->summary, ".\n\nUsage:\n  ",
                    Wrap(UsageLine(*command), kHelpWidth, 4), "\n\n",
                    Wrap(command->description, kHelpWidth, 0), "\n");
    if (!command->flags.empty()) {
      absl::StrAppend(&out, "\nFlags:\n");
      absl::StrAppend(&out, cli::RenderFlagList(command->flags, kHelpWidth));
      for (const FlagSpec& f : command->flags) {
        if (f.kind != ValueKind::kSize) continue;
        absl::StrAppend(&out, "\n", Wrap(SizeHelp(), kHelpWidth, 0), "\n");
        break;
      }
    }
    if (!command->examples.empty()) {
      absl::StrAppend(&out, "\nExamples:\n");
      for (const std::string& e : command->examples) absl::StrAppend(&out, "  ", e, "\n");
    }
    absl::StrAppend(&out, "\nGlobal flags (before or after the command):\n");
    absl::StrAppend(&out, cli::RenderFlagList(GlobalFlags(), kHelpWidth));
    return out;
  }
  if (!noun.empty()) {
    const char* summary = "";
    for (const NounSpec& n : kNouns) {
      if (noun == n.name) summary = n.summary;
    }
    absl::StrAppend(&out, summary, ".\n\nUsage:\n  iommuctl ", noun,
                    " <command> [args] [--flags]\n\nCommands:\n");
    size_t width = 0;
    for (const CommandSpec& c : Commands()) {
      if (c.noun == noun) width = std::max(width, c.verb.size());
    }
    for (const CommandSpec& c : Commands()) {
      if (c.noun != noun) continue;
      absl::StrAppendFormat(&out, "  %-*s  %s\n", static_cast<int>(width), c.verb, c.summary);
    }
    absl::StrAppend(&out, "\nExamples:\n");
    for (const CommandSpec& c : Commands()) {
      if (c.noun == noun && !c.examples.empty()) absl::StrAppend(&out, "  ", c.examples[0], "\n");
    }
    absl::StrAppend(&out, "\nRun 'iommuctl ", noun, " <command> --help' for a command's flags.\n");
    return out;
  }
  absl::StrAppend(&out,
                  Wrap("iommuctl drives the iommu-broker: tenants and their pinned-memory "
                       "quotas, nodes and their PCI devices, containers (IOMMU address spaces "
                       "with devices attached) and IOVA windows.",
                       kHelpWidth, 0),
                  "\n\nUsage:\n  iommuctl [global flags] <noun> <command> [args] [--flags]\n\n"
                  "Commands:\n");
  size_t width = 0;
  for (const CommandSpec& c : Commands()) width = std::max(width, c.FullName().size());
  for (const CommandSpec& c : Commands()) {
    absl::StrAppendFormat(&out, "  %-*s  %s\n", static_cast<int>(width), c.FullName(), c.summary);
  }
  absl::StrAppend(&out, "\nGlobal flags:\n");
  absl::StrAppend(&out, cli::RenderFlagList(GlobalFlags(), kHelpWidth));
  absl::StrAppend(&out,
                  "\n", Wrap(SizeHelp(), kHelpWidth, 0),
                  "\n\nExamples:\n"
                  "  iommuctl tenant create acme --pinned=64Gi\n"
                  "  iommuctl container create --tenant=acme --vendor=10de:2330 --count=1\n"
                  "  iommuctl window allocate c-0123456789abcdef --size=2Gi\n"
                  "  iommuctl -o json usage --tenant=acme\n"
                  "  iommuctl top\n"
                  "  iommuctl describe container c-0123456789abcdef\n"
                  "\n",
                  Wrap("Exit status: 0 success; 1 the broker refused the request or could not "
                       "be reached (\"error: CODE: message\" on stderr); 2 usage error.",
                       kHelpWidth, 0),
                  "\nRun 'iommuctl <noun> --help' or 'iommuctl <noun> <command> --help' for more.\n");
  return out;
}

}  // namespace client
}  // namespace iommu
