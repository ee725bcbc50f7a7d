// The backend conformance suite on SimBackend: the simulator must satisfy
// the same contract the real backends are held to in the VM tests.
#include "agent/backend_conformance.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::IsEmpty;
using ::testing::SizeIs;

// Two edu devices in groups 5 and 6, as in the VMs; a third device on a
// host driver that the suite never touches.
constexpr char kDevices[] =
    "0000:00:01.0=1234:11e8@5,0000:00:02.0=1234:11e8@6,"
    "0000:00:03.0=8086:10d3@7!e1000e";

std::unique_ptr<SimBackend> MakeSim() {
  absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
  EXPECT_OK(specs);
  absl::StatusOr<std::unique_ptr<SimBackend>> sim =
      SimBackend::Create(*std::move(specs), DefaultX86Geometry());
  EXPECT_OK(sim);
  return *std::move(sim);
}

ConformanceEnv SimEnv(ConformanceMemory memory) {
  ConformanceEnv env;
  env.device_a = "0000:00:01.0";
  env.device_b = "0000:00:02.0";
  env.memory = memory;
  env.expect_msi_window = true;
  env.new_instance = []() -> absl::StatusOr<std::unique_ptr<Backend>> { return MakeSim(); };
  return env;
}

TEST(BackendConformanceTest, SimPassesWithAnonymousSharedMemory) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  const std::vector<std::string> failures =
      RunBackendConformance(*sim, SimEnv(ConformanceMemory::kAnonymousShared));
  EXPECT_THAT(failures, IsEmpty()) << absl::StrJoin(failures, "\n");
}

TEST(BackendConformanceTest, SimPassesWithMemfdMemory) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  const std::vector<std::string> failures =
      RunBackendConformance(*sim, SimEnv(ConformanceMemory::kMemfd));
  EXPECT_THAT(failures, IsEmpty()) << absl::StrJoin(failures, "\n");
}

TEST(BackendConformanceTest, LeavesNoContainerBehind) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  RunBackendConformance(*sim, SimEnv(ConformanceMemory::kAnonymousShared));
  EXPECT_OK(sim->CreateContainer({"0000:00:01.0", "0000:00:02.0"}));
}

TEST(BackendConformanceTest, EveryCheckHasAResult) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  const std::vector<ConformanceResult> results =
      RunBackendConformanceChecks(*sim, SimEnv(ConformanceMemory::kAnonymousShared));
  EXPECT_THAT(results, SizeIs(22));
  for (const ConformanceResult& r : results) {
    EXPECT_FALSE(r.check.empty());
    EXPECT_THAT(r.failures, IsEmpty()) << r.check;
  }
}

// A backend that forgets one translation of the contract, as a type1 backend
// would if it passed on the kernel's "0 bytes unmapped" instead of ENOENT.
class ZeroByteUnmapBackend final : public Backend {
 public:
  explicit ZeroByteUnmapBackend(Backend& inner) : inner_(inner) {}
  absl::string_view kind() const override { return inner_.kind(); }
  bool simulated() const override { return true; }
  absl::StatusOr<std::vector<BackendDevice>> ListDevices() override {
    return inner_.ListDevices();
  }
  absl::StatusOr<ContainerHandle> CreateContainer(
      const std::vector<std::string>& devices) override {
    return inner_.CreateContainer(devices);
  }
  absl::StatusOr<Geometry> GetGeometry(ContainerHandle h) override {
    return inner_.GetGeometry(h);
  }
  absl::Status DestroyContainer(ContainerHandle h) override {
    return inner_.DestroyContainer(h);
  }
  absl::Status Map(ContainerHandle h, uint64_t iova, uint64_t vaddr, uint64_t size,
                   bool r, bool w) override {
    return inner_.Map(h, iova, vaddr, size, r, w);
  }
  absl::StatusOr<uint64_t> Unmap(ContainerHandle h, uint64_t iova,
                                 uint64_t size) override {
    absl::StatusOr<uint64_t> bytes = inner_.Unmap(h, iova, size);
    if (absl::IsNotFound(bytes.status()) && inner_.GetGeometry(h).ok()) return 0;
    return bytes;
  }
  absl::StatusOr<std::vector<BackendMapping>> ListMappings(ContainerHandle h) override {
    return inner_.ListMappings(h);
  }
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> DeviceFds(
      ContainerHandle h) override {
    return inner_.DeviceFds(h);
  }

 private:
  Backend& inner_;
};

