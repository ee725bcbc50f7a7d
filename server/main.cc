// iommu-broker: the central broker daemon. Parses flags and wires the store,
// the broker logic and the gRPC services; all logic lives in libraries.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/cert_expiry_gauge.h"
#include "common/flag_spelling.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc_metrics.h"
#include "common/service_notify.h"
#include "common/status_macros.h"
#include "common/tls_flags.h"
#include "common/version.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/agent_client.h"
#include "server/authz.h"
#include "server/broker.h"
#include "server/broker_metrics.h"
#include "server/broker_service.h"
#include "server/leader_forwarder.h"
#include "server/open_store.h"
#include "server/private_file.h"
#include "server/store_spec.h"
#include "server/timed_store.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7400",
          "host:port for the gRPC API (Broker, NodeRegistry, health, reflection); port 0 picks "
          "a free port (see --port-file)");
ABSL_FLAG(std::string, db, "/var/lib/iommu-broker/broker.db",
          "SQLite database file of the embedded store (created if missing); the same as "
          "--store=sqlite:FILE");
ABSL_FLAG(std::string, store, "",
          "where the state lives: sqlite:FILE (the embedded store; the default, FILE from --db), "
          "sqlite-kv:FILE (the versioned store, etcd's data model, in one SQLite file), or "
          "etcd://HOST:PORT[,HOST:PORT...] (an etcd v3 cluster; replicas on one --etcd-prefix "
          "elect one leader, the others wait to take over)");
ABSL_FLAG(std::string, etcd_prefix, "/iommu-broker",
          "with --store=etcd://: the key prefix of this broker's state (one prefix per fleet)");
ABSL_FLAG(std::string, etcd_cert, "",
          "with --store=etcd://: client certificate for etcd (mTLS). Re-read every "
          "--tls-reload-seconds, like --tls-cert, so rotating is replacing the files; a key that "
          "does not match it is refused (logged) and the last good pair stays in use");
ABSL_FLAG(std::string, etcd_key, "", "with --store=etcd://: its private key (re-read with it)");
ABSL_FLAG(std::string, etcd_ca, "",
          "with --store=etcd://: CA to verify etcd's certificate, which must also name the "
          "endpoint's host (re-read like --etcd-cert); without --etcd-ca, --etcd-cert and "
          "--etcd-key: plaintext");
ABSL_FLAG(int64_t, etcd_max_txn_ops, 128,
          "with --store=etcd://: the cluster's --max-txn-ops; larger commit groups are split "
          "between changes, never inside one");
ABSL_FLAG(std::string, replica_name, "",
          "with --store=etcd://: this replica's name, shown as the leader (default: host name)");
ABSL_FLAG(std::string, advertise_address, "",
          "with --store=etcd://: host:port at which the other replicas reach this one's API; a "
          "replica that does not lead forwards the calls it takes to the leader's (default: "
          "--listen's host, or the host name when it listens on every address, and the bound "
          "port)");
ABSL_FLAG(int64_t, leader_ttl_seconds, 2,
          "with --store=etcd://: the leader's lease (at least 2); a leader that dies without "
          "stopping blocks writes up to this long, and one that cannot renew it within this long "
          "loses the lead");
ABSL_FLAG(std::string, port_file, "",
          "if set, write the bound port here once serving (for scripts and tests)");
ABSL_FLAG(int64_t, heartbeat_interval_ms, 1000, "how often agents are told to heartbeat");
ABSL_FLAG(int64_t, max_concurrent_registrations, 8,
          "node registrations worked on at once; the others wait their turn, so that a whole "
          "fleet registering after a broker restart does not hold up heartbeats (0: no bound)");
ABSL_FLAG(int64_t, node_timeout_ms, 5000,
          "a node whose last heartbeat is older than this becomes UNAVAILABLE");
ABSL_FLAG(int64_t, agent_timeout_ms, 10000, "deadline of each broker-to-agent call");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(int64_t, shutdown_grace_ms, 5000,
          "on SIGTERM/SIGINT, how long in-flight RPCs may take to finish");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port serving Prometheus metrics (iommu_broker_*, docs/METRICS.md) over HTTP at "
          "/metrics, e.g. 0.0.0.0:9400; empty: no metrics endpoint");

