// The command table's rows for the views for people: describe (one object,
// kubectl-style) and the single-word commands that show the fleet (top,
// usage, version). Split from the rest of the table (args_object_commands.cc,
// args_local_commands.cc); Commands() (args.cc) assembles them.
#include <string>
#include <utility>
#include <vector>

#include "client/args.h"
#include "client/args_internal.h"

namespace iommu {
namespace client {

// Describe: one object for people, in the style of kubectl describe.
void AddDescribeCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  const std::string events_note =
      "\n\nEvents are kept in the broker's memory only, the last 20 per object: a broker "
      "restart forgets them. The events of a deleted object stay for a while, and describe "
      "then shows them alone. -o json prints one JSON object (see client/views.proto).";
  add({"describe",
       "tenant",
       "ID",
       false,
       "Show a tenant: quota against usage, containers, events",
       "Shows tenant ID for people: its quota against its usage (pinned, billed once per host "
       "page; mapped; what deduplication saved; containers; windows), its usage per node, its "
       "containers (the first 50) and its recent events and its containers': what happened, "
       "when and why, as AGE, TYPE (Normal or Warning), REASON and MESSAGE." +
           events_note,
       {},
       {"iommuctl describe tenant acme"}});
  add({"describe",
       "node",
       "NAME",
       false,
       "Show a node: devices, containers, usage, events",
       "Shows node NAME for people: its state, agent and backend, its devices, its containers "
       "(the first 50), each tenant's usage on it, and its recent events: registrations, "
       "missed heartbeats, cordons and drains, containers created, deleted or failed on it." +
           events_note,
       {},
       {"iommuctl describe node host-a"}});
  add({"describe",
       "container",
       "ID",
       false,
       "Show a container: windows, usage, events",
       "Shows container ID (an id, NAME or TENANT/NAME) for people: its name, labels, node, "
       "devices, state, IOVA geometry and pin budget, "
       "its tenant's usage on its node, its windows (the first 50), and its recent events and "
       "its windows': creation, budget changes, windows allocated and released, launcher "
       "grants, refusals and failures with their reason." +
           events_note,
       {},
       {"iommuctl describe container c-0123456789abcdef"}});
  add({"describe",
       "window",
       "ID",
       false,
       "Show an IOVA window, its container and events",
       "Shows window ID for people: its range, size and alignment, its container, and its "
       "recent events." +
           events_note,
       {},
       {"iommuctl describe window w-0123456789abcdef"}});
}

// Single-word commands that show the fleet: top, usage and version.
void AddFleetCommands(std::vector<CommandSpec>* c) {
  auto add = [c](CommandSpec s) { c->push_back(std::move(s)); };
  add({"top",
       "",
       "",
       false,
       "Summarise the fleet: nodes, tenants, usage, savings",
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
  add({"usage",
       "",
       "",
       false,
       "Show usage against quotas, per tenant and per node",
       "Shows, per tenant: quota, IOVA window bytes, pinned bytes (billed: each host page "
       "once per node), mapped bytes (every mapping counted) and what deduplication saved; "
       "then the same per tenant and node. Pinned figures come from each node's last "
       "heartbeat.",
       {Flag("tenant", ValueKind::kString, "ID", "Only this tenant."),
        Flag("node", ValueKind::kString, "NAME", "Only this node.")},
       {"iommuctl usage", "iommuctl usage --tenant=acme -o json"}});
  CommandSpec version{
      "version",
      "",
      "",
      false,
      "Print the client's, broker's and agents' versions",
      "Prints iommuctl's version and commit, then, when the broker answers, the broker's "
      "(GetVersion), for operators the replica that answered (with several replicas on etcd, "
      "the leader), since when it leads and its store, and each node's agent version as it "
      "registered (ListNodes; operators only, a tenant sees no agents). If the broker cannot be "
      "reached, iommuctl's line is "
      "still printed and the error follows (exit 1); --client does not ask the broker.",
      {Flag("client", ValueKind::kSwitch, "", "Print iommuctl's version only.")},
      {"iommuctl version", "iommuctl version --client", "iommuctl -o json version"}};
  add(std::move(version));
}

}  // namespace client
}  // namespace iommu
