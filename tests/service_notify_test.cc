// The broker under systemd's Type=notify and WatchdogSec=, through the real
// binary: it reports READY=1 once its API serves, pings WATCHDOG=1 from its
// housekeeping, and reports STOPPING=1 on SIGTERM. systemd's side is a
// datagram socket named by $NOTIFY_SOCKET, as sd_notify(3) describes.
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/http_get.h"
#include "tests/daemon.h"
#include "tests/metrics_testing.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

// In the abstract namespace (the test's directory may be too long for
// sun_path); sd_notify reaches it as "@name". Abstract names are shared by the
// whole network namespace and Bazel's PID namespaces give every test the same
// small pid, so the name ends in a random nonce.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& prefix) : name_(WithNonce(prefix)) {
    const std::string& name = name_;
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    name.copy(a.sun_path + 1, sizeof(a.sun_path) - 2);
    const socklen_t len = offsetof(sockaddr_un, sun_path) + 1 + name.size();
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return ok_; }
  static std::string WithNonce(const std::string& prefix) {
    uint64_t nonce = 0;
    (void)getrandom(&nonce, sizeof(nonce), 0);
    return absl::StrCat(prefix, "-", nonce);
  }
  std::string env() const { return "@" + name_; }

  // Messages received until one contains `want` or `timeout` passes.
  std::vector<std::string> Until(const std::string& want, absl::Duration timeout) {
    std::vector<std::string> got;
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(end - absl::Now()))) <= 0) break;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.emplace_back(buf, n);
      if (absl::StrContains(got.back(), want)) break;
    }
    return got;
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool ok_ = false;
};

bool Contains(const std::vector<std::string>& messages, const std::string& want) {
  for (const std::string& m : messages) {
    if (absl::StrContains(m, want)) return true;
  }
  return false;
}

TEST(ServiceNotifyTest, BrokerReportsReadyPingsTheWatchdogAndReportsStopping) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  NotifySocket systemd(absl::StrCat("iommu-notify-test-", getpid()));
  ASSERT_TRUE(systemd.ok());
  setenv("NOTIFY_SOCKET", systemd.env().c_str(), 1);
  setenv("WATCHDOG_USEC", "1000000", 1);  // Pings expected every 0.5 s.
  testing::Daemon broker;
  absl::Status started =
      broker.Start(testing::RunfilePath("server/iommu-broker"),
                   {"--insecure", "--listen=127.0.0.1:0", "--db=" + dir + "/broker.db"}, dir, "broker");
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(started.ok()) << started << "\n" << broker.Log();

  std::vector<std::string> got = systemd.Until("READY=1", absl::Seconds(10));
  ASSERT_TRUE(Contains(got, "READY=1")) << broker.Log();
  EXPECT_TRUE(Contains(got, absl::StrCat("STATUS=serving on port ", broker.port())));
  int pings = 0;
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (pings < 2 && absl::Now() < end) {
    if (Contains(systemd.Until("WATCHDOG=1", end - absl::Now()), "WATCHDOG=1")) ++pings;
  }
  EXPECT_EQ(pings, 2) << "the housekeeping loop does not ping the watchdog";

  EXPECT_EQ(broker.Stop(), 0) << broker.Log();
  EXPECT_TRUE(Contains(systemd.Until("STOPPING=1", absl::Seconds(5)), "STOPPING=1"));
  EXPECT_THAT(broker.Log(), HasSubstr("event=stopped"));
}

// The agent reports READY=1 once its launcher socket serves, even with the
// broker away (it keeps registering), and says on /readyz why it is not
// ready; it pings the watchdog and reports STOPPING=1 on SIGTERM.
TEST(ServiceNotifyTest, AgentIsReadyToServeButNotReadyUntilRegistered) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  NotifySocket systemd(absl::StrCat("iommu-notify-agent-", getpid()));
  ASSERT_TRUE(systemd.ok());
  const int nobody = testing::PickFreePort();  // No broker listens there.
  setenv("NOTIFY_SOCKET", systemd.env().c_str(), 1);
  setenv("WATCHDOG_USEC", "1000000", 1);
  testing::Daemon agent;
  absl::Status started = agent.Start(
      testing::RunfilePath("agent/iommu-agent"),
      {"--node=n1", absl::StrCat("--broker=127.0.0.1:", nobody), "--insecure",
       "--listen=127.0.0.1:0", "--backend=sim", "--sim-devices=0000:00:04.0=1234:11e8@5",
       "--launcher-socket=" + dir + "/n1.sock", "--state-dir=" + dir + "/n1.state",
       "--metrics-address=127.0.0.1:0"},
      dir, "agent");
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(started.ok()) << started << "\n" << agent.Log();
  std::vector<std::string> got = systemd.Until("READY=1", absl::Seconds(10));
  ASSERT_TRUE(Contains(got, "READY=1")) << agent.Log();
  EXPECT_TRUE(Contains(got, absl::StrCat("registering with the broker at 127.0.0.1:", nobody)));
  EXPECT_TRUE(Contains(systemd.Until("WATCHDOG=1", absl::Seconds(5)), "WATCHDOG=1"));

  absl::StatusOr<int> port = testing::MetricsPortFromLog(agent.Log());
  ASSERT_TRUE(port.ok()) << port.status();
  absl::StatusOr<testing::HttpResponse> ready = testing::HttpGet("127.0.0.1", *port, "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->status, 503);
  EXPECT_THAT(ready->body, HasSubstr("agent: not registered with the broker (registering)"));
  absl::StatusOr<testing::HttpResponse> live = testing::HttpGet("127.0.0.1", *port, "/healthz");
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->status, 200);

  EXPECT_EQ(agent.Stop(), 0) << agent.Log();
  EXPECT_TRUE(Contains(systemd.Until("STOPPING=1", absl::Seconds(5)), "STOPPING=1"));
}

TEST(ServiceNotifyTest, AConfigurationErrorExitsWithStatus2) {
  // systemd does not restart exit status 2 (RestartPreventExitStatus=2).
  testing::CommandResult broker = testing::RunCommand(
      {testing::RunfilePath("server/iommu-broker"), "--insecure", "--log-level=loud"});
  EXPECT_EQ(broker.exit_code, 2) << broker.err;
  EXPECT_THAT(broker.err, HasSubstr("level=error"));
  testing::CommandResult agent = testing::RunCommand(
      {testing::RunfilePath("agent/iommu-agent"), "--node=n1", "--broker=127.0.0.1:1",
       "--insecure", "--backend=nonsense"});
  EXPECT_EQ(agent.exit_code, 2) << agent.err;
  EXPECT_THAT(agent.err, HasSubstr("level=error"));
}

}  // namespace
}  // namespace iommu
