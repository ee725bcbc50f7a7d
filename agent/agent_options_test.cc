#include "agent/agent_options.h"

#include <optional>
#include <string>

#include "absl/time/time.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// The smallest valid command line: the two required flags.
AgentFlags Valid() {
  AgentFlags f;
  f.node = "node-1";
  f.broker = "broker.example:7400";
  return f;
}

// Knows one group, "kvm" (gid 36).
std::optional<uint32_t> FakeGroups(const std::string& name) {
  if (name == "kvm") return 36;
  return std::nullopt;
}

absl::StatusOr<AgentOptions> Parse(const AgentFlags& f) { return ParseAgentOptions(f, FakeGroups); }

MATCHER_P(FailsWith, substring, "") {
  if (arg.ok()) {
    *result_listener << "is OK";
    return false;
  }
  return ExplainMatchResult(StatusIs(absl::StatusCode::kInvalidArgument, substring),
                            arg.status(), result_listener);
}

TEST(AgentOptionsTest, DefaultsWithTheRequiredFlagsAreValid) {
  ASSERT_OK_AND_ASSIGN(o, Parse(Valid()));
  EXPECT_EQ(o.log_level, LogLevel::kInfo);
  EXPECT_EQ(o.node, "node-1");
  EXPECT_EQ(o.broker, "broker.example:7400");
  EXPECT_EQ(o.listen, "127.0.0.1:0");
  EXPECT_EQ(o.listen_host_port.host, "127.0.0.1");
  EXPECT_EQ(o.listen_host_port.port, 0);
  EXPECT_EQ(o.advertise_address, "");
  EXPECT_EQ(o.metrics_address, "");
  EXPECT_EQ(o.registration_max_backoff, absl::Seconds(1));
  EXPECT_EQ(o.launcher_server.socket_path, "/run/iommu-agent/launcher.sock");
  EXPECT_EQ(o.launcher_server.socket_mode, 0660u);
  EXPECT_FALSE(o.launcher_server.socket_gid.has_value());
  EXPECT_EQ(o.launcher_server.max_connections, 64u);
  EXPECT_EQ(o.launcher_server.session_open_timeout, absl::Seconds(5));
  EXPECT_THAT(o.launcher_sessions.allowed_uids, IsEmpty());
  EXPECT_THAT(o.launcher_sessions.allowed_gids, IsEmpty());
  EXPECT_EQ(o.launcher_sessions.max_sessions_per_peer, kDefaultMaxSessionsPerPeer);
  EXPECT_EQ(o.launcher_sessions.max_memory_objects, 64u);
  EXPECT_EQ(o.launcher_sessions.max_memory_bytes, uint64_t{1} << 40);
  EXPECT_EQ(o.launcher_sessions.max_sessions_per_tenant, 16u);
  EXPECT_EQ(o.launcher_sessions.max_memory_bytes_per_tenant, uint64_t{8} << 40);
  EXPECT_EQ(o.launcher_sessions.replay.per_tenant, ReplayCacheLimits().per_tenant);
  EXPECT_EQ(o.launcher_sessions.replay.total, ReplayCacheLimits().total);
  EXPECT_EQ(o.max_mappings_per_tenant, kDefaultMaxMappingsPerTenant);
  EXPECT_EQ(o.persistence.state_dir, "/var/lib/iommu-agent");
  EXPECT_EQ(o.persistence.fd_store, "auto");
  EXPECT_EQ(o.persistence.resume_timeout, absl::Seconds(60));
  EXPECT_EQ(o.backend.backend, "auto");
  EXPECT_EQ(o.backend.sim_max_mappings, 65535u);
  EXPECT_FALSE(o.backend.kernel_pin_bytes_per_tenant.has_value());
  EXPECT_EQ(o.launcher_socket_mode_text, "0660");
}

TEST(AgentOptionsTest, ParsesLogLevel) {
  AgentFlags f = Valid();
  f.log_level = "debug";
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.log_level, LogLevel::kDebug);
  f.log_level = "loud";
  EXPECT_THAT(Parse(f), FailsWith("log_level"));
}

TEST(AgentOptionsTest, RefusesNonPositiveRegistrationBackoff) {
  AgentFlags f = Valid();
  f.registration_max_backoff = absl::ZeroDuration();
  EXPECT_THAT(Parse(f), FailsWith("registration_max_backoff: must be positive"));
  f.registration_max_backoff = -absl::Seconds(1);
  EXPECT_THAT(Parse(f), FailsWith("registration_max_backoff: must be positive"));
}

