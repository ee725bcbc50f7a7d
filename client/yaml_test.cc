#include "client/yaml.h"

#include "client/json_tree.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

std::string Yaml(const char* json) {
  absl::StatusOr<JsonNode> doc = ParseJson(json);
  EXPECT_TRUE(doc.ok()) << doc.status();
  return doc.ok() ? FormatYaml(*doc) : "";
}

TEST(YamlTest, NestsMappingsAndPutsSequenceItemsAtTheirKeysIndentation) {
  EXPECT_EQ(Yaml(R"({"containers": [{"id": "c-1", "devices": ["d1", "d2"],
                     "geometry": {"page_size_bitmap": 4096}},
                    {"id": "c-2", "devices": [], "geometry": {}}],
                     "next_page_token": ""})"),
            "containers:\n"
            "- id: c-1\n"
            "  devices:\n"
            "  - d1\n"
            "  - d2\n"
            "  geometry:\n"
            "    page_size_bitmap: 4096\n"
            "- id: c-2\n"
            "  devices: []\n"
            "  geometry: {}\n"
            "next_page_token: \"\"\n");
}

TEST(YamlTest, QuotesStringsThatWouldReadBackAsSomethingElse) {
  EXPECT_EQ(Yaml(R"({"a": "true", "b": "No", "c": "123", "d": "0x10", "e": "",
                     "f": "2024-05-01T12:00:00.000Z", "g": "a: b", "h": "-x",
                     "i": "line\nbreak", "j": "null", "k": "~", "l": "x#y", "m": "key:"})"),
            "a: \"true\"\nb: \"No\"\nc: \"123\"\nd: \"0x10\"\ne: \"\"\n"
            "f: \"2024-05-01T12:00:00.000Z\"\ng: \"a: b\"\nh: \"-x\"\n"
            "i: \"line\\nbreak\"\nj: \"null\"\nk: \"~\"\nl: \"x#y\"\nm: \"key:\"\n");
}

TEST(YamlTest, LeavesPlainStringsAndScalarsUnquoted) {
  EXPECT_EQ(Yaml(R"({"state": "CONTAINER_STATE_READY", "addr": "node-1:7401",
                     "path": "/run/iommu/agent.sock", "big": 18446744073709551615,
                     "on": true, "none": null, "neg": -5})"),
            "state: CONTAINER_STATE_READY\naddr: node-1:7401\npath: /run/iommu/agent.sock\n"
            "big: 18446744073709551615\n\"on\": true\nnone: null\nneg: -5\n");
}

TEST(YamlTest, NestedSequencesAndScalarDocuments) {
  EXPECT_EQ(Yaml("[[1, 2], [], {\"a\": [3]}]"), "- - 1\n  - 2\n- []\n- a:\n  - 3\n");
  EXPECT_EQ(Yaml("{}"), "{}\n");
  EXPECT_EQ(Yaml("\"x\""), "x\n");
}

}  // namespace
}  // namespace client
}  // namespace iommu
