#include "agent/agent_options.h"

#include <cstdlib>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/fd_store.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

// --node, --broker, --listen, --advertise-address, --metrics-address.
absl::Status CheckAddresses(const AgentFlags& flags, AgentOptions& out) {
  RETURN_IF_ERROR(ValidateNodeName("node", flags.node));
  out.node = flags.node;
  if (flags.broker.empty()) {
    return absl::InvalidArgumentError("broker: required, the broker's host:port");
  }
  // A list of replicas: only the leader serves, the agent finds it.
  for (absl::string_view replica : absl::StrSplit(flags.broker, ',')) {
    RETURN_IF_ERROR(SplitHostPort("broker", replica).status());
  }
  out.broker = flags.broker;
  ASSIGN_OR_RETURN(out.listen_host_port, SplitHostPort("listen", flags.listen));
  out.listen = flags.listen;
  if (!flags.advertise_address.empty()) {
    RETURN_IF_ERROR(SplitHostPort("advertise_address", flags.advertise_address).status());
  } else if (IsWildcardHost(out.listen_host_port.host)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "advertise_address: required when --listen=", flags.listen,
        " accepts on every interface (the broker cannot dial ", out.listen_host_port.host,
        ")"));
  }
  out.advertise_address = flags.advertise_address;
  if (!flags.metrics_address.empty()) {
    RETURN_IF_ERROR(metrics::ValidateMetricsAddress("metrics_address", flags.metrics_address));
  }
  out.metrics_address = flags.metrics_address;
  return absl::OkStatus();
}

// --launcher-socket, --launcher-socket-mode, --launcher-group,
// --max-launcher-connections, --launcher-session-open-timeout.
absl::Status CheckLauncherSocket(const AgentFlags& flags, const GroupLookup& lookup_group,
                                 LauncherServerOptions& out) {
  out.socket_path = flags.launcher_socket;
  out.max_connections = flags.max_launcher_connections;
  out.session_open_timeout = flags.launcher_session_open_timeout;
  const std::string& mode = flags.launcher_socket_mode;
  char* end = nullptr;
  const unsigned long m = std::strtoul(mode.c_str(), &end, 8);
  if (mode.empty() || *end != '\0' || m > 0777) {
    return absl::InvalidArgumentError(absl::StrCat(
        "launcher_socket_mode: must be octal permissions like 0660, got \"", mode, "\""));
  }
  out.socket_mode = static_cast<mode_t>(m);
  const std::string& group = flags.launcher_group;
  if (!group.empty()) {
    gid_t gid;
    if (absl::SimpleAtoi(group, &gid)) {
      out.socket_gid = gid;
    } else if (std::optional<uint32_t> found = lookup_group(group); found.has_value()) {
      out.socket_gid = *found;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("launcher_group: no group \"", group, "\""));
    }
  }
  return absl::OkStatus();
}

// Who may connect to the launcher socket and what a session and a tenant may
// hold; the open timeout is checked last, as its own rule.
absl::Status CheckLauncherSessions(const AgentFlags& flags, const GroupLookup& lookup_group,
                                   AgentOptions& out) {
  ASSIGN_OR_RETURN(const std::set<uint32_t> uids,
                   ParseIdList("launcher_allowed_uids", flags.launcher_allowed_uids));
  ASSIGN_OR_RETURN(const std::set<uint32_t> gids,
                   ParseIdList("launcher_allowed_gids", flags.launcher_allowed_gids,
                               lookup_group));
  LauncherSessionOptions& s = out.launcher_sessions;
  s.allowed_uids.insert(uids.begin(), uids.end());
  s.allowed_gids.insert(gids.begin(), gids.end());
  s.max_sessions_per_peer = flags.max_sessions_per_peer;
  s.max_memory_bytes = flags.max_session_memory_bytes;
  s.max_memory_objects = flags.max_session_memory_objects;
  s.max_sessions_per_tenant = flags.max_sessions_per_tenant;
  s.max_memory_bytes_per_tenant = flags.max_memory_bytes_per_tenant;
  s.replay.per_tenant = flags.replay_cache_per_tenant;
  s.replay.total = flags.replay_cache_max;
  RETURN_IF_ERROR(ValidateLauncherSessionOptions(s));
  if (flags.max_mappings_per_tenant == 0) {
    return absl::InvalidArgumentError("max_mappings_per_tenant: must be at least 1");
  }
  out.max_mappings_per_tenant = flags.max_mappings_per_tenant;
  if (flags.launcher_session_open_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("launcher_session_open_timeout: must be positive");
  }
  return absl::OkStatus();
}

// --state-dir, --session-resume-timeout, --fd-store.
absl::Status CheckPersistence(const AgentFlags& flags, PersistenceOptions& out) {
  out.state_dir = flags.state_dir;
  out.fd_store = flags.fd_store;
  out.resume_timeout = flags.session_resume_timeout;
  RETURN_IF_ERROR(ValidatePersistenceOptions(out));
  if (flags.fd_store != "auto") {
    if (absl::Status form = CheckFdStoreSpec(flags.fd_store); !form.ok()) {
      return absl::Status(form.code(), absl::StrCat("fd_store: ", form.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AgentOptions> ParseAgentOptions(const AgentFlags& flags,
                                               const GroupLookup& lookup_group) {
  AgentOptions out;
  ASSIGN_OR_RETURN(out.log_level, ParseLogLevel(flags.log_level));
  if (flags.registration_max_backoff <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("registration_max_backoff: must be positive");
  }
  out.registration_max_backoff = flags.registration_max_backoff;
  RETURN_IF_ERROR(CheckAddresses(flags, out));
  out.port_file = flags.port_file;
  RETURN_IF_ERROR(CheckLauncherSocket(flags, lookup_group, out.launcher_server));
  RETURN_IF_ERROR(CheckLauncherSessions(flags, lookup_group, out));
  RETURN_IF_ERROR(CheckPersistence(flags, out.persistence));
  out.launcher_socket_mode_text = flags.launcher_socket_mode;
  out.launcher_allowed_uids_text = flags.launcher_allowed_uids;
  out.launcher_allowed_gids_text = flags.launcher_allowed_gids;
  out.backend.backend = flags.backend;
  out.backend.sim_devices = flags.sim_devices;
  out.backend.sim_config = flags.sim_config;
  out.backend.sim_max_mappings = flags.sim_max_mappings;
  out.backend.devices = flags.devices;
  out.backend.manage_drivers = flags.manage_drivers;
  out.backend.kernel_pin_bytes_per_tenant = flags.kernel_pin_bytes_per_tenant;
  return out;
}

absl::StatusOr<BackendPlan> PlanBackend(const BackendFlags& flags, absl::string_view kind) {
  BackendPlan plan;
  plan.kind = std::string(kind);
  if (kind == "sim") {
    ASSIGN_OR_RETURN(plan.sim_devices, ParseSimDevices(flags.sim_devices));
    plan.sim_config = flags.sim_config;
    plan.sim_max_mappings = flags.sim_max_mappings;
    return plan;
  }
  ASSIGN_OR_RETURN(plan.devices, ParseDeviceFilter(flags.devices));
  if (plan.devices.addresses.empty() && plan.devices.ids.empty()) {
    return absl::InvalidArgumentError(
        "devices: required with a real backend: the PCI devices (addresses or "
        "vendor:device) this agent may manage");
  }
  plan.manage_drivers = flags.manage_drivers;
  plan.kernel_pin_bytes_per_tenant = flags.kernel_pin_bytes_per_tenant;
  return plan;
}

}  // namespace agent
}  // namespace iommu
