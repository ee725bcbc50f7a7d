#include "bench/broker_setup.h"

#include "absl/time/clock.h"

namespace iommu::bench {

grpc::Status ListAllNodes(v1::Broker::Stub* broker, std::vector<v1::Node>* out) {
  out->clear();
  v1::ListNodesRequest req;
  req.set_page_size(1000);
  do {
    grpc::ClientContext ctx;
    v1::ListNodesResponse resp;
    grpc::Status s = broker->ListNodes(&ctx, req, &resp);
    if (!s.ok()) return s;
    out->insert(out->end(), resp.nodes().begin(), resp.nodes().end());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return grpc::Status::OK;
}

int WaitNodesReady(v1::Broker::Stub* broker, int n, absl::Duration max_wait) {
  const absl::Time give_up = absl::Now() + max_wait;
  int ready = 0;
  for (;;) {
    std::vector<v1::Node> nodes;
    if (ListAllNodes(broker, &nodes).ok()) {
      ready = 0;
      for (const v1::Node& node : nodes) ready += node.state() == v1::NODE_STATE_READY;
      if (ready >= n) return ready;
    }
    if (absl::Now() >= give_up) return ready;
    absl::SleepFor(absl::Milliseconds(100));
  }
}

grpc::Status EnsureTenant(v1::Broker::Stub* broker, const std::string& id,
                          const std::string& request_id) {
  grpc::ClientContext ctx;
  v1::CreateTenantRequest req;
  req.set_request_id(request_id);
  req.set_tenant_id(id);
  req.mutable_quota()->set_pinned_bytes(uint64_t{1} << 50);
  v1::Tenant out;
  grpc::Status s = broker->CreateTenant(&ctx, req, &out);
  if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) return grpc::Status::OK;
  return s;
}

grpc::Status FreeDevicesInterleaved(v1::Broker::Stub* broker,
                                    std::vector<std::pair<std::string, std::string>>* out) {
  out->clear();
  std::vector<v1::Node> nodes;
  grpc::Status s = ListAllNodes(broker, &nodes);
  if (!s.ok()) return s;
  std::vector<std::string> names;  // Of the READY nodes, as per_node.
  std::vector<std::vector<std::string>> per_node;
  for (const v1::Node& node : nodes) {
    if (node.state() != v1::NODE_STATE_READY) continue;
    grpc::ClientContext ctx;
    v1::ListDevicesRequest req;
    req.set_node(node.name());
    req.set_page_size(1000);
    v1::ListDevicesResponse devices;
    s = broker->ListDevices(&ctx, req, &devices);
    if (!s.ok()) {
      return grpc::Status(s.error_code(), "ListDevices " + node.name() + ": " + s.error_message());
    }
    names.push_back(node.name());
    per_node.emplace_back();
    for (const v1::Device& d : devices.devices()) {
      if (d.assignable() && d.container_id().empty()) per_node.back().push_back(d.address());
    }
  }
  for (size_t i = 0;; ++i) {
    bool any = false;
    for (size_t k = 0; k < per_node.size(); ++k) {
      if (i < per_node[k].size()) {
        out->emplace_back(names[k], per_node[k][i]);
        any = true;
      }
    }
    if (!any) break;
  }
  return grpc::Status::OK;
}

}  // namespace iommu::bench