ABSL_FLAG(int64_t, max_remembered_answers_per_caller, 1000000,
          "Answers to mutations with a request_id that one caller may have remembered at once "
          "(each is kept 24 h for retries); past it that caller's mutations with a request_id "
          "are refused with RESOURCE_EXHAUSTED, so no tenant can grow the store without bound. "
          "Each remembered answer also takes 47-94 bytes of the broker's memory (its index of "
          "request ids, server/request_index.h): 1000000 answers, about 50-90 MB. 0: no limit");
ABSL_FLAG(int64_t, max_remembered_answer_bytes_per_caller, int64_t{256} << 20,
          "The same bound in bytes of the store (each answer's request id, request fingerprint "
          "and response): answers range from ~100 bytes to tens of KiB, so the count alone would "
          "let one caller add gigabytes. Default 268435456 (256 MiB). 0: no limit");
ABSL_FLAG(uint32_t, max_inflight_per_caller, 64,
          "Calls of one caller (certificate identity) in flight at once; more are refused with "
          "RESOURCE_EXHAUSTED, so one tenant cannot hold every handler thread. 0: no limit");

ABSL_FLAG(int, idle_rpc_threads, 64,
          "RPC handler threads kept waiting for work after a burst of calls; fewer makes gRPC "
          "end threads after each burst and create them again for the next");
ABSL_FLAG(bool, mutex_deadlock_detection, false,
          "Check every absl::Mutex acquisition against a global lock-order graph (costly on "
          "every lock; for debugging)");

namespace {

// How often the housekeeper checks node liveness (and, every 240th time,
// expires remembered answers).
constexpr int64_t kHousekeepingPeriodMs = 250;
// /healthz fails when housekeeping has not completed for this long.
constexpr int64_t kHousekeeperStallMs = 30000;

std::string ReplicaName() {
  std::string name = absl::GetFlag(FLAGS_replica_name);
  if (name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    name = host;
  }
  return name;
}

// Replica names and addresses are published together in the leader key,
// split at the first space, and sent as call metadata: printable, no spaces.
absl::Status CheckPublishable(absl::string_view flag, absl::string_view value) {
  if (value.empty() || value.size() > 253) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": must be 1-253 characters"));
  }
  for (char c : value) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": \"", absl::CEscape(value),
                                                     "\" must be printable ASCII without spaces"));
    }
  }
  return absl::OkStatus();
}

// Where the other replicas reach this one: --advertise-address, or the
// host of --listen (the host name for a wildcard) with the bound port.
std::string AdvertiseAddress(const std::string& listen, int port) {
  std::string address = absl::GetFlag(FLAGS_advertise_address);
  if (!address.empty()) return address;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {};
    gethostname(name, sizeof(name) - 1);
    host = name;
  }
  return absl::StrCat(host, ":", port);
}

// Every store flag, read and checked once (INVALID_ARGUMENT names the flag).
// The etcd client's files are re-read every `tls_reload_interval`, as the
// broker's own (--tls-reload-seconds).
absl::StatusOr<iommu::StoreOptions> StoreOptionsFromFlags(absl::Duration tls_reload_interval) {
  iommu::StoreOptions o;
  ASSIGN_OR_RETURN(o.spec,
                   iommu::ParseStoreSpec(absl::GetFlag(FLAGS_store), absl::GetFlag(FLAGS_db)));
  o.etcd_prefix = absl::GetFlag(FLAGS_etcd_prefix);
  o.etcd_cert_file = absl::GetFlag(FLAGS_etcd_cert);
  o.etcd_key_file = absl::GetFlag(FLAGS_etcd_key);
  o.etcd_ca_file = absl::GetFlag(FLAGS_etcd_ca);
  o.etcd_tls_reload_interval = tls_reload_interval;
  o.etcd_max_txn_ops = absl::GetFlag(FLAGS_etcd_max_txn_ops);
  o.leader_ttl_seconds = absl::GetFlag(FLAGS_leader_ttl_seconds);
  o.replica_name = ReplicaName();
  RETURN_IF_ERROR(CheckPublishable("--replica-name", o.replica_name));
  if (!absl::GetFlag(FLAGS_advertise_address).empty()) {
    RETURN_IF_ERROR(
        CheckPublishable("--advertise-address", absl::GetFlag(FLAGS_advertise_address)));
  }
  o.answer_ttl = absl::Milliseconds(iommu::BrokerOptions().request_ttl_ms);
  return o;
}

