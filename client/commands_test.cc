// RunIommuctl as a whole program: every RPC reachable from a command, request
// ids, exit codes and error messages, help and completion without a broker,
// and the wiring every command shares (broker address, deadline, paging,
// tables, -o name, transport flags). The commands of each group are tested in
// resource_commands_test.cc, container_watch_test.cc,
// describe_commands_test.cc and fleet_commands_test.cc.
#include "client/commands.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/args.h"
#include "client/commands_fixture.h"
#include "client/fake_broker_stub.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using ::google::protobuf::util::JsonStringToMessage;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// ---------------------------------------------------------------- dispatch

TEST_F(CommandsTest, EveryBrokerRpcIsReachable) {
  const std::vector<std::vector<std::string>> commands = {
      {"tenant", "create", "a", "--pinned=1Gi"},
      {"tenant", "get", "a"},
      {"tenant", "list"},
      {"tenant", "set-quota", "a", "--pinned=2Gi"},
      {"tenant", "delete", "a"},
      {"node", "list"},
      {"node", "get", "n"},
      {"node", "cordon", "n"},
      {"node", "uncordon", "n"},
      {"node", "drain", "n"},
      {"node", "delete", "n"},
      {"device", "list", "--node=n"},
      {"container", "create", "--tenant=a"},
      {"container", "get", "c"},
      {"container", "list"},
      {"container", "delete", "c"},
      {"container", "set-budget", "c", "--budget=4Ki"},
      {"container", "label", "c", "--label=team=ml", "--remove=env"},
      {"container", "list", "--watch"},
      {"tenant", "label", "a", "--remove=env"},
      {"container", "grant", "c"},
      {"window", "allocate", "c", "--size=4Ki"},
      {"window", "release", "w"},
      {"window", "list"},
      {"usage"},
      {"describe", "container", "c"},
      {"top"},
      {"version"},
  };
  for (const auto& c : commands) {
    EXPECT_EQ(Run(c), 0) << absl::StrJoin(c, " ") << ": " << err_;
    // JSON output of every command parses.
    std::vector<std::string> json = c;
    json.push_back("-o");
    json.push_back("json");
    EXPECT_EQ(Run(json), 0) << err_;
    EXPECT_THAT(out_, StartsWith("{"));
  }
  std::set<std::string> methods;
  for (const auto& call : fake_->calls()) methods.insert(call.method);
  // Every method of the Broker service, read from the proto itself so that a
  // new RPC without a command fails here.
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::Broker::service_full_name());
  ASSERT_NE(service, nullptr);
  std::set<std::string> want;
  for (int i = 0; i < service->method_count(); ++i) want.insert(service->method(i)->name());
  EXPECT_EQ(methods, want);
  EXPECT_EQ(want.count("SetContainerBudget"), 1u);
  EXPECT_EQ(want.count("GrantLauncher"), 1u);
}

// ---------------------------------------------------------------- request ids

TEST_F(CommandsTest, GivenRequestIdIsHonoured) {
  ASSERT_EQ(Run({"--request-id=retry-42", "container", "delete", "c-1"}), 0) << err_;
  ASSERT_EQ(Run({"window", "release", "w-1", "--request-id", "retry-42"}), 0) << err_;
  EXPECT_EQ(fake_->Requests<v1::DeleteContainerRequest>("DeleteContainer")[0].request_id(),
            "retry-42");
  EXPECT_EQ(fake_->Requests<v1::ReleaseWindowRequest>("ReleaseWindow")[0].request_id(),
            "retry-42");
  EXPECT_EQ(ids_issued_, 0);
  EXPECT_EQ(out_, "window w-1 released\n");
}

