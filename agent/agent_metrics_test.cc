// AgentMetrics: the state gauges from an AgentStats snapshot (pure), the
// snapshot a live AgentCore on the simulated backend takes (shared memory
// mapped twice: mapped bytes above billed bytes), map/unmap timing through
// the AgentCoreObserver seam, and kernel errors counted at the KernelOps seam.
// Asserts on the scrape text, never on timings.
#include "agent/agent_metrics.h"

#include <fcntl.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "agent/agent_core.h"
#include "agent/counting_kernel_ops.h"
#include "agent/fake_kernel_ops.h"
#include "agent/kernel_uapi.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = 1 << 20;
constexpr char kC1[] = "c-0000000000000001";
constexpr char kC2[] = "c-0000000000000002";

TEST(AgentMetricsTest, StateGaugesFromStats) {
  AgentStats s;
  s.tenants = {{"acme", 1 * kMiB, 2 * kMiB, 3 * kMiB}, {"globex", 0, 0, 0}};
  s.containers = 2;
  s.mappings = 3;
  s.max_container_mappings = 2;
  s.mappings_limit = 65535;
  s.launcher_sessions = 2;
  AgentMetrics m;
  m.SetBackend("sim", 100);
  m.SetStatsSource([&] { return s; });
  const std::string text = m.ScrapeText();
  for (const char* want : {
           "iommu_agent_billed_bytes{tenant=\"acme\"} 1048576\n",
           "iommu_agent_mapped_bytes{tenant=\"acme\"} 2097152\n",
           "iommu_agent_billed_bytes{tenant=\"globex\"} 0\n",
           "iommu_agent_kernel_counted_bytes{tenant=\"acme\"} 3145728\n",
           "iommu_agent_mappings 3\n",
           "iommu_agent_container_mappings_max 2\n",
           "iommu_agent_mappings_limit 65535\n",
           "iommu_agent_containers 2\n",
           "iommu_agent_launcher_sessions 2\n",
           "iommu_agent_backend_info{backend=\"sim\"} 1\n",
       }) {
    EXPECT_THAT(text, HasSubstr(want));
  }
}

TEST(AgentMetricsTest, KernelPinGaugesAreReadFromProcfsAtScrapeTime) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  std::ofstream(dir + "/status") << "Name:\tx\nVmLck:\t  262144 kB\nVmPin:\t       8 kB\n";
  std::ofstream(dir + "/vmstat") << "nr_foll_pin_acquired 70000\nnr_foll_pin_released 4465\n";
  AgentMetrics m;
  EXPECT_THAT(m.ScrapeText(), Not(HasSubstr("iommu_agent_kernel_locked_bytes")));
  m.SetKernelPinFiles(dir + "/status", dir + "/vmstat");
  std::string text = m.ScrapeText();
  for (const char* want : {
           "iommu_agent_kernel_locked_bytes 268435456\n",
           "iommu_agent_kernel_pinned_bytes 8192\n",
           "iommu_agent_foll_pin_outstanding_pages 65535\n",
       }) {
    EXPECT_THAT(text, HasSubstr(want));
  }
  // Read again at each scrape; an unreadable file drops only its gauges.
  std::ofstream(dir + "/status") << "Name:\tx\nVmLck:\t4 kB\nVmPin:\t0 kB\n";
  m.SetKernelPinFiles(dir + "/status", dir + "/absent");
  text = m.ScrapeText();
  EXPECT_THAT(text, HasSubstr("iommu_agent_kernel_locked_bytes 4096\n"));
  EXPECT_THAT(text, Not(HasSubstr("iommu_agent_foll_pin_outstanding_pages")));
}

TEST(AgentMetricsTest, LimitFallsBackToTheBackendsDefaultWithoutContainers) {
  AgentMetrics m;
  m.SetBackend("vfio-type1", 65535);
  m.SetStatsSource([] { return AgentStats(); });
  EXPECT_THAT(m.ScrapeText(), HasSubstr("iommu_agent_mappings_limit 65535\n"));
}

