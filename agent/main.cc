// iommu-agent: the node agent binary. Only flags and wiring; every piece of
// logic lives in the libraries of this package.
#include <grp.h>
#include <unistd.h>
#include <signal.h>
#include <pthread.h>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/agent_core.h"
#include "agent/agent_metrics.h"
#include "agent/agent_service.h"
#include "agent/counting_kernel_ops.h"
#include "agent/launcher_server.h"
#include "agent/launcher_sessions.h"
#include "agent/log.h"
#include "agent/peer_policy.h"
#include "agent/guest_memory.h"
#include "agent/persistence.h"
#include "agent/registration.h"
#include "agent/iommufd_backend.h"
#include "agent/linux_kernel_ops.h"
#include "agent/sim_backend.h"
#include "agent/sysfs_devices.h"
#include "agent/vfio_type1_backend.h"
#include "agent/startup.h"
#include "agent/version.h"
#include "common/tls_flags.h"
#include "common/metrics.h"
#include "common/validation.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

ABSL_FLAG(std::string, node, "",
          "Required. This node's name: 1-63 of [a-z0-9.-], starting with a "
          "letter or digit.");
ABSL_FLAG(std::string, broker, "", "Required. The broker's host:port.");
ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port for the agent's gRPC API; port 0 picks a free port.");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port the broker dials to reach this agent. Default: the "
          "--listen host with the bound port.");
ABSL_FLAG(std::string, backend, "auto", "auto, iommufd, vfio or sim.");
ABSL_FLAG(std::string, state_dir, "/var/lib/iommu-agent",
          "Directory of the agent's journal (containers, sessions, memory, mappings), so a "
          "restarted agent re-adopts what the kernel still holds. One agent per directory. "
          "Empty: no journal; a restart then forgets every container and session.");
ABSL_FLAG(std::string, fd_store, "auto",
          "Where the IOMMU and memory fds outlive the agent process: systemd (the unit's fd "
          "store; needs FileDescriptorStoreMax=), holder:/path.sock (an iommu-fdholder "
          "process, e.g. a sidecar), none (a restart loses the containers; their billing stays "
          "until the kernel releases them), or auto (systemd when $NOTIFY_SOCKET is set, else "
          "none).");
ABSL_FLAG(absl::Duration, session_resume_timeout, absl::Seconds(60),
          "After a restart, how long a launcher session waits for its launcher to resume it "
          "(ResumeSession) before it is closed and what it mapped is unmapped.");
ABSL_FLAG(std::string, sim_devices, "",
          "With --backend=sim: fake devices, "
          "ADDRESS=VENDOR:DEVICE@GROUP[!DRIVER] joined by ',', e.g. "
          "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6");
ABSL_FLAG(std::string, sim_config, "",
          "With --backend=sim: a file of fake devices, one spec per line, "
          "'#' comments.");
ABSL_FLAG(uint32_t, sim_max_mappings, 65535,
          "With --backend=sim: the mapping limit per container (0: none).");
ABSL_FLAG(std::string, launcher_socket, "/run/iommu-agent/launcher.sock",
          "The unix socket for VM launchers (reported to the broker only, "
          "for now).");
ABSL_FLAG(std::string, launcher_socket_mode, "0660",
          "Octal permissions of the launcher socket; who may connect is who may open it.");
ABSL_FLAG(std::string, launcher_group, "",
          "Group (name or gid) that owns the launcher socket, e.g. the group VM launchers run "
          "as. Empty: the agent's own group.");
ABSL_FLAG(std::string, launcher_allowed_uids, "",
          "Comma-separated uids allowed on the launcher socket (checked with SO_PEERCRED). "
          "Empty: any uid the socket's permissions let in.");
ABSL_FLAG(uint32_t, max_launcher_connections, 64,
          "Launcher connections (and so sessions) held at once.");
