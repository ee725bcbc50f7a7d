#include "server/broker_options.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace iommu {

absl::Status ValidateBrokerOptions(const BrokerOptions& options) {
  const struct {
    const char* name;
    int64_t value;
    int64_t min;
  } checks[] = {
      {"heartbeat_interval_ms", options.heartbeat_interval_ms, 1},
      {"node_timeout_ms", options.node_timeout_ms, 1},
      {"liveness_check_interval_ms", options.liveness_check_interval_ms, 0},
      {"request_ttl_ms", options.request_ttl_ms, 1},
      {"max_remembered_answers_per_caller", options.max_remembered_answers_per_caller, 0},
      {"max_remembered_answer_bytes_per_caller", options.max_remembered_answer_bytes_per_caller, 0},
      {"max_concurrent_registrations", options.max_concurrent_registrations, 0},
  };
  for (const auto& c : checks) {
    if (c.value < c.min) {
      return absl::InvalidArgumentError(
          absl::StrCat(c.name, ": must be at least ", c.min, ", got ", c.value));
    }
  }
  return absl::OkStatus();
}

}  // namespace iommu
