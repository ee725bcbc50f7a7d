// The iommu-agent's command line as plain values (AgentFlags, whose field
// defaults are the flags' defaults), and the checks and derivations that turn
// it into what the agent's parts are built from (AgentOptions). main.cc only
// copies the flags in; every rule lives here, so tests reach each one.
//
// Pure apart from the injected group lookup. Thread-compatible.
#ifndef AGENT_AGENT_OPTIONS_H_
#define AGENT_AGENT_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/agent_core.h"
#include "agent/launcher_server.h"
#include "agent/launcher_sessions.h"
#include "agent/log.h"
#include "agent/peer_policy.h"
#include "agent/persistence.h"
#include "agent/sim_backend.h"
#include "agent/startup.h"
#include "agent/sysfs_devices.h"
#include "common/grant_token.h"

namespace iommu {
namespace agent {

// One field per flag, named as the flag, holding its value as parsed.
struct AgentFlags {
  std::string node;
  std::string broker;
  std::string listen = "127.0.0.1:0";
  std::string advertise_address;
  std::string backend = "auto";
  std::string state_dir = "/var/lib/iommu-agent";
  std::string fd_store = "auto";
  absl::Duration session_resume_timeout = absl::Seconds(60);
  std::string sim_devices;
  std::string sim_config;
  uint32_t sim_max_mappings = 65535;
  std::string launcher_socket = "/run/iommu-agent/launcher.sock";
  std::string launcher_socket_mode = "0660";
  std::string launcher_group;
  std::string launcher_allowed_uids;
  uint32_t max_launcher_connections = 64;
  std::string launcher_allowed_gids;
  uint32_t max_sessions_per_peer = kDefaultMaxSessionsPerPeer;
  absl::Duration launcher_session_open_timeout = absl::Seconds(5);
  uint32_t max_sessions_per_tenant = 16;
  uint64_t max_memory_bytes_per_tenant = uint64_t{8} << 40;
  uint64_t max_mappings_per_tenant = kDefaultMaxMappingsPerTenant;
  std::optional<uint64_t> kernel_pin_bytes_per_tenant;
  uint64_t replay_cache_per_tenant = ReplayCacheLimits().per_tenant;
  uint64_t replay_cache_max = ReplayCacheLimits().total;
  uint64_t max_session_memory_bytes = uint64_t{1} << 40;
  uint32_t max_session_memory_objects = 64;
  std::string devices;
  bool manage_drivers = false;
  absl::Duration registration_max_backoff = absl::Seconds(1);
  std::string port_file;
  std::string log_level = "info";
  std::string metrics_address;
};

// The flags that choose and build the backend, kept as given: which of them
// apply depends on the backend ChooseBackend picks for this host.
struct BackendFlags {
  std::string backend;  // --backend
  std::string sim_devices;
  std::string sim_config;
  uint32_t sim_max_mappings = 0;
  std::string devices;
  bool manage_drivers = false;
  std::optional<uint64_t> kernel_pin_bytes_per_tenant;
};

// What the agent is built from, once every rule below holds.
struct AgentOptions {
  LogLevel log_level = LogLevel::kInfo;
  std::string node;
  std::string broker;             // host:port
  std::string listen;             // host:port; port 0 picks one
  HostPort listen_host_port;      // --listen, split
  std::string advertise_address;  // Empty: the --listen host with the bound port.
  std::string metrics_address;    // Empty: no /metrics endpoint.
  std::string port_file;          // Empty: none written.
  absl::Duration registration_max_backoff;
  BackendFlags backend;
  PersistenceOptions persistence;
  LauncherServerOptions launcher_server;
  LauncherSessionOptions launcher_sessions;
  uint64_t max_mappings_per_tenant = 0;
  // The launcher flags as given, for the start-up log.
  std::string launcher_socket_mode_text;
  std::string launcher_allowed_uids_text;
  std::string launcher_allowed_gids_text;
};

// Resolves a group name to its gid (getgrnam in production); nullopt when
// there is no such group.
using GroupLookup = std::function<std::optional<uint32_t>(const std::string& name)>;

// Checks `flags` and derives AgentOptions. Errors are INVALID_ARGUMENT naming
// the flag and the rule, checked in this order (the first that fails is
// returned):
//   log_level           debug, info, warning or error
//   registration_max_backoff  positive
//   node                1-63 of [a-z0-9.-], starting with a letter or digit
//   broker              required; host:port
//   listen              host:port
//   advertise_address   host:port when set; required when --listen's host
//                       accepts on every interface (the broker cannot dial it)
//   metrics_address     host:port when set
//   launcher_socket_mode  octal, at most 0777
//   launcher_group      a gid or a group `lookup_group` knows
//   launcher_allowed_uids, launcher_allowed_gids  id lists (gids may be names)
//   the launcher session limits (ValidateLauncherSessionOptions: sessions per
//                       peer, session memory, per-tenant limits, replay cache)
//   max_mappings_per_tenant  at least 1
//   launcher_session_open_timeout  positive
//   state_dir, session_resume_timeout (ValidatePersistenceOptions)
//   fd_store            auto, none, systemd or holder:/absolute/path
// The backend flags are checked by PlanBackend once the backend is chosen.
absl::StatusOr<AgentOptions> ParseAgentOptions(const AgentFlags& flags,
                                               const GroupLookup& lookup_group);

// The backend to build (agent/backend_setup.h): ChooseBackend's kind and the
// flags that apply to it, parsed.
struct BackendPlan {
  std::string kind;  // "sim", "iommufd" or "vfio-type1".
  // kind "sim": the --sim-devices specs; --sim-config is read when the
  // backend is built (a file), its specs appended to these.
  std::vector<SimDeviceSpec> sim_devices;
  std::string sim_config;
  uint32_t sim_max_mappings = 0;
  // Real kinds: the devices this agent may manage, never empty.
  DeviceFilter devices;
  bool manage_drivers = false;
  std::optional<uint64_t> kernel_pin_bytes_per_tenant;
};

// Checks the flags that apply to `kind`. Errors, INVALID_ARGUMENT naming the
// flag: kind "sim": --sim-devices does not parse (ParseSimDevices); real
// kinds: --devices does not parse (ParseDeviceFilter) or is empty (required
// with a real backend). The flags of the other kind are not looked at.
absl::StatusOr<BackendPlan> PlanBackend(const BackendFlags& flags, absl::string_view kind);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_OPTIONS_H_