// "sqlite", "sqlite-kv" or "etcd": the scheme of DescribeStoreSpec, never a
// path or an endpoint (a metric label).
std::string StoreKind(const iommu::StoreSpec& spec) {
  const std::string d = iommu::DescribeStoreSpec(spec);
  return d.substr(0, d.find(':'));
}

// Opens the store `o` names. On etcd this waits, as a standby, until this
// replica leads, telling `forwarder` who leads meanwhile; a stop signal ends
// the wait (CANCELLED). Losing leadership later stops the daemon (exit 1),
// so that its supervisor starts it again as a standby. Changes of leader
// seen meanwhile, etcd's round trips and fenced commits go to `metrics`.
absl::StatusOr<iommu::OpenedStore> OpenConfiguredStore(iommu::StoreOptions o, const sigset_t& stop,
                                                       std::atomic<int64_t>* alive_ms,
                                                       iommu::BrokerMetrics* metrics,
                                                       iommu::LeaderForwarder* forwarder) {
  o.observe_etcd_call = [metrics](absl::string_view op, absl::Duration d) {
    metrics->ObserveEtcdCall(op, d);
  };
  o.on_fenced = [metrics] { metrics->CountFencedWrite(); };
  const absl::Duration watchdog = iommu::WatchdogPingInterval();
  std::string last_seen;    // What the last poll said ("": etcd unreachable).
  std::string last_leader;  // The last leader seen.
  auto waiting = [&](absl::string_view value) {
    if (value != last_seen) {
      last_seen = std::string(value);
      const iommu::LeaderInfo leader = iommu::ParseLeaderValue(value);
      if (value.empty()) {
        // The leader may well still serve: keep forwarding to it.
        iommu::LogEvent(iommu::LogLevel::kWarning, "standby_store_unreachable",
                        {{"replica", o.replica_name}, {"store", DescribeStoreSpec(o.spec)}});
      } else {
        forwarder->SetLeader(leader);
        iommu::LogEvent(iommu::LogLevel::kInfo, "standby",
                        {{"leader", leader.name},
                         {"leader_address", leader.address},
                         {"replica", o.replica_name}});
        // The first leader seen was elected before this replica started.
        if (!last_leader.empty() && leader.name != last_leader) {
          metrics->CountLeaderChange(absl::Now());
        }
        last_leader = leader.name;
      }
    }
    if (watchdog > absl::ZeroDuration()) iommu::NotifyWatchdog();
    *alive_ms = absl::ToUnixMillis(absl::Now());
    sigset_t pending;
    sigpending(&pending);
    for (int sig : {SIGINT, SIGTERM}) {
      if (sigismember(&stop, sig) && sigismember(&pending, sig)) return false;
    }
    return true;
  };
  auto on_lost = [](const absl::Status& why) {
    iommu::LogEvent(iommu::LogLevel::kError, "leadership_lost", {{"error", why.message()}});
    kill(getpid(), SIGTERM);  // The stop path drains and exits 1.
  };
  ASSIGN_OR_RETURN(iommu::OpenedStore store, iommu::OpenStore(o, waiting, on_lost));
  if (store.leader != nullptr) {
    metrics->CountLeaderChange(absl::Now());
    iommu::LogEvent(iommu::LogLevel::kInfo, "leading",
                    {{"replica", o.replica_name},
                     {"fence_revision", store.leader->fence_revision()}});
  }
  return store;
}

