// The broker's log lines stay machine-parseable whatever a value holds: a
// store error with quotes, spaces and '=' (the kind that used to produce
// malformed lines) is quoted and escaped, and every line parses as
// key=value pairs.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

// Splits one logfmt line into key/value pairs, unquoting quoted values.
// Returns false when the line is not well-formed: a bare word, an
// unterminated quote, or text after a closing quote.
bool ParseLogfmt(const std::string& line, std::vector<std::pair<std::string, std::string>>* out) {
  size_t i = 0;
  while (i < line.size()) {
    const size_t eq = line.find('=', i);
    if (eq == std::string::npos) return false;
    std::string key = line.substr(i, eq - i);
    if (key.empty() || key.find(' ') != std::string::npos) return false;
    i = eq + 1;
    std::string value;
    if (i < line.size() && line[i] == '"') {
      ++i;
      for (;; ++i) {
        if (i >= line.size()) return false;
        if (line[i] == '\\' && i + 1 < line.size()) {
          value += line[++i];
        } else if (line[i] == '"') {
          ++i;
          break;
        } else {
          value += line[i];
        }
      }
      if (i < line.size() && line[i] != ' ') return false;
    } else {
      const size_t end = std::min(line.find(' ', i), line.size());
      value = line.substr(i, end - i);
      if (value.find('"') != std::string::npos) return false;
      i = end;
    }
    out->emplace_back(std::move(key), std::move(value));
    if (i < line.size()) ++i;  // The space.
  }
  return true;
}

TEST(BrokerLogTest, AStoreErrorWithQuotesStaysOneParseableField) {
  FakeStore store;
  OkAgents agents;
  absl::StatusOr<std::unique_ptr<Broker>> broker = Broker::Create(&store, &agents, {});
  ASSERT_TRUE(broker.ok()) << broker.status();
  const std::string nasty = "disk \"full\" at key=value \\ end";
  store.set_next_commit_error(absl::ResourceExhaustedError(nasty));
  v1::CreateTenantRequest req;
  req.set_tenant_id("acme");
  req.mutable_quota()->set_pinned_bytes(4096);
  v1::Tenant out;
  ::testing::internal::CaptureStderr();
  absl::Status s = (*broker)->CreateTenant(req, &out);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(s.ok());

  bool saw_failure = false;
  for (absl::string_view raw : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    std::string line(raw);
    std::vector<std::pair<std::string, std::string>> fields;
    ASSERT_TRUE(ParseLogfmt(line, &fields)) << line;
    for (const auto& [key, value] : fields) {
      if (key == "event" && value == "commit_failed") saw_failure = true;
      if (key == "error") {
        EXPECT_THAT(value, HasSubstr(nasty));
      }
    }
  }
  EXPECT_TRUE(saw_failure) << log;
}

}  // namespace
}  // namespace iommu
