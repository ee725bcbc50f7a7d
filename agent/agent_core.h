// AgentCore: the node agent's state and logic, free of gRPC. It holds the
// containers (address spaces) the broker asked for, keyed by the broker's
// container id, on top of a Backend, and answers the Agent API and the
// registration loop's reconcile step.
//
// Thread-safe. One mutex serialises every operation, held across the backend
// calls, because a create/destroy must be atomic with respect to the id and
// device bookkeeping (two concurrent creates of one id must not both reach the
// kernel). Backend calls are short ioctls, so this costs little; the map path,
// which pins memory and can be slow, arrives with the pinned-page ledger and
// will not run under this lock.
#ifndef AGENT_AGENT_CORE_H_
#define AGENT_AGENT_CORE_H_

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/backend.h"
#include "proto/agent.pb.h"
#include "proto/broker.pb.h"

namespace iommu {
namespace agent {

// What Reconcile did.
struct ReconcileResult {
  // Every container the agent holds afterwards, sorted by id.
  std::vector<v1::AgentContainer> held;
  // Desired containers that could not be created, with the reason (same
  // order, same length).
  std::vector<std::string> failed_ids;
  std::vector<std::string> failure_reasons;
};

class AgentCore final {
 public:
  // `node` is this agent's node name; `backend` must outlive the AgentCore
  // and is not owned.
  AgentCore(std::string node, Backend* backend);

  AgentCore(const AgentCore&) = delete;
  AgentCore& operator=(const AgentCore&) = delete;

  // The destructor leaves the backend's address spaces alone: the owner of
  // the backend decides whether they outlive the agent's bookkeeping.
  ~AgentCore() = default;

  const std::string& node() const { return node_; }
  const Backend& backend() const { return *backend_; }

  // Creates container `id` ("c-" + 16 hex) for `tenant_id` with `devices`,
  // and returns it with the geometry the backend reported. If `id` exists
  // with the same tenant and the same set of devices, returns it unchanged
  // (the broker retries). Errors: INVALID_ARGUMENT naming the field
  // (container_id, tenant_id, devices[i]); ALREADY_EXISTS when `id` exists
  // with another tenant or other devices; the backend's error otherwise
  // (NOT_FOUND unknown device, FAILED_PRECONDITION device held or not
  // assignable, ...). A failure leaves nothing behind.
  absl::StatusOr<v1::AgentContainer> CreateContainer(
      absl::string_view id, absl::string_view tenant_id,
      const std::vector<std::string>& devices);

  // Destroys container `id`: the backend unmaps everything and releases the
  // devices. NOT_FOUND if the agent holds no such container; on a backend
  // error the container stays held.
  absl::Status DestroyContainer(absl::string_view id);

  // The container and its current mappings. NOT_FOUND if absent.
  absl::StatusOr<v1::AgentGetContainerResponse> GetContainer(
      absl::string_view id);

  // Every device the backend lists, with Device.container_id set to the
  // holding container, and every container held.
  absl::StatusOr<v1::GetInventoryResponse> Inventory();

  // Every container held, sorted by id.
  std::vector<v1::AgentContainer> Containers();
  size_t container_count();

  // Makes the held containers equal to `desired` (the broker store's view):
  // destroys every held container not desired (or desired with another
  // tenant or devices, which is then recreated), then creates every desired
  // container not held. Never stops at the first failure; failures to create
  // are reported in the result, failures to destroy are logged and the
  // container stays held (and so appears in `held`).
  ReconcileResult Reconcile(const std::vector<v1::AgentContainer>& desired);

  // Node-side map and unmap: UNIMPLEMENTED until the pinned-page ledger
  // lands, because mapping without it would pin memory nobody bills.
  absl::Status Map(const v1::AgentMapRequest& request);
  absl::Status Unmap(const v1::AgentUnmapRequest& request);

 private:
  struct Held {
    std::string tenant_id;
    std::vector<std::string> devices;  // As requested.
    ContainerHandle handle = 0;
    v1::ContainerGeometry geometry;
  };

  absl::StatusOr<v1::AgentContainer> CreateLocked(
      absl::string_view id, absl::string_view tenant_id,
      const std::vector<std::string>& devices)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DestroyLocked(absl::string_view id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<v1::AgentContainer> ContainersLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static v1::AgentContainer ToProto(const std::string& id, const Held& held);

  // Constant after construction.
  const std::string node_;
  Backend* const backend_;

  absl::Mutex mu_;
  std::map<std::string, Held, std::less<>> containers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_CORE_H_
