// iommu-agent: the node agent binary. Only flags and wiring; every piece of
// logic lives in the libraries of this package (the flags' rules in
// agent_options.h).
#include <grp.h>
#include <signal.h>
#include <string.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/agent_core.h"
#include "agent/agent_metrics.h"
#include "agent/agent_options.h"
#include "agent/agent_service.h"
#include "agent/backend_setup.h"
#include "agent/counting_kernel_ops.h"
#include "agent/guest_memory.h"
#include "agent/launcher_server.h"
#include "agent/launcher_sessions.h"
#include "agent/linux_kernel_ops.h"
#include "agent/log.h"
#include "agent/persistence.h"
#include "agent/registration.h"
#include "agent/startup.h"
#include "agent/version.h"
#include "common/broker_target.h"
#include "common/cert_expiry_gauge.h"
#include "common/flag_spelling.h"
#include "common/metrics.h"
#include "common/service_notify.h"
#include "common/status_macros.h"
#include "common/tls_flags.h"
#include "common/version.h"

using ::iommu::agent::AgentFlags;

ABSL_FLAG(std::string, node, AgentFlags().node,
          "Required. This node's name: 1-63 of [a-z0-9.-], starting with a "
          "letter or digit.");
ABSL_FLAG(std::string, broker, AgentFlags().broker,
          "Required. The broker's host:port, or its replicas' as a comma-separated list (only "
          "the leader serves; the agent finds it, and the next one after a failover).");
ABSL_FLAG(std::string, listen, AgentFlags().listen,
          "host:port for the agent's gRPC API; port 0 picks a free port.");
ABSL_FLAG(std::string, advertise_address, AgentFlags().advertise_address,
          "host:port the broker dials to reach this agent. Default: the "
          "--listen host with the bound port.");
ABSL_FLAG(std::string, backend, AgentFlags().backend, "auto, iommufd, vfio or sim.");
ABSL_FLAG(std::string, state_dir, AgentFlags().state_dir,
          "Directory of the agent's journal (containers, sessions, memory, mappings), so a "
          "restarted agent re-adopts what the kernel still holds. One agent per directory. "
          "Empty: no journal; a restart then forgets every container and session.");
ABSL_FLAG(std::string, fd_store, AgentFlags().fd_store,
          "Where the IOMMU and memory fds outlive the agent process: systemd (the unit's fd "
          "store; needs FileDescriptorStoreMax=), holder:/path.sock (an iommu-fdholder "
          "process, e.g. a sidecar), none (a restart loses the containers; their billing stays "
          "until the kernel releases them), or auto (systemd when $NOTIFY_SOCKET is set, else "
          "none).");
ABSL_FLAG(absl::Duration, session_resume_timeout, AgentFlags().session_resume_timeout,
          "After a restart, how long a launcher session waits for its launcher to resume it "
          "(ResumeSession) before it is closed and what it mapped is unmapped.");
ABSL_FLAG(std::string, sim_devices, AgentFlags().sim_devices,
          "With --backend=sim: fake devices, "
          "ADDRESS=VENDOR:DEVICE@GROUP[!DRIVER] joined by ',', e.g. "
          "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6");
ABSL_FLAG(std::string, sim_config, AgentFlags().sim_config,
          "With --backend=sim: a file of fake devices, one spec per line, "
          "'#' comments.");
ABSL_FLAG(uint32_t, sim_max_mappings, AgentFlags().sim_max_mappings,
          "With --backend=sim: the mapping limit per container (0: none).");
ABSL_FLAG(std::string, launcher_socket, AgentFlags().launcher_socket,
          "The unix socket VM launchers open sessions on (grant token -> "
          "session -> guest memory -> DMA mappings); also reported to the broker, "
          "which tells launchers where it is.");
ABSL_FLAG(std::string, launcher_socket_mode, AgentFlags().launcher_socket_mode,
          "Octal permissions of the launcher socket; who may connect is who may open it.");
ABSL_FLAG(std::string, launcher_group, AgentFlags().launcher_group,
          "Group (name or gid) that owns the launcher socket, e.g. the group VM launchers run "
          "as. Empty: the agent's own group.");
ABSL_FLAG(std::string, launcher_allowed_uids, AgentFlags().launcher_allowed_uids,
          "Comma-separated uids allowed on the launcher socket (checked with SO_PEERCRED). "
          "Empty: any uid the socket's permissions let in.");
