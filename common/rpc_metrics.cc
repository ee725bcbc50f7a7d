#include "common/rpc_metrics.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/support/interceptor.h"

namespace iommu {
namespace {

using grpc::experimental::InterceptionHookPoints;

// Times one call from its creation (when the server matched the call to a
// method) to the moment its status is sent.
class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(std::string method, const RpcObserver* observer)
      : method_(std::move(method)), observer_(observer), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!reported_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Report(GrpcCodeName(methods->GetSendStatus().error_code()));
    }
    // The call is over. A call cancelled before the server answered (the
    // client went away, its deadline passed) never sends a status.
    if (!reported_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_CLOSE)) {
      Report(GrpcCodeName(grpc::StatusCode::CANCELLED));
    }
    methods->Proceed();
  }

 private:
  void Report(const std::string& code) {
    reported_ = true;
    if (*observer_) (*observer_)(method_, code, absl::Now() - start_);
  }

  const std::string method_;
  const RpcObserver* const observer_;  // Owned by the factory, which outlives calls.
  const absl::Time start_;
  bool reported_ = false;  // Hooks of one call run one at a time.
};

}  // namespace

std::set<std::string> ServiceMethods(const std::vector<std::string>& service_full_names) {
  std::set<std::string> out;
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& name : service_full_names) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      out.insert(absl::StrCat("/", name, "/", service->method(i)->name()));
    }
  }
  return out;
}

absl::string_view ShortMethodName(absl::string_view full_method) {
  const size_t slash = full_method.rfind('/');
  return slash == absl::string_view::npos ? full_method : full_method.substr(slash + 1);
}

std::string GrpcCodeName(int code) {
  // gRPC's and absl's status codes share their numbering; absl::StatusCode is
  // an int-based enum class, so any int converts to it safely.
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "UNKNOWN" : name;
}

RpcMetricsInterceptorFactory::RpcMetricsInterceptorFactory(std::set<std::string> known_methods,
                                                           RpcObserver observer)
    : known_methods_(std::move(known_methods)), observer_(std::move(observer)) {}

grpc::experimental::Interceptor* RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* full = info->method();
  std::string method = "unknown";
  if (full != nullptr && known_methods_.count(full)) method = std::string(ShortMethodName(full));
  return new RpcMetricsInterceptor(std::move(method), &observer_);
}

}  // namespace iommu
