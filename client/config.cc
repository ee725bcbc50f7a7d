#include "client/config.h"

#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/format.h"
#include "client/json_tree.h"

namespace iommu {
namespace client {
namespace {

using iommu::ctl::CliConfig;
using iommu::ctl::CliContext;

absl::Status Bad(absl::string_view path, absl::string_view field, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", field, ": ", rule));
}

absl::Status ReadString(absl::string_view path, const std::string& field, const JsonNode& value,
                        std::string* out) {
  if (value.kind != JsonNode::Kind::kString) return Bad(path, field, "must be a string");
  *out = value.scalar;
  return absl::OkStatus();
}

absl::Status ReadContext(absl::string_view path, const std::string& where, const JsonNode& node,
                         CliContext* context) {
  if (node.kind != JsonNode::Kind::kObject) return Bad(path, where, "must be an object");
  for (const auto& [name, value] : node.members) {
    const std::string field = absl::StrCat(where, ".", name);
    absl::Status s;
    if (name == "name") {
      s = ReadString(path, field, value, context->mutable_name());
    } else if (name == "broker") {
      s = ReadString(path, field, value, context->mutable_broker());
    } else if (name == "cert") {
      s = ReadString(path, field, value, context->mutable_cert());
    } else if (name == "key") {
      s = ReadString(path, field, value, context->mutable_key());
    } else if (name == "ca") {
      s = ReadString(path, field, value, context->mutable_ca());
    } else if (name == "trust_domain") {
      s = ReadString(path, field, value, context->mutable_trust_domain());
    } else if (name == "insecure") {
      if (value.kind != JsonNode::Kind::kBool) return Bad(path, field, "must be true or false");
      context->set_insecure(value.scalar == "true");
    } else {
      return Bad(path, field,
                 "unknown field (known: name, broker, cert, key, ca, trust_domain, insecure)");
    }
    if (!s.ok()) return s;
  }
  return ValidateContextName(absl::StrCat(path, ": ", where, ".name"), context->name());
}

// Sets `field` to `value` unless a higher level set it already.
void FillString(std::string* field, const std::string& value) {
  if (field->empty()) *field = value;
}

void FillFromContext(const CliContext& context, GlobalOptions* out) {
  FillString(&out->broker, context.broker());
  FillString(&out->cert, context.cert());
  FillString(&out->key, context.key());
  FillString(&out->ca, context.ca());
  FillString(&out->trust_domain, context.trust_domain());
  if (!out->insecure) out->insecure = context.insecure();
}

}  // namespace

absl::StatusOr<CliConfig> ParseConfig(absl::string_view json, absl::string_view path) {
  CliConfig config;
  if (absl::StripAsciiWhitespace(json).empty()) return config;
  absl::StatusOr<JsonNode> root = ParseJson(json);
  if (!root.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", root.status().message()));
  }
  if (root->kind != JsonNode::Kind::kObject) return Bad(path, "the file", "must be a JSON object");
  std::set<std::string> seen;
  for (const auto& [name, value] : root->members) {
    if (name == "current_context") {
      absl::Status s = ReadString(path, name, value, config.mutable_current_context());
      if (!s.ok()) return s;
    } else if (name == "contexts") {
      if (value.kind != JsonNode::Kind::kArray) return Bad(path, name, "must be an array");
      for (size_t i = 0; i < value.items.size(); ++i) {
        CliContext* context = config.add_contexts();
        absl::Status s = ReadContext(path, absl::StrCat("contexts[", i, "]"), value.items[i],
                                     context);
        if (!s.ok()) return s;
        if (!seen.insert(context->name()).second) {
          return Bad(path, absl::StrCat("contexts[", i, "].name"),
                     absl::StrCat("context \"", context->name(), "\" is defined twice"));
        }
      }
    } else {
      return Bad(path, name, "unknown field (known: current_context, contexts)");
    }
  }
  if (!config.current_context().empty() &&
      FindContext(config, config.current_context()) == nullptr) {
    return Bad(path, "current_context",
               absl::StrCat("names no context: \"", config.current_context(), "\""));
  }
  return config;
}

std::string RenderConfig(const CliConfig& config) {
  // FormatJson fails only for messages it cannot reflect, which a generated
  // message never is.
  absl::StatusOr<std::string> json = FormatJson(config);
  return json.ok() ? *json : "{}\n";
}

absl::Status NoSuchContext(const CliConfig& config, absl::string_view prefix,
                           absl::string_view name) {
  std::vector<std::string> names;
  for (const CliContext& c : config.contexts()) names.push_back(c.name());
  return absl::InvalidArgumentError(absl::StrCat(
      prefix, "no context named \"", name, "\" (have: ",
      names.empty() ? "none; add one with iommuctl config set-context"
                    : absl::StrJoin(names, ", "),
      ")"));
}

const CliContext* FindContext(const CliConfig& config, absl::string_view name) {
  for (const CliContext& c : config.contexts()) {
    if (c.name() == name) return &c;
  }
  return nullptr;
}

absl::StatusOr<GlobalOptions> ResolveSettings(const GlobalOptions& flags,
                                              absl::string_view context_flag,
                                              const EnvSettings& env, const CliConfig& config) {
  GlobalOptions out = flags;
  const CliContext* chosen = nullptr;
  if (!context_flag.empty()) {
    chosen = FindContext(config, context_flag);
    if (chosen == nullptr) {
      return NoSuchContext(config, "--context: ", context_flag);
    }
    FillFromContext(*chosen, &out);
  }
  FillString(&out.broker, env.broker);
  FillString(&out.cert, env.cert);
  FillString(&out.key, env.key);
  FillString(&out.ca, env.ca);
  FillString(&out.trust_domain, env.trust_domain);
  if (!out.insecure) out.insecure = env.insecure;
  if (chosen == nullptr && !config.current_context().empty()) {
    const CliContext* current = FindContext(config, config.current_context());
    // ParseConfig refuses a current_context naming nothing; a config built
    // in memory may still hold one.
    if (current == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "current context \"", config.current_context(), "\" does not exist"));
    }
    FillFromContext(*current, &out);
  }
  FillString(&out.broker, kDefaultBrokerAddress);
  return out;
}

}  // namespace client
}  // namespace iommu