TEST(AgentOptionsTest, RefusesMissingOrBadNodeName) {
  AgentFlags f = Valid();
  f.node = "";
  EXPECT_THAT(Parse(f), FailsWith("node: required"));
  f.node = "Node_1";
  EXPECT_THAT(Parse(f), FailsWith("node: must start with a lowercase letter or digit"));
  f.node = std::string(64, 'a');
  EXPECT_THAT(Parse(f), FailsWith("node: at most 63 characters"));
}

TEST(AgentOptionsTest, RequiresBrokerAsHostPort) {
  AgentFlags f = Valid();
  f.broker = "";
  EXPECT_THAT(Parse(f), FailsWith("broker: required, the broker's host:port"));
  f.broker = "broker.example";
  EXPECT_THAT(Parse(f), FailsWith("broker: must be host:port"));
  f.broker = "broker.example:70000";
  EXPECT_THAT(Parse(f), FailsWith("broker: port must be a number 0-65535"));
}

TEST(AgentOptionsTest, RefusesBadListenAddress) {
  AgentFlags f = Valid();
  f.listen = "::1:80";
  EXPECT_THAT(Parse(f), FailsWith("listen: IPv6 hosts must be bracketed"));
  f.listen = "[::1]:7401";
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.listen_host_port.host, "::1");
  EXPECT_EQ(o.listen_host_port.port, 7401);
}

TEST(AgentOptionsTest, WildcardListenNeedsAdvertiseAddress) {
  AgentFlags f = Valid();
  f.listen = "0.0.0.0:7401";
  EXPECT_THAT(Parse(f),
              FailsWith("advertise_address: required when --listen=0.0.0.0:7401 accepts on "
                        "every interface (the broker cannot dial 0.0.0.0)"));
  f.listen = "[::]:7401";
  EXPECT_THAT(Parse(f), FailsWith("advertise_address: required"));
  f.advertise_address = "agent.example:7401";
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.advertise_address, "agent.example:7401");
}

TEST(AgentOptionsTest, RefusesBadAdvertiseAddress) {
  AgentFlags f = Valid();
  f.advertise_address = "agent.example";
  EXPECT_THAT(Parse(f), FailsWith("advertise_address: must be host:port"));
}

TEST(AgentOptionsTest, ChecksMetricsAddressOnlyWhenSet) {
  AgentFlags f = Valid();
  f.metrics_address = "0.0.0.0:99999";
  EXPECT_THAT(Parse(f), FailsWith("metrics_address: must be host:port"));
  f.metrics_address = "0.0.0.0:9401";
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.metrics_address, "0.0.0.0:9401");
}

TEST(AgentOptionsTest, LauncherSocketModeIsOctalPermissions) {
  AgentFlags f = Valid();
  for (const char* bad : {"", "rw", "0999", "01000", "66 0"}) {
    f.launcher_socket_mode = bad;
    EXPECT_THAT(Parse(f), FailsWith(absl::StrCat(
                              "launcher_socket_mode: must be octal permissions like 0660, got \"",
                              bad, "\"")))
        << bad;
  }
  f.launcher_socket_mode = "0600";
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.launcher_server.socket_mode, 0600u);
}

TEST(AgentOptionsTest, LauncherGroupIsAGidOrAKnownName) {
  AgentFlags f = Valid();
  f.launcher_group = "107";
  ASSERT_OK_AND_ASSIGN(by_number, Parse(f));
  EXPECT_EQ(by_number.launcher_server.socket_gid, 107u);
  f.launcher_group = "kvm";
  ASSERT_OK_AND_ASSIGN(by_name, Parse(f));
  EXPECT_EQ(by_name.launcher_server.socket_gid, 36u);
  f.launcher_group = "nosuchgroup";
  EXPECT_THAT(Parse(f), FailsWith("launcher_group: no group \"nosuchgroup\""));
}

TEST(AgentOptionsTest, AllowedUidsAreNumbersAndGidsMayBeNames) {
  AgentFlags f = Valid();
  f.launcher_allowed_uids = "1000, 1001";
  f.launcher_allowed_gids = "kvm,100";
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_THAT(o.launcher_sessions.allowed_uids, ElementsAre(1000u, 1001u));
  EXPECT_THAT(o.launcher_sessions.allowed_gids, ElementsAre(36u, 100u));
  EXPECT_EQ(o.launcher_allowed_uids_text, "1000, 1001");
  EXPECT_EQ(o.launcher_allowed_gids_text, "kvm,100");

  f.launcher_allowed_uids = "alice";
  EXPECT_THAT(Parse(f), FailsWith("launcher_allowed_uids: \"alice\" is not a number"));
  f.launcher_allowed_uids = "";
  f.launcher_allowed_gids = "nosuchgroup";
  EXPECT_THAT(Parse(f), FailsWith("launcher_allowed_gids: \"nosuchgroup\" is not a number or a "
                                  "known name"));
  f.launcher_allowed_gids = "4294967295";
  EXPECT_THAT(Parse(f), FailsWith("launcher_allowed_gids:"));
}

