// The global flags of iommuctl (--broker, the transport, --context, -o,
// --timeout, ...): their table, which help, the parser and the completion
// script read, and how each one sets GlobalOptions when parsed. Kept together
// so that a new global flag is one edit in one file.
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/args.h"
#include "client/args_internal.h"
#include "client/jsonpath.h"

namespace iommu {
namespace client {

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      Flag("broker", ValueKind::kString, "HOST:PORT",
           absl::StrCat("Broker address, or every replica's, comma-separated: any "
                        "replica answers, a standby by forwarding to the leader (default: $",
                        kBrokerEnvVar, ", else the current context's, else ", kDefaultBrokerAddress,
                        ").")),
      Flag("cert", ValueKind::kString, "FILE",
           absl::StrCat("PEM client certificate for mutual TLS; its SAN URI "
                        "(spiffe://<trust-domain>/operator/<name> or .../tenant/<id>) is who you "
                        "are to the broker (default: $",
                        kCertEnvVar, ").")),
      Flag("key", ValueKind::kString, "FILE",
           absl::StrCat("PEM private key of --cert (default: $", kKeyEnvVar, ").")),
      Flag("ca", ValueKind::kString, "FILE",
           absl::StrCat("PEM CA bundle that signed the broker's certificate (default: $", kCaEnvVar,
                        ").")),
      Flag("trust-domain", ValueKind::kString, "DOMAIN",
           absl::StrCat("SPIFFE trust domain; the broker must prove spiffe://DOMAIN/broker "
                        "(default: $",
                        kTrustDomainEnvVar, ", else iommu.local).")),
      Flag("insecure", ValueKind::kSwitch, "",
           absl::StrCat("Plaintext, for a broker started with --insecure (development only; "
                        "also $",
                        kInsecureEnvVar, "=1).")),
      Flag("context", ValueKind::kString, "NAME",
           "Use this context of the config file (see 'iommuctl config'): its broker and "
           "credentials, where no flag gives them; it wins over the environment."),
      Flag("output", ValueKind::kString, "FORMAT",
           "Output format (also -o): table; wide, the table with more columns (nodes: agent "
           "version and launcher socket; containers: page sizes, labels and status message; "
           "tenants: labels); json; "
           "yaml, the same fields as json; jsonpath=TEMPLATE, kubectl's JSONPath over the "
           "json ('{.containers[*].id}', '{range .nodes[*]}{.name}{\"\\n\"}{end}', filters "
           "[?(@.state==\"...\")]); or name, one KIND/ID a line (tenant/acme, "
           "node/node-1, device/0000:00:04.0, container/c-..., window/w-...) for list, get "
           "and create commands. In json, 64-bit integers are plain numbers printed exactly "
           "(above 2^53 a parser reading doubles, such as JavaScript or jq before 1.7, rounds "
           "them: use an exact-integer parser), and every *_ms time (milliseconds since the "
           "epoch) is followed by its RFC 3339 UTC twin without the suffix "
           "(\"create_time\": \"2024-05-01T12:00:00.000Z\"; null when unset)."),
      Flag("no-headers", ValueKind::kSwitch, "",
           "Print tables without their header row (lists and usage)."),
      Flag("timeout", ValueKind::kDuration, "DURATION",
           "How long each call to the broker may take, e.g. 5s, 500ms (default 5s). A call "
           "that finds no broker (none listening, one stopping, a change of leader) is tried "
           "again within it, with the same request id."),
      Flag("request-id", ValueKind::kString, "ID",
           "Idempotency key of a mutation (default: a fresh random id). Repeat a failed "
           "mutation with the same id to retry it safely."),
      Flag("verbose", ValueKind::kSwitch, "",
           "Also print the client's own info lines on stderr (e.g. which certificate it "
           "loaded); without it only its warnings and errors, so stderr stays for what went "
           "wrong."),
      Flag("help", ValueKind::kSwitch, "", "Show help (also -h)."),
  };
  return *flags;
}

namespace {

// -o FORMAT: a format name, or jsonpath=TEMPLATE (the template checked here,
// so that a typo is refused before anything is sent).
absl::Status ApplyOutput(absl::string_view text, GlobalOptions* global) {
  static constexpr std::pair<const char*, OutputFormat> kFormats[] = {
      {"table", OutputFormat::kTable},
      {"wide", OutputFormat::kWide},
      {"json", OutputFormat::kJson},
      {"yaml", OutputFormat::kYaml},
      {"name", OutputFormat::kName}};
  const std::string lower = absl::AsciiStrToLower(text);
  for (const auto& [name, format] : kFormats) {
    if (lower == name) {
      global->output = format;
      return absl::OkStatus();
    }
  }
  absl::string_view tmpl = text;
  if (absl::ConsumePrefix(&tmpl, "jsonpath=")) {
    absl::StatusOr<JsonPathTemplate> parsed = JsonPathTemplate::Parse(tmpl);
    if (!parsed.ok()) return Usage(parsed.status().message());
    if (tmpl.empty())
      return Usage(
          "--output=jsonpath: the template is empty, e.g. "
          "-o jsonpath='{.containers[*].id}'");
    global->output = OutputFormat::kJsonPath;
    global->output_template = std::string(tmpl);
    return absl::OkStatus();
  }
  return Usage(
      absl::StrCat("--output: must be table, wide, json, yaml, name or "
                   "jsonpath=TEMPLATE, got ",
                   Quote(text)));
}

}  // namespace

// Applies one global flag to `inv`.
absl::Status ApplyGlobal(const FlagSpec& spec, const FlagValue& value, Invocation* inv) {
  if (spec.name == "help") {
    if (value.number != 0) inv->help = true;
  } else if (spec.name == "broker") {
    inv->global.broker = value.text;
  } else if (spec.name == "cert") {
    inv->global.cert = value.text;
  } else if (spec.name == "key") {
    inv->global.key = value.text;
  } else if (spec.name == "ca") {
    inv->global.ca = value.text;
  } else if (spec.name == "trust-domain") {
    inv->global.trust_domain = value.text;
  } else if (spec.name == "insecure") {
    inv->global.insecure = value.number != 0;
  } else if (spec.name == "context") {
    absl::Status valid = ValidateContextName("--context", value.text);
    if (!valid.ok()) return valid;
    inv->global.context = value.text;
  } else if (spec.name == "output") {
    return ApplyOutput(value.text, &inv->global);
  } else if (spec.name == "no-headers") {
    inv->global.no_headers = value.number != 0;
  } else if (spec.name == "timeout") {
    inv->global.timeout = value.duration;
  } else if (spec.name == "request-id") {
    inv->global.request_id = value.text;
  } else if (spec.name == "verbose") {
    inv->global.verbose = value.number != 0;
  }
  return absl::OkStatus();
}

}  // namespace client
}  // namespace iommu