ABSL_FLAG(uint32_t, max_launcher_connections, AgentFlags().max_launcher_connections,
          "Launcher connections (and so sessions) held at once.");
ABSL_FLAG(std::string, launcher_allowed_gids, AgentFlags().launcher_allowed_gids,
          "Comma-separated gids (numbers or group names) allowed on the launcher socket, checked "
          "against the peer's effective gid from SO_PEERCRED (supplementary groups do not "
          "count). With --launcher-allowed-uids a peer must pass both. Empty: any gid.");
ABSL_FLAG(uint32_t, max_sessions_per_peer, AgentFlags().max_sessions_per_peer,
          "Launcher connections (each holds at most one session) one uid may hold at once; "
          "more are refused at connect with RESOURCE_EXHAUSTED. At least 1. Raise it to "
          "--max-launcher-connections when every launcher runs as one uid.");
ABSL_FLAG(absl::Duration, launcher_session_open_timeout, AgentFlags().launcher_session_open_timeout,
          "A launcher connection that has not opened a session this long after connecting is "
          "closed (DEADLINE_EXCEEDED), so idle connections cannot hold slots. Positive.");
ABSL_FLAG(uint32_t, max_sessions_per_tenant, AgentFlags().max_sessions_per_tenant,
          "Launcher sessions one tenant may hold on this node at once, whatever uids its "
          "launchers run as; more are refused with RESOURCE_EXHAUSTED. At least 1.");
ABSL_FLAG(uint64_t, max_memory_bytes_per_tenant, AgentFlags().max_memory_bytes_per_tenant,
          "Bytes of guest memory the sessions of one tenant may register on this node "
          "together; more is refused with RESOURCE_EXHAUSTED. At least 4096.");
ABSL_FLAG(uint64_t, max_mappings_per_tenant, AgentFlags().max_mappings_per_tenant,
          "DMA mappings the sessions of one tenant may hold on this node at once; more are "
          "refused with RESOURCE_EXHAUSTED. At least 1.");
ABSL_FLAG(std::optional<uint64_t>, kernel_pin_bytes_per_tenant,
          AgentFlags().kernel_pin_bytes_per_tenant,
          "Bytes of pins the kernel may count for one tenant's mappings on this node: each "
          "mapping's full size, however many mappings pin the same page. Maps past it are "
          "refused with RESOURCE_EXHAUSTED. Required with a real backend when RLIMIT_MEMLOCK is "
          "finite and the agent lacks CAP_IPC_LOCK (at most the limit; the node as a whole is "
          "then also kept under the limit); optional otherwise. Greater than 0. Ignored with "
          "--backend=sim (no kernel pins).");
ABSL_FLAG(uint64_t, replay_cache_per_tenant, AgentFlags().replay_cache_per_tenant,
          "Used launcher token ids of one tenant remembered until they expire; past it that "
          "tenant's new tokens are refused with RESOURCE_EXHAUSTED (never forgotten early, "
          "which would allow replay). At least 1.");
ABSL_FLAG(uint64_t, replay_cache_max, AgentFlags().replay_cache_max,
          "Used launcher token ids remembered in all (a memory bound, about 150 bytes each); "
          "at least --replay-cache-per-tenant.");
ABSL_FLAG(uint64_t, max_session_memory_bytes, AgentFlags().max_session_memory_bytes,
          "Bytes of guest memory one launcher session may register (the sum of its memory "
          "objects' sizes); more is refused with RESOURCE_EXHAUSTED. At least 4096.");
ABSL_FLAG(uint32_t, max_session_memory_objects, AgentFlags().max_session_memory_objects,
          "Memory objects (fds) one launcher session may register; each holds an fd and a "
          "mapping in the agent. At least 1.");
ABSL_FLAG(std::string, devices, AgentFlags().devices,
          "Real backends: the PCI devices this agent may manage, as addresses "
          "(0000:00:04.0), vendor:device (1234:11e8) or vendor:* entries, comma-separated. "
          "Devices not listed are never touched. Required with --backend=iommufd|vfio|auto.");
ABSL_FLAG(bool, manage_drivers, AgentFlags().manage_drivers,
          "Real backends: bind managed devices to vfio-pci (driver_override) when a container "
          "takes them and give them back to their old driver when it is destroyed. Without it, "
          "only devices already bound to vfio-pci are assignable.");
