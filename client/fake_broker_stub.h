// FakeBrokerStub: an in-memory Broker::StubInterface for tests of iommuctl.
// It records every unary call (method name, a copy of the request, the
// deadline) and answers with what the test configured per method: a handler,
// a canned response, or an error. Unconfigured methods answer OK with an
// empty response. Watch streams play back what SetWatch configured. The async and callback APIs are not supported: calling
// them aborts (iommuctl only makes blocking calls).
//
// Not thread-safe: configure it, run the command, then inspect it, all on
// one thread.
#ifndef CLIENT_FAKE_BROKER_STUB_H_
#define CLIENT_FAKE_BROKER_STUB_H_

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/message.h"
#include "grpcpp/client_context.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

class FakeBrokerStub final : public iommu::v1::Broker::StubInterface {
 public:
  // Answers one call: fills `response` (of the method's response type) and
  // returns the status.
  using Handler = std::function<grpc::Status(const google::protobuf::Message& request,
                                             google::protobuf::Message* response)>;

  struct Call {
    std::string method;  // e.g. "CreateContainer".
    std::shared_ptr<google::protobuf::Message> request;
    std::chrono::system_clock::time_point deadline;
  };

  FakeBrokerStub() = default;
  FakeBrokerStub(const FakeBrokerStub&) = delete;
  FakeBrokerStub& operator=(const FakeBrokerStub&) = delete;

  // Every call of `method` is answered by `handler`.
  void SetHandler(const std::string& method, Handler handler) {
    handlers_[method] = std::move(handler);
  }

  // Every call of `method` answers OK with a copy of `response`.
  void SetResponse(const std::string& method, const google::protobuf::Message& response) {
    std::shared_ptr<google::protobuf::Message> copy(response.New());
    copy->CopyFrom(response);
    SetHandler(method, [copy](const google::protobuf::Message&, google::protobuf::Message* out) {
      out->CopyFrom(*copy);
      return grpc::Status::OK;
    });
  }

  // Every call of `method` fails with `status`.
  void SetError(const std::string& method, grpc::Status status) {
    SetHandler(method, [status](const google::protobuf::Message&, google::protobuf::Message*) {
      return status;
    });
  }

  // Every call so far, in order.
  const std::vector<Call>& calls() const { return calls_; }

