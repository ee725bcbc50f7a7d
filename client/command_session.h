// The machinery every iommuctl command handler shares, internal to iommuctl:
// Session, one run of one command, which builds the request from the command
// line (client/request_builder.h), calls the broker (again while no broker
// answers, client/call_retry.h; page by page for lists) and prints the answer
// in the format of -o (client/format.h, client/structured_output.h). Also the
// marker of usage errors found while building a request (RunIommuctl exits 2
// on them, not 1), and the fetches several commands share.
//
// The handlers themselves are in client/command_handlers.h; RunIommuctl
// (client/commands.h) makes the Session and dispatches to them.
//
// Not thread-safe: a Session belongs to one command on one thread.
#ifndef CLIENT_COMMAND_SESSION_H_
#define CLIENT_COMMAND_SESSION_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/args.h"
#include "client/call_retry.h"
#include "client/commands.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "google/protobuf/message.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "grpcpp/client_context.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

using Stub = ::iommu::v1::Broker::StubInterface;

// A unary method of the Broker stub, as the generic handlers take it.
template <typename Req, typename Resp>
using Method = grpc::Status (Stub::*)(grpc::ClientContext*, const Req&, Resp*);

// INVALID_ARGUMENT with `message`, marked as a usage error: found while
// building a request, so that it exits with 2 rather than 1.
absl::Status UsageError(absl::string_view message);

// True when `status` was made by UsageError.
bool IsUsageError(const absl::Status& status);

// Whether a list answer carries a resource_version (a watch can start there).
template <typename Resp, typename = void>
struct HasResourceVersion : std::false_type {};
template <typename Resp>
struct HasResourceVersion<Resp, std::void_t<decltype(std::declval<Resp>().resource_version())>>
    : std::true_type {};

// One run of one command: the stub, the options and the output stream.
class Session final {
 public:
  Session(const Invocation& inv, Stub* stub, std::string request_id, std::ostream& out,
          std::ostream& err, const CliEnvironment& env)
      : inv_(inv),
        stub_(stub),
        request_id_(std::move(request_id)),
        out_(out),
        err_(err),
        wait_(env.wait),
        retry_sleep_(env.retry_sleep),
        out_is_terminal_(env.out_is_terminal) {}
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Invocation& inv() const { return inv_; }
  const std::string& request_id() const { return request_id_; }

  // Fills `request` from the command line (client/request_builder.h); a
  // value its field cannot hold is a usage error.
  absl::Status Build(google::protobuf::Message* request) const;

  // Calls `method`, again while no broker answers (client/call_retry.h),
  // for at most --timeout in all; returns its status.
  template <typename Req, typename Resp>
  absl::Status Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& request, Resp* response) {
    CallRetryOptions options;
    options.timeout = inv_.global.timeout;
    return CallWithRetries(
        options,
        [&](absl::Time deadline, bool wait_for_ready) {
          grpc::ClientContext context;
          context.set_deadline(absl::ToChronoTime(deadline));
          context.set_wait_for_ready(wait_for_ready);
          response->Clear();
          return FromGrpcStatus((stub_->*method)(&context, request, response));
        },
        [] { return absl::Now(); },
        [this](absl::Duration pause) {
          if (retry_sleep_) {
            retry_sleep_(pause);
          } else {
            absl::SleepFor(pause);
          }
        });
  }

  // Calls a list method page by page (page_size 1000, or fewer to stop at
  // --limit) and gathers the items of every page into `all`. When --limit
  // stops early, all->next_page_token resumes after the last item shown.
  // A list that carries a resource_version gets its first page's: a watch
  // from there misses no change made while the later pages were read.
  template <typename Req, typename Resp, typename Item>
  absl::Status ListAll(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                       Req request, google::protobuf::RepeatedPtrField<Item>* (Resp::*items)(),
                       Resp* all) {
    const uint64_t limit = inv_.Number("limit");
    std::string token;
    while (true) {
      uint64_t page_size = kMaxPageSize;
      const uint64_t have = static_cast<uint64_t>((all->*items)()->size());
      if (limit > 0) page_size = std::min<uint64_t>(page_size, limit - have);
      request.set_page_size(static_cast<uint32_t>(page_size));
      request.set_page_token(token);
      Resp page;
      RETURN_IF_ERROR(Call(method, request, &page));
      if constexpr (HasResourceVersion<Resp>::value) {
        if (token.empty()) all->set_resource_version(page.resource_version());
      }
      auto* got = (page.*items)();
      for (Item& item : *got) {
        if (limit > 0 && static_cast<uint64_t>((all->*items)()->size()) >= limit) break;
        *(all->*items)()->Add() = std::move(item);
      }
      const bool full = limit > 0 && static_cast<uint64_t>((all->*items)()->size()) >= limit;
      if (page.next_page_token().empty() || full) {
        all->set_next_page_token(full ? page.next_page_token() : "");
        return absl::OkStatus();
      }
      if (page.next_page_token() == token) {
        return absl::InternalError(absl::StrCat("the broker returned the same page_token twice (\"",
                                                token, "\"); stopping"));
      }
      token = page.next_page_token();
    }
  }

  // Prints `message` in the format of -o: a table view, or its data.
  absl::Status Print(const google::protobuf::Message& message);

  // Prints `line` and a newline, whatever the output format: for the views
  // meant for shell scripts (--token-only).
  void PrintLine(absl::string_view line) { out_ << line << "\n"; }

  // Prints `message` as JSON, or `table` (already rendered, ending in a
  // newline): for views that combine several answers (describe, top).
  absl::Status PrintView(const google::protobuf::Message& message, absl::string_view table);

  // Prints one frame of `top --watch`: on a terminal, clears the screen
  // first; elsewhere (a pipe, a file) writes no escape sequences and puts a
  // blank line between frames, as `watch` does when piped.
  void Redraw(absl::string_view table);

  Stub* stub() const { return stub_; }
  // A note for people, on stderr (the reconnects of --watch).
  void Note(absl::string_view line) { err_ << line << std::endl; }
  void Flush() { out_ << std::flush; }

  // Waits between redraws; false: stop.
  bool Wait(absl::Duration interval);

  // Prints `message` as JSON, or `confirmation` (a line) for tables: for the
  // answers that carry nothing (deletes, releases).
  absl::Status PrintDone(const google::protobuf::Message& message, absl::string_view confirmation);

 private:
  const Invocation& inv_;
  Stub* const stub_;
  const std::string request_id_;
  std::ostream& out_;
  std::ostream& err_;
  const std::function<bool(absl::Duration)> wait_;
  const std::function<void(absl::Duration)> retry_sleep_;
  const bool out_is_terminal_;
  int frames_ = 0;  // Frames drawn by Redraw.
};

// ------------------------------------------------- shared by several commands

// Every page of GetUsage (pages are by tenant; each carries its tenants'
// node rows) into `all` (usage, describe, top).
absl::Status AllUsage(Session& s, iommu::v1::GetUsageRequest req,
                      iommu::v1::GetUsageResponse* all_out);

// Now, in milliseconds since the epoch: the time describe and top draw at.
int64_t NowMs();

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_COMMAND_SESSION_H_