TEST_F(CommandsTest, InvalidRequestIdIsAUsageError) {
  EXPECT_EQ(Run({"--request-id=has space", "tenant", "delete", "a"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --request-id: only [A-Za-z0-9._:-] allowed"));
  EXPECT_THAT(fake_->calls(), IsEmpty());
}

TEST(NewRequestIdTest, IsAFreshValidUuid) {
  const std::string a = NewRequestId();
  const std::string b = NewRequestId();
  EXPECT_NE(a, b);
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[8], '-');
  EXPECT_EQ(a[14], '4');
  EXPECT_TRUE(a[19] == '8' || a[19] == '9' || a[19] == 'a' || a[19] == 'b') << a;
}

// ---------------------------------------------------------------- errors

TEST_F(CommandsTest, BrokerErrorExitsOneWithCodeName) {
  fake_->SetError("GetContainer",
                  grpc::Status(grpc::StatusCode::NOT_FOUND,
                               "container_id: no container \"c-0123456789abcdef\""));
  EXPECT_EQ(Run({"container", "get", "c-0123456789abcdef"}), 1);
  EXPECT_EQ(err_, "error: NOT_FOUND: container_id: no container \"c-0123456789abcdef\"\n");
  EXPECT_EQ(out_, "");
}

TEST_F(CommandsTest, UnavailableMutationSuggestsRetryWithTheSameRequestId) {
  fake_->SetError("DeleteTenant", grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"));
  EXPECT_EQ(Run({"tenant", "delete", "acme"}), 1);
  // Tried again until --timeout (5s) was spent, every time with one id.
  EXPECT_THAT(err_, StartsWith("error: UNAVAILABLE: connection refused (tried "));
  EXPECT_THAT(err_, HasSubstr("--timeout sets how long)\n"));
  EXPECT_THAT(err_, HasSubstr("--request-id=generated-1"));
  const auto deletes = fake_->Requests<v1::DeleteTenantRequest>("DeleteTenant");
  EXPECT_GT(deletes.size(), 2u);
  for (const v1::DeleteTenantRequest& r : deletes) EXPECT_EQ(r.request_id(), "generated-1");
  absl::Duration paused;
  for (absl::Duration d : retry_pauses_) paused += d;
  EXPECT_LT(paused, absl::Seconds(5));
}

// A change of leader (no replica listens for a moment, then the new one
// does) is ridden through: the same request id again, and one answer.
TEST_F(CommandsTest, AMutationCarriesOnThroughAChangeOfLeader) {
  int calls = 0;
  fake_->SetHandler("CreateTenant", [&calls](const google::protobuf::Message& req,
                                             google::protobuf::Message* resp) {
    if (++calls < 3) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused");
    auto* tenant = dynamic_cast<v1::Tenant*>(resp);
    tenant->set_id(dynamic_cast<const v1::CreateTenantRequest&>(req).tenant_id());
    return grpc::Status::OK;
  });
  ASSERT_EQ(Run({"tenant", "create", "acme", "--pinned=1Gi"}), 0) << err_;
  EXPECT_EQ(err_, "");
  const auto creates = fake_->Requests<v1::CreateTenantRequest>("CreateTenant");
  ASSERT_EQ(creates.size(), 3u);
  for (const v1::CreateTenantRequest& r : creates) EXPECT_EQ(r.request_id(), "generated-1");
  EXPECT_EQ(retry_pauses_.size(), 2u);
}

// A refusal is the broker's answer: it is not asked again.
TEST_F(CommandsTest, ARefusalIsNotRetried) {
  fake_->SetError("GetTenant", grpc::Status(grpc::StatusCode::NOT_FOUND, "tenant_id: no tenant"));
  EXPECT_EQ(Run({"tenant", "get", "acme"}), 1);
  EXPECT_EQ(fake_->calls().size(), 1u);
  EXPECT_TRUE(retry_pauses_.empty());
}

TEST_F(CommandsTest, InvalidArgumentFromBrokerIsExitOne) {
  fake_->SetError("AllocateWindow",
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "size: must be a multiple of the IOMMU page size 0x1000"));
  EXPECT_EQ(Run({"window", "allocate", "c-1", "--size=100"}), 1);
  EXPECT_EQ(err_,
            "error: INVALID_ARGUMENT: size: must be a multiple of the IOMMU page size 0x1000\n");
}

TEST_F(CommandsTest, StubFactoryFailureExitsOne) {
  std::vector<const char*> argv = {"iommuctl", "tenant", "list"};
  std::ostringstream out, err;
  StubFactory failing = [](const GlobalOptions&)
      -> absl::StatusOr<std::shared_ptr<v1::Broker::StubInterface>> {
    return absl::UnavailableError("no route");
  };
  EXPECT_EQ(RunIommuctl(3, argv.data(), out, err, failing, env_), 1);
  EXPECT_EQ(err.str(), "error: UNAVAILABLE: no route\n");
}

TEST_F(CommandsTest, UsageErrorsExitTwoWithHint) {
  EXPECT_EQ(Run({"frobnicate"}), 2);
  EXPECT_EQ(err_, "error: unknown command \"frobnicate\"\nRun 'iommuctl --help' for usage.\n");
  EXPECT_EQ(Run({"tenant", "create", "acme", "--pinned=lots"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --pinned: \"lots\" does not start with a digit"));
  EXPECT_THAT(err_, HasSubstr("Run 'iommuctl tenant create --help' for usage."));
  EXPECT_EQ(Run({}), 2);
  EXPECT_THAT(err_, HasSubstr("Usage:"));
  EXPECT_THAT(fake_->calls(), IsEmpty());
  EXPECT_THAT(addresses_, IsEmpty());
}

// ---------------------------------------------------------------- help etc.

TEST_F(CommandsTest, HelpAtEveryLevelExitsZeroWithoutTheBroker) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"},
                                             {"-h"},
                                             {"help"},
                                             {"container", "--help"},
                                             {"container", "create", "--help"},
                                             {"help", "container", "create"},
                                             {"usage", "-h"}}) {
    EXPECT_EQ(Run(args), 0) << absl::StrJoin(args, " ");
    EXPECT_THAT(out_, HasSubstr("Usage:"));
    EXPECT_EQ(err_, "");
  }
  EXPECT_EQ(Run({"container", "create", "--help"}), 0);
  EXPECT_THAT(out_, HasSubstr("Examples:"));
  EXPECT_THAT(addresses_, IsEmpty());
}

