// Small helpers shared by the multi-process tests: the status matchers of
// common/status_matchers.h (included), a unary gRPC call with a deadline,
// polling for a condition, a broker stub on a channel of its own, the tenants
// a broker lists, and a container with one window made through the broker.
// Thread-compatible.
#ifndef TESTS_TEST_UTIL_H_
#define TESTS_TEST_UTIL_H_

#include <functional>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_matchers.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gmock/gmock.h"
#include "grpcpp/support/status.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"

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

// An insecure Broker stub for `address` on a channel of its own (no global
// subchannel pool), so dropping the stub closes its connection.
inline std::unique_ptr<v1::Broker::Stub> InsecureBrokerStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::Broker::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

// Every tenant the broker lists, all pages: id -> quota.pinned_bytes. A
// refused page records a failure and ends the listing with what was read.
inline std::map<std::string, uint64_t> TenantQuotas(v1::Broker::Stub* stub) {
  std::map<std::string, uint64_t> out;
  v1::ListTenantsRequest req;
  req.set_page_size(1000);
  for (;;) {
    grpc::ClientContext ctx;
    v1::ListTenantsResponse resp;
    grpc::Status s = stub->ListTenants(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& t : resp.tenants()) out[t.id()] = t.quota().pinned_bytes();
    if (!s.ok() || resp.next_page_token().empty()) return out;
    req.set_page_token(resp.next_page_token());
  }
}

// Creates a container of `tenant` on `node` with `device` and one window of
// `window_size` bytes aligned to its size; returns its id, or "" after
// recording the failure (ADD_FAILURE names the call that was refused).
inline std::string CreateContainerWithWindow(v1::Broker::Stub* broker, const std::string& tenant,
                                             const std::string& node, const std::string& device,
                                             uint64_t pin_budget, uint64_t window_size) {
  v1::CreateContainerRequest req;
  req.set_tenant_id(tenant);
  req.set_node(node);
  req.add_devices(device);
  req.set_pin_budget_bytes(pin_budget);
  v1::Container c;
  grpc::Status s = Call(broker, &v1::Broker::Stub::CreateContainer, req, &c);
  if (!s.ok()) {
    ADD_FAILURE() << "CreateContainer: " << s.error_message();
    return "";
  }
  v1::AllocateWindowRequest ar;
  ar.set_container_id(c.id());
  ar.set_size(window_size);
  ar.set_alignment(window_size);
  v1::Window w;
  s = Call(broker, &v1::Broker::Stub::AllocateWindow, ar, &w);
  if (!s.ok()) ADD_FAILURE() << "AllocateWindow: " << s.error_message();
  return c.id();
}

}  // namespace iommu::testing

#endif  // TESTS_TEST_UTIL_H_
