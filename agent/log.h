// The agent logs through common/log.h (one structured key=value line per
// event, shared with the broker); these names keep agent code short.
#ifndef AGENT_LOG_H_
#define AGENT_LOG_H_

#include "common/log.h"

namespace iommu {
namespace agent {

using ::iommu::FormatLogLine;
using ::iommu::LogEvent;
using ::iommu::LogField;
using ::iommu::LogLevel;
using ::iommu::ParseLogLevel;
using ::iommu::SetLogSource;
using ::iommu::SetMinLogLevel;

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_LOG_H_
