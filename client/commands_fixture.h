// CommandsTest: runs iommuctl's whole program (RunIommuctl) in-process
// against a FakeBrokerStub, with a fixed environment (no $IOMMU_BROKER, no
// config file unless a test sets env_.config_path) and numbered request ids.
// Shared by the tests of each group of commands (*_commands_test.cc,
// commands_test.cc, ...).
#ifndef CLIENT_COMMANDS_FIXTURE_H_
#define CLIENT_COMMANDS_FIXTURE_H_

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/args.h"
#include "client/commands.h"
#include "client/fake_broker_stub.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {

// For reading iommuctl's JSON back into a message: it adds an RFC 3339
// sibling to every *_ms time field, which the message does not know.
inline google::protobuf::util::JsonParseOptions IgnoreUnknownFields() {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  return options;
}

class CommandsTest : public ::testing::Test {
 protected:
  CommandsTest() : fake_(std::make_shared<FakeBrokerStub>()) {
    env_.default_broker = "default.example:7400";
    env_.new_request_id = [this] { return absl::StrCat("generated-", ++ids_issued_); };
    // Commands that wait (top --watch, container list --watch) stop at their
    // first wait unless a test says otherwise.
    env_.wait = [](absl::Duration) { return false; };
    // Calls that no broker answers are retried without sleeping.
    env_.retry_sleep = [this](absl::Duration d) { retry_pauses_.push_back(d); };
  }

  // Runs `iommuctl args...`; fills out_ and err_, returns the exit code.
  int Run(const std::vector<std::string>& args) {
    std::vector<const char*> argv = {"iommuctl"};
    for (const std::string& a : args) argv.push_back(a.c_str());
    std::ostringstream out, err;
    StubFactory factory = [this](const GlobalOptions& global)
        -> absl::StatusOr<std::shared_ptr<iommu::v1::Broker::StubInterface>> {
      addresses_.push_back(global.broker);
      globals_.push_back(global);
      return std::shared_ptr<iommu::v1::Broker::StubInterface>(fake_);
    };
    const int code =
        RunIommuctl(static_cast<int>(argv.size()), argv.data(), out, err, factory, env_);
    out_ = out.str();
    err_ = err.str();
    return code;
  }

  std::shared_ptr<FakeBrokerStub> fake_;
  CliEnvironment env_;
  int ids_issued_ = 0;
  std::vector<absl::Duration> retry_pauses_;  // Pauses between retried calls.
  std::vector<std::string> addresses_;
  std::vector<GlobalOptions> globals_;
  std::string out_;
  std::string err_;
};

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_COMMANDS_FIXTURE_H_
