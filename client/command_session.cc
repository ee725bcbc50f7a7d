// Session's members that are not templates, the usage-error marker, and the
// fetches several commands share (client/command_session.h).
#include "client/command_session.h"

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "client/format.h"
#include "client/request_builder.h"
#include "client/structured_output.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;

// Usage errors found while building a request carry this payload, so that
// they exit with 2 rather than 1.
constexpr char kUsagePayload[] = "type.iommu/iommuctl.UsageError";

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

absl::Status Session::Build(google::protobuf::Message* request) const {
  absl::Status built = BuildRequest(inv_, request_id_, request);
  if (absl::IsInvalidArgument(built)) return UsageError(built.message());
  return built;
}

absl::Status Session::Print(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> text;
  switch (inv_.global.output) {
    case OutputFormat::kJson:
    case OutputFormat::kYaml:
    case OutputFormat::kJsonPath:
      text = FormatStructured(message, inv_.global);
      break;
    case OutputFormat::kName:
      // ParseCommandLine admits -o name only for commands that answer
      // with named objects.
      text = FormatNames(message);
      break;
    case OutputFormat::kTable:
    case OutputFormat::kWide:
      text =
          FormatTable(message, !inv_.global.no_headers, inv_.global.output == OutputFormat::kWide);
      break;
  }
  if (!text.ok()) return text.status();
  out_ << *text;
  return absl::OkStatus();
}

absl::Status Session::PrintView(const google::protobuf::Message& message, absl::string_view table) {
  if (IsStructured(inv_.global.output)) return Print(message);
  out_ << table;
  return absl::OkStatus();
}

void Session::Redraw(absl::string_view table) {
  if (out_is_terminal_) {
    out_ << "\x1b[H\x1b[2J";
  } else if (frames_ > 0) {
    out_ << "\n";
  }
  ++frames_;
  out_ << table << std::flush;
}

bool Session::Wait(absl::Duration interval) {
  if (wait_) return wait_(interval);
  absl::SleepFor(interval);
  return true;
}

absl::Status Session::PrintDone(const google::protobuf::Message& message,
                                absl::string_view confirmation) {
  if (IsStructured(inv_.global.output)) return Print(message);
  out_ << confirmation << "\n";
  return absl::OkStatus();
}

// Every page of GetUsage (pages are by tenant; each carries its tenants'
// node rows) into `all`.
absl::Status AllUsage(Session& s, v1::GetUsageRequest req, v1::GetUsageResponse* all_out) {
  v1::GetUsageResponse& all = *all_out;
  std::string token;
  while (true) {
    req.set_page_size(kMaxPageSize);
    req.set_page_token(token);
    v1::GetUsageResponse page;
    RETURN_IF_ERROR(s.Call(&Stub::GetUsage, req, &page));
    for (auto& t : *page.mutable_tenants()) *all.add_tenants() = std::move(t);
    for (auto& n : *page.mutable_nodes()) *all.add_nodes() = std::move(n);
    if (page.next_page_token().empty()) break;
    if (page.next_page_token() == token) {
      return absl::InternalError(absl::StrCat("the broker returned the same page_token twice (\"",
                                              token, "\"); stopping"));
    }
    token = page.next_page_token();
  }
  return absl::OkStatus();
}

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

}  // namespace client
}  // namespace iommu
