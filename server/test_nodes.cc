#include "server/test_nodes.h"

#include "common/status_macros.h"

namespace iommu {

absl::StatusOr<v1::RegisterResponse> RegisterReadyNode(Broker* broker, const std::string& name,
                                                       const std::vector<v1::Device>& devices) {
  v1::RegisterRequest req;
  req.set_node(name);
  req.set_agent_address(name + ":1");
  req.set_backend("sim");
  req.set_simulated(true);
  for (const v1::Device& d : devices) *req.add_devices() = d;
  v1::RegisterResponse resp;
  RETURN_IF_ERROR(broker->Register(req, &resp));
  v1::ReconciledRequest rec;
  rec.set_node(name);
  rec.set_session_id(resp.session_id());
  *rec.mutable_containers() = resp.desired_containers();
  v1::ReconciledResponse unused;
  RETURN_IF_ERROR(broker->Reconciled(rec, &unused));
  return resp;
}

}  // namespace iommu
