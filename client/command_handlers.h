// The handlers of iommuctl's commands that do more than copy the command line
// into a request and print the answer (those are generic, in commands.cc's
// dispatch table), grouped by the file that holds them. Internal to
// iommuctl: RunIommuctl (client/commands.h) dispatches to them by command
// name.
//
// Each handler runs one command through `s` (client/command_session.h): OK
// once the answer is printed; a usage error (UsageError) when the command
// line cannot make a valid request, before the broker is called; otherwise
// the broker's status. Not thread-safe, like Session.
#ifndef CLIENT_COMMAND_HANDLERS_H_
#define CLIENT_COMMAND_HANDLERS_H_

#include <string>

#include "absl/status/status.h"
#include "client/command_session.h"
#include "client/views.pb.h"
#include "proto/broker.pb.h"

namespace iommu {
namespace client {

// resource_commands.cc: tenants, containers and windows.
absl::Status TenantCreate(Session& s);
absl::Status TenantSetQuota(Session& s);
absl::Status TenantLabel(Session& s);
absl::Status ContainerCreate(Session& s);
absl::Status ContainerList(Session& s);
absl::Status ContainerLabel(Session& s);
absl::Status ContainerGrant(Session& s);
absl::Status WindowAllocate(Session& s);

// container_watch.cc: `container list --watch` after ContainerList has
// built `req`: the list, then each change until the wait says stop.
absl::Status WatchContainers(Session& s, const iommu::v1::ListContainersRequest& req);

// describe_commands.cc: one object for people, with its related objects and
// events.
absl::Status DescribeTenant(Session& s);
absl::Status DescribeNode(Session& s);
absl::Status DescribeContainer(Session& s);
absl::Status DescribeWindow(Session& s);

// fleet_commands.cc: usage, top and version.
absl::Status Usage(Session& s);
absl::Status Top(Session& s);
absl::Status Version(Session& s);
// iommuctl's own version, and the table view of a version answer: also
// printed by RunIommuctl for `version --client` and when the broker fails.
iommu::ctl::VersionView ClientVersion();
std::string FormatVersion(const iommu::ctl::VersionView& v);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_COMMAND_HANDLERS_H_