TEST(BackendConformanceTest, ReportsWrongAnswerWithCheckCallAndExpectedErrno) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  ZeroByteUnmapBackend broken(*sim);
  const std::vector<std::string> failures =
      RunBackendConformance(broken, SimEnv(ConformanceMemory::kAnonymousShared));
  ASSERT_THAT(failures, SizeIs(2)) << absl::StrJoin(failures, "\n");
  EXPECT_THAT(failures[0], ::testing::StartsWith("unmap_nothing_mapped: Unmap(handle="));
  EXPECT_THAT(failures[0],
              ::testing::HasSubstr("expected NOT_FOUND with ENOENT (No such file or "
                                   "directory), got OK"));
}

TEST(BackendConformanceTest, PersistAdoptIsSkippedWithoutNewInstance) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  ConformanceEnv env = SimEnv(ConformanceMemory::kAnonymousShared);
  env.new_instance = nullptr;
  const std::vector<ConformanceResult> results = RunBackendConformanceChecks(*sim, env);
  ASSERT_FALSE(results.empty());
  EXPECT_EQ(results.back().check, "persist_adopt");
  EXPECT_THAT(results.back().failures, IsEmpty());
  EXPECT_THAT(results.back().answers,
              ::testing::ElementsAre(::testing::HasSubstr("skipped")));
}

// A backend whose adopt loses the journal's mappings, as one would that
// rebuilt its table from the (empty) kernel answer instead of the journal.
class ForgetfulAdoptSim final : public Backend {
 public:
  explicit ForgetfulAdoptSim(std::unique_ptr<SimBackend> inner) : inner_(std::move(inner)) {}
  absl::string_view kind() const override { return inner_->kind(); }
  bool simulated() const override { return true; }
  absl::StatusOr<std::vector<BackendDevice>> ListDevices() override {
    return inner_->ListDevices();
  }
  absl::StatusOr<ContainerHandle> CreateContainer(
      const std::vector<std::string>& devices) override {
    return inner_->CreateContainer(devices);
  }
  absl::StatusOr<Geometry> GetGeometry(ContainerHandle h) override {
    return inner_->GetGeometry(h);
  }
  absl::Status DestroyContainer(ContainerHandle h) override {
    return inner_->DestroyContainer(h);
  }
  absl::Status Map(ContainerHandle h, uint64_t iova, uint64_t vaddr, uint64_t size, bool r,
                   bool w) override {
    return inner_->Map(h, iova, vaddr, size, r, w);
  }
  absl::StatusOr<uint64_t> Unmap(ContainerHandle h, uint64_t iova, uint64_t size) override {
    return inner_->Unmap(h, iova, size);
  }
  absl::StatusOr<std::vector<BackendMapping>> ListMappings(ContainerHandle h) override {
    return inner_->ListMappings(h);
  }
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> DeviceFds(
      ContainerHandle h) override {
    return inner_->DeviceFds(h);
  }
  absl::StatusOr<PersistedContainer> PersistContainer(ContainerHandle h) override {
    return inner_->PersistContainer(h);
  }
  absl::StatusOr<ContainerHandle> AdoptContainer(
      const std::vector<std::string>& devices, std::map<std::string, UniqueFd> fds,
      absl::string_view state, const std::vector<BackendMapping>&) override {
    return inner_->AdoptContainer(devices, std::move(fds), state, {});
  }

 private:
  std::unique_ptr<SimBackend> inner_;
};

TEST(BackendConformanceTest, PersistAdoptCatchesAnAdoptThatLosesTheMappings) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  ConformanceEnv env = SimEnv(ConformanceMemory::kAnonymousShared);
  env.new_instance = []() -> absl::StatusOr<std::unique_ptr<Backend>> {
    return std::make_unique<ForgetfulAdoptSim>(MakeSim());
  };
  const std::vector<std::string> failures = RunBackendConformance(*sim, env);
  ASSERT_THAT(failures, ::testing::Not(IsEmpty()));
  EXPECT_THAT(failures[0], ::testing::StartsWith("persist_adopt: ListMappings (adopted)"));
}

TEST(BackendConformanceTest, ReportsSetupFailureWithTheErrno) {
  std::unique_ptr<SimBackend> sim = MakeSim();
  ConformanceEnv env = SimEnv(ConformanceMemory::kAnonymousShared);
  env.device_b = "0000:00:09.0";  // Not a sim device.
  const std::vector<std::string> failures = RunBackendConformance(*sim, env);
  ASSERT_THAT(failures, ::testing::Not(IsEmpty()));
  EXPECT_THAT(failures[0], ::testing::StartsWith("geometry: CreateContainer("));
  EXPECT_THAT(failures[0], ::testing::HasSubstr("expected OK, got NOT_FOUND"));
  EXPECT_THAT(failures[0], ::testing::HasSubstr("ENODEV"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