TEST_F(CommandsTest, CompletionBashPrintsTheScriptWithoutTheBroker) {
  ASSERT_EQ(Run({"completion", "bash"}), 0) << err_;
  EXPECT_EQ(out_, RenderBashCompletion());
  EXPECT_THAT(out_, HasSubstr("complete -F _iommuctl iommuctl\n"));
  EXPECT_EQ(Run({"completion", "zsh"}), 2);
  EXPECT_THAT(err_, StartsWith("error: completion: only bash is supported, got \"zsh\""));
  EXPECT_THAT(addresses_, IsEmpty());
}

// ---------------------------------------------------------------- wiring

TEST_F(CommandsTest, BrokerAddressFromFlagElseEnvironmentDefault) {
  ASSERT_EQ(Run({"node", "list"}), 0);
  ASSERT_EQ(Run({"--broker=10.1.2.3:9", "node", "list"}), 0);
  EXPECT_EQ(addresses_, (std::vector<std::string>{"default.example:7400", "10.1.2.3:9"}));
}

TEST_F(CommandsTest, TimeoutBecomesTheCallDeadline) {
  const auto before = std::chrono::system_clock::now();
  ASSERT_EQ(Run({"--timeout=30s", "tenant", "get", "a"}), 0);
  ASSERT_EQ(fake_->calls().size(), 1u);
  const auto left = fake_->calls()[0].deadline - before;
  EXPECT_GE(left, std::chrono::seconds(29));
  EXPECT_LE(left, std::chrono::seconds(31));
}