TEST(AgentOptionsTest, BadUidListIsReportedBeforeBadGidList) {
  AgentFlags f = Valid();
  f.launcher_allowed_uids = "x";
  f.launcher_allowed_gids = "nosuchgroup";
  EXPECT_THAT(Parse(f), FailsWith("launcher_allowed_uids"));
}

TEST(AgentOptionsTest, RefusesSessionLimitsThatCannotWork) {
  struct Case {
    void (*set)(AgentFlags&);
    const char* error;
  };
  const Case cases[] = {
      {[](AgentFlags& f) { f.max_sessions_per_peer = 0; },
       "max_sessions_per_peer: must be at least 1"},
      {[](AgentFlags& f) { f.replay_cache_per_tenant = 0; },
       "replay_cache_per_tenant: must be at least 1"},
      {[](AgentFlags& f) {
         f.replay_cache_per_tenant = 10;
         f.replay_cache_max = 9;
       },
       "replay_cache_max: must be at least replay_cache_per_tenant (10), got 9"},
      {[](AgentFlags& f) { f.max_session_memory_objects = 0; },
       "max_session_memory_objects: must be at least 1"},
      {[](AgentFlags& f) { f.max_sessions_per_tenant = 0; },
       "max_sessions_per_tenant: must be at least 1"},
      {[](AgentFlags& f) { f.max_memory_bytes_per_tenant = 4095; },
       "max_memory_bytes_per_tenant: must be at least 4096 (one page), got 4095"},
      {[](AgentFlags& f) { f.max_session_memory_bytes = 4095; },
       "max_session_memory_bytes: must be at least 4096 (one page), got 4095"},
      {[](AgentFlags& f) { f.max_mappings_per_tenant = 0; },
       "max_mappings_per_tenant: must be at least 1"},
      {[](AgentFlags& f) { f.launcher_session_open_timeout = absl::ZeroDuration(); },
       "launcher_session_open_timeout: must be positive"},
  };
  for (const Case& c : cases) {
    AgentFlags f = Valid();
    c.set(f);
    EXPECT_THAT(Parse(f), FailsWith(c.error)) << c.error;
  }
}

TEST(AgentOptionsTest, CopiesTheLauncherLimits) {
  AgentFlags f = Valid();
  f.launcher_socket = "/tmp/l.sock";
  f.max_launcher_connections = 8;
  f.max_sessions_per_peer = 2;
  f.launcher_session_open_timeout = absl::Seconds(3);
  f.max_session_memory_objects = 4;
  f.max_session_memory_bytes = 1 << 20;
  f.max_sessions_per_tenant = 3;
  f.max_memory_bytes_per_tenant = 1 << 21;
  f.max_mappings_per_tenant = 100;
  f.replay_cache_per_tenant = 5;
  f.replay_cache_max = 50;
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.launcher_server.socket_path, "/tmp/l.sock");
  EXPECT_EQ(o.launcher_server.max_connections, 8u);
  EXPECT_EQ(o.launcher_server.session_open_timeout, absl::Seconds(3));
  EXPECT_EQ(o.launcher_sessions.max_sessions_per_peer, 2u);
  EXPECT_EQ(o.launcher_sessions.max_memory_objects, 4u);
  EXPECT_EQ(o.launcher_sessions.max_memory_bytes, uint64_t{1} << 20);
  EXPECT_EQ(o.launcher_sessions.max_sessions_per_tenant, 3u);
  EXPECT_EQ(o.launcher_sessions.max_memory_bytes_per_tenant, uint64_t{1} << 21);
  EXPECT_EQ(o.max_mappings_per_tenant, 100u);
  EXPECT_EQ(o.launcher_sessions.replay.per_tenant, 5u);
  EXPECT_EQ(o.launcher_sessions.replay.total, 50u);
}

TEST(AgentOptionsTest, StateDirIsAbsoluteOrEmpty) {
  AgentFlags f = Valid();
  f.state_dir = "var/lib/agent";
  EXPECT_THAT(Parse(f), FailsWith("state_dir: must be an absolute path (or empty for no "
                                  "journal), got \"var/lib/agent\""));
  f.state_dir = "";
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.persistence.state_dir, "");
}

TEST(AgentOptionsTest, RefusesNonPositiveResumeTimeout) {
  AgentFlags f = Valid();
  f.session_resume_timeout = absl::ZeroDuration();
  EXPECT_THAT(Parse(f), FailsWith("session_resume_timeout: must be positive"));
}