ABSL_FLAG(std::string, launcher_allowed_gids, "",
          "Comma-separated gids (numbers or group names) allowed on the launcher socket, checked "
          "against the peer's effective gid from SO_PEERCRED (supplementary groups do not "
          "count). With --launcher_allowed_uids a peer must pass both. Empty: any gid.");
ABSL_FLAG(uint32_t, max_sessions_per_peer, iommu::agent::kDefaultMaxSessionsPerPeer,
          "Launcher connections (each holds at most one session) one uid may hold at once; "
          "more are refused at connect with RESOURCE_EXHAUSTED. At least 1. Raise it to "
          "--max_launcher_connections when every launcher runs as one uid.");
ABSL_FLAG(absl::Duration, launcher_session_open_timeout, absl::Seconds(5),
          "A launcher connection that has not opened a session this long after connecting is "
          "closed (DEADLINE_EXCEEDED), so idle connections cannot hold slots. Positive.");
ABSL_FLAG(uint32_t, max_sessions_per_tenant, 16,
          "Launcher sessions one tenant may hold on this node at once, whatever uids its "
          "launchers run as; more are refused with RESOURCE_EXHAUSTED. At least 1.");
ABSL_FLAG(uint64_t, max_memory_bytes_per_tenant, uint64_t{8} << 40,
          "Bytes of guest memory the sessions of one tenant may register on this node "
          "together; more is refused with RESOURCE_EXHAUSTED. At least 4096.");
ABSL_FLAG(uint64_t, max_mappings_per_tenant, iommu::agent::kDefaultMaxMappingsPerTenant,
          "DMA mappings the sessions of one tenant may hold on this node at once; more are "
          "refused with RESOURCE_EXHAUSTED. At least 1.");
ABSL_FLAG(std::optional<uint64_t>, kernel_pin_bytes_per_tenant, std::nullopt,
          "Bytes of pins the kernel may count for one tenant's mappings on this node: each "
          "mapping's full size, however many mappings pin the same page. Maps past it are "
          "refused with RESOURCE_EXHAUSTED. Required with a real backend when RLIMIT_MEMLOCK is "
          "finite and the agent lacks CAP_IPC_LOCK (at most the limit; the node as a whole is "
          "then also kept under the limit); optional otherwise. Greater than 0. Ignored with "
          "--backend=sim (no kernel pins).");
ABSL_FLAG(uint64_t, replay_cache_per_tenant, iommu::ReplayCacheLimits().per_tenant,
          "Used launcher token ids of one tenant remembered until they expire; past it that "
          "tenant's new tokens are refused with RESOURCE_EXHAUSTED (never forgotten early, "
          "which would allow replay). At least 1.");
ABSL_FLAG(uint64_t, replay_cache_max, iommu::ReplayCacheLimits().total,
          "Used launcher token ids remembered in all (a memory bound, about 150 bytes each); "
          "at least --replay_cache_per_tenant.");
ABSL_FLAG(uint64_t, max_session_memory_bytes, uint64_t{1} << 40,
          "Bytes of guest memory one launcher session may register (the sum of its memory "
          "objects' sizes); more is refused with RESOURCE_EXHAUSTED. At least 4096.");
ABSL_FLAG(uint32_t, max_session_memory_objects, 64,
          "Memory objects (fds) one launcher session may register; each holds an fd and a "
          "mapping in the agent. At least 1.");
ABSL_FLAG(std::string, devices, "",
          "Real backends: the PCI devices this agent may manage, as addresses "
          "(0000:00:04.0), vendor:device (1234:11e8) or vendor:* entries, comma-separated. "
          "Devices not listed are never touched. Required with --backend=iommufd|vfio|auto.");
ABSL_FLAG(bool, manage_drivers, false,
          "Real backends: bind managed devices to vfio-pci (driver_override) when a container "
          "takes them and give them back to their old driver when it is destroyed. Without it, "
          "only devices already bound to vfio-pci are assignable.");