  // The requests of every call of `method` so far, in order. T must be the
  // method's request type.
  template <typename T>
  std::vector<T> Requests(const std::string& method) const {
    std::vector<T> out;
    for (const Call& c : calls_) {
      if (c.method == method) out.push_back(dynamic_cast<const T&>(*c.request));
    }
    return out;
  }

#define IOMMU_FAKE_BROKER_RPC(Method, Request, Response)                                    \
 public:                                                                                     \
  grpc::Status Method(grpc::ClientContext* context, const ::iommu::v1::Request& request,     \
                      ::iommu::v1::Response* response) override {                            \
    return Handle(#Method, context, request, response);                                      \
  }                                                                                          \
                                                                                             \
 private:                                                                                    \
  grpc::ClientAsyncResponseReaderInterface<::iommu::v1::Response>* Async##Method##Raw(       \
      grpc::ClientContext*, const ::iommu::v1::Request&, grpc::CompletionQueue*) override {  \
    Unsupported("Async" #Method);                                                            \
    return nullptr;                                                                          \
  }                                                                                          \
  grpc::ClientAsyncResponseReaderInterface<::iommu::v1::Response>*                           \
      PrepareAsync##Method##Raw(grpc::ClientContext*, const ::iommu::v1::Request&,           \
                                grpc::CompletionQueue*) override {                           \
    Unsupported("PrepareAsync" #Method);                                                     \
    return nullptr;                                                                          \
  }

  IOMMU_FAKE_BROKER_RPC(CreateTenant, CreateTenantRequest, Tenant)
  IOMMU_FAKE_BROKER_RPC(GetTenant, GetTenantRequest, Tenant)
  IOMMU_FAKE_BROKER_RPC(ListTenants, ListTenantsRequest, ListTenantsResponse)
  IOMMU_FAKE_BROKER_RPC(SetTenantQuota, SetTenantQuotaRequest, Tenant)
  IOMMU_FAKE_BROKER_RPC(SetTenantLabels, SetTenantLabelsRequest, Tenant)
  IOMMU_FAKE_BROKER_RPC(DeleteTenant, DeleteTenantRequest, DeleteTenantResponse)
  IOMMU_FAKE_BROKER_RPC(ListNodes, ListNodesRequest, ListNodesResponse)
  IOMMU_FAKE_BROKER_RPC(GetNode, GetNodeRequest, Node)
  IOMMU_FAKE_BROKER_RPC(CordonNode, CordonNodeRequest, Node)
  IOMMU_FAKE_BROKER_RPC(UncordonNode, UncordonNodeRequest, Node)
  IOMMU_FAKE_BROKER_RPC(DrainNode, DrainNodeRequest, DrainNodeResponse)
  IOMMU_FAKE_BROKER_RPC(DeleteNode, DeleteNodeRequest, DeleteNodeResponse)
  IOMMU_FAKE_BROKER_RPC(ListDevices, ListDevicesRequest, ListDevicesResponse)
  IOMMU_FAKE_BROKER_RPC(CreateContainer, CreateContainerRequest, Container)
  IOMMU_FAKE_BROKER_RPC(GetContainer, GetContainerRequest, Container)
  IOMMU_FAKE_BROKER_RPC(ListContainers, ListContainersRequest, ListContainersResponse)
  IOMMU_FAKE_BROKER_RPC(DeleteContainer, DeleteContainerRequest, DeleteContainerResponse)
  IOMMU_FAKE_BROKER_RPC(SetContainerBudget, SetContainerBudgetRequest, Container)
  IOMMU_FAKE_BROKER_RPC(SetContainerLabels, SetContainerLabelsRequest, Container)
  IOMMU_FAKE_BROKER_RPC(GrantLauncher, GrantLauncherRequest, GrantLauncherResponse)
  IOMMU_FAKE_BROKER_RPC(AllocateWindow, AllocateWindowRequest, Window)
  IOMMU_FAKE_BROKER_RPC(ReleaseWindow, ReleaseWindowRequest, ReleaseWindowResponse)
  IOMMU_FAKE_BROKER_RPC(ListWindows, ListWindowsRequest, ListWindowsResponse)
  IOMMU_FAKE_BROKER_RPC(GetUsage, GetUsageRequest, GetUsageResponse)
  IOMMU_FAKE_BROKER_RPC(ListEvents, ListEventsRequest, ListEventsResponse)
  IOMMU_FAKE_BROKER_RPC(GetVersion, GetVersionRequest, GetVersionResponse)

#undef IOMMU_FAKE_BROKER_RPC

 public:
  // Watch streams answer with these messages in order, then end with
  // `status` (each call starts from the first again).
  void SetWatch(std::vector<::iommu::v1::WatchResponse> responses,
                grpc::Status status = grpc::Status::OK) {
    watch_responses_ = std::move(responses);
    watch_status_ = std::move(status);
  }

 private:
  class FakeReader final : public grpc::ClientReaderInterface<::iommu::v1::WatchResponse> {
   public:
    FakeReader(std::vector<::iommu::v1::WatchResponse> responses, grpc::Status status)
        : responses_(std::move(responses)), status_(std::move(status)) {}
    bool Read(::iommu::v1::WatchResponse* out) override {
      if (next_ >= responses_.size()) return false;
      *out = responses_[next_++];
      return true;
    }
    bool NextMessageSize(uint32_t* size) override {
      *size = next_ < responses_.size() ? responses_[next_].ByteSizeLong() : 0;
      return next_ < responses_.size();
    }
    grpc::Status Finish() override { return status_; }
    void WaitForInitialMetadata() override {}

   private:
    std::vector<::iommu::v1::WatchResponse> responses_;
    grpc::Status status_;
    size_t next_ = 0;
  };

  grpc::ClientReaderInterface<::iommu::v1::WatchResponse>* WatchRaw(
      grpc::ClientContext* context, const ::iommu::v1::WatchRequest& request) override {
    std::shared_ptr<google::protobuf::Message> copy(request.New());
    copy->CopyFrom(request);
    calls_.push_back(Call{"Watch", std::move(copy), context->deadline()});
    return new FakeReader(watch_responses_, watch_status_);
  }
  grpc::ClientAsyncReaderInterface<::iommu::v1::WatchResponse>* AsyncWatchRaw(
      grpc::ClientContext*, const ::iommu::v1::WatchRequest&, grpc::CompletionQueue*,
      void*) override {
    Unsupported("AsyncWatch");
  }
  grpc::ClientAsyncReaderInterface<::iommu::v1::WatchResponse>* PrepareAsyncWatchRaw(
      grpc::ClientContext*, const ::iommu::v1::WatchRequest&, grpc::CompletionQueue*) override {
    Unsupported("PrepareAsyncWatch");
  }

  grpc::Status Handle(const char* method, grpc::ClientContext* context,
                      const google::protobuf::Message& request,
                      google::protobuf::Message* response) {
    std::shared_ptr<google::protobuf::Message> copy(request.New());
    copy->CopyFrom(request);
    calls_.push_back(Call{method, std::move(copy), context->deadline()});
    auto it = handlers_.find(method);
    if (it == handlers_.end()) return grpc::Status::OK;
    return it->second(request, response);
  }

  [[noreturn]] static void Unsupported(const char* what) {
    std::fprintf(stderr, "FakeBrokerStub: %s is not supported (blocking calls only)\n", what);
    std::abort();
  }

  std::map<std::string, Handler> handlers_;
  std::vector<Call> calls_;
  std::vector<::iommu::v1::WatchResponse> watch_responses_;
  grpc::Status watch_status_;
};

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_FAKE_BROKER_STUB_H_
