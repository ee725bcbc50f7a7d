#include "client/request_builder.h"

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "client/args.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/broker.pb.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using ::testing::ElementsAre;

// Parses `args` with iommuctl's real command table and builds `request`.
template <typename Req>
absl::Status Build(const std::vector<std::string>& args, Req* request) {
  absl::StatusOr<Invocation> inv = ParseCommandLine(args, "b:1");
  EXPECT_TRUE(inv.ok()) << absl::StrJoin(args, " ") << ": " << inv.status();
  if (!inv.ok()) return inv.status();
  return BuildRequest(*inv, "rid-1", request);
}

TEST(BuildRequestTest, FillsStringRepeatedStringAndSizeFieldsAndTheRequestId) {
  v1::CreateContainerRequest req;
  ASSERT_TRUE(Build({"container", "create", "--tenant=acme", "--node=n1", "--device=0000:00:04.0",
                     "--device", "0000:00:05.0", "--budget=4Ki", "--name=vm-1"},
                    &req)
                  .ok());
  EXPECT_EQ(req.request_id(), "rid-1");
  EXPECT_EQ(req.tenant_id(), "acme");
  EXPECT_EQ(req.node(), "n1");
  EXPECT_THAT(req.devices(), ElementsAre("0000:00:04.0", "0000:00:05.0"));
  EXPECT_EQ(req.pin_budget_bytes(), 4096u);
  EXPECT_EQ(req.name(), "vm-1");
  // Flags not given leave their fields, and the sub-messages on the way, unset.
  EXPECT_FALSE(req.has_selector());
}

TEST(BuildRequestTest, FillsUint32FieldsInsideSubMessagesFromPciIdsAndIntegers) {
  v1::CreateContainerRequest req;
  ASSERT_TRUE(
      Build({"container", "create", "--tenant=a", "--vendor=10de", "--device-id=2330", "--count=2"},
            &req)
          .ok());
  EXPECT_EQ(req.selector().vendor_id(), 0x10deu);
  EXPECT_EQ(req.selector().device_id(), 0x2330u);
  EXPECT_EQ(req.selector().count(), 2u);
}

TEST(BuildRequestTest, FillsUint64FieldsAndThePositional) {
  v1::AllocateWindowRequest req;
  ASSERT_TRUE(
      Build({"window", "allocate", "c-1", "--size=1Gi", "--align=2Mi", "--base=0x100000000"}, &req)
          .ok());
  EXPECT_EQ(req.container_id(), "c-1");
  EXPECT_EQ(req.size(), 1ull << 30);
  EXPECT_EQ(req.alignment(), 2u << 20);
  EXPECT_EQ(req.base(), 0x100000000ull);
  EXPECT_FALSE(req.fixed_base()) << "not mapped: the handler's";
}

TEST(BuildRequestTest, FillsBoolFieldsFromSwitches) {
  v1::DrainNodeRequest req;
  ASSERT_TRUE(Build({"node", "drain", "n1", "--delete-containers"}, &req).ok());
  EXPECT_EQ(req.node(), "n1");
  EXPECT_TRUE(req.delete_containers());
  EXPECT_EQ(req.request_id(), "rid-1");
  req.Clear();
  ASSERT_TRUE(Build({"node", "drain", "n1", "--delete-containers=false"}, &req).ok());
  EXPECT_FALSE(req.delete_containers());
}

TEST(BuildRequestTest, ReadsCarryNoRequestId) {
  // GetNodeRequest has no request_id field: a read must not look for one.
  v1::GetNodeRequest req;
  ASSERT_TRUE(Build({"node", "get", "n1"}, &req).ok());
  EXPECT_EQ(req.node(), "n1");
}

// A command with hand-made mappings, for the mistakes the real table must
// not make.
class MappingTest : public ::testing::Test {
 protected:
  MappingTest() {
    spec_.noun = "test";
    spec_.flags = {{"size", ValueKind::kSize, "SIZE", ""},
                   {"on", ValueKind::kSwitch, "", ""},
                   {"wait", ValueKind::kDuration, "DURATION", ""}};
    inv_.command = &spec_;
  }

  absl::Status BuildWith(std::map<std::string, std::string> fields) {
    spec_.flag_fields = std::move(fields);
    v1::CreateContainerRequest req;
    return BuildRequest(inv_, "", &req);
  }

  CommandSpec spec_;
  Invocation inv_;
};

TEST_F(MappingTest, EveryMappingIsCheckedEvenForFlagsNotGiven) {
  EXPECT_THAT(
      BuildWith({{"size", "no_such_field"}}),
      StatusIs(absl::StatusCode::kInternal,
               "\"test\": --size cannot fill CreateContainerRequest.no_such_field: no such field"));
  EXPECT_THAT(
      BuildWith({{"on", "tenant_id"}}),
      StatusIs(absl::StatusCode::kInternal,
               "--on cannot fill CreateContainerRequest.tenant_id: the flag's kind does not fit"));
  EXPECT_THAT(BuildWith({{"wait", "pin_budget_bytes"}}),
              StatusIs(absl::StatusCode::kInternal, "does not fit"));
  EXPECT_THAT(BuildWith({{"size", "node.x"}}),
              StatusIs(absl::StatusCode::kInternal, "not a message on the way"));
  EXPECT_THAT(BuildWith({{"gone", "node"}}), StatusIs(absl::StatusCode::kInternal, "no such flag"));
}

TEST_F(MappingTest, PositionalAndRequestIdNeedStringFields) {
  spec_.positional = "ID";
  spec_.positional_field = "selector";
  EXPECT_THAT(BuildWith({}), StatusIs(absl::StatusCode::kInternal, "not a string field"));
  spec_.positional_field = "";
  spec_.mutation = true;
  v1::DeviceSelector no_request_id;
  EXPECT_THAT(BuildRequest(inv_, "r", &no_request_id),
              StatusIs(absl::StatusCode::kInternal,
                       "the request id cannot fill DeviceSelector.request_id: no such field"));
}

TEST_F(MappingTest, NumberTooLargeForAUint32FieldIsAUsageError) {
  FlagValue big;
  big.text = "8Gi";
  big.number = 8ull << 30;
  inv_.flags["size"] = {big};
  EXPECT_THAT(BuildWith({{"size", "selector.count"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--size: \"8Gi\" is too large (at most 0xffffffff)"));
}

}  // namespace
}  // namespace client
}  // namespace iommu
