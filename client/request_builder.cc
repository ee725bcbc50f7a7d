#include "client/request_builder.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"

namespace iommu {
namespace client {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

using FieldPath = std::vector<const FieldDescriptor*>;

absl::Status Mismatch(const Invocation& inv, absl::string_view what, absl::string_view path,
                      const Message& request, absl::string_view why) {
  return absl::InternalError(absl::StrCat("\"", inv.command->FullName(), "\": ", what,
                                          " cannot fill ", request.GetDescriptor()->name(), ".",
                                          path, ": ", why));
}

// The fields along the dotted `path` in `request`'s type: the sub-message
// fields on the way, then the field itself (last).
absl::StatusOr<FieldPath> Resolve(const Invocation& inv, absl::string_view what,
                                  absl::string_view path, const Message& request) {
  FieldPath fields;
  const google::protobuf::Descriptor* type = request.GetDescriptor();
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (type == nullptr) return Mismatch(inv, what, path, request, "not a message on the way");
    const FieldDescriptor* field = type->FindFieldByName(std::string(part));
    if (field == nullptr) return Mismatch(inv, what, path, request, "no such field");
    fields.push_back(field);
    type = field->is_repeated() ? nullptr : field->message_type();
  }
  return fields;
}

// The message holding the last field of `fields`, its parents created.
Message* Holder(Message* request, const FieldPath& fields) {
  Message* m = request;
  for (size_t i = 0; i + 1 < fields.size(); ++i) {
    m = m->GetReflection()->MutableMessage(m, fields[i]);
  }
  return m;
}

// Whether a flag of `kind` can fill `field`.
bool Fits(ValueKind kind, const FieldDescriptor& field) {
  switch (kind) {
    case ValueKind::kString:
      return field.cpp_type() == FieldDescriptor::CPPTYPE_STRING;
    case ValueKind::kSwitch:
      return field.cpp_type() == FieldDescriptor::CPPTYPE_BOOL && !field.is_repeated();
    case ValueKind::kSize:
    case ValueKind::kUint32:
    case ValueKind::kUint64:
    case ValueKind::kPciId:
    case ValueKind::kPciIds:
      return field.cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ||
             field.cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
    case ValueKind::kDuration:
      return false;  // Units and bounds differ per field: the handler's.
  }
  return false;
}

// Sets (or, for a repeated field, appends) one value.
absl::Status Put(const FlagSpec& flag, const FlagValue& value, Message* m,
                 const FieldDescriptor* f) {
  const auto* r = m->GetReflection();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      f->is_repeated() ? r->AddString(m, f, value.text) : r->SetString(m, f, value.text);
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      r->SetBool(m, f, value.number != 0);
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      if (value.number > std::numeric_limits<uint32_t>::max()) {
        return absl::InvalidArgumentError(absl::StrFormat("--%s: \"%s\" is too large (at most %#x)",
                                                          flag.name, value.text,
                                                          std::numeric_limits<uint32_t>::max()));
      }
      f->is_repeated() ? r->AddUInt32(m, f, static_cast<uint32_t>(value.number))
                       : r->SetUInt32(m, f, static_cast<uint32_t>(value.number));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      f->is_repeated() ? r->AddUInt64(m, f, value.number) : r->SetUInt64(m, f, value.number);
      break;
    default:
      return absl::InternalError(absl::StrCat("--", flag.name, ": unhandled field type"));
  }
  return absl::OkStatus();
}

// The values of `flag` a field receives: all for a repeated field, else the
// last.
std::vector<FlagValue> ValuesFor(const std::vector<FlagValue>& given, const FieldDescriptor& f) {
  if (f.is_repeated() || given.empty()) return given;
  return {given.back()};
}

absl::Status SetString(const Invocation& inv, absl::string_view what, absl::string_view path,
                       const std::string& text, Message* request) {
  absl::StatusOr<FieldPath> fields = Resolve(inv, what, path, *request);
  if (!fields.ok()) return fields.status();
  const FieldDescriptor* f = fields->back();
  if (f->cpp_type() != FieldDescriptor::CPPTYPE_STRING || f->is_repeated()) {
    return Mismatch(inv, what, path, *request, "not a string field");
  }
  Message* m = Holder(request, *fields);
  m->GetReflection()->SetString(m, f, text);
  return absl::OkStatus();
}

}  // namespace

absl::Status BuildRequest(const Invocation& inv, const std::string& request_id, Message* request) {
  if (inv.command == nullptr) return absl::InternalError("BuildRequest: no command");
  const CommandSpec& command = *inv.command;
  if (command.mutation) {
    absl::Status set = SetString(inv, "the request id", "request_id", request_id, request);
    if (!set.ok()) return set;
  }
  if (!command.positional_field.empty()) {
    absl::Status set =
        SetString(inv, command.positional, command.positional_field, inv.positional, request);
    if (!set.ok()) return set;
  }
  for (const auto& [name, path] : command.flag_fields) {
    const std::string what = absl::StrCat("--", name);
    const FlagSpec* flag = cli::FindFlag(command.flags, name);
    if (flag == nullptr) return Mismatch(inv, what, path, *request, "no such flag");
    auto given = inv.flags.find(name);
    const bool has = given != inv.flags.end() && !given->second.empty();
    absl::StatusOr<FieldPath> fields = Resolve(inv, what, path, *request);
    if (!fields.ok()) return fields.status();
    const FieldDescriptor* field = fields->back();
    if (!Fits(flag->kind, *field)) {
      return Mismatch(inv, what, path, *request, "the flag's kind does not fit the field's type");
    }
    if (!has) continue;
    Message* holder = Holder(request, *fields);
    for (const FlagValue& value : ValuesFor(given->second, *field)) {
      absl::Status put = Put(*flag, value, holder, field);
      if (!put.ok()) return put;
    }
  }
  return absl::OkStatus();
}

}  // namespace client
}  // namespace iommu
