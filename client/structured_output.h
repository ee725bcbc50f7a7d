// -o json, yaml and jsonpath=TEMPLATE for any message: YAML and JSONPath
// read the JSON text (client/format.h's FormatJson), so all three show the
// same fields with the same values. Pure; thread-safe.
#ifndef CLIENT_STRUCTURED_OUTPUT_H_
#define CLIENT_STRUCTURED_OUTPUT_H_

#include <string>

#include "absl/status/statusor.h"
#include "client/args.h"
#include "google/protobuf/message.h"

namespace iommu {
namespace client {

// `message` as global.output (kJson, kYaml or kJsonPath with
// global.output_template) prints it; any other format prints as kJson.
absl::StatusOr<std::string> FormatStructured(const google::protobuf::Message& message,
                                             const GlobalOptions& global);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_STRUCTURED_OUTPUT_H_
