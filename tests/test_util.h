// Small helpers shared by the multi-process tests: a unary gRPC call with a
// deadline, and polling for a condition. Thread-compatible.
#ifndef TESTS_TEST_UTIL_H_
#define TESTS_TEST_UTIL_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace iommu::testing {

// Calls `method` on `stub` with a 10 s deadline.
template <typename Req, typename Resp, typename Stub, typename Method>
grpc::Status Call(Stub* stub, Method method, const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return (stub->*method)(&ctx, req, resp);
}

// Polls `done` every 20 ms until it holds or `timeout` passes; returns
// whether it held. Callers assert on the state afterwards, so a timeout
// reports what was seen, not merely "timed out".
inline bool PollUntil(const std::function<bool()>& done,
                      absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

}  // namespace iommu::testing

#endif  // TESTS_TEST_UTIL_H_
