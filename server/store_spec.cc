#include "server/store_spec.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace iommu {
namespace {

constexpr absl::string_view kEtcdScheme = "etcd://";

absl::Status Invalid(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "--store: ", why,
      " (expected sqlite:PATH, sqlite-kv:PATH or etcd://HOST:PORT[,HOST:PORT...])"));
}

// "host:port" or "[v6]:port", with a port in 1..65535.
bool IsEndpoint(absl::string_view e) {
  const size_t colon = e.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  int port = 0;
  if (!absl::SimpleAtoi(e.substr(colon + 1), &port) || port < 1 || port > 65535) return false;
  const absl::string_view host = e.substr(0, colon);
  if (host.front() == '[') return host.size() > 2 && host.back() == ']';
  return host.find_first_of("/[]@ ") == absl::string_view::npos;
}

}  // namespace

absl::StatusOr<StoreSpec> ParseStoreSpec(absl::string_view store_flag,
                                         absl::string_view db_flag) {
  StoreSpec spec;
  if (store_flag.empty()) {
    if (db_flag.empty()) return Invalid("empty, and --db names no file either");
    spec.path = std::string(db_flag);
    return spec;
  }
  if (absl::StartsWith(store_flag, kEtcdScheme)) {
    spec.kind = StoreSpec::Kind::kEtcd;
    std::vector<std::string> endpoints;
    for (absl::string_view e : absl::StrSplit(store_flag.substr(kEtcdScheme.size()), ',')) {
      absl::ConsumePrefix(&e, kEtcdScheme);
      if (!IsEndpoint(e)) {
        return Invalid(absl::StrCat("\"", e, "\" is not a HOST:PORT endpoint of etcd"));
      }
      endpoints.emplace_back(e);
    }
    spec.endpoints = absl::StrJoin(endpoints, ",");
    return spec;
  }
  const size_t colon = store_flag.find(':');
  const absl::string_view scheme = store_flag.substr(0, colon);
  if (colon == absl::string_view::npos || (scheme != "sqlite" && scheme != "sqlite-kv")) {
    return Invalid(absl::StrCat("\"", store_flag, "\" names no known store"));
  }
  spec.kind = scheme == "sqlite" ? StoreSpec::Kind::kSqlite : StoreSpec::Kind::kSqliteKv;
  spec.path = std::string(store_flag.substr(colon + 1));
  if (spec.path.empty()) return Invalid(absl::StrCat(scheme, ": names no file"));
  return spec;
}

std::string DescribeStoreSpec(const StoreSpec& spec) {
  switch (spec.kind) {
    case StoreSpec::Kind::kSqlite:
      return absl::StrCat("sqlite:", spec.path);
    case StoreSpec::Kind::kSqliteKv:
      return absl::StrCat("sqlite-kv:", spec.path);
    case StoreSpec::Kind::kEtcd:
      return absl::StrCat(kEtcdScheme, spec.endpoints);
  }
  return "";
}

}  // namespace iommu
