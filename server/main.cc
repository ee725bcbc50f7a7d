// iommu-broker: the central broker daemon. Parses flags and wires the store,
// the broker logic and the gRPC services; all logic lives in libraries.
#include <signal.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "common/log.h"
#include "server/agent_client.h"
#include "server/broker.h"
#include "server/broker_service.h"
#include "server/sqlite_store.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7400",
          "host:port for the gRPC API (Broker, NodeRegistry, health, reflection); port 0 picks "
          "a free port (see --port_file)");
ABSL_FLAG(std::string, db, "/var/lib/iommu-broker/broker.db",
          "SQLite database file of the embedded store (created if missing)");
ABSL_FLAG(std::string, port_file, "",
          "if set, write the bound port here once serving (for scripts and tests)");
ABSL_FLAG(int64_t, heartbeat_interval_ms, 1000, "how often agents are told to heartbeat");
ABSL_FLAG(int64_t, node_timeout_ms, 5000,
          "a node whose last heartbeat is older than this becomes UNAVAILABLE");
ABSL_FLAG(int64_t, agent_timeout_ms, 10000, "deadline of each broker-to-agent call");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(int64_t, shutdown_grace_ms, 5000,
          "on SIGTERM/SIGINT, how long in-flight RPCs may take to finish");

namespace {

void Log(const std::string& fields) { iommu::LogLine(iommu::LogLevel::kInfo, fields); }

int Run() {
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

  auto store = iommu::OpenSqliteStore(absl::GetFlag(FLAGS_db));
  if (!store.ok()) {
    Log(absl::StrCat("event=fatal error=\"", store.status().ToString(), "\""));
    return 1;
  }
  auto agents = iommu::NewGrpcAgentClient(absl::Milliseconds(absl::GetFlag(FLAGS_agent_timeout_ms)));
  iommu::BrokerOptions options;
  options.heartbeat_interval_ms = absl::GetFlag(FLAGS_heartbeat_interval_ms);
  options.node_timeout_ms = absl::GetFlag(FLAGS_node_timeout_ms);
  auto broker = iommu::Broker::Create(store->get(), agents.get(), options);
  if (!broker.ok()) {
    Log(absl::StrCat("event=fatal error=\"", broker.status().ToString(), "\""));
    return 1;
  }

  iommu::BrokerService broker_service(broker->get());
  iommu::NodeRegistryService registry_service(broker->get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&broker_service);
  builder.RegisterService(&registry_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log(absl::StrCat("event=fatal error=\"cannot listen on ", absl::GetFlag(FLAGS_listen), "\""));
    return 1;
  }
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    const std::string tmp = absl::GetFlag(FLAGS_port_file) + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), absl::GetFlag(FLAGS_port_file).c_str());
  }
  Log(absl::StrCat("event=serving listen=", absl::GetFlag(FLAGS_listen), " port=", port,
                   " db=", absl::GetFlag(FLAGS_db), " transport=plaintext"));

  // Housekeeping: node liveness and expiry of remembered answers.
  absl::Notification stopping;
  std::thread housekeeper([&] {
    int ticks = 0;
    while (!stopping.WaitForNotificationWithTimeout(absl::Milliseconds(250))) {
      (*broker)->CheckLiveness();
      if (++ticks % 240 == 0) {
        absl::Status s = (*broker)->ExpireRequests();
        if (!s.ok()) Log(absl::StrCat("event=expire_failed error=\"", s.ToString(), "\""));
      }
    }
  });

  int sig = 0;
  sigwait(&stop, &sig);
  Log(absl::StrCat("event=stopping signal=", sig));
  Log("event=draining");
  server->Shutdown(absl::ToChronoTime(absl::Now() +
                                      absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms))));
  Log("event=drained");
  stopping.Notify();
  housekeeper.join();
  server.reset();
  broker->reset();
  store->reset();  // Closes the database cleanly (checkpoints the WAL).
  Log("event=stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "iommu-broker: hands out IOMMU containers and IOVA windows across a fleet.\n"
      "Usage: iommu-broker --listen=127.0.0.1:7400 --db=/var/lib/iommu-broker/broker.db");
  absl::ParseCommandLine(argc, argv);
  return Run();
}