// A broker with `total` tenants named t0000.. that pages them.
void ServeTenants(FakeBrokerStub& fake, int total) {
  fake.SetHandler("ListTenants", [total](const google::protobuf::Message& request,
                                         google::protobuf::Message* response) {
    const auto& req = dynamic_cast<const v1::ListTenantsRequest&>(request);
    auto* resp = dynamic_cast<v1::ListTenantsResponse*>(response);
    const int start = req.page_token().empty() ? 0 : std::stoi(req.page_token());
    const int end = std::min<int>(total, start + static_cast<int>(req.page_size()));
    for (int i = start; i < end; ++i) resp->add_tenants()->set_id(absl::StrFormat("t%04d", i));
    if (end < total) resp->set_next_page_token(absl::StrCat(end));
    resp->set_resource_version(absl::StrCat("run.", 7 + start));  // Each page is later.
    return grpc::Status::OK;
  });
}

TEST_F(CommandsTest, ListFetchesEveryPage) {
  ServeTenants(*fake_, 2500);
  ASSERT_EQ(Run({"-o", "json", "tenant", "list"}), 0) << err_;
  auto reqs = fake_->Requests<v1::ListTenantsRequest>("ListTenants");
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].page_size(), 1000u);
  EXPECT_EQ(reqs[0].page_token(), "");
  EXPECT_EQ(reqs[1].page_token(), "1000");
  EXPECT_EQ(reqs[2].page_token(), "2000");
  v1::ListTenantsResponse all;
  ASSERT_TRUE(JsonStringToMessage(out_, &all, IgnoreUnknownFields()).ok());
  EXPECT_EQ(all.tenants_size(), 2500);
  EXPECT_EQ(all.tenants(2499).id(), "t2499");
  EXPECT_EQ(all.next_page_token(), "");
  // The first page's version: a watch from there misses nothing.
  EXPECT_EQ(all.resource_version(), "run.7");
}

TEST_F(CommandsTest, LimitStopsEarlyAndKeepsTheResumeToken) {
  ServeTenants(*fake_, 2500);
  ASSERT_EQ(Run({"-o", "json", "tenant", "list", "--limit=1200"}), 0) << err_;
  auto reqs = fake_->Requests<v1::ListTenantsRequest>("ListTenants");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].page_size(), 200u);
  v1::ListTenantsResponse all;
  ASSERT_TRUE(JsonStringToMessage(out_, &all, IgnoreUnknownFields()).ok());
  EXPECT_EQ(all.tenants_size(), 1200);
  EXPECT_EQ(all.next_page_token(), "1200");

  ASSERT_EQ(Run({"tenant", "list", "--limit=3"}), 0) << err_;
  const std::vector<std::string> lines = absl::StrSplit(out_, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 4u);  // Header + 3.
}

TEST_F(CommandsTest, ListStopsOnARepeatedPageToken) {
  fake_->SetHandler("ListWindows", [](const google::protobuf::Message&,
                                      google::protobuf::Message* response) {
    dynamic_cast<v1::ListWindowsResponse*>(response)->set_next_page_token("again");
    return grpc::Status::OK;
  });
  EXPECT_EQ(Run({"window", "list"}), 1);
  EXPECT_THAT(err_, StartsWith("error: INTERNAL: the broker returned the same page_token twice"));
}

TEST_F(CommandsTest, TablesForListsAndConfirmationsForDeletes) {
  v1::ListContainersResponse page;
  auto* c = page.add_containers();
  c->set_id("c-00000000000000a1");
  c->set_tenant_id("acme");
  c->set_node("host-a");
  c->set_state(v1::CONTAINER_STATE_READY);
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"container", "list"}), 0) << err_;
  EXPECT_THAT(out_, StartsWith("ID                  NAME  TENANT  NODE    STATE"));
  EXPECT_THAT(out_, HasSubstr("c-00000000000000a1  -     acme    host-a  ready"));
  ASSERT_EQ(Run({"container", "delete", "c-00000000000000a1"}), 0);
  EXPECT_EQ(out_, "container c-00000000000000a1 deleted\n");
  ASSERT_EQ(Run({"-o", "json", "container", "delete", "c-00000000000000a1"}), 0);
  EXPECT_EQ(out_, "{}\n");
}