// The broker's options from its flags (the store's part comes later, from
// the store this replica leads on). INVALID_ARGUMENT naming the flag and its
// rule for a value out of range, before anything starts: the options carry
// their flags' names (ValidateBrokerOptions).
absl::StatusOr<iommu::BrokerOptions> BrokerOptionsFromFlags() {
  iommu::BrokerOptions options;
  options.heartbeat_interval_ms = absl::GetFlag(FLAGS_heartbeat_interval_ms);
  options.node_timeout_ms = absl::GetFlag(FLAGS_node_timeout_ms);
  options.max_concurrent_registrations = absl::GetFlag(FLAGS_max_concurrent_registrations);
  options.liveness_check_interval_ms = kHousekeepingPeriodMs;
  options.max_remembered_answers_per_caller =
      absl::GetFlag(FLAGS_max_remembered_answers_per_caller);
  options.max_remembered_answer_bytes_per_caller =
      absl::GetFlag(FLAGS_max_remembered_answer_bytes_per_caller);
  if (absl::Status s = iommu::ValidateBrokerOptions(options); !s.ok()) {
    // "<option>: <rule>" -> "--<option-with-dashes>: <rule>".
    const absl::string_view message = s.message();
    const size_t colon = std::min(message.find(':'), message.size());
    return absl::InvalidArgumentError(absl::StrCat(
        "--", absl::StrReplaceAll(message.substr(0, colon), {{"_", "-"}}), message.substr(colon)));
  }
  return options;
}

