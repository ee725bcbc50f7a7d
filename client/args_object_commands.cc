// The command table's rows for the broker's objects: tenant, node, device,
// container and window commands, with their flags, request help and examples.
// Split from the rest of the table (args_view_commands.cc,
// args_local_commands.cc) so that each group of commands reads on its own;
// Commands() (args.cc) assembles them. Pure data, built once.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/args.h"
#include "client/args_internal.h"

namespace iommu {
namespace client {
namespace {

FlagSpec LimitFlag() {
  return Flag("limit", ValueKind::kUint32, "N",
              "Show at most N results (default: all, fetched page by page).");
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
          {LabelFlag(noun), Flag("remove", ValueKind::kString, "KEY",
                                 "A label key to remove (repeatable).", false, true)},
          {absl::StrCat("iommuctl ", noun, " label ", example, " --label=team=ml --remove=env")},
          true};
}

CommandSpec ContainerCreateCommand() {
  return {"container",
          "create",
          "",
          false,
          "Create a container (IOMMU address space with devices)",
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

}  // namespace

void AddTenantCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"tenant",
       "create",
       "ID",
       false,
       "Create a tenant with a quota",
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
  add({"tenant",
       "get",
       "ID",
       false,
       "Show one tenant",
       "Shows tenant ID and its quota.",
       {},
       {"iommuctl tenant get acme"}});
  add({"tenant",
       "list",
       "",
       false,
       "List tenants",
       "Lists every tenant (or those whose labels match -l) and its quota.",
       {SelectorFlag(), LimitFlag()},
       {"iommuctl tenant list", "iommuctl tenant list -l team=ml",
        "iommuctl -o json tenant list"}});
  add({"tenant",
       "set-quota",
       "ID",
       false,
       "Change some or all of a tenant's quota limits",
       "Changes the limits given of tenant ID's quota; limits not given keep their value "
       "(a partial update with a field mask: only the fields given change). Give at least "
       "one. 0 means no limit for --max-containers and --window-bytes. The new quota may be "
       "below current usage: nothing is taken away, but new containers, windows and pins are "
       "refused until usage drops below it.",
       {Flag("pinned", ValueKind::kSize, "SIZE", "Bytes of guest memory the tenant may pin (> 0)."),
        Flag("max-containers", ValueKind::kUint32, "N",
             "Containers the tenant may hold at once (0: no limit)."),
        Flag("window-bytes", ValueKind::kSize, "SIZE",
             "Bytes of IOVA windows the tenant may hold (0: no limit).")},
       {"iommuctl tenant set-quota acme --window-bytes=16Gi",
        "iommuctl tenant set-quota acme --pinned=128Gi --max-containers=16"},
       true});
  add(LabelCommand("tenant", "ID", "acme"));
  add({"tenant",
       "delete",
       "ID",
       false,
       "Delete a tenant",
       "Deletes tenant ID. The tenant must own no containers.",
       {},
       {"iommuctl tenant delete acme"},
       true});
}

// Nodes, and the devices a node can pass through.
void AddNodeCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"node",
       "list",
       "",
       false,
       "List nodes",
       "Lists the nodes whose agent registered, with their state, backend and device counts.",
       {LimitFlag()},
       {"iommuctl node list"}});
  add({"node",
       "get",
       "NAME",
       false,
       "Show one node",
       "Shows node NAME in detail.",
       {},
       {"iommuctl node get host-a"}});
  add({"node",
       "cordon",
       "NAME",
       false,
       "Stop placing new containers on a node",
       "Cordons node NAME: it keeps its containers but receives no new ones.",
       {},
       {"iommuctl node cordon host-a"},
       true});
  add({"node",
       "uncordon",
       "NAME",
       false,
       "Allow placing containers on a node again",
       "Uncordons node NAME.",
       {},
       {"iommuctl node uncordon host-a"},
       true});
  add({"node",
       "drain",
       "NAME",
       false,
       "Cordon a node and optionally delete its containers",
       "Cordons node NAME. With --delete-containers it also deletes every container on it "
       "(and their windows); without, it reports the containers that remain.",
       {Flag("delete-containers", ValueKind::kSwitch, "",
             "Also delete every container on the node.")},
       {"iommuctl node drain host-a", "iommuctl node drain host-a --delete-containers"},
       true});

  add({"node",
       "delete",
       "NAME",
       false,
       "Forget a retired node",
       "Deletes node NAME from the broker: its record, its devices and its metric series "
       "(iommu_broker_node_up{node=NAME} and the alerts on it). Refused while the node has "
       "containers (run 'iommuctl node drain NAME --delete-containers' first) or while its "
       "agent is alive (registered and heartbeating: stop the agent first). --force deletes "
       "a live node anyway; its agent then registers it again at its next heartbeat. It "
       "never deletes containers.",
       {Flag("force", ValueKind::kSwitch, "", "Delete even while the node's agent is alive.")},
       {"iommuctl node delete host-a", "iommuctl node delete host-a --force"},
       true});

  // Devices.
  add({"device",
       "list",
       "",
       false,
       "List a node's PCI devices",
       "Lists the PCI devices of node NAME: address, IOMMU group, ids, driver, whether it can "
       "be assigned and which container holds it.",
       {Flag("node", ValueKind::kString, "NAME", "The node whose devices to list.", true)},
       {"iommuctl device list --node=host-a"}});
}

void AddContainerCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add(ContainerCreateCommand());
  add({"container",
       "get",
       "ID",
       false,
       "Show one container",
       "Shows container ID (an id, a NAME or TENANT/NAME, as every container command takes): "
       "its name, labels, node, devices, state, IOVA geometry and windows.",
       {},
       {"iommuctl container get c-0123456789abcdef", "iommuctl container get acme/vm-42"}});
  add({"container",
       "list",
       "",
       false,
       "List containers",
       "Lists containers, optionally only those of a tenant, on a node, in a state, or whose "
       "labels match -l.",
       {Flag("tenant", ValueKind::kString, "ID", "Only this tenant's containers."),
        Flag("node", ValueKind::kString, "NAME", "Only containers on this node."),
        Flag("state", ValueKind::kString, "STATE",
             "Only containers in STATE: ready, "
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
  add({"container",
       "delete",
       "ID",
       false,
       "Delete a container",
       "Deletes container ID, releasing its windows and its devices. If its node is "
       "unavailable the container is forgotten now and the node's agent destroys the address "
       "space when it reconciles.",
       {},
       {"iommuctl container delete c-0123456789abcdef"},
       true});
  add({"container",
       "set-budget",
       "ID",
       false,
       "Change a container's share of the pinned quota",
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
  add({"container",
       "grant",
       "ID",
       false,
       "Issue a VM launcher token for a container",
       "Issues a single-use token that hands container ID (which must be ready) to a VM "
       "launcher on the container's node. The launcher presents it on the agent's unix socket "
       "(shown as Launcher socket) to open a session bound to the container, its tenant and "
       "the windows listed; the agent checks the token without calling the broker. The token "
       "must be presented before it expires (--ttl); the session then lives as long as its "
       "socket. Windows allocated after the grant need a new grant.\n\n"
       "With --launcher-uid the agent takes the token only from a launcher running as that "
       "uid, so a token that leaks to another user of the node is useless to it.\n\n"
       "Prints the token first, then where to present it and what it grants; --token-only "
       "prints just the token, for scripts.",
       {Flag("ttl", ValueKind::kDuration, "DURATION",
             "How long the token may be presented: whole seconds from 1s to 1h, e.g. 30s, 5m "
             "(default: the broker's, 60s)."),
        Flag("launcher-uid", ValueKind::kUint32, "UID",
             "Bind the token to the launcher's uid on the node: the agent refuses it from any "
             "other uid (default: any uid its socket admits)."),
        Flag("token-only", ValueKind::kSwitch, "",
             "Print only the token and a newline (table output only), e.g. "
             "TOKEN=$(iommuctl container grant ID --token-only).")},
       {"iommuctl container grant c-0123456789abcdef",
        "iommuctl container grant c-0123456789abcdef --ttl=5m --launcher-uid=$(id -u qemu)",
        "TOKEN=$(iommuctl container grant c-0123456789abcdef --token-only)"}});
}

void AddWindowCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"window",
       "allocate",
       "CONTAINER",
       false,
       "Reserve an IOVA window in a container",
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
  add({"window",
       "release",
       "ID",
       false,
       "Release an IOVA window",
       "Releases window ID.",
       {},
       {"iommuctl window release w-0123456789abcdef"},
       true});
  add({"window",
       "list",
       "",
       false,
       "List IOVA windows",
       "Lists windows, optionally only those of one container or one tenant.",
       {Flag("container", ValueKind::kString, "ID", "Only windows in this container."),
        Flag("tenant", ValueKind::kString, "ID", "Only this tenant's windows."), LimitFlag()},
       {"iommuctl window list --container=c-0123456789abcdef"}});
}

}  // namespace client
}  // namespace iommu
