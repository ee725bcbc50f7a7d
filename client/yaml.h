// -o yaml: a JSON document (client/json_tree.h) as YAML 1.2 block style, the
// way kubectl prints objects: mappings indented by two, sequence items at
// their key's indentation, strings plain where that reads back as the same
// string and double-quoted (JSON escapes, valid YAML) where it would not:
// numbers, booleans, null-like words, timestamps, anything with special
// characters. Numbers are written as JSON wrote them (exact).
//
// Pure function: no I/O, thread-safe.
#ifndef CLIENT_YAML_H_
#define CLIENT_YAML_H_

#include <string>

#include "client/json_tree.h"

namespace iommu {
namespace client {

// `node` as a YAML document ending in a newline.
std::string FormatYaml(const JsonNode& node);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_YAML_H_