// Starts the gRPC API on --listen: the services, health, reflection, and the
// RPC metrics interceptor. Null when it cannot listen.
std::unique_ptr<grpc::Server> StartApiServer(const iommu::TransportConfig& transport,
                                             iommu::BrokerService* broker_service,
                                             iommu::NodeRegistryService* registry_service,
                                             iommu::BrokerMetrics* metrics, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // The synchronous server creates a thread when every poller is busy and
  // ends pollers beyond MAX_POLLERS when idle; a low maximum turns each burst
  // of concurrent calls into thread creations.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                              std::max(2, absl::GetFlag(FLAGS_idle_rpc_threads)));
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), iommu::MakeServerCredentials(transport),
                           port);
  builder.RegisterService(broker_service);
  builder.RegisterService(registry_service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> rpc_metrics;
  std::set<std::string> methods = iommu::ServiceMethods(
      {"iommu.v1.Broker", "iommu.v1.NodeRegistry", "grpc.reflection.v1alpha.ServerReflection"});
  methods.insert({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"});
  rpc_metrics.push_back(std::make_unique<iommu::RpcMetricsInterceptorFactory>(
      std::move(methods), [metrics](absl::string_view method, absl::string_view code,
                                    absl::Duration d) { metrics->ObserveRpc(method, code, d); }));
  builder.experimental().SetInterceptorCreators(std::move(rpc_metrics));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) return nullptr;
  return server;
}

int Run() {
  // Everything the broker creates is its own alone, whatever umask it was
  // started with: the store holds every node's token-signing key.
  umask(077);
  iommu::SetLogSource("broker");
  absl::StatusOr<iommu::LogLevel> level = iommu::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) {
    iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", level.status().message()}});
    return 2;
  }
  iommu::SetMinLogLevel(*level);
  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  absl::StatusOr<iommu::TransportConfig> transport = iommu::TransportConfigFromFlags(iommu::Identity{iommu::Role::kBroker, ""});
  if (!transport.ok()) {
    iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", transport.status().message()}});
    return 2;
  }
  // Its private key is the broker's identity: refuse to run with a key
  // anyone else on the node can read (the store's files are checked when
  // it opens).
  if (!transport->insecure) {
    if (absl::Status s = iommu::CheckKeyFile("--tls-key", transport->key_file, getegid());
        !s.ok()) {
      iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", s.message()}});
      return 2;
    }
  }
  if (transport->insecure) {
    iommu::LogEvent(iommu::LogLevel::kWarning, "insecure_transport",
                    {{"warning", "--insecure: plaintext gRPC, no authentication, every caller "
                                 "is an operator; development only"}});
  }

  absl::StatusOr<iommu::BrokerOptions> options = BrokerOptionsFromFlags();
  if (!options.ok()) {
    iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", options.status().message()}});
    return 2;
  }
  absl::StatusOr<iommu::StoreOptions> store_options =
      StoreOptionsFromFlags(transport->reload_interval);
  if (!store_options.ok()) {
    iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", store_options.status().message()}});
    return 2;
  }
  const std::string store_description = iommu::DescribeStoreSpec(store_options->spec);
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (!metrics_address.empty()) {
    if (absl::Status s = iommu::metrics::ValidateMetricsAddress("metrics_address", metrics_address);
        !s.ok()) {
      iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", s.message()}});
      return 2;
    }
  }
  // Metrics: commits are timed by a store decorator, RPCs by an interceptor,
  // state gauges are read from the broker at scrape time. /metrics and
  // /healthz serve from the start, also while a standby waits to lead;
  // /readyz only once the API serves.
  auto metrics = std::make_shared<iommu::BrokerMetrics>();
  metrics->SetLeadership(store_options->replica_name, StoreKind(store_options->spec), false,
                         absl::Now());
  // The expiry of every certificate file the broker uses, for the alerts.
  std::vector<iommu::WatchedCertFile> certs = iommu::TransportCertFiles(*transport);
  const std::vector<iommu::WatchedCertFile> etcd_certs = iommu::EtcdCertFiles(*store_options);
  certs.insert(certs.end(), etcd_certs.begin(), etcd_certs.end());
  metrics->WatchCertificates(std::move(certs));
  std::atomic<bool> serving{false};
  std::atomic<iommu::Broker*> serving_broker{nullptr};
  std::atomic<const iommu::kv::LeaderLease*> leadership{nullptr};
  // Live while the housekeeper (which takes the broker's lock) keeps
  // running, or the standby loop keeps polling.
  std::atomic<int64_t> housekeeper_seen_ms{absl::ToUnixMillis(absl::Now())};
  iommu::metrics::Health health;
  health.ready = [&]() -> absl::Status {
    iommu::Broker* b = serving_broker.load();
    if (!serving || b == nullptr) {
      return absl::UnavailableError(
          "broker: the API is not serving (starting, waiting to lead, or stopping)");
    }
    if (const iommu::kv::LeaderLease* l = leadership.load(); l != nullptr) {
      RETURN_IF_ERROR(l->lost());
    }
    return b->Unrecoverable();
  };
  health.live = [&housekeeper_seen_ms]() -> absl::Status {
    const int64_t quiet_ms = absl::ToUnixMillis(absl::Now()) - housekeeper_seen_ms.load();
    if (quiet_ms < kHousekeeperStallMs) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("broker: housekeeping has not run for ", quiet_ms / 1000, " s (stuck?)"));
  };
  // A port that cannot be bound stops the start.
  iommu::metrics::MetricsServer metrics_server;
  if (!metrics_address.empty()) {
    absl::StatusOr<iommu::metrics::MetricsServer> started = iommu::metrics::StartMetricsServer(
        "metrics_address", metrics_address, metrics, health);
    if (!started.ok()) {
      iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", started.status().message()}});
      return 1;
    }
    metrics_server = *std::move(started);
    iommu::LogEvent(iommu::LogLevel::kInfo, "metrics_serving",
                    {{"address", metrics_address},
                     {"port", metrics_server.port},
                     {"paths", "/metrics,/healthz,/readyz"}});
  }

  // The API listens from the start: until this replica leads (at once on
  // SQLite, once elected on etcd) it forwards every call to the leader.
  iommu::LeaderForwarder forwarder(*transport, store_options->replica_name);
  iommu::ServingState serving_state(&forwarder);
  iommu::CallerLimitsOptions limits_options;
  limits_options.max_inflight_per_caller = absl::GetFlag(FLAGS_max_inflight_per_caller);
  iommu::CallerLimits caller_limits(limits_options);
  const iommu::ServiceDeps deps{&serving_state, &*transport, &caller_limits};
  iommu::BrokerService broker_service(deps);
  iommu::NodeRegistryService registry_service(deps);
  int port = 0;
  std::unique_ptr<grpc::Server> server =
      StartApiServer(*transport, &broker_service, &registry_service, metrics.get(), &port);
  if (server == nullptr) {
    iommu::LogEvent(iommu::LogLevel::kError, "fatal",
                    {{"error", absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_listen))}});
    return 1;
  }
  // Every way out stops the API before what its handlers use goes. The gate
  // closes first: calls coming in are refused with UNAVAILABLE (clients
  // retry it, at another replica or this one's successor) while the calls
  // taken finish within the grace. Only then does gRPC shut down, which
  // would have cut those off, and answers the few calls that reach it in
  // between with CANCELLED (see call_gate.h).
  auto stop_api = [&server, &serving_state, &store_options] {
    if (server == nullptr) return;
    const absl::Time deadline =
        absl::Now() + absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms));
    serving_state.gate().Close(
        absl::StrCat("broker replica ", store_options->replica_name, " is stopping"));
    if (const int running = serving_state.gate().AwaitIdle(deadline); running > 0) {
      iommu::LogEvent(
          iommu::LogLevel::kWarning, "drain_incomplete",
          {{"calls_running", running}, {"grace_ms", absl::GetFlag(FLAGS_shutdown_grace_ms)}});
    }
    // Whatever still runs now is a call gRPC took as it was closing and
    // never handed to a handler: a short wait, then gRPC cancels it (the
    // caller retries), rather than it hanging until the caller's deadline.
    const absl::Time now = absl::Now();
    server->Shutdown(absl::ToChronoTime(std::clamp(deadline, now, now + absl::Seconds(1))));
    server.reset();
  };
  store_options->advertise_address = AdvertiseAddress(absl::GetFlag(FLAGS_listen), port);
  iommu::LogEvent(iommu::LogLevel::kInfo, "listening",
                  {{"listen", absl::GetFlag(FLAGS_listen)},
                   {"port", port},
                   {"advertise_address", store_options->advertise_address}});

  absl::StatusOr<iommu::OpenedStore> store =
      OpenConfiguredStore(*store_options, stop, &housekeeper_seen_ms, metrics.get(), &forwarder);
  if (!store.ok()) {
    stop_api();
    // The message names the file and what is wrong; the code says which
    // kind of trouble (FAILED_PRECONDITION: in use, or open to others;
    // DATA_LOSS: damaged, restore a backup; CANCELLED: stopped while
    // waiting to lead).
    if (store.status().code() == absl::StatusCode::kCancelled) {
      iommu::LogEvent(iommu::LogLevel::kInfo, "stopped", {{"while", "waiting to lead"}});
      return 0;
    }
    iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", store.status().ToString()}});
    return store.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  leadership = store->leader.get();
  auto agents = iommu::NewGrpcAgentClient(
      absl::Milliseconds(absl::GetFlag(FLAGS_agent_timeout_ms)), *transport);
  options->replica = store_options->replica_name;
  options->store = store_description;
  options->leader_since_ms = absl::ToUnixMillis(absl::Now());
  iommu::TimedStore timed_store(store->store.get(), [m = metrics.get()](absl::Duration d) {
    m->ObserveStoreCommit(d);
  });
  auto broker = iommu::Broker::Create(&timed_store, agents.get(), *options);
  if (!broker.ok()) {
    stop_api();
    iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", broker.status().ToString()}});
    return 1;
  }
  // Scrapes and probes read the broker: on every way out they stop before
  // it goes.
  absl::Cleanup stop_scrapes = [&metrics_server, &serving_broker] {
    metrics_server.http.reset();
    serving_broker = nullptr;
  };
  metrics->SetStatsSource([b = broker->get()] { return b->Stats(); });
  metrics->SetLeadership(options->replica, StoreKind(store_options->spec), true,
                         absl::FromUnixMillis(options->leader_since_ms));
  serving_broker = broker->get();

  // Every refusal by the authorization layer is logged by the service; the
  // hook counts it.
  iommu::Authorizer authz(broker->get(), [m = metrics.get()](absl::string_view method,
                                            const iommu::Identity& caller,
                                            const absl::Status& /*refusal*/) {
    m->CountDenial(method, iommu::RoleName(caller.role));
  });
  serving_state.Lead(broker->get(), &authz);
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    const std::string tmp = absl::GetFlag(FLAGS_port_file) + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), absl::GetFlag(FLAGS_port_file).c_str());
  }
  iommu::LogEvent(iommu::LogLevel::kInfo, "serving",
                  {{"listen", absl::GetFlag(FLAGS_listen)},
                   {"port", port},
                   {"store", store_description},
                   {"transport", iommu::DescribeTransport(*transport)}});
  serving = true;
  iommu::NotifyReady(absl::StrCat("serving on port ", port));
  // With WatchdogSec=, housekeeping pings systemd: it takes the broker's
  // lock, so a wedged broker stops pinging and is restarted.
  const absl::Duration watchdog = iommu::WatchdogPingInterval();

  // Housekeeping: node liveness and expiry of remembered answers.
  absl::Notification stopping;
  std::atomic<int> exit_code{0};
  std::thread housekeeper([&] {
    int ticks = 0;
    absl::Time last_ping = absl::InfinitePast();
    while (!stopping.WaitForNotificationWithTimeout(absl::Milliseconds(kHousekeepingPeriodMs))) {
      (*broker)->CheckLiveness();
      housekeeper_seen_ms = absl::ToUnixMillis(absl::Now());
      if (watchdog > absl::ZeroDuration() && absl::Now() - last_ping >= watchdog) {
        iommu::NotifyWatchdog();
        last_ping = absl::Now();
      }
      if (absl::Status s = (*broker)->Unrecoverable(); !s.ok()) {
        iommu::LogEvent(iommu::LogLevel::kError, "fatal", {{"error", s.message()}});
        exit_code = 1;
        kill(getpid(), SIGTERM);  // The stop path below drains and exits.
        return;
      }
      if (++ticks % 240 == 0) {
        absl::Status s = (*broker)->ExpireRequests();
        if (!s.ok()) {
          iommu::LogEvent(iommu::LogLevel::kWarning, "expire_failed", {{"error", s.ToString()}});
        }
      }
    }
  });

  int sig = 0;
  sigwait(&stop, &sig);
  iommu::LogEvent(iommu::LogLevel::kInfo, "stopping", {{"signal", sig}});
  serving = false;  // /readyz fails first, so balancers stop sending calls.
  iommu::NotifyStopping("draining in-flight calls");
  iommu::LogEvent(iommu::LogLevel::kInfo, "draining");
  stop_api();
  iommu::LogEvent(iommu::LogLevel::kInfo, "drained");
  stopping.Notify();
  housekeeper.join();
  std::move(stop_scrapes).Invoke();
  broker->reset();
  if (store->leader != nullptr && !store->leader->lost().ok()) exit_code = 1;
  // Closes the database cleanly (checkpoints the WAL); hands leadership over.
  store->store.reset();
  store->leader.reset();
  store->kv.reset();
  iommu::LogEvent(iommu::LogLevel::kInfo, "stopped");
  return exit_code.load();
}

}  // namespace

int main(int argc, char** argv) {
  iommu::InstallFlagsUsage(
      "iommu-broker",
      "hands out IOMMU containers and IOVA windows across a fleet.\n"
      "Usage: iommu-broker --listen=127.0.0.1:7400 --db=/var/lib/iommu-broker/broker.db \\\n"
      "         --tls-cert=broker.crt --tls-key=broker.key --tls-ca=ca.crt   (or --insecure)");
  iommu::ParseFlags(argc, argv);
  // Lock order is checked by the tests (TSan's deadlock detector, Abseil's
  // graph in debug unit tests); the daemon does not pay for it on every lock.
  absl::SetMutexDeadlockDetectionMode(absl::GetFlag(FLAGS_mutex_deadlock_detection)
                                          ? absl::OnDeadlockCycle::kAbort
                                          : absl::OnDeadlockCycle::kIgnore);
  return Run();
}
