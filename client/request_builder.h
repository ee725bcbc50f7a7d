// One request-building path for iommuctl's commands: the request message of
// a command is filled from its Invocation by protobuf reflection, following
// the command's declarative mapping (CommandSpec::positional_field and
// flag_fields, client/args.h), so that a handler holds only the logic that
// is more than a copy (selector rules, update masks, label maps, views).
//
// Pure: no I/O. Thread-safe.
#ifndef CLIENT_REQUEST_BUILDER_H_
#define CLIENT_REQUEST_BUILDER_H_

#include <string>

#include "absl/status/status.h"
#include "client/args.h"
#include "google/protobuf/message.h"

namespace iommu {
namespace client {

// Fills `request` (a fresh message of the command's request type) from
// `inv`, whose command must be set:
//   - request_id = `request_id` when the command is a mutation;
//   - the field named by positional_field = the positional argument;
//   - for each flag given that flag_fields maps, its field (a name, or a
//     dotted path into sub-messages: "quota.pinned_bytes"), converted by the
//     flag's kind: kString to a string field, the numeric kinds (sizes,
//     integers, PCI ids) to a uint32 or uint64 field, kSwitch to a bool
//     field; a repeated field gets every value given, in order.
// Fields whose flag is not given keep their defaults. Every mapping of the
// command is checked, given or not, so a wrong field name fails on the
// first run of the command.
// INVALID_ARGUMENT "--flag: ..." for a number too large for its uint32
// field. INTERNAL naming the command, flag and field when the mapping does
// not fit `request` (no such field, or a type the flag's kind cannot fill);
// `request` is then partly filled and must not be sent.
absl::Status BuildRequest(const Invocation& inv, const std::string& request_id,
                          google::protobuf::Message* request);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_REQUEST_BUILDER_H_
