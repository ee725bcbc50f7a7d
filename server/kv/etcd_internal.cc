#include "server/kv/etcd_internal.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace iommu {
namespace kv {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what, const std::string& address,
                      absl::Duration call_timeout) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK:
      return absl::OkStatus();
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError(
          absl::StrCat("etcd at ", address, " is unreachable (", what, "): ", s.error_message()));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::UnavailableError(absl::StrCat("etcd at ", address, " did not answer ", what,
                                                 " within ", absl::FormatDuration(call_timeout),
                                                 "; its outcome is unknown: ", s.error_message()));
    default:
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("etcd at ", address, ", ", what, ": ", s.error_message()));
  }
}

KeyValue StripPrefix(const mvccpb::KeyValue& in, const std::string& prefix) {
  KeyValue kv;
  kv.key = in.key().substr(std::min(prefix.size(), in.key().size()));
  kv.value = in.value();
  kv.create_revision = in.create_revision();
  kv.mod_revision = in.mod_revision();
  kv.version = in.version();
  kv.lease = in.lease();
  return kv;
}

}  // namespace kv
}  // namespace iommu