ABSL_FLAG(absl::Duration, registration_max_backoff, absl::Seconds(1),
          "Longest wait between attempts to reach the broker (full jitter below it; "
          "also never above the broker's heartbeat interval).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound gRPC port is written there once serving.");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error.");
ABSL_FLAG(std::string, metrics_address, "",
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
  return 1;
}

int Main(int argc, char** argv) {
  // Block the stop signals before any thread exists, so that every thread
  // inherits the mask and only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::SetProgramUsageMessage(
      "iommu-agent --node=NAME --broker=HOST:PORT "
      "--tls_cert=agent-NAME.crt --tls_key=agent-NAME.key --tls_ca=ca.crt (or --insecure) "
      "[--backend=sim --sim_devices=...]");
  absl::ParseCommandLine(argc, argv);

  SetLogSource("agent");
  absl::StatusOr<LogLevel> level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return Fail("bad_flag", level.status());
  if (absl::GetFlag(FLAGS_registration_max_backoff) <= absl::ZeroDuration()) {
    return Fail("bad_flag",
                absl::InvalidArgumentError("registration_max_backoff: must be positive"));
  }
  SetMinLogLevel(*level);

  const std::string node = absl::GetFlag(FLAGS_node);
  if (absl::Status s = ValidateNodeName("node", node); !s.ok()) {
    return Fail("bad_flag", s);
  }
  // The agent's certificate must name this node: the broker accepts its
  // registration only for the node in the certificate.
  absl::StatusOr<TransportConfig> transport =
      TransportConfigFromFlags(Identity{Role::kAgent, node});
  if (!transport.ok()) return Fail("bad_flag", transport.status());
  if (transport->insecure) {
    LogEvent(LogLevel::kWarning, "insecure_transport",
             {{"warning", "--insecure: plaintext gRPC, no authentication; development only"}});
  }
  const std::string broker = absl::GetFlag(FLAGS_broker);
  if (broker.empty()) {
    return Fail("bad_flag", absl::InvalidArgumentError(
                                "broker: required, the broker's host:port"));
  }
  if (absl::StatusOr<HostPort> b = SplitHostPort("broker", broker); !b.ok()) {
    return Fail("bad_flag", b.status());
  }
  const std::string listen = absl::GetFlag(FLAGS_listen);
  absl::StatusOr<HostPort> listen_hp = SplitHostPort("listen", listen);
  if (!listen_hp.ok()) return Fail("bad_flag", listen_hp.status());
  std::string advertise = absl::GetFlag(FLAGS_advertise_address);
  if (!advertise.empty()) {
    if (absl::StatusOr<HostPort> a = SplitHostPort("advertise_address", advertise);
        !a.ok()) {
      return Fail("bad_flag", a.status());
    }
  } else if (IsWildcardHost(listen_hp->host)) {
    return Fail("bad_flag",
                absl::InvalidArgumentError(absl::StrCat(
                    "advertise_address: required when --listen=", listen,
                    " accepts on every interface (the broker cannot dial ",
                    listen_hp->host, ")")));
  }

  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (!metrics_address.empty()) {
    if (absl::Status s = metrics::ValidateMetricsAddress("metrics_address", metrics_address);
        !s.ok()) {
      return Fail("bad_flag", s);
    }
  }
  // Metrics: kernel errors are counted at the KernelOps seam, maps and unmaps
  // timed by AgentCore, state gauges read from AgentCore at scrape time.
  auto agent_metrics = std::make_shared<AgentMetrics>();
  CountingKernelOps kernel_ops(
      LinuxKernelOps::Get(),
      [m = agent_metrics.get()](absl::string_view call, absl::string_view err) {
        m->CountKernelError(call, err);
      });

  absl::StatusOr<std::string> kind =
      ChooseBackend(absl::GetFlag(FLAGS_backend), ProbeHostIommu());
  if (!kind.ok()) return Fail("backend_refused", kind.status());

  std::unique_ptr<SysfsDevices> sysfs;  // Outlives the backend.
  std::unique_ptr<Backend> backend;
  const bool simulated = *kind == "sim";
  MemlockDecision memlock;  // Sim: no kernel pins, no bounds.
  size_t device_count = 0;
  if (simulated) {
    absl::StatusOr<std::vector<SimDeviceSpec>> specs =
        ParseSimDevices(absl::GetFlag(FLAGS_sim_devices));
    if (!specs.ok()) return Fail("bad_flag", specs.status());
    if (const std::string path = absl::GetFlag(FLAGS_sim_config); !path.empty()) {
      absl::StatusOr<std::vector<SimDeviceSpec>> more = ReadSimConfigFile(path);
      if (!more.ok()) return Fail("bad_flag", more.status());
      specs->insert(specs->end(), more->begin(), more->end());
    }
    Geometry geometry = DefaultX86Geometry();
    geometry.max_mappings = absl::GetFlag(FLAGS_sim_max_mappings);
    device_count = specs->size();
    absl::StatusOr<std::unique_ptr<SimBackend>> sim =
        SimBackend::Create(*std::move(specs), geometry);
    if (!sim.ok()) return Fail("bad_flag", sim.status());
    backend = *std::move(sim);
    std::fputs(SimBanner().c_str(), stderr);
    if (device_count == 0) {
      LogEvent(LogLevel::kWarning, "sim_no_devices",
               {{"hint", "pass --sim_devices or --sim_config"}});
    }
  } else {
    absl::StatusOr<DeviceFilter> filter = ParseDeviceFilter(absl::GetFlag(FLAGS_devices));
    if (!filter.ok()) return Fail("bad_flag", filter.status());
    if (filter->addresses.empty() && filter->ids.empty()) {
      return Fail("bad_flag", absl::InvalidArgumentError(
                                  "devices: required with a real backend: the PCI devices "
                                  "(addresses or vendor:device) this agent may manage"));
    }
    SysfsOptions sysfs_options;
    sysfs_options.managed = absl::GetFlag(FLAGS_manage_drivers);
    sysfs = std::make_unique<SysfsDevices>(*std::move(filter), sysfs_options);
    absl::StatusOr<MemlockDecision> pin =
        EnsureCanPinMemory(absl::GetFlag(FLAGS_kernel_pin_bytes_per_tenant));
    if (!pin.ok()) return Fail("memlock_refused", pin.status());
    LogEvent(LogLevel::kInfo, "memlock", {{"state", pin->description}});
    memlock = *std::move(pin);
    if (*kind == "iommufd") {
      absl::StatusOr<std::unique_ptr<IommufdBackend>> real = IommufdBackend::Create(
          &kernel_ops, sysfs.get(), static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
      if (!real.ok()) return Fail("backend_failed", real.status());
      backend = *std::move(real);
    } else {
      absl::StatusOr<std::unique_ptr<VfioType1Backend>> real =
          VfioType1Backend::Create(&kernel_ops, sysfs.get());
      if (!real.ok()) return Fail("backend_failed", real.status());
      backend = *std::move(real);
    }
    absl::StatusOr<std::vector<BackendDevice>> found = backend->ListDevices();
    if (!found.ok()) return Fail("backend_failed", found.status());
    device_count = found->size();
  }

  // The launcher socket's options: checked before anything is served, so a
  // bad flag stops the start before the port is published.
  LauncherServerOptions launcher_options;
  launcher_options.socket_path = absl::GetFlag(FLAGS_launcher_socket);
  launcher_options.max_connections = absl::GetFlag(FLAGS_max_launcher_connections);
  launcher_options.session_open_timeout = absl::GetFlag(FLAGS_launcher_session_open_timeout);
  LauncherSessionOptions session_options;
  {
    const std::string mode = absl::GetFlag(FLAGS_launcher_socket_mode);
    char* end = nullptr;
    const unsigned long m = std::strtoul(mode.c_str(), &end, 8);
    if (mode.empty() || *end != '\0' || m > 0777) {
      return Fail("bad_flag", absl::InvalidArgumentError(absl::StrCat(
                                  "launcher_socket_mode: must be octal permissions like 0660, "
                                  "got \"", mode, "\"")));
    }
    launcher_options.socket_mode = static_cast<mode_t>(m);
    const std::string group = absl::GetFlag(FLAGS_launcher_group);
    if (!group.empty()) {
      gid_t gid;
      if (absl::SimpleAtoi(group, &gid)) {
        launcher_options.socket_gid = gid;
      } else if (struct group* g = getgrnam(group.c_str()); g != nullptr) {
        launcher_options.socket_gid = g->gr_gid;
      } else {
          return Fail("bad_flag", absl::InvalidArgumentError(absl::StrCat(
                                    "launcher_group: no group \"", group, "\"")));
      }
    }
    absl::StatusOr<std::set<uint32_t>> uids =
        ParseIdList("launcher_allowed_uids", absl::GetFlag(FLAGS_launcher_allowed_uids));
    absl::StatusOr<std::set<uint32_t>> gids = ParseIdList(
        "launcher_allowed_gids", absl::GetFlag(FLAGS_launcher_allowed_gids),
        [](const std::string& name) -> std::optional<uint32_t> {
          struct group* g = getgrnam(name.c_str());
          if (g == nullptr) return std::nullopt;
          return g->gr_gid;
        });
    absl::Status ids = !uids.ok() ? uids.status() : gids.status();
    if (ids.ok()) {
      session_options.allowed_uids.insert(uids->begin(), uids->end());
      session_options.allowed_gids.insert(gids->begin(), gids->end());
      session_options.max_sessions_per_peer = absl::GetFlag(FLAGS_max_sessions_per_peer);
      session_options.max_memory_bytes = absl::GetFlag(FLAGS_max_session_memory_bytes);
      session_options.max_memory_objects = absl::GetFlag(FLAGS_max_session_memory_objects);
      session_options.max_sessions_per_tenant = absl::GetFlag(FLAGS_max_sessions_per_tenant);
      session_options.max_memory_bytes_per_tenant =
          absl::GetFlag(FLAGS_max_memory_bytes_per_tenant);
      session_options.replay.per_tenant = absl::GetFlag(FLAGS_replay_cache_per_tenant);
      session_options.replay.total = absl::GetFlag(FLAGS_replay_cache_max);
      ids = ValidateLauncherSessionOptions(session_options);
      if (ids.ok() && absl::GetFlag(FLAGS_max_mappings_per_tenant) == 0) {
        ids = absl::InvalidArgumentError("max_mappings_per_tenant: must be at least 1");
      }
      if (ids.ok() && absl::GetFlag(FLAGS_launcher_session_open_timeout) <= absl::ZeroDuration()) {
        ids = absl::InvalidArgumentError("launcher_session_open_timeout: must be positive");
      }
    }
    if (!ids.ok()) {
      return Fail("bad_flag", ids);
    }
    // Launchers at these limits must not be able to run the agent out of
    // fds: that would stop its gRPC server and backend too.
    absl::StatusOr<std::string> nofile = EnsureFdLimit(
        LauncherFdBudget(launcher_options.max_connections, session_options.max_memory_objects,
                         kMaxLauncherPacketFds) +
        kAgentFdReserve);
    if (nofile.ok()) {
      LogEvent(LogLevel::kInfo, "nofile", {{"state", *nofile}});
    } else {
      LogEvent(LogLevel::kWarning, "nofile", {{"error", nofile.status().message()}});
    }
  }
  {
    // The mapping limit to report before any container exists.
    uint64_t default_limit = 0;
    if (simulated) {
      default_limit = absl::GetFlag(FLAGS_sim_max_mappings);
    } else if (backend->kind() == "vfio-type1") {
      default_limit = ReadType1DmaEntryLimit().value_or(0);
    }
    agent_metrics->SetBackend(backend->kind(), default_limit);
  }
  PersistenceOptions persistence_options;
  persistence_options.state_dir = absl::GetFlag(FLAGS_state_dir);
  persistence_options.fd_store = absl::GetFlag(FLAGS_fd_store);
  persistence_options.resume_timeout = absl::GetFlag(FLAGS_session_resume_timeout);
  absl::StatusOr<std::unique_ptr<Persistence>> persistence =
      Persistence::Open(persistence_options);
  if (!persistence.ok()) return Fail("persistence_failed", persistence.status());
  AgentCore core(node, backend.get(), agent_metrics.get());
  core.SetMaxMappingsPerTenant(absl::GetFlag(FLAGS_max_mappings_per_tenant));
  core.SetKernelPinLimits(memlock.per_tenant_bytes, memlock.node_bytes);
  {
    // Before anything is served: the broker must see what the kernel holds.
    absl::StatusOr<RestoreReport> restored =
        (*persistence)->RestoreInto(core, absl::Now(), MapGuestMemory);
    if (!restored.ok()) return Fail("restore_failed", restored.status());
    LogEvent(restored->problems.empty() ? LogLevel::kInfo : LogLevel::kWarning, "restored",
             {{"persistence", (*persistence)->Describe()},
              {"containers_adopted", restored->containers_adopted},
              {"containers_orphaned", restored->containers_orphaned},
              {"sessions", restored->sessions_restored},
              {"memory", restored->memory_restored},
              {"memory_fds_lost", restored->memory_fds_lost},
              {"mappings", restored->mappings_restored},
              {"stray_fds_removed", restored->stray_fds_removed}});
    for (const std::string& problem : restored->problems) {
      LogEvent(LogLevel::kError, "restore_problem", {{"problem", problem}});
    }
    if (!(*persistence)->keeps_kernel_objects()) {
      LogEvent(LogLevel::kWarning, "restart_loses_containers",
               {{"persistence", (*persistence)->Describe()},
                {"hint", "run under systemd with FileDescriptorStoreMax= or pass "
                         "--fd_store=holder:PATH with an iommu-fdholder, so containers and "
                         "guests' DMA survive an agent restart"}});
    }
    (*persistence)->StartSweeper(&core);
  }
  agent_metrics->SetStatsSource([&core] { return core.Stats(); });
  agent_metrics->SetKernelPinFiles("/proc/self/status", "/proc/vmstat");
  // /metrics before the API: a port that cannot be bound stops the start.
  metrics::MetricsServer metrics_server;
  if (!metrics_address.empty()) {
    absl::StatusOr<metrics::MetricsServer> started =
        metrics::StartMetricsServer("metrics_address", metrics_address, agent_metrics);
    if (!started.ok()) return Fail("metrics_failed", started.status());
    metrics_server = *std::move(started);
    LogEvent(LogLevel::kInfo, "metrics_serving",
             {{"address", metrics_address}, {"port", metrics_server.port}, {"path", "/metrics"}});
  }
  AgentService service(&core, *transport);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, MakeServerCredentials(*transport), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail("listen_failed", absl::UnavailableError(absl::StrCat(
                                     "listen: could not serve on ", listen)));
  }
  if (advertise.empty()) advertise = JoinHostPort(listen_hp->host, port);
  LogEvent(LogLevel::kInfo, "serving",
           {{"node", node},
            {"listen", listen},
            {"port", port},
            {"advertise_address", advertise},
            {"backend", *kind},
            {"devices", device_count},
            {"version", kAgentVersion},
            {"transport", DescribeTransport(*transport)},
            {"simulated", simulated},
            {"sim_warning", simulated ? "SIMULATED BACKEND: no real IOMMU, no real DMA, no "
                                        "pinned memory"
                                      : ""}});
  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    if (absl::Status s = WriteFileAtomically(path, absl::StrCat(port, "\n")); !s.ok()) {
      server->Shutdown();
      return Fail("port_file_failed", s);
    }
  }

  // The launcher socket: tokens -> sessions -> memory -> mappings.
  LauncherSessions sessions(&core, session_options);
  absl::StatusOr<std::unique_ptr<LauncherServer>> launcher_server =
      LauncherServer::Start(launcher_options, &sessions);
  if (!launcher_server.ok()) {
    server->Shutdown();
    return Fail("launcher_socket_failed", launcher_server.status());
  }
  LogEvent(LogLevel::kInfo, "launcher_socket_listening",
           {{"path", launcher_options.socket_path},
            {"mode", absl::GetFlag(FLAGS_launcher_socket_mode)},
            {"allowed_uids", absl::GetFlag(FLAGS_launcher_allowed_uids)},
            {"allowed_gids", absl::GetFlag(FLAGS_launcher_allowed_gids)},
            {"max_connections", launcher_options.max_connections},
            {"max_sessions_per_peer", session_options.max_sessions_per_peer},
            {"max_session_memory_bytes", session_options.max_memory_bytes},
            {"max_session_memory_objects", session_options.max_memory_objects},
            {"session_open_timeout", absl::FormatDuration(launcher_options.session_open_timeout)},
            {"max_sessions_per_tenant", session_options.max_sessions_per_tenant},
            {"max_memory_bytes_per_tenant", session_options.max_memory_bytes_per_tenant},
            {"max_mappings_per_tenant", absl::GetFlag(FLAGS_max_mappings_per_tenant)},
            {"replay_cache_per_tenant", session_options.replay.per_tenant},
            {"replay_cache_max", session_options.replay.total}});

  RegistrationOptions options;
  options.agent_address = advertise;
  options.launcher_socket = absl::GetFlag(FLAGS_launcher_socket);
  options.agent_version = kAgentVersion;
  options.broker_address = broker;
  options.max_backoff = absl::GetFlag(FLAGS_registration_max_backoff);
  // gRPC's own reconnect backoff grows to minutes (1 s x 1.6 per attempt):
  // after an outage of a few seconds the channel itself would wait longer
  // than the registration loop, so it is capped the same way.
  grpc::ChannelArguments channel_args;
  const int reconnect_ms =
      static_cast<int>(absl::ToInt64Milliseconds(options.max_backoff));
  channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, reconnect_ms);
  channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, reconnect_ms);
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, reconnect_ms);
  Registration registration(
      options, &core,
      v1::NodeRegistry::NewStub(grpc::CreateCustomChannel(
          broker, MakeChannelCredentials(*transport, Identity{Role::kBroker, ""}),
          channel_args)));
  registration.Start();

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LogEvent(LogLevel::kInfo, "stopping", {{"signal", strsignal(signal_number)}});
  registration.Stop();
  if ((*persistence)->keeps_kernel_objects()) {
    // An upgrade or a restart: the containers, sessions and guests' DMA stay
    // as they are in the kernel and the journal for the next run to adopt.
    core.KeepStateForRestart();
    LogEvent(LogLevel::kInfo, "keeping_state_for_restart",
             {{"persistence", (*persistence)->Describe()}});
  }
  // Without kept state, closing the launcher socket ends every session:
  // their mappings are unmapped and released before the process exits.
  (*launcher_server)->Stop();
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  server->Wait();
  metrics_server.http.reset();  // Scrapes read AgentCore: stop them first.
  LogEvent(LogLevel::kInfo, "stopped", {{"node", node}});
  return 0;
}

}  // namespace
}  // namespace agent
}  // namespace iommu

int main(int argc, char** argv) { return iommu::agent::Main(argc, argv); }
