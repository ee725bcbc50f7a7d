#include "common/reconnect.h"

#include <algorithm>
#include <cstdint>

#include <grpc/grpc.h>

namespace iommu {
namespace {

int Millis(absl::Duration d) {
  return static_cast<int>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, absl::ToInt64Milliseconds(absl::Hours(1))));
}

}  // namespace

void SetReconnectBackoff(absl::Duration initial, absl::Duration max,
                         grpc::ChannelArguments* args) {
  const int initial_ms = Millis(initial);
  args->SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial_ms);
  args->SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, std::max(initial_ms, Millis(max)));
  args->SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, Millis(kMinConnectTimeout));
}

}  // namespace iommu