ABSL_FLAG(absl::Duration, registration_max_backoff, AgentFlags().registration_max_backoff,
          "Longest wait between attempts to reach the broker (full jitter below it; "
          "also never above the broker's heartbeat interval).");
ABSL_FLAG(std::string, port_file, AgentFlags().port_file,
          "If set, the bound gRPC port is written there once serving.");
ABSL_FLAG(std::string, log_level, AgentFlags().log_level, "debug, info, warning or error.");
ABSL_FLAG(std::string, metrics_address, AgentFlags().metrics_address,
          "host:port serving Prometheus metrics (iommu_agent_*, docs/METRICS.md) over HTTP at "
          "/metrics, e.g. 0.0.0.0:9401; empty: no metrics endpoint.");

namespace iommu {
namespace agent {
namespace {

int Fail(absl::string_view event, const absl::Status& status) {
  LogEvent(LogLevel::kError, event,
           {{"code", absl::StatusCodeToString(status.code())},
            {"error", status.message()}});
  std::fprintf(stderr, "iommu-agent: %s\n", std::string(status.message()).c_str());
  // 2: a configuration error (a bad flag value) that a restart cannot fix,
  // so the unit does not restart it; 1: anything else.
  return event == "bad_flag" || status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

AgentFlags FlagsFromCommandLine() {
  AgentFlags f;
  f.node = absl::GetFlag(FLAGS_node);
  f.broker = absl::GetFlag(FLAGS_broker);
  f.listen = absl::GetFlag(FLAGS_listen);
  f.advertise_address = absl::GetFlag(FLAGS_advertise_address);
  f.backend = absl::GetFlag(FLAGS_backend);
  f.state_dir = absl::GetFlag(FLAGS_state_dir);
  f.fd_store = absl::GetFlag(FLAGS_fd_store);
  f.session_resume_timeout = absl::GetFlag(FLAGS_session_resume_timeout);
  f.sim_devices = absl::GetFlag(FLAGS_sim_devices);
  f.sim_config = absl::GetFlag(FLAGS_sim_config);
  f.sim_max_mappings = absl::GetFlag(FLAGS_sim_max_mappings);
  f.launcher_socket = absl::GetFlag(FLAGS_launcher_socket);
  f.launcher_socket_mode = absl::GetFlag(FLAGS_launcher_socket_mode);
  f.launcher_group = absl::GetFlag(FLAGS_launcher_group);
  f.launcher_allowed_uids = absl::GetFlag(FLAGS_launcher_allowed_uids);
  f.max_launcher_connections = absl::GetFlag(FLAGS_max_launcher_connections);
  f.launcher_allowed_gids = absl::GetFlag(FLAGS_launcher_allowed_gids);
  f.max_sessions_per_peer = absl::GetFlag(FLAGS_max_sessions_per_peer);
  f.launcher_session_open_timeout = absl::GetFlag(FLAGS_launcher_session_open_timeout);
  f.max_sessions_per_tenant = absl::GetFlag(FLAGS_max_sessions_per_tenant);
  f.max_memory_bytes_per_tenant = absl::GetFlag(FLAGS_max_memory_bytes_per_tenant);
  f.max_mappings_per_tenant = absl::GetFlag(FLAGS_max_mappings_per_tenant);
  f.kernel_pin_bytes_per_tenant = absl::GetFlag(FLAGS_kernel_pin_bytes_per_tenant);
  f.replay_cache_per_tenant = absl::GetFlag(FLAGS_replay_cache_per_tenant);
  f.replay_cache_max = absl::GetFlag(FLAGS_replay_cache_max);
  f.max_session_memory_bytes = absl::GetFlag(FLAGS_max_session_memory_bytes);
  f.max_session_memory_objects = absl::GetFlag(FLAGS_max_session_memory_objects);
  f.devices = absl::GetFlag(FLAGS_devices);
  f.manage_drivers = absl::GetFlag(FLAGS_manage_drivers);
  f.registration_max_backoff = absl::GetFlag(FLAGS_registration_max_backoff);
  f.port_file = absl::GetFlag(FLAGS_port_file);
  f.log_level = absl::GetFlag(FLAGS_log_level);
  f.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  return f;
}

std::optional<uint32_t> LookupGroupId(const std::string& name) {
  struct group* g = getgrnam(name.c_str());
  if (g == nullptr) return std::nullopt;
  return g->gr_gid;
}

// Launchers at their limits must not be able to run the agent out of fds:
// that would stop its gRPC server and backend too.
void RaiseFdLimitForLaunchers(const AgentOptions& o) {
  absl::StatusOr<std::string> nofile = EnsureFdLimit(
      LauncherFdBudget(o.launcher_server.max_connections,
                       o.launcher_sessions.max_memory_objects, kMaxLauncherPacketFds) +
      kAgentFdReserve);
  if (nofile.ok()) {
    LogEvent(LogLevel::kInfo, "nofile", {{"state", *nofile}});
  } else {
    LogEvent(LogLevel::kWarning, "nofile", {{"error", nofile.status().message()}});
  }
}

void LogServing(const AgentOptions& o, const TransportConfig& transport, const BuiltBackend& b,
                int port, const std::string& advertise) {
  const bool simulated = b.backend->simulated();
  LogEvent(LogLevel::kInfo, "serving",
           {{"node", o.node},
            {"listen", o.listen},
            {"port", port},
            {"advertise_address", advertise},
            {"backend", b.backend->kind()},
            {"devices", b.device_count},
            {"version", kAgentVersion},
            {"transport", DescribeTransport(transport)},
            {"simulated", simulated},
            {"sim_warning", simulated ? "SIMULATED BACKEND: no real IOMMU, no real DMA, no "
                                        "pinned memory"
                                      : ""}});
}

void LogLauncherSocket(const AgentOptions& o) {
  const LauncherServerOptions& server = o.launcher_server;
  const LauncherSessionOptions& sessions = o.launcher_sessions;
  LogEvent(LogLevel::kInfo, "launcher_socket_listening",
           {{"path", server.socket_path},
            {"mode", o.launcher_socket_mode_text},
            {"allowed_uids", o.launcher_allowed_uids_text},
            {"allowed_gids", o.launcher_allowed_gids_text},
            {"max_connections", server.max_connections},
            {"max_sessions_per_peer", sessions.max_sessions_per_peer},
            {"max_session_memory_bytes", sessions.max_memory_bytes},
            {"max_session_memory_objects", sessions.max_memory_objects},
            {"session_open_timeout", absl::FormatDuration(server.session_open_timeout)},
            {"max_sessions_per_tenant", sessions.max_sessions_per_tenant},
            {"max_memory_bytes_per_tenant", sessions.max_memory_bytes_per_tenant},
            {"max_mappings_per_tenant", o.max_mappings_per_tenant},
            {"replay_cache_per_tenant", sessions.replay.per_tenant},
            {"replay_cache_max", sessions.replay.total}});
}

// /metrics before the API: a port that cannot be bound stops the start.
absl::StatusOr<metrics::MetricsServer> StartMetrics(const AgentOptions& o,
                                                    std::shared_ptr<AgentMetrics> m,
                                                    metrics::Health health) {
  if (o.metrics_address.empty()) return metrics::MetricsServer();
  absl::StatusOr<metrics::MetricsServer> started = metrics::StartMetricsServer(
      "metrics_address", o.metrics_address, std::move(m), std::move(health));
  if (!started.ok()) return WithStartEvent("metrics_failed", started.status());
  LogEvent(LogLevel::kInfo, "metrics_serving",
           {{"address", o.metrics_address},
            {"port", started->port},
            {"paths", "/metrics,/healthz,/readyz"}});
  return started;
}

// /readyz: ready while the agent holds a session with the broker (its
// containers are the broker's to use); `registration` is null until the
// registration loop exists and after it is stopped.
metrics::Health AgentHealth(const std::atomic<const Registration*>* registration) {
  metrics::Health health;
  health.ready = [registration]() -> absl::Status {
    const Registration* r = registration->load();
    if (r == nullptr) return absl::UnavailableError("agent: starting or stopping");
    if (!r->session_id().empty()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("agent: not registered with the broker (",
                                               StateName(r->state()), ")"));
  };
  return health;
}

// With WatchdogSec=, pings systemd after each successful read of AgentCore's
// usage (which takes its lock), so a wedged agent is restarted; its kernel
// objects survive in the fd store.
class WatchdogPinger {
 public:
  explicit WatchdogPinger(AgentCore* core) {
    const absl::Duration every = WatchdogPingInterval();
    if (every <= absl::ZeroDuration()) return;
    thread_ = std::thread([this, core, every] {
      do {
        core->Usage();
        NotifyWatchdog();
      } while (!stop_.WaitForNotificationWithTimeout(every));
    });
  }
  ~WatchdogPinger() {
    stop_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  absl::Notification stop_;
  std::thread thread_;
};

// The stop sequence, after a stop signal.
void Stop(const AgentOptions& o, AgentCore& core, Persistence& persistence,
          Registration& registration, LauncherServer& launcher_server, grpc::Server& server,
          metrics::MetricsServer& metrics_server) {
  registration.Stop();
  if (persistence.keeps_kernel_objects()) {
    // An upgrade or a restart: the containers, sessions and guests' DMA stay
    // as they are in the kernel and the journal for the next run to adopt.
    core.KeepStateForRestart();
    LogEvent(LogLevel::kInfo, "keeping_state_for_restart",
             {{"persistence", persistence.Describe()}});
  }
  // Without kept state, closing the launcher socket ends every session:
  // their mappings are unmapped and released before the process exits.
  launcher_server.Stop();
  server.Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  server.Wait();
  metrics_server.http.reset();  // Scrapes read AgentCore: stop them first.
  LogEvent(LogLevel::kInfo, "stopped", {{"node", o.node}});
}

// Serves the gRPC API, the launcher socket and /metrics, registers with the
// broker, and runs until a stop signal. Errors carry their start event.
absl::Status ServeUntilStopped(const AgentOptions& o, const TransportConfig& transport,
                               const BuiltBackend& backend, AgentCore& core,
                               Persistence& persistence, std::shared_ptr<AgentMetrics> m,
                               const sigset_t& stop_signals) {
  std::atomic<const Registration*> registered_via{nullptr};
  absl::StatusOr<std::string> broker_target = BrokerTarget("broker", o.broker);
  if (!broker_target.ok()) return WithStartEvent("bad_flag", broker_target.status());
  ASSIGN_OR_RETURN(metrics::MetricsServer metrics_server,
                   StartMetrics(o, std::move(m), AgentHealth(&registered_via)));
  AgentService service(&core, transport);
  absl::StatusOr<ServingApi> api = ServeAgentApi(o.listen, transport, &service);
  if (!api.ok()) return WithStartEvent("listen_failed", api.status());
  const std::string advertise = o.advertise_address.empty()
                                    ? JoinHostPort(o.listen_host_port.host, api->port)
                                    : o.advertise_address;
  LogServing(o, transport, backend, api->port, advertise);
  if (!o.port_file.empty()) {
    if (absl::Status s = WriteFileAtomically(o.port_file, absl::StrCat(api->port, "\n"));
        !s.ok()) {
      api->server->Shutdown();
      return WithStartEvent("port_file_failed", s);
    }
  }

  // The launcher socket: tokens -> sessions -> memory -> mappings.
  LauncherSessions sessions(&core, o.launcher_sessions);
  absl::StatusOr<std::unique_ptr<LauncherServer>> launcher_server =
      LauncherServer::Start(o.launcher_server, &sessions);
  if (!launcher_server.ok()) {
    api->server->Shutdown();
    return WithStartEvent("launcher_socket_failed", launcher_server.status());
  }
  LogLauncherSocket(o);

  RegistrationOptions options;
  options.agent_address = advertise;
  options.launcher_socket = o.launcher_server.socket_path;
  options.agent_version = kAgentVersion;
  options.broker_address = o.broker;
  options.max_backoff = o.registration_max_backoff;
  Registration registration(options, &core,
                            NewNodeRegistryStub(*broker_target, transport, options.max_backoff));
  registration.Start();
  registered_via = &registration;
  NotifyReady(absl::StrCat("serving; registering with the broker at ", o.broker));
  auto watchdog = std::make_unique<WatchdogPinger>(&core);

  const int signal_number = WaitForStopSignal(stop_signals);
  LogEvent(LogLevel::kInfo, "stopping", {{"signal", strsignal(signal_number)}});
  NotifyStopping(persistence.keeps_kernel_objects() ? "stopping; kernel state kept for the next run"
                                                    : "stopping; ending every session");
  watchdog.reset();
  registered_via = nullptr;
  Stop(o, core, persistence, registration, **launcher_server, *api->server, metrics_server);
  return absl::OkStatus();
}

// Builds the backend, the persistence and AgentCore, restores what the last
// run left, then serves until stopped. Errors carry their start event.
absl::Status Run(const AgentOptions& o, const TransportConfig& transport,
                 const sigset_t& stop_signals) {
  // Metrics: kernel errors are counted at the KernelOps seam, maps and unmaps
  // timed by AgentCore, state gauges read from AgentCore at scrape time.
  auto agent_metrics = std::make_shared<AgentMetrics>();
  CountingKernelOps kernel_ops(
      LinuxKernelOps::Get(),
      [m = agent_metrics.get()](absl::string_view call, absl::string_view err) {
        m->CountKernelError(call, err);
      });
  absl::StatusOr<std::string> kind = ChooseBackend(o.backend.backend, ProbeHostIommu());
  if (!kind.ok()) return WithStartEvent("backend_refused", kind.status());
  absl::StatusOr<BackendPlan> plan = PlanBackend(o.backend, *kind);
  if (!plan.ok()) return WithStartEvent("bad_flag", plan.status());
  ASSIGN_OR_RETURN(const BuiltBackend backend, BuildBackend(*plan, &kernel_ops));
  RaiseFdLimitForLaunchers(o);
  agent_metrics->SetBackend(backend.backend->kind(), backend.default_mapping_limit);

  absl::StatusOr<std::unique_ptr<Persistence>> persistence = Persistence::Open(o.persistence);
  if (!persistence.ok()) return WithStartEvent("persistence_failed", persistence.status());
  AgentCore core(o.node, backend.backend.get(), agent_metrics.get());
  core.SetMaxMappingsPerTenant(o.max_mappings_per_tenant);
  core.SetKernelPinLimits(backend.memlock.per_tenant_bytes, backend.memlock.node_bytes);
  // Before anything is served: the broker must see what the kernel holds.
  if (absl::Status s = (*persistence)->RestoreAndStart(core, absl::Now(), MapGuestMemory);
      !s.ok()) {
    return WithStartEvent("restore_failed", s);
  }
  // Declared after `core`, so it runs before `core` is destroyed: the
  // sweeper thread calls into the core.
  absl::Cleanup stop_sweeper = [&persistence] { (*persistence)->StopSweeper(); };
  agent_metrics->SetStatsSource([&core] { return core.Stats(); });
  agent_metrics->SetKernelPinFiles("/proc/self/status", "/proc/vmstat");
  agent_metrics->WatchCertificates(TransportCertFiles(transport));
  return ServeUntilStopped(o, transport, backend, core, **persistence, agent_metrics,
                           stop_signals);
}

int Main(int argc, char** argv) {
  // Before any thread exists, so that every thread inherits the mask and
  // only WaitForStopSignal receives the stop signals.
  const sigset_t stop_signals = BlockStopSignals();
  InstallFlagsUsage("iommu-agent",
                    "owns a node's IOMMU file descriptors, maps guest memory for VM launchers "
                    "and bills pinned pages.\n"
                    "Usage: iommu-agent --node=NAME --broker=HOST:PORT "
                    "--tls-cert=agent-NAME.crt --tls-key=agent-NAME.key --tls-ca=ca.crt "
                    "(or --insecure) [--backend=sim --sim-devices=...]");
  ParseFlags(argc, argv);
  // Abseil's lock-order graph is on by default in this build of the library
  // and costs a graph lookup on every lock of every call; the broker turns
  // it off too (--mutex_deadlock_detection). Tests keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  SetLogSource("agent");
  absl::StatusOr<AgentOptions> options = ParseAgentOptions(FlagsFromCommandLine(), LookupGroupId);
  if (!options.ok()) return Fail("bad_flag", options.status());
  SetMinLogLevel(options->log_level);
  // The agent's certificate must name this node: the broker accepts its
  // registration only for the node in the certificate.
  absl::StatusOr<TransportConfig> transport =
      TransportConfigFromFlags(Identity{Role::kAgent, options->node});
  if (!transport.ok()) return Fail("bad_flag", transport.status());
  if (transport->insecure) {
    LogEvent(LogLevel::kWarning, "insecure_transport",
             {{"warning", "--insecure: plaintext gRPC, no authentication; development only"}});
  }
  const absl::Status run = Run(*options, *transport, stop_signals);
  if (!run.ok()) return Fail(StartEventOf(run, "start_failed"), run);
  return 0;
}

}  // namespace
}  // namespace agent
}  // namespace iommu

int main(int argc, char** argv) { return iommu::agent::Main(argc, argv); }
