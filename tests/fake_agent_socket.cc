#include "tests/fake_agent_socket.h"

#include <cstdlib>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace iommu::testing {

void FakeAgentSocketTest::SetUp() {
  std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/agentXXXXXX");
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  socket_path_ = dir + "/launcher.sock";
  StartServer({});
}

void FakeAgentSocketTest::StartServer(agent::LauncherServerOptions options) {
  server_.reset();
  options.socket_path = socket_path_;
  absl::StatusOr<std::unique_ptr<agent::LauncherServer>> server =
      agent::LauncherServer::Start(std::move(options), &handler_);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
}

}  // namespace iommu::testing
