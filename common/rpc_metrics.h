// A gRPC server interceptor that times every RPC and reports its method and
// final status code to an observer (the broker feeds
// iommu_broker_rpc_duration_seconds with it). Registered on the
// ServerBuilder, so the services themselves carry no timing code:
//
//   std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
//   f.push_back(std::make_unique<RpcMetricsInterceptorFactory>(methods, observer));
//   builder.experimental().SetInterceptorCreators(std::move(f));
//
// The method label is the short method name ("CreateTenant") for methods in
// `known_methods` and "unknown" for anything else, so that a client calling
// made-up method names cannot grow the label set.
//
// Thread-safe: the factory is immutable after construction; each interceptor
// belongs to one call. The observer is called from gRPC's threads and must be
// thread-safe.
#ifndef COMMON_RPC_METRICS_H_
#define COMMON_RPC_METRICS_H_

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"

namespace iommu {

// Called once per finished RPC: `method` is the short method name or
// "unknown", `code` the canonical code name ("OK", "NOT_FOUND", ...,
// "CANCELLED" for a call that ended without a status being sent).
using RpcObserver =
    std::function<void(absl::string_view method, absl::string_view code, absl::Duration elapsed)>;

// The full method names ("/iommu.v1.Broker/CreateTenant") of every method of
// the named services ("iommu.v1.Broker"), from the protobuf descriptors
// linked into the binary. Services not linked in are skipped.
std::set<std::string> ServiceMethods(const std::vector<std::string>& service_full_names);

// The short method name of a full one ("/pkg.Service/Method" -> "Method").
absl::string_view ShortMethodName(absl::string_view full_method);

// The canonical name of a gRPC status code ("OK", "INVALID_ARGUMENT", ...),
// "UNKNOWN" for a number that is none. Takes an int: a peer may send any code,
// and grpc::StatusCode has no fixed underlying type, so a value like 99 held
// in it is undefined behaviour (UBSan's enum check flags it).
std::string GrpcCodeName(int code);

class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  RpcMetricsInterceptorFactory(std::set<std::string> known_methods, RpcObserver observer);

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  const std::set<std::string> known_methods_;
  const RpcObserver observer_;
};

}  // namespace iommu

#endif  // COMMON_RPC_METRICS_H_