TEST(AgentMetricsTest, EventFamiliesAreListedBeforeTheirFirstSample) {
  AgentMetrics m;
  EXPECT_THAT(m.ScrapeText(), Not(HasSubstr("iommu_agent_backend_info")));  // Not known yet.
  m.SetBackend("iommufd", 0);
  const std::string text = m.ScrapeText();
  EXPECT_THAT(text, HasSubstr("# TYPE iommu_agent_kernel_errors_total counter"));
  EXPECT_THAT(text, HasSubstr("iommu_agent_map_duration_seconds_count 0\n"));
  EXPECT_THAT(text, HasSubstr("iommu_agent_unmap_duration_seconds_count 0\n"));
  EXPECT_THAT(text, HasSubstr("iommu_agent_backend_info{backend=\"iommufd\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("iommu_agent_mappings ")));  // No stats source yet.
}

GuestMemoryRegion Memory(uint64_t ino, uint64_t size) {
  // The sim backend never touches the bytes.
  return GuestMemoryRegion{ObjectKey{7, ino}, size, 0x7f0000000000ULL + ino * (1ULL << 32),
                           nullptr};
}

TEST(AgentMetricsTest, LiveCoreSharedMemoryIsMappedTwiceBilledOnce) {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs =
      ParseSimDevices("0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6");
  ASSERT_OK(specs);
  absl::StatusOr<std::unique_ptr<SimBackend>> backend = SimBackend::Create(*std::move(specs));
  ASSERT_OK(backend);
  auto metrics = std::make_shared<AgentMetrics>();
  metrics->SetBackend("sim", 65535);
  AgentCore core("n1", backend->get(), metrics.get());
  metrics->SetStatsSource([&core] { return core.Stats(); });

  constexpr IovaRange kAll{0, 0x1ffffffffULL};
  ASSERT_OK(core.CreateContainer(kC1, "acme", {"0000:00:04.0"}, 64 * kMiB));
  ASSERT_OK(core.CreateContainer(kC2, "acme", {"0000:00:05.0"}, 64 * kMiB));
  for (const char* c : {kC1, kC2}) ASSERT_OK(core.SetWindows(c, {kAll}));
  ASSERT_OK(core.OpenSession("s1", kC1, "acme", {kAll}));
  ASSERT_OK(core.OpenSession("s2", kC2, "acme", {kAll}));
  absl::StatusOr<MemoryInfo> m1 = core.RegisterMemory("s1", "acme", Memory(1, 4 * kMiB), "g");
  absl::StatusOr<MemoryInfo> m2 = core.RegisterMemory("s2", "acme", Memory(1, 4 * kMiB), "g");
  ASSERT_OK(m1);
  ASSERT_OK(m2);
  ASSERT_OK(core.MapMemory("s1", kC1, m1->memory_id, 0, 4 * kMiB, 0x100000000ULL, true, true));
  ASSERT_OK(core.MapMemory("s2", kC2, m2->memory_id, 0, 4 * kMiB, 0x100000000ULL, true, true));
  ASSERT_OK(core.MapMemory("s2", kC2, m2->memory_id, 0, 1 * kMiB, 0x180000000ULL, true, false));
  // A refused map (outside the windows) is timed too.
  EXPECT_THAT(core.MapMemory("s1", kC1, m1->memory_id, 0, kMiB, 0x300000000ULL, true, true),
              StatusIs(absl::StatusCode::kPermissionDenied, "iova"));

  std::string text = metrics->ScrapeText();
  for (const char* want : {
           "iommu_agent_billed_bytes{tenant=\"acme\"} 4194304\n",
           "iommu_agent_mapped_bytes{tenant=\"acme\"} 9437184\n",
           // The kernel charges all three mappings in full.
           "iommu_agent_kernel_counted_bytes{tenant=\"acme\"} 9437184\n",
           "iommu_agent_mappings 3\n",
           "iommu_agent_container_mappings_max 2\n",
           "iommu_agent_mappings_limit 65535\n",
           "iommu_agent_containers 2\n",
           "iommu_agent_launcher_sessions 2\n",
           "iommu_agent_map_duration_seconds_count 4\n",
           "iommu_agent_unmap_duration_seconds_count 0\n",
       }) {
    EXPECT_THAT(text, HasSubstr(want));
  }

  ASSERT_OK(core.Unmap(kC2, 0x180000000ULL, kMiB, "s2"));
  core.CloseSession("s1");
  text = metrics->ScrapeText();
  for (const char* want : {
           "iommu_agent_billed_bytes{tenant=\"acme\"} 4194304\n",
           "iommu_agent_mapped_bytes{tenant=\"acme\"} 4194304\n",
           "iommu_agent_mappings 1\n",
           "iommu_agent_launcher_sessions 1\n",
           "iommu_agent_unmap_duration_seconds_count 1\n",
       }) {
    EXPECT_THAT(text, HasSubstr(want));
  }
}

TEST(AgentMetricsTest, KernelErrorsAreCountedByCallAndErrnoAtTheSeam) {
  FakeKernelOps fake;
  AgentMetrics metrics;
  CountingKernelOps ops(&fake, [&metrics](absl::string_view call, absl::string_view err) {
    metrics.CountKernelError(call, err);
  });
  const SysResult container = ops.Open("/dev/vfio/vfio", O_RDWR);
  ASSERT_TRUE(container.ok());
  fake.set_next_error(uapi::kVfioGetApiVersion, EPERM);
  const SysResult refused =
      ops.Ioctl(static_cast<int>(container.value), uapi::kVfioGetApiVersion, 0);
  // The result passes through unchanged.
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(refused.err, EPERM);
  EXPECT_TRUE(ops.Ioctl(static_cast<int>(container.value), uapi::kVfioGetApiVersion, 0).ok());
  fake.set_next_open_error("/dev/vfio/7", ENOENT);
  EXPECT_EQ(ops.Open("/dev/vfio/7", O_RDWR).err, ENOENT);
  ops.Close(static_cast<int>(container.value));

  const std::string text = metrics.ScrapeText();
  EXPECT_THAT(text, HasSubstr("iommu_agent_kernel_errors_total{call=\"VFIO_GET_API_VERSION\","
                              "errno=\"EPERM\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("iommu_agent_kernel_errors_total{call=\"open\",errno=\"ENOENT\"} 1\n"));
}

TEST(AgentMetricsTest, ReadsType1DmaEntryLimit) {
  const std::string dir = ::testing::TempDir();
  const std::string good = dir + "/dma_entry_limit";
  std::ofstream(good) << "65535\n";
  absl::StatusOr<uint64_t> limit = ReadType1DmaEntryLimit(good);
  ASSERT_OK(limit);
  EXPECT_EQ(*limit, 65535u);
  const std::string bad = dir + "/dma_entry_limit_bad";
  std::ofstream(bad) << "lots\n";
  EXPECT_THAT(ReadType1DmaEntryLimit(bad),
              StatusIs(absl::StatusCode::kInvalidArgument, "expected a number"));
  EXPECT_THAT(ReadType1DmaEntryLimit(dir + "/absent"),
              StatusIs(absl::StatusCode::kNotFound, "vfio_iommu_type1"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
