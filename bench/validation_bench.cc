// Microbenchmarks of request validation (common/validation.h): what the
// broker checks of a request's fields before it looks at any state, for the
// two requests on the hot path of a VM start (CreateContainer with a node and
// two devices; AllocateWindow), accepted and refused. Independent of how many
// objects exist, so there is no N here.
//
//   bazel run -c opt //bench:validation_bench
//
// One iteration ("op") = validating every field of one request, in the
// broker's order (server/broker.cc).
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "common/validation.h"

namespace iommu {
namespace bench {
namespace {

struct CreateContainerFields {
  std::string request_id;
  std::string tenant_id;
  std::string node;
  std::vector<std::string> devices;
};

struct AllocateWindowFields {
  std::string request_id;
  std::string container_id;
  uint64_t size;
  uint64_t alignment;
  bool fixed_base;
  uint64_t base;
};

absl::Status ValidateCreateContainer(const CreateContainerFields& r) {
  if (absl::Status s = ValidateRequestId("request_id", r.request_id); !s.ok()) return s;
  if (absl::Status s = ValidateTenantId("tenant_id", r.tenant_id); !s.ok()) return s;
  if (absl::Status s = ValidateNodeName("node", r.node); !s.ok()) return s;
  for (size_t i = 0; i < r.devices.size(); ++i) {
    const std::string field = absl::StrCat("devices[", i, "]");
    if (absl::Status s = ValidatePciAddress(field, r.devices[i]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ValidateAllocateWindow(const AllocateWindowFields& r) {
  if (absl::Status s = ValidateRequestId("request_id", r.request_id); !s.ok()) return s;
  if (absl::Status s = ValidateObjectId("container_id", r.container_id, "c-"); !s.ok()) return s;
  return ValidateWindowRequest(r.size, r.alignment, r.fixed_base, r.base, 4096);
}

const CreateContainerFields kGoodCreate{
    "vm-start-7f3a9c:create", "tenant-a", "node-17", {"0000:00:04.0", "0000:3b:00.1"}};
// Refused at the last device (bad function), so every field is looked at.
const CreateContainerFields kBadCreate{
    "vm-start-7f3a9c:create", "tenant-a", "node-17", {"0000:00:04.0", "0000:3b:00.9"}};
const AllocateWindowFields kGoodWindow{
    "vm-start-7f3a9c:window", "c-00000000deadbeef", 0x40000000, 0x200000, false, 0};
// Refused at the last check (base not aligned).
const AllocateWindowFields kBadWindow{
    "vm-start-7f3a9c:window", "c-00000000deadbeef", 0x40000000, 0x200000, true, 0x1000};

void BM_ValidateCreateContainer(benchmark::State& state) {
  const bool good = state.range(0) == 1;
  const CreateContainerFields& r = good ? kGoodCreate : kBadCreate;
  for (auto _ : state) {
    absl::Status s = ValidateCreateContainer(r);
    BENCH_CHECK(s.ok() == good, s.ToString());
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ValidateCreateContainer)->ArgName("accepted")->Arg(1)->Arg(0);

void BM_ValidateAllocateWindow(benchmark::State& state) {
  const bool good = state.range(0) == 1;
  const AllocateWindowFields& r = good ? kGoodWindow : kBadWindow;
  for (auto _ : state) {
    absl::StatusOr<uint64_t> s = ValidateAllocateWindow(r);
    BENCH_CHECK(s.ok() == good, s.status().ToString());
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ValidateAllocateWindow)->ArgName("accepted")->Arg(1)->Arg(0);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
