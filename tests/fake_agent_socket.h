// Test fixture for the launcher (client library, CLI, binary): the agent's
// launcher socket server, run in this process on a socket in a fresh
// directory under $TEST_TMPDIR and answered by agent::FakeLauncherHandler.
// Both ends of the real protocol, with no agent or broker behind them.
// Thread-compatible (the server's own thread only calls the handler).
#ifndef TESTS_FAKE_AGENT_SOCKET_H_
#define TESTS_FAKE_AGENT_SOCKET_H_

#include <memory>
#include <string>

#include "agent/fake_launcher_handler.h"
#include "agent/launcher_server.h"
#include "gtest/gtest.h"

namespace iommu::testing {

class FakeAgentSocketTest : public ::testing::Test {
 protected:
  // Serves the socket with default options.
  void SetUp() override;

  // Stops the server, if any, and serves socket_path_ again with `options`
  // (their socket_path is replaced), so a test can change the server's limits.
  void StartServer(agent::LauncherServerOptions options);

  // The launcher's flag naming the socket.
  std::string SocketFlag() const { return "--socket=" + socket_path_; }

  std::string socket_path_;
  agent::FakeLauncherHandler handler_;
  std::unique_ptr<agent::LauncherServer> server_;
};

}  // namespace iommu::testing

#endif  // TESTS_FAKE_AGENT_SOCKET_H_