TEST(AgentOptionsTest, FdStoreMustBeAKnownForm) {
  AgentFlags f = Valid();
  f.fd_store = "file:/x";
  EXPECT_THAT(Parse(f), FailsWith("fd_store: --fd-store=file:/x: expected none, systemd or "
                                  "holder:/absolute/socket/path"));
  f.fd_store = "holder:run/fdholder.sock";
  EXPECT_THAT(Parse(f), FailsWith("fd_store: --fd-store=holder:run/fdholder.sock: the holder's "
                                  "socket must be an absolute path"));
  for (const char* good : {"auto", "none", "systemd", "holder:/run/iommu-agent/fdholder.sock"}) {
    f.fd_store = good;
    ASSERT_OK_AND_ASSIGN(o, Parse(f));
    EXPECT_EQ(o.persistence.fd_store, good);
  }
}

TEST(AgentOptionsTest, FirstBrokenRuleWins) {
  AgentFlags f = Valid();
  f.log_level = "loud";
  f.node = "";
  f.fd_store = "bogus";
  EXPECT_THAT(Parse(f), FailsWith("log_level"));
  f.log_level = "info";
  EXPECT_THAT(Parse(f), FailsWith("node: required"));
}

TEST(AgentOptionsTest, BackendFlagsPassThroughUnchecked) {
  AgentFlags f = Valid();
  f.backend = "bogus";  // ChooseBackend's rule, checked against the host.
  f.sim_devices = "not a spec";
  f.devices = "not a device";
  f.manage_drivers = true;
  f.kernel_pin_bytes_per_tenant = 1 << 30;
  ASSERT_OK_AND_ASSIGN(o, Parse(f));
  EXPECT_EQ(o.backend.backend, "bogus");
  EXPECT_EQ(o.backend.sim_devices, "not a spec");
  EXPECT_EQ(o.backend.devices, "not a device");
  EXPECT_TRUE(o.backend.manage_drivers);
  EXPECT_EQ(o.backend.kernel_pin_bytes_per_tenant, uint64_t{1} << 30);
}

// ---- PlanBackend ----

TEST(PlanBackendTest, SimParsesSimDevicesAndIgnoresDevices) {
  BackendFlags b;
  b.sim_devices = "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6";
  b.sim_config = "/etc/sim.conf";
  b.sim_max_mappings = 7;
  b.devices = "not a device";
  ASSERT_OK_AND_ASSIGN(plan, PlanBackend(b, "sim"));
  EXPECT_EQ(plan.kind, "sim");
  ASSERT_EQ(plan.sim_devices.size(), 2u);
  EXPECT_EQ(plan.sim_devices[1].address, "0000:00:05.0");
  EXPECT_EQ(plan.sim_devices[1].iommu_group, 6u);
  EXPECT_EQ(plan.sim_config, "/etc/sim.conf");
  EXPECT_EQ(plan.sim_max_mappings, 7u);
}

TEST(PlanBackendTest, SimRefusesBadSimDevices) {
  BackendFlags b;
  b.sim_devices = "0000:00:04.0";
  EXPECT_THAT(PlanBackend(b, "sim"), FailsWith("0000:00:04.0"));
}

TEST(PlanBackendTest, SimAcceptsNoDevices) {
  ASSERT_OK_AND_ASSIGN(plan, PlanBackend(BackendFlags(), "sim"));
  EXPECT_THAT(plan.sim_devices, IsEmpty());
}

TEST(PlanBackendTest, RealBackendRequiresDevices) {
  for (const char* kind : {"iommufd", "vfio-type1"}) {
    EXPECT_THAT(PlanBackend(BackendFlags(), kind),
                FailsWith("devices: required with a real backend: the PCI devices (addresses "
                          "or vendor:device) this agent may manage"))
        << kind;
  }
}

TEST(PlanBackendTest, RealBackendRefusesBadDevicesAndIgnoresSimFlags) {
  BackendFlags b;
  b.devices = "zz:yy";
  b.sim_devices = "not a spec";
  EXPECT_THAT(PlanBackend(b, "iommufd"), FailsWith("devices: entry \"zz:yy\""));
  b.devices = "0000:00:04.0,1af4:*";
  b.manage_drivers = true;
  b.kernel_pin_bytes_per_tenant = 4096;
  ASSERT_OK_AND_ASSIGN(plan, PlanBackend(b, "vfio-type1"));
  EXPECT_EQ(plan.kind, "vfio-type1");
  EXPECT_THAT(plan.devices.addresses, ElementsAre("0000:00:04.0"));
  ASSERT_EQ(plan.devices.ids.size(), 1u);
  EXPECT_TRUE(plan.devices.ids[0].any_device);
  EXPECT_TRUE(plan.manage_drivers);
  EXPECT_EQ(plan.kernel_pin_bytes_per_tenant, 4096u);
  EXPECT_THAT(plan.sim_devices, IsEmpty());
}

}  // namespace
}  // namespace agent
}  // namespace iommu
