// The commands that summarise the fleet: usage (quota against usage, per
// tenant and per node), top (one screen of leader, nodes, containers and
// tenants, redrawn with --watch) and version (iommuctl's, the broker's and
// the agents').
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/args.h"
#include "client/command_handlers.h"
#include "client/command_session.h"
#include "client/format.h"
#include "client/views.pb.h"
#include "common/status_macros.h"
#include "common/version.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

namespace v1 = ::iommu::v1;

namespace {

// The number of containers in `state` the caller may see.
absl::StatusOr<uint32_t> CountContainers(Session& s, v1::ContainerState state) {
  v1::ListContainersRequest req;
  req.set_state(state);
  v1::ListContainersResponse all;
  RETURN_IF_ERROR(
      s.ListAll(&Stub::ListContainers, req, &v1::ListContainersResponse::mutable_containers, &all));
  return static_cast<uint32_t>(all.containers_size());
}

absl::Status TakeFleetSummary(Session& s, iommu::ctl::FleetSummary* sum) {
  sum->set_time_ms(NowMs());
  v1::GetVersionResponse version;
  RETURN_IF_ERROR(s.Call(&Stub::GetVersion, v1::GetVersionRequest(), &version));
  sum->set_leader(version.replica());
  sum->set_leader_since_ms(version.leader_since_ms());
  sum->set_store(version.store());
  v1::ListNodesResponse nodes;
  absl::Status listed = s.ListAll(&Stub::ListNodes, v1::ListNodesRequest(),
                                  &v1::ListNodesResponse::mutable_nodes, &nodes);
  // Nodes are for operators: a tenant's summary goes without them.
  if (!absl::IsPermissionDenied(listed)) {
    RETURN_IF_ERROR(listed);
    sum->set_nodes_visible(true);
    sum->set_nodes(nodes.nodes_size());
    for (const v1::Node& n : nodes.nodes()) {
      ++(*sum->mutable_nodes_by_state())[NodeStateName(n.state())];
      if (n.state() != v1::NODE_STATE_READY) sum->add_nodes_not_ready(n.name());
      if (n.cordoned()) {
        sum->set_nodes_cordoned(sum->nodes_cordoned() + 1);
        sum->add_nodes_cordoned_names(n.name());
      }
    }
  }
  v1::GetUsageResponse usage;
  RETURN_IF_ERROR(AllUsage(s, v1::GetUsageRequest(), &usage));
  std::vector<v1::TenantUsage> tenants(usage.tenants().begin(), usage.tenants().end());
  std::stable_sort(tenants.begin(), tenants.end(),
                   [](const v1::TenantUsage& a, const v1::TenantUsage& b) {
                     if (a.pinned_bytes() != b.pinned_bytes()) {
                       return a.pinned_bytes() > b.pinned_bytes();
                     }
                     return a.tenant_id() < b.tenant_id();
                   });
  v1::TenantUsage* total = sum->mutable_total();
  total->set_tenant_id("total");
  for (v1::TenantUsage& u : tenants) {
    v1::Quota* q = total->mutable_quota();
    q->set_pinned_bytes(q->pinned_bytes() + u.quota().pinned_bytes());
    q->set_window_bytes(q->window_bytes() + u.quota().window_bytes());
    q->set_max_containers(q->max_containers() + u.quota().max_containers());
    total->set_containers(total->containers() + u.containers());
    total->set_windows(total->windows() + u.windows());
    total->set_window_bytes(total->window_bytes() + u.window_bytes());
    total->set_pinned_bytes(total->pinned_bytes() + u.pinned_bytes());
    total->set_mapped_bytes(total->mapped_bytes() + u.mapped_bytes());
    total->set_dedup_saved_bytes(total->dedup_saved_bytes() + u.dedup_saved_bytes());
    *sum->add_tenants() = std::move(u);
  }
  sum->set_containers(total->containers());
  ASSIGN_OR_RETURN(uint32_t failed, CountContainers(s, v1::CONTAINER_STATE_FAILED));
  ASSIGN_OR_RETURN(uint32_t unavailable, CountContainers(s, v1::CONTAINER_STATE_NODE_UNAVAILABLE));
  ASSIGN_OR_RETURN(uint32_t deleting, CountContainers(s, v1::CONTAINER_STATE_DELETING));
  auto& by_state = *sum->mutable_containers_by_state();
  const uint32_t not_ready = failed + unavailable + deleting;
  by_state[ContainerStateName(v1::CONTAINER_STATE_READY)] =
      sum->containers() > not_ready ? sum->containers() - not_ready : 0;
  by_state[ContainerStateName(v1::CONTAINER_STATE_NODE_UNAVAILABLE)] = unavailable;
  by_state[ContainerStateName(v1::CONTAINER_STATE_FAILED)] = failed;
  if (deleting > 0) by_state[ContainerStateName(v1::CONTAINER_STATE_DELETING)] = deleting;
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------- usage

absl::Status Usage(Session& s) {
  v1::GetUsageRequest req;
  RETURN_IF_ERROR(s.Build(&req));
  v1::GetUsageResponse all;
  RETURN_IF_ERROR(AllUsage(s, req, &all));
  return s.Print(all);
}

// ---------------------------------------------------------------- top

absl::Status Top(Session& s) {
  const bool watch = s.inv().Has("watch");
  if (watch && IsStructured(s.inv().global.output)) {
    return UsageError(
        "--watch: redraws a table; cannot be combined with -o json, yaml or jsonpath");
  }
  while (true) {
    iommu::ctl::FleetSummary sum;
    RETURN_IF_ERROR(TakeFleetSummary(s, &sum));
    if (!watch) return s.PrintView(sum, FormatFleetSummary(sum));
    s.Redraw(FormatFleetSummary(sum));
    if (!s.Wait(s.inv().Duration("watch"))) return absl::OkStatus();
  }
}

// ---------------------------------------------------------------- version

iommu::ctl::VersionView ClientVersion() {
  iommu::ctl::VersionView v;
  v.set_client_version(kVersion);
  v.set_client_commit(BuildCommit());
  return v;
}

std::string FormatVersion(const iommu::ctl::VersionView& v) {
  std::string out =
      absl::StrCat("Client: iommuctl ", v.client_version(), " (commit ", v.client_commit(), ")\n");
  if (!v.broker_version().empty()) {
    absl::StrAppend(&out, "Broker: iommu-broker ", v.broker_version(), " (commit ",
                    v.broker_commit(), ")\n");
    if (!v.broker_replica().empty()) {
      absl::StrAppend(&out, "Leader: ", v.broker_replica(), " since ",
                      FormatTimeMs(v.broker_leader_since_ms()), ", store ", v.broker_store(), "\n");
    }
  }
  if (v.agents_visible()) {
    Table agents({"NODE", "AGENT-VERSION"});
    for (const auto& a : v.agents()) {
      agents.AddRow({a.node(), a.version().empty() ? "-" : a.version()});
    }
    absl::StrAppend(&out, "Agents:", v.agents().empty() ? " <none>\n" : "\n");
    if (!v.agents().empty()) {
      for (absl::string_view line : absl::StrSplit(agents.Render(), '\n', absl::SkipEmpty())) {
        absl::StrAppend(&out, "  ", line, "\n");
      }
    }
  }
  return out;
}

absl::Status Version(Session& s) {
  iommu::ctl::VersionView v = ClientVersion();
  v1::GetVersionResponse broker;
  RETURN_IF_ERROR(s.Call(&Stub::GetVersion, v1::GetVersionRequest(), &broker));
  v.set_broker_version(broker.version());
  v.set_broker_commit(broker.commit());
  v.set_broker_replica(broker.replica());
  v.set_broker_leader_since_ms(broker.leader_since_ms());
  v.set_broker_store(broker.store());
  v1::ListNodesResponse nodes;
  absl::Status listed = s.ListAll(&Stub::ListNodes, v1::ListNodesRequest(),
                                  &v1::ListNodesResponse::mutable_nodes, &nodes);
  if (listed.ok()) {
    v.set_agents_visible(true);
    for (const v1::Node& n : nodes.nodes()) {
      auto* a = v.add_agents();
      a->set_node(n.name());
      a->set_version(n.agent_version());
    }
  } else if (!absl::IsPermissionDenied(listed)) {
    return listed;
  }
  return s.PrintView(v, FormatVersion(v));
}

}  // namespace client
}  // namespace iommu
