#include "client/structured_output.h"

#include "absl/strings/str_cat.h"
#include "client/format.h"
#include "client/json_tree.h"
#include "client/jsonpath.h"
#include "client/yaml.h"

namespace iommu {
namespace client {

absl::StatusOr<std::string> FormatStructured(const google::protobuf::Message& message,
                                             const GlobalOptions& global) {
  absl::StatusOr<std::string> json = FormatJson(message);
  if (!json.ok() || (global.output != OutputFormat::kYaml &&
                     global.output != OutputFormat::kJsonPath)) {
    return json;
  }
  absl::StatusOr<JsonNode> tree = ParseJson(*json);
  if (!tree.ok()) return absl::InternalError(absl::StrCat("reading our own JSON: ",
                                                          tree.status().message()));
  if (global.output == OutputFormat::kYaml) return FormatYaml(*tree);
  // ParseCommandLine has parsed the template once already.
  absl::StatusOr<JsonPathTemplate> tmpl = JsonPathTemplate::Parse(global.output_template);
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->Render(*tree);
}

}  // namespace client
}  // namespace iommu
