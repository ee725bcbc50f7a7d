// -o wide, yaml and jsonpath through the whole program (RunIommuctl), against
// a fake broker.
#include "absl/strings/str_cat.h"
#include "client/commands_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/broker.pb.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

v1::ListNodesResponse TwoNodes() {
  v1::ListNodesResponse page;
  v1::Node* a = page.add_nodes();
  a->set_name("host-a");
  a->set_state(v1::NODE_STATE_READY);
  a->set_device_count(4);
  a->set_agent_version("0.1.0 (commit 0123456789ab)");
  a->set_launcher_socket("/run/iommu-agent/launcher.sock");
  v1::Node* b = page.add_nodes();
  b->set_name("host-b");
  b->set_state(v1::NODE_STATE_UNAVAILABLE);
  b->set_device_count(2);
  return page;
}

TEST_F(CommandsTest, WideAddsColumnsTheTableLeavesOut) {
  fake_->SetResponse("ListNodes", TwoNodes());
  ASSERT_EQ(Run({"node", "list"}), 0) << err_;
  EXPECT_THAT(out_, Not(HasSubstr("AGENT-VERSION")));
  ASSERT_EQ(Run({"node", "list", "-o", "wide"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("LAST-HEARTBEAT  AGENT-VERSION                LAUNCHER-SOCKET\n"));
  EXPECT_THAT(out_, HasSubstr("0.1.0 (commit 0123456789ab)  /run/iommu-agent/launcher.sock\n"));

  v1::ListContainersResponse containers;
  v1::Container* c = containers.add_containers();
  c->set_id("c-00000000000000a1");
  c->set_state(v1::CONTAINER_STATE_FAILED);
  c->set_status_message("device gone");
  c->mutable_geometry()->set_page_size_bitmap((1u << 12) | (1u << 21));
  c->mutable_geometry()->set_max_mappings(65535);
  fake_->SetResponse("ListContainers", containers);
  ASSERT_EQ(Run({"container", "list", "-o", "wide", "--no-headers"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("4KiB,2MiB   65535         -       device gone\n"));
  EXPECT_THAT(out_, Not(HasSubstr("PAGE-SIZES")));
}

TEST_F(CommandsTest, YamlShowsTheJsonFieldsInBlockStyle) {
  fake_->SetResponse("ListNodes", TwoNodes());
  ASSERT_EQ(Run({"node", "list", "-o", "yaml"}), 0) << err_;
  EXPECT_THAT(out_, StartsWith("nodes:\n- name: host-a\n  state: NODE_STATE_READY\n"));
  EXPECT_THAT(out_, HasSubstr("  agent_version: \"0.1.0 (commit 0123456789ab)\"\n"));
  EXPECT_THAT(out_, HasSubstr("  last_heartbeat_ms: 0\n  last_heartbeat: null\n"));
  EXPECT_THAT(out_, HasSubstr("- name: host-b\n"));
  EXPECT_THAT(out_, HasSubstr("\nnext_page_token: \"\"\n"));

  // 64-bit values stay exact, as in -o json.
  v1::Tenant tenant;
  tenant.set_id("acme");
  tenant.mutable_quota()->set_pinned_bytes(18446744073709551615ull);
  fake_->SetResponse("GetTenant", tenant);
  ASSERT_EQ(Run({"tenant", "get", "acme", "-o", "yaml"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("quota:\n  pinned_bytes: 18446744073709551615\n"));
}

TEST_F(CommandsTest, JsonPathPicksFieldsForScripts) {
  fake_->SetResponse("ListNodes", TwoNodes());
  ASSERT_EQ(Run({"node", "list", "-o", "jsonpath={.nodes[*].name}"}), 0) << err_;
  EXPECT_EQ(out_, "host-a host-b");
  ASSERT_EQ(Run({"node", "list",
                 "-o=jsonpath={range .nodes[?(@.state==\"NODE_STATE_READY\")]}{.name}:"
                 "{.device_count}{\"\\n\"}{end}"}),
            0)
      << err_;
  EXPECT_EQ(out_, "host-a:4\n");
}

TEST_F(CommandsTest, ABadJsonPathIsRefusedBeforeAnythingIsSent) {
  EXPECT_EQ(Run({"-o", "jsonpath={.containers[}", "container", "delete", "c-00000000000000a1"}),
            2);
  EXPECT_THAT(err_, StartsWith("error: --output=jsonpath: at character 14: expected an index"));
  EXPECT_TRUE(fake_->calls().empty());
}

TEST_F(CommandsTest, DeletesAndViewsPrintTheirAnswerAsDataInStructuredFormats) {
  fake_->SetResponse("DeleteContainer", v1::DeleteContainerResponse());
  ASSERT_EQ(Run({"-o", "yaml", "container", "delete", "c-00000000000000a1"}), 0) << err_;
  EXPECT_EQ(out_, "{}\n");
  ASSERT_EQ(Run({"container", "grant", "c-00000000000000a1", "--token-only", "-o", "yaml"}), 2);
  EXPECT_THAT(err_, HasSubstr("cannot be combined with -o json, yaml or jsonpath"));
}

}  // namespace
}  // namespace client
}  // namespace iommu
