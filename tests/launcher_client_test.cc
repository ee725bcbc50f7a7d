#include "launcher/client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "agent/fake_launcher_handler.h"
#include "agent/launcher_server.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fake_agent_socket.h"

namespace iommu {
namespace launcher {
namespace {

using ::testing::ElementsAre;
using Code = absl::StatusCode;
using agent::FakeLauncherHandler;

ino_t Inode(int fd) {
  struct stat st;
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_ino;
}

class LauncherClientTest : public testing::FakeAgentSocketTest {
 protected:
  std::unique_ptr<LauncherClient> Connect() {
    absl::StatusOr<std::unique_ptr<LauncherClient>> client = LauncherClient::Connect(socket_path_);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
};

TEST_F(LauncherClientTest, OpenSessionReturnsTheSession) {
  auto client = Connect();
  absl::StatusOr<v1::LauncherResponse::SessionOpened> s = client->OpenSession("good");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->container_id(), "c-0123456789abcdef");
  EXPECT_EQ(s->tenant_id(), "acme");
  ASSERT_EQ(s->windows_size(), 1);
  EXPECT_EQ(s->windows(0).base(), FakeLauncherHandler::kWindowBase);
}

TEST_F(LauncherClientTest, AgentErrorsKeepTheirCodeAndMessage) {
  auto client = Connect();
  EXPECT_THAT(client->OpenSession("bad"), StatusIs(Code::kUnauthenticated, "token: bad signature"));
  EXPECT_THAT(client->Map("m-1", 0, 0x1000, 0x10, true, true),
              StatusIs(Code::kInvalidArgument, "iova: 0x10 is outside every window"));
  EXPECT_THAT(client->Unmap(0x100000, 0x1000), StatusIs(Code::kNotFound, "no mapping"));
  // The connection is still usable after errors.
  EXPECT_TRUE(client->OpenSession("good").ok());
}

TEST_F(LauncherClientTest, RegisterMemoryPassesTheMemfdItself) {
  auto client = Connect();
  absl::StatusOr<UniqueFd> memfd = LauncherClient::CreateMemfd(2 << 20, "guest");
  ASSERT_TRUE(memfd.ok()) << memfd.status();
  absl::StatusOr<v1::LauncherResponse::MemoryRegistered> reg =
      client->RegisterMemory(memfd->get(), "guest");
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_EQ(reg->size(), 2u << 20);
  EXPECT_FALSE(reg->shared());
  // The handler fstat'ed the fd it received: the same object.
  EXPECT_EQ(handler_.last_memory_inode(), Inode(memfd->get()));
  // The client keeps its own fd.
  EXPECT_NE(fcntl(memfd->get(), F_GETFD), -1);
  reg = client->RegisterMemory(memfd->get(), "again");
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_TRUE(reg->shared());
  EXPECT_THAT(client->RegisterMemory(-1, "none"), StatusIs(Code::kInvalidArgument, "fd:"));
}

TEST_F(LauncherClientTest, CreateMemfdIsSizedSealedAndCloseOnExec) {
  absl::StatusOr<UniqueFd> memfd = LauncherClient::CreateMemfd(0x3000, "guest");
  ASSERT_TRUE(memfd.ok()) << memfd.status();
  struct stat st;
  ASSERT_EQ(fstat(memfd->get(), &st), 0);
  EXPECT_EQ(st.st_size, 0x3000);
  EXPECT_EQ(fcntl(memfd->get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  EXPECT_EQ(fcntl(memfd->get(), F_GET_SEALS) & F_SEAL_SHRINK, F_SEAL_SHRINK);
  EXPECT_NE(ftruncate(memfd->get(), 0x1000), 0);
  EXPECT_THAT(LauncherClient::CreateMemfd(0, "x"),
              StatusIs(Code::kInvalidArgument, "size: must be"));
}

TEST_F(LauncherClientTest, MapListUnmapRoundTrip) {
  auto client = Connect();
  ASSERT_TRUE(client->OpenSession("good").ok());
  ASSERT_TRUE(client->Map("m-1", 0, 0x1000, 0x100000, true, false).ok());
  ASSERT_TRUE(client->Map("m-1", 0x1000, 0x2000, 0x102000, true, true).ok());
  absl::StatusOr<std::vector<v1::LauncherResponse::MappingEntry>> list =
      client->ListMappings();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].iova(), 0x100000u);
  EXPECT_FALSE((*list)[0].writable());
  EXPECT_EQ((*list)[1].offset(), 0x1000u);
  absl::StatusOr<uint64_t> bytes = client->Unmap(0x100000, 0x200000);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 0x3000u);
  list = client->ListMappings();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(LauncherClientTest, ListMappingsPagesThroughEverything) {
  auto client = Connect();
  ASSERT_TRUE(client->OpenSession("good").ok());
  constexpr uint64_t kN = 500;  // The fake's window: 512 pages.
  for (uint64_t i = 0; i < kN; ++i) {
    ASSERT_TRUE(client->Map("m-1", 0, 0x1000, 0x100000 + i * 0x1000, true, true).ok());
  }
  absl::StatusOr<v1::LauncherResponse::MappingList> page = client->ListMappingsPage(10, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->mappings_size(), 10);
  EXPECT_FALSE(page->next_page_token().empty());
  for (uint32_t page_size : {0u, 64u, 7u}) {
    absl::StatusOr<std::vector<v1::LauncherResponse::MappingEntry>> list =
        client->ListMappings(page_size);
    ASSERT_TRUE(list.ok()) << list.status();
    ASSERT_EQ(list->size(), kN);
    for (uint64_t i = 0; i < kN; ++i) EXPECT_EQ((*list)[i].iova(), 0x100000 + i * 0x1000);
  }
  EXPECT_THAT(client->ListMappingsPage(0, "bogus"),
              StatusIs(Code::kInvalidArgument, "page_token:"));
}

TEST_F(LauncherClientTest, GetDevicesReturnsTheDeviceFds) {
  auto client = Connect();
  absl::StatusOr<LauncherDevices> devices = client->GetDevices();
  ASSERT_TRUE(devices.ok()) << devices.status();
  EXPECT_THAT(devices->addresses, ElementsAre("0000:00:04.0", "0000:00:05.0"));
  ASSERT_EQ(devices->fds.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(Inode(devices->fds[i].get()), handler_.device_inode(i));
    EXPECT_EQ(fcntl(devices->fds[i].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  }
}

TEST_F(LauncherClientTest, ConnectErrorsNameThePath) {
  absl::StatusOr<std::unique_ptr<LauncherClient>> client =
      LauncherClient::Connect(socket_path_ + ".missing");
  EXPECT_THAT(client, StatusIs(Code::kNotFound, ".missing"));
}

TEST_F(LauncherClientTest, RefusedConnectionReportsTheAgentsReason) {
  agent::LauncherServerOptions options;
  options.max_connections = 1;
  StartServer(options);
  auto first = Connect();
  ASSERT_TRUE(handler_.WaitForEvents("connect", 1, absl::Seconds(10)));
  auto second = Connect();
  EXPECT_THAT(second->OpenSession("good"),
              StatusIs(Code::kResourceExhausted, "too many connections (limit 1)"));
}

TEST_F(LauncherClientTest, AgentGoneIsUnavailable) {
  auto client = Connect();
  ASSERT_TRUE(client->OpenSession("good").ok());
  server_->Stop();
  EXPECT_THAT(client->ListMappings(), StatusIs(Code::kUnavailable, "launcher socket"));
}

}  // namespace
}  // namespace launcher
}  // namespace iommu