TEST_F(CommandsTest, NoHeadersLeavesOutTheHeaderRowAndKeepsTheColumns) {
  v1::ListContainersResponse page;
  auto* c = page.add_containers();
  c->set_id("c-00000000000000a1");
  c->set_tenant_id("acme");
  c->set_node("host-a");
  c->set_state(v1::CONTAINER_STATE_READY);
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"container", "list"}), 0) << err_;
  const std::string with = out_;
  ASSERT_EQ(Run({"container", "list", "--no-headers"}), 0) << err_;
  EXPECT_THAT(out_, StartsWith("c-00000000000000a1  -     acme    host-a  ready"));
  EXPECT_EQ(with, with.substr(0, with.find('\n') + 1) + out_);
}

TEST_F(CommandsTest, OutputNamePrintsKindSlashIdOneALine) {
  v1::ListContainersResponse page;
  page.add_containers()->set_id("c-00000000000000a1");
  page.add_containers()->set_id("c-00000000000000a2");
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"-o", "name", "container", "list"}), 0) << err_;
  EXPECT_EQ(out_, "container/c-00000000000000a1\ncontainer/c-00000000000000a2\n");
  v1::ListTenantsResponse tenants;
  tenants.add_tenants()->set_id("acme");
  fake_->SetResponse("ListTenants", tenants);
  ASSERT_EQ(Run({"tenant", "list", "--output=name"}), 0) << err_;
  EXPECT_EQ(out_, "tenant/acme\n");
  fake_->SetResponse("ListTenants", v1::ListTenantsResponse());
  ASSERT_EQ(Run({"tenant", "list", "-o", "name"}), 0) << err_;
  EXPECT_EQ(out_, "");
}

TEST_F(CommandsTest, OutputNameIsRefusedBeforeAMutationWithNothingToNameIsSent) {
  EXPECT_EQ(Run({"-o", "name", "container", "delete", "c-00000000000000a1"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --output=name: \"container delete\" prints no objects "
                               "to name; use -o table or -o json"));
  EXPECT_TRUE(fake_->calls().empty());
}

TEST_F(CommandsTest, TransportFlagsWinOverTheEnvironment) {
  env_.cert = "/env/cert.pem";
  env_.key = "/env/key.pem";
  env_.ca = "/env/ca.pem";
  env_.trust_domain = "env.domain";
  EXPECT_EQ(Run({"tenant", "list", "--cert=/flag/cert.pem", "--trust-domain=flag.domain"}), 0);
  ASSERT_EQ(globals_.size(), 1u);
  EXPECT_EQ(globals_[0].cert, "/flag/cert.pem");
  EXPECT_EQ(globals_[0].key, "/env/key.pem");
  EXPECT_EQ(globals_[0].ca, "/env/ca.pem");
  EXPECT_EQ(globals_[0].trust_domain, "flag.domain");
  EXPECT_FALSE(globals_[0].insecure);
  EXPECT_EQ(Run({"--insecure", "tenant", "list"}), 0);
  EXPECT_TRUE(globals_[1].insecure);
}

TEST_F(CommandsTest, BadTransportConfigurationIsAUsageError) {
  std::vector<const char*> argv = {"iommuctl", "tenant", "list"};
  std::ostringstream out, err;
  StubFactory refusing = [](const GlobalOptions&)
      -> absl::StatusOr<std::shared_ptr<v1::Broker::StubInterface>> {
    return absl::InvalidArgumentError("--cert: cannot read /nope");
  };
  EXPECT_EQ(RunIommuctl(3, argv.data(), out, err, refusing, env_), 2);
  EXPECT_EQ(err.str(), "error: --cert: cannot read /nope\n");
}

}  // namespace
}  // namespace client
}  // namespace iommu
