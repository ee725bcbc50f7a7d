// Microbenchmarks of the broker's event log (server/event_log.h): the cost a
// mutation pays, under the broker's lock, to record its event, with the log
// full (10,000 events, the broker's cap) so that every record also evicts.
//
//   bazel run -c opt //bench:event_log_bench
//
// One iteration ("op") = one EventLog::Record of an event like the broker's
// WindowAllocated (a window filed under its container too), or of a repeat
// that is folded into the event already held (an agent failing the same way).
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "server/event_log.h"

namespace iommu {
namespace bench {
namespace {

v1::Event WindowEvent(uint64_t i) {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_NORMAL);
  e.set_reason("WindowAllocated");
  const std::string window = absl::StrCat("w-", i);
  e.set_message(absl::StrCat(window, " at 0x100000000-0x1001fffff (2MiB)"));
  e.mutable_object()->set_kind(v1::OBJECT_KIND_WINDOW);
  e.mutable_object()->set_id(window);
  v1::ObjectRef* c = e.add_related();
  c->set_kind(v1::OBJECT_KIND_CONTAINER);
  c->set_id(absl::StrCat("c-", i % 100));
  e.set_tenant_id("acme");
  e.set_request_id(absl::StrCat("r-", i));
  e.set_last_time_ms(static_cast<int64_t>(i));
  return e;
}

// A new event each time, into a full log.
void BM_RecordNew(benchmark::State& state) {
  EventLog log;
  uint64_t i = 0;
  for (; i < 10000; ++i) log.Record(WindowEvent(i));
  for (auto _ : state) log.Record(WindowEvent(i++));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordNew);

// The same event again: found among its object's events and counted.
void BM_RecordRepeat(benchmark::State& state) {
  EventLog log;
  for (uint64_t i = 0; i < 10000; ++i) log.Record(WindowEvent(i));
  v1::Event again = WindowEvent(9999);
  for (auto _ : state) log.Record(again);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordRepeat);

// What building the event costs by itself (the broker does it too).
void BM_BuildOnly(benchmark::State& state) {
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(WindowEvent(i++));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BuildOnly);

}  // namespace
}  // namespace bench
}  // namespace iommu

BENCHMARK_MAIN();
